"""The ops each importer reads, the graph nodes they become and where those run.

`supported_ops_table()` is the table of the README's "Bring your model" section (``python -m
sw.run --list-ops`` prints it; tests/test_run.py keeps the README's copy equal to it). Where a
node runs comes from the compiler's registry (`sw.compiler.LOWERINGS`: the lowering's summary
for a device kind, the host reason for the others); which ops become which node is written here
from the importers' code, and the test checks that it names every op of each importer's
``SUPPORTED_OPS``.
"""

import re

from sw.compiler import LOWERINGS
from sw.compiler.lowering import HostOnly

__all__ = ["FORMATS", "IMPORTED_AS", "EDGES", "where_it_runs", "supported_ops_table"]

FORMATS = ("TFLite", "ONNX", "QONNX")

# Graph node kind -> {format: the ops (and their forms) the importer turns into it}.
IMPORTED_AS = {
    "Conv2D": {"TFLite": "CONV_2D",
               "ONNX": "QLinearConv, Conv (group 1)"},
    "Dense": {"TFLite": "FULLY_CONNECTED",
              "ONNX": "QGemm, QLinearMatMul, Gemm, MatMul",
              "QONNX": "MatMul with int8 operands, then Quant (<= 8 bits) or, before a "
                       "BipolarQuant/MultiThreshold, its threshold as the bias"},
    "DenseInt32": {},       # no importer makes it: Accelerator.matmul_int32's raw accumulators
    "Flatten": {"ONNX": "Flatten, Reshape to [1, K] (of a 4-D tensor)"},
    "Reshape": {"TFLite": "RESHAPE; the flattening FULLY_CONNECTED does"},
    "BinaryDense": {"QONNX": "MatMul of BipolarQuant (or 1-bit Quant) activations and weights; a "
                             "following BatchNormalization + BipolarQuant, BipolarQuant or "
                             "MultiThreshold become its thresholds"},
    "DepthwiseConv2D": {"TFLite": "DEPTHWISE_CONV_2D",
                        "ONNX": "QLinearConv, Conv (group = channels); QLinearGlobalAveragePool, "
                                "GlobalAveragePool, QLinearAveragePool, AveragePool without "
                                "padding, and the rescaled inputs of QLinearConcat, Concat (unit "
                                "weights)"},
    "Sign": {"QONNX": "BipolarQuant or MultiThreshold after a MatMul with int8 operands"},
    "Add": {"TFLite": "ADD", "ONNX": "QLinearAdd, Add"},
    "MaxPool2D": {"TFLite": "MAX_POOL_2D", "ONNX": "MaxPool"},
    "AveragePool2D": {"TFLite": "AVERAGE_POOL_2D", "ONNX": "QLinearAveragePool, AveragePool "
                                                           "with padding"},
    "Mean": {"TFLite": "MEAN (axes 1, 2)"},
    "Concat": {"TFLite": "CONCATENATION", "ONNX": "QLinearConcat, Concat"},
    "Requantize": {"TFLite": "QUANTIZE int8 -> int8",
                   "ONNX": "after AveragePool, Softmax with another output quantization"},
    "Pad": {"TFLite": "PAD, PADV2", "ONNX": "Pad"},
    "Softmax": {"TFLite": "SOFTMAX", "ONNX": "QLinearSoftmax, Softmax"},
}

# Ops that become no node: the model's float edges and aliases.
EDGES = {"TFLite": "QUANTIZE of the float input, DEQUANTIZE of the output",
         "ONNX": "QuantizeLinear, DequantizeLinear, Identity",
         "QONNX": "BipolarQuant or Quant of the input and the weights, Identity"}


def where_it_runs(kind):
    """"device: ..." (the lowering's summary) or "host: ..." (the reason) for a node kind."""
    lowering = LOWERINGS[kind]
    if isinstance(lowering, HostOnly):
        return f"host: {lowering.reason}"
    summary = " ".join(type(lowering).__doc__.split("\n\n")[0].split())
    # "Dense -> GEMM ...", "Flatten / Reshape: an alias ...": the row names the kind already.
    return "device: " + re.sub(r"^[\w /]+?(?: -> |: )", "", summary).rstrip(".")


def supported_ops_table():
    """The Markdown table: one row per graph node kind an importer makes (where it runs, the
    ops of each format that become it), then the ops that become no node."""
    rows = [(f"`{kind}`", where_it_runs(kind), *(IMPORTED_AS[kind].get(f, "") for f in FORMATS))
            for kind in LOWERINGS if IMPORTED_AS[kind]]
    rows.append(("(no node)", "the model's float edges: sw.run quantizes a float input as the "
                              "model does", *(EDGES[f] for f in FORMATS)))
    header = ("graph node", "runs on", *FORMATS)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
