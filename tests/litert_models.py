"""One-operator TFLite models built with flatbuffers and run by LiteRT (`ai_edge_litert`).

Test helper for test_litert.py: `run_op` writes a model holding a single builtin operator with
the given tensors, loads it into LiteRT's interpreter (its default kernels, or the reference
kernels, by `resolver`) and returns the output for the given inputs.
"""

import importlib
from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tflite import TensorType


def _schema(name):
    """The generated module tflite.<name> (the package itself exports the same-named class)."""
    return importlib.import_module(f"tflite.{name}")


Buffer, Model, Operator, OperatorCode, QuantizationParameters, SubGraph, Tensor = map(
    _schema, ("Buffer", "Model", "Operator", "OperatorCode", "QuantizationParameters",
              "SubGraph", "Tensor"))
_TYPES = {np.dtype(np.int8): TensorType.INT8, np.dtype(np.int32): TensorType.INT32}


@dataclass
class TensorDef:
    """shape (with batch); dtype; scale/zero_point lists (per channel along `axis`) or None;
    data: a constant's values, None for an activation."""

    shape: tuple
    dtype: object = np.int8
    scale: list = None
    zero_point: list = None
    data: np.ndarray = None
    axis: int = 0


def _vector(builder, values, dtype):
    return builder.CreateNumpyVector(np.asarray(values, dtype=dtype).ravel())


def _tensor(builder, index, definition, buffer):
    name = builder.CreateString(f"t{index}")
    shape = _vector(builder, definition.shape, np.int32)
    quantization = None
    if definition.scale is not None:
        scale = _vector(builder, definition.scale, np.float32)
        zero_point = _vector(builder, definition.zero_point, np.int64)
        QuantizationParameters.Start(builder)
        QuantizationParameters.AddScale(builder, scale)
        QuantizationParameters.AddZeroPoint(builder, zero_point)
        QuantizationParameters.AddQuantizedDimension(builder, definition.axis)
        quantization = QuantizationParameters.End(builder)
    Tensor.Start(builder)
    Tensor.AddShape(builder, shape)
    Tensor.AddType(builder, _TYPES[np.dtype(definition.dtype)])
    Tensor.AddBuffer(builder, buffer)
    Tensor.AddName(builder, name)
    if quantization is not None:
        Tensor.AddQuantization(builder, quantization)
    return Tensor.End(builder)


def _table_vector(builder, start, offsets):
    start(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def build_model(tensors, inputs, outputs, opcode, options_type=0, options=None):
    """The .tflite bytes of one operator `opcode` reading tensors `inputs` and writing `outputs`
    (indices into `tensors`); `options(builder)` builds its builtin options table."""
    builder = flatbuffers.Builder(1024)
    buffers, buffer_of = [], []
    Buffer.Start(builder)
    buffers.append(Buffer.End(builder))               # buffer 0: the empty one, by convention
    for definition in tensors:
        if definition.data is None:
            buffer_of.append(0)
            continue
        data = _vector(builder, np.ascontiguousarray(definition.data,
                                                     dtype=definition.dtype).view(np.uint8),
                       np.uint8)
        Buffer.Start(builder)
        Buffer.AddData(builder, data)
        buffers.append(Buffer.End(builder))
        buffer_of.append(len(buffers) - 1)
    tensor_offsets = [_tensor(builder, index, definition, buffer_of[index])
                      for index, definition in enumerate(tensors)]
    options_offset = options(builder) if options else None
    op_inputs = _vector(builder, inputs, np.int32)
    op_outputs = _vector(builder, outputs, np.int32)
    Operator.Start(builder)
    Operator.AddOpcodeIndex(builder, 0)
    Operator.AddInputs(builder, op_inputs)
    Operator.AddOutputs(builder, op_outputs)
    if options_offset is not None:
        Operator.AddBuiltinOptionsType(builder, options_type)
        Operator.AddBuiltinOptions(builder, options_offset)
    operator = Operator.End(builder)
    graph_inputs = _vector(builder, [i for i in inputs if tensors[i].data is None], np.int32)
    graph_outputs = _vector(builder, outputs, np.int32)
    tensor_vector = _table_vector(builder, SubGraph.StartTensorsVector, tensor_offsets)
    operator_vector = _table_vector(builder, SubGraph.StartOperatorsVector, [operator])
    SubGraph.Start(builder)
    SubGraph.AddTensors(builder, tensor_vector)
    SubGraph.AddInputs(builder, graph_inputs)
    SubGraph.AddOutputs(builder, graph_outputs)
    SubGraph.AddOperators(builder, operator_vector)
    subgraph = SubGraph.End(builder)
    OperatorCode.Start(builder)
    OperatorCode.AddDeprecatedBuiltinCode(builder, min(opcode, 127))
    OperatorCode.AddBuiltinCode(builder, opcode)
    OperatorCode.AddVersion(builder, 1)
    code = OperatorCode.End(builder)
    codes = _table_vector(builder, Model.StartOperatorCodesVector, [code])
    subgraphs = _table_vector(builder, Model.StartSubgraphsVector, [subgraph])
    buffer_vector = _table_vector(builder, Model.StartBuffersVector, buffers)
    Model.Start(builder)
    Model.AddVersion(builder, 3)
    Model.AddOperatorCodes(builder, codes)
    Model.AddSubgraphs(builder, subgraphs)
    Model.AddBuffers(builder, buffer_vector)
    builder.Finish(Model.End(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run_op(tensors, inputs, outputs, opcode, arrays, *, options_type=0, options=None,
           resolver=OpResolverType.AUTO):
    """Build the one-operator model and run it on `arrays` (one per non-constant input) with
    LiteRT's kernels chosen by `resolver` (an `OpResolverType`)."""
    content = build_model(tensors, inputs, outputs, opcode, options_type, options)
    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    for detail, array in zip(interpreter.get_input_details(), arrays):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
