"""ONNX models quantized by onnxruntime (`quantize_static`) -> `sw.graph.Graph`.

(A model using QONNX custom ops, as Brevitas exports binary networks, goes to
`sw.importers.qonnx`.)

Both of onnxruntime's formats are read, int8 (or uint8) activations, int8 weights with zero
point 0 per tensor or per output channel:

* QOperator: QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearGlobalAveragePool,
  QLinearAveragePool, QLinearConcat and int8 MaxPool / Flatten / Reshape / Pad between them;
* QDQ: Conv, Gemm, MatMul, Add, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape,
  Concat, Pad with DequantizeLinear on every input and one QuantizeLinear on the output, the
  pattern onnxruntime fuses into the QOperator kernels above when it runs the model.

Both become one list of quantized ops (`_QOp`), lowered to graph nodes in NHWC: the graph's input
is the model's first QuantizeLinear output transposed to per-sample [H, W, C] (feed it NHWC),
its output the tensor before the last DequantizeLinear. Convolution weights become HWIO, a
Conv with group = channels a DepthwiseConv2D, a Flatten of an NCHW tensor the graph's NHWC
Flatten with the next Dense's weight rows permuted to match.

Numerics differ from onnxruntime, by design of the device, and are measured by the tests:
onnxruntime requantizes a QLinearConv/QGemm/QLinearMatMul accumulator in float32
(``acc * float32(x_scale * w_scale / y_scale)``, rounded half to even); the graph uses the
device's fixed point: M0/shift from `quantize_multiplier` of that same float32 ratio, one
rounding half up (``rounding="single"``). QLinearAdd and (Q)GlobalAveragePool likewise
compute in float where the graph runs TFLite's integer ADD and a unit-weight depthwise
convolution with that requantizer. Results agree except where a value lies within float32 error
of a rounding tie: one int8 step, rarely (the tests count it per model). AveragePool is the
exception: its output often keeps its input's scale, so its means land on ties (x.5) in about a
quarter of the windows, and it runs on the host anyway: the graph's AveragePool2D takes
onnxruntime's own form there (``rounding="float32_half_to_even"``: dequantize, sum and divide in
float32 in the order onnxruntime adds, round half to even), bit-exact with the QDQ AveragePool.
QOperator's QLinearAveragePool sums row by row and adds the output zero point before rounding;
with its own output scale its means are not ties, and the graph equals it on the test zoo.

uint8 activations (QuantType.QUInt8) are held as int8 ones minus 128, exactly the same
values: a graph imported from such a model takes and returns its tensors minus 128.

Refused by name (`ModelImportError`): float (unquantized) models and float ops between
quantized ones, int16 activations, uint8 weights, weights with a nonzero zero point or per-axis
scales on an axis other than the output channel, dilated or grouped (other than depthwise)
convolutions, effective scales >= 1, ops with no graph kind (the supported list is in the
message), and files that are not readable ONNX.
"""

from dataclasses import dataclass, field

import numpy as np

from sim.reference import quantize_multiplier, same_padding
from sw import ops
from sw.graph import Graph, Node, Tensor
from sw.importers.common import ModelImportError, inconsistent_model, unsupported_op
from sw.importers.qonnx import is_qonnx, qonnx_to_graph

__all__ = ["onnx_to_graph", "SUPPORTED_OPS"]

# uint8 activations are int8 ones shifted: q_u8 - 128 with zero point zp_u8 - 128 is the same
# real value, and every op here commutes with the shift. The graph holds the int8 form: a graph
# fed from a uint8 model takes (and returns) its tensors minus 128.
_UINT8_SHIFT = 128

_QUANTIZE_HINT = (
    "quantize it with onnxruntime.quantization.quantize_static(model, output, "
    "calibration_reader, quant_format=QuantFormat.QDQ or QuantFormat.QOperator, "
    "activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)")


@dataclass(frozen=True)
class _QValue:
    """A quantized activation: its tensor name in the file, scale and zero point."""
    name: str
    scale: float
    zero_point: int


@dataclass(frozen=True)
class _QConst:
    """A constant: integer values, and (for quantized weights and biases) per-tensor or
    per-axis scales and zero points; `axis` is a DequantizeLinear's axis (QDQ), or None where
    the op fixes it (QOperator: the output-channel axis)."""
    values: np.ndarray
    scales: np.ndarray = None
    zero_points: np.ndarray = None
    axis: int = None


@dataclass
class _QOp:
    """One quantized op, whichever format it came from: `kind` is the float op it computes."""
    kind: str
    node: str
    position: int
    inputs: list
    output: _QValue
    attributes: dict = field(default_factory=dict)


def onnx_to_graph(data):
    """The `Graph` of serialized ONNX model bytes (see the module docstring)."""
    return inconsistent_model("ONNX", _convert, data)


def _convert(data):
    model = _parse(data)
    if is_qonnx(model):
        return qonnx_to_graph(model)
    return _Lowering(_Reader(model)).graph()


def _parse(data):
    import onnx
    from google.protobuf.message import DecodeError
    try:
        model = onnx.load_model_from_string(bytes(data))
    except (DecodeError, ValueError, RuntimeError) as error:
        raise ModelImportError(f"not a readable ONNX model (truncated or corrupted, "
                               f"{len(data)} bytes): {type(error).__name__}: {error}") from None
    if not model.graph.node:
        raise ModelImportError(f"the ONNX model has no nodes ({len(data)} bytes read); the file "
                               f"is empty, truncated or not ONNX")
    return model


# Reading: both formats to _QOp ------------------------------------------------------------------

_QOPERATOR = {
    # op type: (kind, [(input positions) per operand: activation triple, weight triple, ...],
    #           output (scale, zero point) positions or None)
    "QLinearConv": ("Conv", [(0, 1, 2), (3, 4, 5), (8,)], (6, 7)),
    "QLinearMatMul": ("MatMul", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QGemm": ("Gemm", [(0, 1, 2), (3, 4, 5), (6,)], (7, 8)),
    "QLinearAdd": ("Add", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", [(0, 1, 2)], (3, 4)),
    "QLinearAveragePool": ("AveragePool", [(0, 1, 2)], (3, 4)),
    "QLinearSoftmax": ("Softmax", [(0, 1, 2)], (3, 4)),
}
_PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Pad")
_COMPUTE = ("Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool", "AveragePool", "Concat",
            "Softmax", *_PASS_THROUGH)
SUPPORTED_OPS = tuple(sorted({*_QOPERATOR, "QLinearConcat", *_COMPUTE, "QuantizeLinear",
                              "DequantizeLinear", "Identity"}))


class _Reader:
    """Turns the ONNX graph into `ops` (a list of `_QOp`), `input` ((quantized value, float
    graph input name) of the input's QuantizeLinear) and `output` (the quantized value behind
    the float graph output)."""

    def __init__(self, model):
        from onnx import numpy_helper
        self.graph = model.graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in
                          self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.values = {}            # quantized activation name -> _QValue
        self.aliases = {}           # float name -> quantized value (QDQ's DQ outputs, Identity)
        self.ops = []
        self.input = self.output = None
        self.consumers, self.producers = {}, {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                self.producers[name] = node
        self._check_quantized()
        for position, node in enumerate(self.graph.node):
            self._read(node, position)
        self._edges()

    def _check_quantized(self):
        quantized = {"QuantizeLinear", "DequantizeLinear", *_QOPERATOR, "QLinearConcat"}
        if not any(node.op_type in quantized for node in self.graph.node):
            first = next(node for node in self.graph.node if node.op_type != "Constant")
            raise ModelImportError(
                f"the ONNX model is not quantized: it has no QuantizeLinear, DequantizeLinear "
                f"or QLinear op; its first float op is {first.op_type} (node {first.name!r}); "
                f"{_QUANTIZE_HINT}")

    # Values --------------------------------------------------------------------------------------

    def _constant(self, name, node, position):
        if name not in self.constants:
            raise self._error(node, position, f"input {name!r} must be a constant "
                                              f"(initializer)")
        return self.constants[name]

    def _quantization(self, node, position, scale_name, zero_point_name, weights=False):
        """(float32 scales, zero points). Weights must be int8 (a bias's zero point is
        int32); activations int8 or uint8, a uint8 one shifted to int8 (`_UINT8_SHIFT`)."""
        scale = np.asarray(self._constant(scale_name, node, position), np.float32)
        zero_point = np.asarray(self._constant(zero_point_name, node, position)) \
            if zero_point_name else np.zeros(scale.shape, np.int8)
        if zero_point.dtype == np.uint8 and not weights:
            return scale, zero_point.astype(np.int64) - _UINT8_SHIFT
        if zero_point.dtype != np.int8 and not (weights and zero_point.dtype == np.int32):
            raise self._error(node, position, f"{zero_point_name!r} is {zero_point.dtype}: "
                                              f"{'weights' if weights else 'activations'} "
                                              f"must be int8 (QuantType.QInt8)"
                                              f"{'' if weights else ' or uint8'}, not "
                                              f"{zero_point.dtype}")
        return scale, zero_point

    def _value(self, node, position, name, scale, zero_point):
        """The quantized activation `name` with the stated quantization."""
        if scale.size != 1:
            raise self._error(node, position, f"activation {name!r} is quantized per channel; "
                                              f"activations need one scale")
        value = _QValue(name, float(scale.ravel()[0]), int(zero_point.ravel()[0]))
        known = self.values.get(name)
        if known is not None and known != value:
            raise self._error(node, position, f"activation {name!r} is read with quantization "
                                              f"{(value.scale, value.zero_point)} but was "
                                              f"written with {(known.scale, known.zero_point)}")
        return value

    def _operand(self, node, position, indices):
        """An activation (`_QValue`) or constant (`_QConst`) from (x, scale, zero point) input
        positions, or from a single position (a bias or a plain constant)."""
        names = [node.input[i] if i < len(node.input) else "" for i in indices]
        if not names[0]:
            return None
        if len(names) == 1:
            return _QConst(np.asarray(self._constant(names[0], node, position)))
        scale, zero_point = self._quantization(node, position, names[1], names[2],
                                               weights=names[0] in self.constants)
        if names[0] in self.constants:
            return _QConst(np.asarray(self.constants[names[0]]), scale.ravel(),
                           zero_point.ravel().astype(np.int64), _attribute(node, "axis", 1)
                           if node.op_type == "DequantizeLinear" else None)
        return self._known(node, position,
                           self._value(node, position, names[0], scale, zero_point))

    def _known(self, node, position, value):
        """`value`, checked to be written by an earlier node or the graph input."""
        if value.name not in self.values:
            self._activation(node, position, value.name)
        return value

    def _activation(self, node, position, name):
        """The quantized value flowing in `name` (QOperator: the int8 tensor itself; QDQ: the
        float output of a DequantizeLinear)."""
        if name in self.aliases:
            return self.aliases[name]
        if name in self.values:
            return self.values[name]
        raise ModelImportError(
            f"the ONNX model computes in float: node {node.name!r} ({node.op_type}, position "
            f"{position}) reads {name!r}, which is not quantized (no DequantizeLinear or int8 "
            f"producer); {_QUANTIZE_HINT}")

    # Nodes ---------------------------------------------------------------------------------------

    def _read(self, node, position):
        kind = node.op_type
        if kind == "Constant":
            return
        if kind == "QuantizeLinear":
            self._quantize(node, position)
        elif kind == "DequantizeLinear":
            self._dequantize(node, position)
        elif kind == "Identity":
            self.aliases[node.output[0]] = self._activation(node, position, node.input[0])
        elif kind in _QOPERATOR:
            self._qoperator(node, position)
        elif kind == "QLinearConcat":
            self._qlinear_concat(node, position)
        elif kind in _COMPUTE:
            self._float_op(node, position)
        else:
            raise unsupported_op("ONNX", kind, node.name, position, SUPPORTED_OPS)

    def _quantize(self, node, position):
        """A graph input's quantizer; in QDQ also the quantizer of a compute node's output,
        already read with that node."""
        value = self._quantizer_output(node, position)
        if node.input[0] in [v.name for v in self.graph.input]:
            if self.input is not None:
                raise self._error(node, position, "only one quantized graph input is supported")
            self.input = (value, node.input[0])
        elif node.input[0] in self.constants:
            raise self._error(node, position, "weights quantized at run time are not "
                                              "supported; store them quantized")
        self.values[value.name] = value

    def _quantizer_output(self, node, position):
        scale, zero_point = self._quantization(node, position, node.input[1],
                                               node.input[2] if len(node.input) > 2 else None)
        return self._value(node, position, node.output[0], scale, zero_point)

    def _dequantize(self, node, position):
        source = node.input[0]
        if source in self.constants:
            return                  # a weight or bias DequantizeLinear: read with its consumer
        scale, zero_point = self._quantization(node, position, node.input[1],
                                               node.input[2] if len(node.input) > 2 else None)
        self.aliases[node.output[0]] = self._known(
            node, position, self._value(node, position, source, scale, zero_point))

    def _qoperator(self, node, position):
        kind, operands, output = _QOPERATOR[node.op_type]
        if len(node.input) <= output[0] or not node.input[output[0]]:
            raise self._error(node, position, "a float output (no y_scale) is not supported; "
                                              "the output must be int8")
        inputs = [self._operand(node, position, indices) for indices in operands]
        scale, zero_point = self._quantization(node, position, node.input[output[0]],
                                               node.input[output[1]])
        self._add(kind, node, position, inputs,
                  self._value(node, position, node.output[0], scale, zero_point))

    def _qlinear_concat(self, node, position):
        scale, zero_point = self._quantization(node, position, node.input[0], node.input[1])
        inputs = [self._operand(node, position, (i, i + 1, i + 2))
                  for i in range(2, len(node.input), 3)]
        self._add("Concat", node, position, inputs,
                  self._value(node, position, node.output[0], scale, zero_point))

    def _float_op(self, node, position):
        """A float op: QOperator's int8 pass-through ops, or the middle of a QDQ pattern."""
        inputs = []
        for name in node.input:
            if not name:
                inputs.append(None)
            elif name in self.constants:
                inputs.append(_QConst(np.asarray(self.constants[name])))
            elif self._weight_dequantize(name) is not None:
                inputs.append(self._operand(self._weight_dequantize(name), position, (0, 1, 2)))
            else:
                inputs.append(self._activation(node, position, name))
        self._add(node.op_type, node, position, inputs, self._output(node, position, inputs))

    def _add(self, kind, node, position, inputs, output):
        self.values[output.name] = output
        self.ops.append(_QOp(kind, node.name or f"{node.op_type}_{position}", position, inputs,
                             output, _attributes(node)))

    def _weight_dequantize(self, name):
        """The DequantizeLinear producing `name` from a constant, or None."""
        producer = self.producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear" \
                and producer.input[0] in self.constants:
            return producer
        return None

    def _output(self, node, position, inputs):
        """The quantized output: QOperator's int8 pass-through keeps its input's quantization;
        in QDQ the output's only reader is a QuantizeLinear, whose output it becomes."""
        name = node.output[0]
        readers = self.consumers.get(name, [])
        quantizers = [reader for reader in readers if reader.op_type == "QuantizeLinear"]
        int8_input = node.input[0] in self.values        # not a DequantizeLinear's float output
        if not quantizers and node.op_type in _PASS_THROUGH and int8_input:
            return _QValue(name, inputs[0].scale, inputs[0].zero_point)
        if len(quantizers) != 1 or len(readers) != 1:
            raise ModelImportError(
                f"the ONNX model computes in float: the output {name!r} of node {node.name!r} "
                f"({node.op_type}, position {position}) is not quantized by exactly one "
                f"QuantizeLinear; {_QUANTIZE_HINT}")
        return self._quantizer_output(quantizers[0], position)

    def _edges(self):
        if self.input is None:
            raise ModelImportError(f"the ONNX model has no QuantizeLinear on a graph input; "
                                   f"{_QUANTIZE_HINT}")
        if len(self.graph.output) != 1:
            raise ModelImportError(f"the ONNX model has {len(self.graph.output)} outputs; one "
                                   f"is supported")
        name = self.graph.output[0].name
        self.output = self.aliases.get(name, self.values.get(name))
        if self.output is None:
            raise ModelImportError(f"the ONNX model's output {name!r} is not a dequantized "
                                   f"int8 tensor")

    def _error(self, node, position, message):
        return ModelImportError(f"ONNX node {node.name!r} ({node.op_type}, position "
                                f"{position}): {message}")


def _attribute(node, name, default):
    from onnx import helper
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _attributes(node):
    from onnx import helper
    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


# Lowering: _QOp -> graph nodes (NCHW -> NHWC) ---------------------------------------------------

class _Lowering:
    def __init__(self, reader):
        self.reader = reader
        self.tensors = {}           # graph tensor name -> Tensor
        self.nodes = []
        self.aliases = {}           # ONNX value name -> graph tensor name (no-op reshapes)
        self.flattened = {}         # graph tensor name -> (C, H, W) it was flattened from

    def graph(self):
        value, float_name = self.reader.input
        dims = next(v for v in self.reader.graph.input if v.name == float_name) \
            .type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims)
        if len(shape) == 4 and shape[0] in (0, 1) and all(shape[1:]):
            per_sample = (shape[2], shape[3], shape[1])
        elif len(shape) == 2 and shape[1]:
            per_sample = (shape[1],)
        else:
            raise ModelImportError(f"the ONNX input {float_name!r} has shape {list(shape)}; "
                                   f"[1, C, H, W] or [1, K] with fixed sizes is supported")
        self.tensors[value.name] = Tensor(name=value.name, shape=per_sample, scale=value.scale,
                                          zero_point=value.zero_point)
        for op in self.reader.ops:
            self._lower(op)
        output = self._name(self.reader.output)
        if output in self.flattened:
            raise ModelImportError(f"the ONNX output is a Flatten of an NCHW tensor "
                                   f"{self.flattened[output]}; its element order has no NHWC "
                                   f"graph form")
        try:
            return Graph(tensors=tuple(self.tensors.values()), nodes=tuple(self.nodes),
                         inputs=(value.name,), outputs=(output,))
        except ValueError as error:
            raise ModelImportError(f"the ONNX model does not form a valid graph: {error}") \
                from None

    def _name(self, value):
        return self.aliases.get(value.name, value.name)

    def _tensor(self, value):
        return self.tensors[self._name(value)]

    def _emit(self, qop, graph_op, inputs, output, name=None):
        """Add a node computing `graph_op` from graph tensors `inputs` into tensor `name`
        (default: the op's output value) with the output value's quantization."""
        name = name or output.name
        sources = tuple(self.tensors[n] for n in inputs)
        try:
            spec = graph_op.output_spec(sources)
            self.tensors[name] = Tensor(name=name, shape=spec.shape, scale=output.scale,
                                        zero_point=output.zero_point)
            self.nodes.append(Node(name=name, op=graph_op, inputs=tuple(inputs), output=name))
        except ValueError as error:
            raise self._error(qop, str(error)) from None
        return name

    def _error(self, qop, message):
        return ModelImportError(f"ONNX node {qop.node!r} ({qop.kind}, position {qop.position}): "
                                f"{message}")

    def _lower(self, qop):
        handler = getattr(self, f"_lower_{qop.kind}")
        for value in qop.inputs:
            if isinstance(value, _QValue) and self._name(value) in self.flattened \
                    and qop.kind not in ("Gemm", "MatMul"):
                raise self._error(qop, f"reads {value.name!r}, a Flatten of an NCHW tensor "
                                       f"{self.flattened[self._name(value)]}, whose element "
                                       f"order only a Gemm/MatMul can take")
        try:
            handler(qop)
        except ValueError as error:
            if isinstance(error, ModelImportError):
                raise
            raise self._error(qop, str(error)) from None

    # Requantizing ops ----------------------------------------------------------------------------

    def _lower_Conv(self, qop):
        x, weights, bias = (qop.inputs + [None])[:3]
        attributes = qop.attributes
        if any(d != 1 for d in attributes.get("dilations", [1, 1])):
            raise self._error(qop, f"dilated convolutions (dilations "
                                   f"{attributes['dilations']}) are not supported")
        channels = self._tensor(x).shape[-1]
        group = attributes.get("group", 1)
        out_channels, group_channels, kh, kw = weights.values.shape
        padding = self._padding(qop, x, (kh, kw), attributes)
        stride = tuple(attributes.get("strides", [1, 1]))
        requant = self._requant(qop, x, weights, bias, qop.output, axis=0)
        if group == 1:
            graph_op = ops.Conv2D(weights=weights.values.transpose(2, 3, 1, 0), stride=stride,
                                  padding=padding, rounding="single", **requant)
        elif group == channels and group_channels == 1:
            multiplier = out_channels // channels
            graph_op = ops.DepthwiseConv2D(
                weights=weights.values.reshape(channels, multiplier, kh, kw)
                .transpose(2, 3, 0, 1), stride=stride, padding=padding, rounding="single",
                **requant)
        else:
            raise self._error(qop, f"grouped convolutions (group {group} of {channels} input "
                                   f"channels) are not supported; group 1 and depthwise "
                                   f"(group = channels) are")
        self._emit(qop, graph_op, [self._name(x)], qop.output)

    def _lower_Gemm(self, qop):
        a, b, c = (qop.inputs + [None])[:3]
        attributes = qop.attributes
        if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 \
                or attributes.get("beta", 1.0) != 1.0:
            raise self._error(qop, "Gemm with transA, alpha != 1 or beta != 1 is not supported")
        transposed = attributes.get("transB", 0)
        self._dense(qop, a, b, c, axis=0 if transposed else 1, transposed=transposed)

    def _lower_MatMul(self, qop):
        a, b = qop.inputs[:2]
        self._dense(qop, a, b, None, axis=1, transposed=False)

    def _dense(self, qop, a, b, bias, axis, transposed):
        if not isinstance(b, _QConst) or b.values.ndim != 2:
            raise self._error(qop, "the second operand must be constant 2-D weights")
        weights = b.values.T if transposed else b.values            # [K, N]
        source = self._name(a)
        features = int(np.prod(self.tensors[source].shape))
        if weights.shape[0] != features:
            raise self._error(qop, f"weights {list(b.values.shape)} (transB={transposed}) do "
                                   f"not take the {features} input features")
        if source in self.flattened:
            channels, height, width = self.flattened[source]
            # ONNX flattened (c, h, w); the graph's Flatten gives (h, w, c).
            order = np.arange(channels * height * width).reshape(channels, height, width)
            weights = weights[order.transpose(1, 2, 0).ravel()]
        requant = self._requant(qop, a, b, bias, qop.output, axis=axis)
        self._emit(qop, ops.Dense(weights=weights, rounding="single", **requant),
                   [source], qop.output)

    def _requant(self, qop, x, weights, bias, output, axis):
        """bias, multiplier, shift, zero points of a QLinearConv/QGemm/QLinearMatMul."""
        if weights.values.dtype != np.int8:
            raise self._error(qop, f"weights are {weights.values.dtype}; only int8 weights "
                                   f"(QuantType.QInt8) are supported")
        if np.any(weights.zero_points != 0):
            raise self._error(qop, f"asymmetric weights (zero points "
                                   f"{weights.zero_points[:4].tolist()}) are not supported; "
                                   f"weights must have zero point 0 (symmetric)")
        channels = weights.values.shape[axis]
        scales = weights.scales
        if len(scales) > 1 and (len(scales) != channels
                                or weights.axis not in (None, axis, axis - weights.values.ndim)):
            raise self._error(qop, f"weights are quantized per axis {weights.axis} with "
                                   f"{len(scales)} scales; the output-channel axis {axis} is "
                                   f"supported")
        x_scale, y_scale = np.float32(x.scale), np.float32(output.scale)
        multipliers, shifts = [], []
        for channel, weight_scale in enumerate(np.broadcast_to(scales, (channels,))):
            # onnxruntime's requantization scale, computed as it does: in float32.
            real = float(np.float32(x_scale * np.float32(weight_scale)) / y_scale)
            multiplier, shift = quantize_multiplier(real)
            if shift > 0:
                raise self._error(qop, f"output channel {channel} has effective scale "
                                       f"{real:.6g} >= 1; the requantizer only shifts right")
            multipliers.append(multiplier)
            shifts.append(shift)
        bias_values = np.zeros(channels, np.int32) if bias is None else bias.values
        if bias_values.dtype != np.int32 or bias_values.shape != (channels,):
            raise self._error(qop, f"the bias must be int32 [{channels}], not "
                                   f"{bias_values.dtype} {list(bias_values.shape)}")
        return dict(bias=bias_values, multiplier=np.array(multipliers), shift=np.array(shifts),
                    input_zero_point=x.zero_point, output_zero_point=output.zero_point)

    # Other ops -----------------------------------------------------------------------------------

    def _lower_Add(self, qop):
        first, second = qop.inputs
        if not (isinstance(first, _QValue) and isinstance(second, _QValue)):
            raise self._error(qop, "Add of a constant is not supported")
        output = qop.output
        self._emit(qop, ops.Add(
            input1_scale=first.scale, input1_zero_point=first.zero_point,
            input2_scale=second.scale, input2_zero_point=second.zero_point,
            output_scale=output.scale, output_zero_point=output.zero_point),
            [self._name(first), self._name(second)], output)

    def _lower_MaxPool(self, qop):
        (x,) = qop.inputs[:1]
        self._rescaled(qop, ops.MaxPool2D(**self._window(qop, x)), [self._name(x)], x)

    def _lower_AveragePool(self, qop):
        if qop.attributes.get("count_include_pad", 0):
            raise self._error(qop, "AveragePool with count_include_pad=1 is not supported")
        (x,) = qop.inputs[:1]
        output = qop.output
        # onnxruntime averages in float32 and rounds half to even: the graph's kind in that form.
        self._emit(qop, ops.AveragePool2D(
            **self._window(qop, x), rounding="float32_half_to_even", input_scale=x.scale,
            input_zero_point=x.zero_point, output_scale=output.scale,
            output_zero_point=output.zero_point), [self._name(x)], output)

    def _window(self, qop, x):
        """pool_size, stride and padding of a MaxPool / AveragePool."""
        attributes = qop.attributes
        if attributes.get("ceil_mode", 0) or any(d != 1 for d in attributes.get("dilations",
                                                                                 [1, 1])):
            raise self._error(qop, "pooling with ceil_mode=1 or dilations is not supported")
        size = tuple(attributes["kernel_shape"])
        return dict(pool_size=size, stride=tuple(attributes.get("strides", [1, 1])),
                    padding=self._padding(qop, x, size, attributes))

    def _rescaled(self, qop, graph_op, inputs, x):
        """Emit a kind that keeps its input's quantization; a Requantize follows when the
        op's output is quantized differently (a QDQ MaxPool may be)."""
        output = qop.output
        if (x.scale, x.zero_point) == (output.scale, output.zero_point):
            return self._emit(qop, graph_op, inputs, output)
        kept = self._emit(qop, graph_op, inputs, _QValue(f"{output.name}/unscaled",
                                                               x.scale, x.zero_point))
        return self._emit(qop, ops.Requantize(
            input_scale=x.scale, input_zero_point=x.zero_point, output_scale=output.scale,
            output_zero_point=output.zero_point), [kept], output)

    def _lower_GlobalAveragePool(self, qop):
        (x,) = qop.inputs[:1]
        if qop.attributes.get("channels_last", 0):
            raise self._error(qop, "channels_last=1 is not supported")
        height, width, _ = self._tensor(x).shape
        self._unit_depthwise(qop, x, qop.output, (height, width))

    def _unit_depthwise(self, qop, x, output, window, name=None):
        """Average or rescale `x` into `output`'s quantization with one rounding, as
        onnxruntime does in float (QLinearGlobalAveragePool, GlobalAveragePool, QLinearConcat's
        inputs): a VALID depthwise convolution with unit weights sums
        each window, and the device's one-rounding requantizer (rounding "single") multiplies
        by ``s_in / (count * s_out)``, the ratio onnxruntime computes in float32. TFLite's MEAN
        and QUANTIZE kernels round twice and would differ from onnxruntime far more often."""
        channels = self._tensor(x).shape[-1]
        count = window[0] * window[1]
        real = float(np.float32(x.scale) / np.float32(np.float32(output.scale) * count))
        weight = 1
        while real / weight >= 1 and weight < 64:
            weight *= 2         # the requantizer only shifts right: scale the sum up instead
        multiplier, shift = quantize_multiplier(real / weight)
        if shift > 0:
            raise self._error(qop, f"rescaling by {real:.6g} is beyond the requantizer's range")
        graph_op = ops.DepthwiseConv2D(
            weights=np.full((*window, channels, 1), weight, np.int8),
            bias=np.zeros(channels, np.int32), multiplier=np.full(channels, multiplier),
            shift=np.full(channels, shift), input_zero_point=x.zero_point,
            output_zero_point=output.zero_point, rounding="single")
        return self._emit(qop, graph_op, [self._name(x)], output, name=name)

    def _lower_Flatten(self, qop):
        (x,) = qop.inputs[:1]
        if qop.attributes.get("axis", 1) != 1:
            raise self._error(qop, f"Flatten axis {qop.attributes['axis']} is not supported "
                                   f"(axis 1 is)")
        self._flatten(qop, x)

    def _lower_Reshape(self, qop):
        x, shape = qop.inputs[:2]
        target = [int(v) for v in shape.values.ravel()]
        if len(target) != 2 or target[0] not in (1, -1, 0):
            raise self._error(qop, f"Reshape to {target} is not supported; only flattening "
                                   f"to [1, K] is")
        self._flatten(qop, x)

    def _flatten(self, qop, x):
        source = self.tensors[self._name(x)]
        if len(source.shape) == 1:
            self.aliases[qop.output.name] = source.name
            return
        height, width, channels = source.shape
        name = self._emit(qop, ops.Flatten(), [source.name], qop.output)
        if channels > 1 and height * width > 1:
            self.flattened[name] = (channels, height, width)

    def _lower_Concat(self, qop):
        if qop.attributes.get("axis") not in (1, -3) \
                or any(len(self._tensor(x).shape) != 3 for x in qop.inputs):
            raise self._error(qop, f"only concatenation of 4-D NCHW tensors on the channel axis "
                                   f"is supported, not axis {qop.attributes.get('axis')}")
        output = qop.output
        inputs = []
        for index, x in enumerate(qop.inputs):
            if (x.scale, x.zero_point) == (output.scale, output.zero_point):
                inputs.append(self._name(x))
            else:
                inputs.append(self._unit_depthwise(qop, x, output, (1, 1),
                                                   name=f"{output.name}/input{index}"))
        count = len(inputs)
        self._emit(qop, ops.Concat(input_scales=(output.scale,) * count,
                                   input_zero_points=(output.zero_point,) * count,
                                   output_scale=output.scale,
                                   output_zero_point=output.zero_point), inputs, output)

    def _lower_Pad(self, qop):
        x, pads = qop.inputs[:2]
        value = qop.inputs[2] if len(qop.inputs) > 2 else None
        if qop.attributes.get("mode", b"constant") not in (b"constant", "constant"):
            raise self._error(qop, f"Pad mode {qop.attributes['mode']!r} is not supported")
        if value is not None:
            fill = int(np.asarray(value.values).ravel()[0])
            if value.values.dtype == np.uint8:
                fill -= _UINT8_SHIFT
            if fill != x.zero_point:
                raise self._error(qop, "Pad must fill with the input zero point")
        amounts = [int(v) for v in pads.values.ravel()]
        if len(amounts) != 8 or amounts[0] or amounts[4] or amounts[1] or amounts[5]:
            raise self._error(qop, f"Pad {amounts} is not supported; only H and W of an NCHW "
                                   f"tensor may be padded")
        begin, end = amounts[:4], amounts[4:]
        self._emit(qop, ops.Pad(pads=((begin[2], end[2]), (begin[3], end[3]), (0, 0)),
                                      zero_point=x.zero_point), [self._name(x)], qop.output)

    def _lower_Softmax(self, qop):
        (x,) = qop.inputs[:1]
        output = qop.output
        if qop.attributes.get("axis", -1) not in (-1, len(self._tensor(x).shape)):
            raise self._error(qop, f"Softmax on axis {qop.attributes['axis']} is not supported "
                                   f"(the last axis is)")
        # The graph's Softmax outputs TFLite's (1/256, -128); onnxruntime's quantizer chooses
        # its own (1/255, -128): a Requantize follows, one more rounding (host kernels both).
        softmax = ops.Softmax(input_scale=x.scale, input_zero_point=x.zero_point)
        fixed = softmax.output_spec((self._tensor(x),))
        if (np.float32(output.scale), output.zero_point) == (np.float32(fixed.scale),
                                                             fixed.zero_point):
            self._emit(qop, softmax, [self._name(x)], output)
            return
        probabilities = self._emit(qop, softmax, [self._name(x)],
                                   _QValue(f"{output.name}/softmax", fixed.scale,
                                           fixed.zero_point))
        self._emit(qop, ops.Requantize(input_scale=fixed.scale,
                                       input_zero_point=fixed.zero_point,
                                       output_scale=output.scale,
                                       output_zero_point=output.zero_point),
                   [probabilities], output)

    def _padding(self, qop, x, kernel, attributes):
        """(top, bottom, left, right) from ONNX pads [top, left, bottom, right] or auto_pad."""
        auto = attributes.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto == "VALID":
            return (0, 0, 0, 0)
        if auto == "SAME_UPPER":
            height, width, _ = self._tensor(x).shape
            return same_padding(height, width, kernel[0], kernel[1],
                                tuple(attributes.get("strides", [1, 1])))
        if auto != "NOTSET":
            raise self._error(qop, f"auto_pad {auto} is not supported")
        top, left, bottom, right = attributes.get("pads", [0, 0, 0, 0])
        return (top, bottom, left, right)
