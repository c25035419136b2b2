"""ONNX zoo: the TFLite zoo's float networks (`tflite_models.Net`) written as ONNX with
`onnx.helper` (NCHW, opset 17), then quantized by onnxruntime's `quantize_static`.

Layouts are converted (OHWI -> OIHW, depthwise 1HWO -> grouped [O, 1, H, W], SAME padding made
explicit with the odd pixel at the end as TFLite does); a RESHAPE to [1, N] becomes Flatten, so
the ONNX network flattens in (c, h, w) order and computes a different function from the TFLite
one with the same weights. That is fine: each format is checked against its own runtime.

Expected values never come from here: tests run the written files in onnxruntime.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["float_onnx", "quantized_onnx", "run_onnxruntime"]

OPSET = 17


def _nchw_axis(axis):
    return (0, 2, 3, 1)[axis]


def _same_pads(net, x, kernel, stride):
    from sim.reference import same_padding
    _, height, width, _ = net.shapes[x]
    top, bottom, left, right = same_padding(height, width, kernel, kernel, stride)
    return [top, left, bottom, right]


class _Builder:
    def __init__(self):
        self.nodes, self.initializers = [], []

    def constant(self, name, value):
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, output, **attributes):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def activation(self, x, activation, output):
        if activation is None:
            return x
        if activation == "relu":
            return self.node("Relu", [x], output)
        low = self.constant(f"{output}_min", np.float32(0))
        high = self.constant(f"{output}_max", np.float32(6))
        return self.node("Clip", [x, low, high], output)


def _conv(builder, net, inputs, output, parameters, weights, group):
    if parameters.get("dilation", 1) != 1:
        raise ValueError("the ONNX zoo writes no dilated convolutions")
    kernel = weights.shape[2]
    stride = parameters["stride"]
    pads = _same_pads(net, inputs[0], kernel, stride) if parameters["padding"] == "same" \
        else [0, 0, 0, 0]
    name = output if parameters["activation"] is None else f"{output}_conv"
    builder.node("Conv", [inputs[0], builder.constant(f"{output}_weights", weights),
                          builder.constant(f"{output}_bias", parameters["bias"])], name,
                 kernel_shape=[kernel, kernel], strides=[stride, stride], pads=pads,
                 group=group)
    builder.activation(name, parameters["activation"], output)


def _layer(builder, net, kind, inputs, output, parameters, dense_as_matmul):
    if kind == "dense" and len(net.shapes[inputs[0]]) == 4:
        # TFLite's FULLY_CONNECTED flattens its input; ONNX's Gemm needs a Flatten first.
        inputs = [builder.node("Flatten", inputs, f"{output}_flatten")]
    if kind == "conv":
        _conv(builder, net, inputs, output, parameters,
              parameters["weights"].transpose(0, 3, 1, 2), 1)
    elif kind == "depthwise":
        _conv(builder, net, inputs, output, parameters,
              parameters["weights"].transpose(3, 0, 1, 2), net.shapes[inputs[0]][-1])
    elif kind == "dense" and dense_as_matmul:
        name = output if parameters["activation"] is None else f"{output}_matmul"
        builder.node("MatMul", [inputs[0], builder.constant(f"{output}_weights",
                                                            parameters["weights"].T.copy())],
                     name)
        builder.activation(name, parameters["activation"], output)
    elif kind == "dense":
        name = output if parameters["activation"] is None else f"{output}_gemm"
        builder.node("Gemm", [inputs[0],
                              builder.constant(f"{output}_weights", parameters["weights"]),
                              builder.constant(f"{output}_bias", parameters["bias"])],
                     name, transB=1)
        builder.activation(name, parameters["activation"], output)
    elif kind in ("max_pool", "avg_pool"):
        size, stride = parameters["size"], parameters["stride"]
        pads = _same_pads(net, inputs[0], size, stride) if parameters["padding"] == "same" \
            else [0, 0, 0, 0]
        builder.node("MaxPool" if kind == "max_pool" else "AveragePool", inputs, output,
                     kernel_shape=[size, size], strides=[stride, stride], pads=pads)
    elif kind == "mean":
        builder.node("GlobalAveragePool", inputs, f"{output}_pool")
        builder.node("Flatten", [f"{output}_pool"], output)
    elif kind == "add":
        name = output if parameters["activation"] is None else f"{output}_add"
        builder.node("Add", inputs, name)
        builder.activation(name, parameters["activation"], output)
    elif kind == "reshape":
        builder.node("Flatten", inputs, output)
    elif kind == "pad":
        order = [0, 3, 1, 2]
        pads = [parameters["pads"][a][0] for a in order] + [parameters["pads"][a][1]
                                                            for a in order]
        builder.node("Pad", [inputs[0], builder.constant(f"{output}_pads",
                                                        np.array(pads, np.int64))], output)
    elif kind == "concat":
        builder.node("Concat", inputs, output, axis=_nchw_axis(parameters["axis"]))
    elif kind == "softmax":
        builder.node("Softmax", inputs, output, axis=-1)
    elif kind == "tanh":
        builder.node("Tanh", inputs, output)
    else:
        raise ValueError(f"no ONNX form for zoo layer {kind!r}")


def _nchw(shape):
    return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else list(shape)


def float_onnx(net, dense_as_matmul=False):
    """The float32 ONNX model of a zoo `Net` (input "input" NCHW, output "output"); with
    `dense_as_matmul` each dense layer is a MatMul without its bias instead of a Gemm."""
    builder = _Builder()
    for kind, inputs, output, parameters in net.layers:
        _layer(builder, net, kind, inputs, output, parameters, dense_as_matmul)
    builder.node("Identity", [net.output_name], "output")
    graph = helper.make_graph(
        builder.nodes, net.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, _nchw(net.shapes["input"]))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                       _nchw(net.shapes[net.output_name]))],
        builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a float NHWC batch."""

    def __init__(self, samples):
        self.samples = iter(samples)

    def get_next(self):
        sample = next(self.samples, None)
        return None if sample is None else {
            "input": sample.transpose(2, 0, 1)[np.newaxis].astype(np.float32)}


def quantized_onnx(model, calibration, path, *, qdq, per_channel, activation_type="QInt8",
                   weight_type="QInt8", extra_options=None, dense_as_matmul=False,
                   reduce_range=False):
    """Quantize a float model (a zoo `Net`, written by `float_onnx`, or an ONNX ModelProto with
    input "input") with `quantize_static` into `path`, QDQ or QOperator format; int8
    activations and symmetric int8 weights unless the QuantType names and `extra_options` say
    otherwise; `reduce_range` quantizes weights to 7 bits. Returns the path."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    if not isinstance(model, onnx.ModelProto):
        model = float_onnx(model, dense_as_matmul)
    quantize_static(model, str(path), _Calibration(calibration),
                    quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
                    per_channel=per_channel, activation_type=QuantType[activation_type],
                    weight_type=QuantType[weight_type], extra_options=extra_options,
                    reduce_range=reduce_range)
    return path


def run_onnxruntime(path, x_nhwc, outputs=(), optimized=False):
    """Run an ONNX file in onnxruntime on one NHWC float sample; return {"output": float
    output, name: value for each extra output name}.

    By default the graph runs as written (graph optimisations off): QDQ models compute each op
    in float between their QuantizeLinear/DequantizeLinear, QOperator models run onnxruntime's
    QLinear kernels. `optimized` runs onnxruntime's default optimisations instead, which on
    x86 rewrite int8 QDQ models to uint8 activations and fuse them into u8s8 kernels; without
    AVX-VNNI those sum pairs of products in saturating int16 (VPMADDUBSW) and lose precision."""
    import onnxruntime
    model = onnx.load(str(path))
    for name in outputs:
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    options = onnxruntime.SessionOptions()
    if not optimized:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    names = ["output", *outputs]
    values = session.run(names, {"input": np.asarray(x_nhwc, np.float32)
                                 .transpose(2, 0, 1)[np.newaxis]})
    return dict(zip(names, values))
