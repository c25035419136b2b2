"""QONNX networks as Brevitas and FINN export them -> `sw.graph.Graph`: binary (W1A1) layers,
INT8 layers, and the mixed networks FINN builds (INT8 first and last layers around binary
hidden ones).

The lowering follows what each ONNX tensor holds (names are QONNX/ONNX op types; BipolarQuant
is +1 where x >= 0 else -1, times its scale; a Quant of one signed bit is the same, as qonnx
executes it)::

    graph input -> BipolarQuant | Quant(1 bit)     binary graph input [K]: feed +1 where x >= 0
    graph input -> Quant(<= 8 bits)                int8 graph input [K]: feed the integers q
    weights [K, N] -> BipolarQuant | Quant         +1/-1 or int8 weights (zero point 0); a plain
                                                   constant of integers in [-128, 127] is taken
                                                   as weights of scale 1 (FINN's streamlined form)
    MatMul(activation, weights)                    a dot, lowered by what reads it:
      -> BatchNormalization -> BipolarQuant        hidden binary layer, BatchNorm and sign folded
      -> BipolarQuant                              into thresholds (sign at 0 without BatchNorm)
      -> MultiThreshold (bipolar)                  hidden binary layer, FINN's thresholds
      -> Quant(<= 8 bits)                          INT8 layer: Dense requantized to that Quant
      -> graph output                              binary layer: the int32 dots (BinaryDense)

A hidden binary layer on binary activations with +1/-1 weights is a `BinaryDense` with
thresholds. On int8 activations or int8 weights (FINN's INT8 first layer) it is a `Dense`
followed by a `Sign`: the Dense adds -t as its bias and requantizes by 3/4, so its int8 output
has the sign of ``acc - t`` (for an integer d, ``round(3d/4)`` is 0 only for d = 0 and keeps
d's sign; saturation keeps it too), and the Sign thresholds it at 0.

Numerics, against qonnx's executor: thresholds are integers on the integer dot ``acc``; they
equal the runtime's float comparison where its float32 dot is exact (power-of-two scales, as
FINN networks use: integer sums times 2^k are exact below 2^24), and the BatchNorm folding
(`sim.reference.fold_batchnorm_sign`) is exact except within float rounding of a threshold. A
Quant after a dot rounds half to even in float32 where the Dense rounds once, half up, in fixed
point (M0/shift of the same ratio): they differ only on an exact tie or within float32 error of
one (none met on the test zoo, which measures every tensor).

Refused by name (`ModelImportError`): Quant wider than 8 bits (or unsigned 8 bits), with a
zero point on weights, or on anything but the graph input, weights or a dot; MultiThreshold with
several thresholds per channel or an output other than -1/+1; a dot with int8 operands reaching
the output without a Quant; per-channel scales other than per output channel; non-positive
scales; and any other op (the supported list is in the message).
"""

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from sim.reference import INT8_MAX, INT8_MIN, fold_batchnorm_sign, quantize_multiplier
from sw import ops
from sw.graph import Graph, Node, Tensor
from sw.importers.common import ModelImportError, unsupported_op

__all__ = ["QONNX_DOMAINS", "is_qonnx", "qonnx_to_graph", "SUPPORTED_OPS"]

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
CUSTOM_OPS = ("BipolarQuant", "Quant", "MultiThreshold")
SUPPORTED_OPS = (*CUSTOM_OPS, "MatMul", "BatchNormalization", "Identity")

# The Dense before a Sign requantizes `acc - t` by 3/4: its output is 0 only for acc = t and has
# the sign of acc - t otherwise (see the module docstring).
_SIGN_MULTIPLIER, _SIGN_SHIFT = quantize_multiplier(0.75)


def is_qonnx(model):
    """True if the ONNX ModelProto uses QONNX custom ops."""
    return any(node.domain in QONNX_DOMAINS for node in model.graph.node)


def qonnx_to_graph(model):
    """The `Graph` of a QONNX ModelProto (see the module docstring)."""
    return _Lowering(model).graph()


@dataclass(frozen=True)
class _Activation:
    """A graph tensor and its real value: scale * (q - zero_point); binary: scale * (+1/-1)."""
    tensor: str
    binary: bool
    scale: float
    zero_point: int = 0


@dataclass(frozen=True)
class _Weights:
    """Integer weights [K, N] (int64) and their scale per output channel [N]."""
    values: np.ndarray
    scale: np.ndarray

    @property
    def binary(self):
        return bool(np.all(np.abs(self.values) == 1))


@dataclass(frozen=True)
class _Dot:
    """A MatMul not yet lowered: its real value is ``acc * scale`` per output channel, with
    ``acc = sum((q - zero_point) * w)`` the integer dot."""
    source: _Activation
    weights: _Weights

    @property
    def scale(self):
        return self.source.scale * self.weights.scale

    @property
    def on_xnor_engine(self):
        return self.source.binary and self.weights.binary

    def reach(self):
        """A bound on |acc|: thresholds beyond it act as at it."""
        values = self.weights.values
        activation = 1 if self.source.binary else INT8_MAX - INT8_MIN
        return int(np.abs(values).sum(axis=0).max()) * activation + 1


class _Lowering:
    def __init__(self, model):
        from onnx import numpy_helper
        self.model = model.graph
        self.constants = {init.name: numpy_helper.to_array(init)
                          for init in self.model.initializer}
        self.graph_inputs = {value.name: value for value in self.model.input}
        self.tensors = {}           # graph tensor name -> Tensor
        self.nodes = []
        self.activations = {}       # ONNX name -> _Activation
        self.weights = {}           # ONNX name -> _Weights
        self.dots = {}              # ONNX name -> _Dot
        self.normalized = {}        # ONNX name -> (_Dot, BatchNorm parameters)
        self.input = None

    def graph(self):
        for position, node in enumerate(self.model.node):
            handler = _HANDLERS.get(node.op_type)
            if handler is None or (node.op_type in CUSTOM_OPS) != (node.domain in QONNX_DOMAINS):
                raise unsupported_op("QONNX", node.op_type, node.name, position, SUPPORTED_OPS)
            handler(self, node, position)
        if self.input is None:
            raise ModelImportError("the QONNX model quantizes no graph input (BipolarQuant or "
                                   "Quant on its input)")
        if len(self.model.output) != 1:
            raise ModelImportError(f"the QONNX model has {len(self.model.output)} outputs; one "
                                   f"is supported")
        output = self._output(self.model.output[0].name)
        try:
            return Graph(tensors=tuple(self.tensors.values()), nodes=tuple(self.nodes),
                         inputs=(self.input,), outputs=(output,))
        except ValueError as error:
            raise ModelImportError(f"the QONNX model does not form a valid graph: {error}") \
                from None

    def _error(self, node, position, message):
        return ModelImportError(f"QONNX node {node.name!r} ({node.op_type}, position "
                                f"{position}): {message}")

    def _constant(self, node, position, index, what):
        name = node.input[index] if index < len(node.input) else ""
        if name not in self.constants:
            raise self._error(node, position, f"the {what} must be a constant (initializer)")
        return self.constants[name]

    def _scale(self, node, position, channels=None):
        """The quantizer's scale as float32 values > 0: one, or one per output channel."""
        scale = np.asarray(self._constant(node, position, 1, "scale"), np.float32)
        per_channel = channels is not None and scale.size == channels > 1 \
            and scale.shape in ((channels,), (1, channels))
        if not (scale.size == 1 or per_channel) or not np.all(scale > 0):
            where = "one value" if channels is None else f"one value or {channels} (shape [1, N])"
            raise self._error(node, position, f"the scale must be {where}, each > 0, not "
                                              f"shape {list(scale.shape)} "
                                              f"{scale.ravel()[:4].tolist()}")
        return scale.ravel() if per_channel else scale.ravel()[:1]

    # Quantizers ----------------------------------------------------------------------------------

    def bipolar_quant(self, node, position):
        self._sign(node, position, zero_point=0)

    def quant(self, node, position):
        zero_point = np.asarray(self._constant(node, position, 2, "zero point"))
        bits = np.asarray(self._constant(node, position, 3, "bit width"))
        signed = _attribute(node, "signed", 1)
        if bits.size != 1 or zero_point.size != 1 or float(zero_point.ravel()[0]) % 1:
            raise self._error(node, position, "the bit width and the zero point must be single "
                                              "integers")
        bits, zero_point = float(bits.ravel()[0]), int(zero_point.ravel()[0])
        if bits == 1 and signed:
            return self._sign(node, position, zero_point)
        if bits % 1 or not 2 <= bits <= (8 if signed else 7):
            raise self._error(node, position, f"{'a signed' if signed else 'an unsigned'} "
                                              f"Quant of {bits:g} bits does not fit int8; signed "
                                              f"Quant of 1 to 8 bits and unsigned of 2 to 7 are "
                                              f"supported")
        low, high = _integer_range(int(bits), signed, _attribute(node, "narrow", 0))
        source, output = node.input[0], node.output[0]
        if source in self.constants:
            self.weights[output] = self._int_weights(node, position, zero_point, low, high)
        elif source in self.graph_inputs:
            scale = self._scale(node, position)
            self._graph_input(node, position, _Activation(output, False, float(scale[0]),
                                                          self._zero_point(node, position,
                                                                           zero_point)))
        elif source in self.dots:
            self._int8_layer(node, position, self.dots.pop(source), low, high, zero_point)
        else:
            raise self._error(node, position, f"{source!r} is not the graph input, weights or a "
                                              f"MatMul output: Quant of hidden multi-bit "
                                              f"activations is not supported")

    def _zero_point(self, node, position, zero_point):
        if not INT8_MIN <= zero_point <= INT8_MAX:
            raise self._error(node, position, f"zero point {zero_point} is outside int8")
        return zero_point

    def _int_weights(self, node, position, zero_point, low, high):
        values = np.asarray(self.constants[node.input[0]], np.float32)
        if values.ndim != 2:
            raise self._error(node, position, f"weights must be a 2-D [K, N] matrix, not "
                                              f"{list(values.shape)}")
        if zero_point:
            raise self._error(node, position, f"weights with zero point {zero_point} "
                                              f"(asymmetric) are not supported; zero point 0 is")
        if not np.all(np.isfinite(values)):
            raise self._error(node, position, "the weights must be finite numbers")
        scale = self._scale(node, position, values.shape[1])
        # As qonnx's Quant: divide in float32, clamp (a quotient beyond float32 too), round
        # half to even.
        with np.errstate(over="ignore"):
            integers = np.round(np.clip(values / scale, low, high)).astype(np.int64)
        return _Weights(integers, np.broadcast_to(scale.astype(np.float64), values.shape[1:]))

    def _sign(self, node, position, zero_point):
        """BipolarQuant, or a Quant of one signed bit (qonnx executes both as a sign)."""
        if zero_point:
            raise self._error(node, position, f"a 1-bit Quant with zero point {zero_point} is "
                                              f"not bipolar; zero point 0 is supported")
        source, output = node.input[0], node.output[0]
        if source in self.constants:
            values = np.asarray(self.constants[source])
            if values.ndim != 2:
                raise self._error(node, position, f"weights must be a 2-D [K, N] matrix, not "
                                                  f"{list(values.shape)}")
            scale = self._scale(node, position, values.shape[1])
            self.weights[output] = _Weights(np.where(values >= 0, 1, -1),
                                            np.broadcast_to(scale.astype(np.float64),
                                                            values.shape[1:]))
            return
        scale = float(self._scale(node, position)[0])
        if source in self.graph_inputs:
            self._graph_input(node, position, _Activation(output, True, scale))
        elif source in self.normalized:
            dot, batchnorm = self.normalized.pop(source)
            gamma, beta, mean, var, epsilon = batchnorm
            # BatchNorm sees acc * s: fold on gamma * s and mean / s.
            thresholds, ascending = fold_batchnorm_sign(gamma * dot.scale, beta,
                                                        mean / dot.scale, var, epsilon)
            self._binary_layer(output, dot, thresholds, ascending, scale)
        elif source in self.dots:
            dot = self.dots.pop(source)
            # sign(acc * s) with s > 0: +1 where acc >= 0.
            channels = dot.weights.values.shape[1]
            self._binary_layer(output, dot, np.zeros(channels, np.int64),
                               np.ones(channels, bool), scale)
        else:
            raise self._error(node, position, f"{source!r} is neither the graph input, "
                                              f"weights, nor a MatMul or BatchNormalization "
                                              f"output")

    def multi_threshold(self, node, position):
        source, output = node.input[0], node.output[0]
        if source not in self.dots:
            raise self._error(node, position, f"MultiThreshold must read a MatMul output, not "
                                              f"{source!r}")
        dot = self.dots.pop(source)
        channels = dot.weights.values.shape[1]
        thresholds = np.asarray(self._constant(node, position, 1, "thresholds"), np.float32)
        scale, bias = _attribute(node, "out_scale", 1.0), _attribute(node, "out_bias", 0.0)
        if thresholds.ndim != 2 or thresholds.shape[0] not in (1, channels) \
                or thresholds.shape[1] != 1 or (scale, bias) != (2.0, -1.0):
            raise self._error(node, position, f"thresholds of shape {list(thresholds.shape)} "
                                              f"with out_scale {scale:g}, out_bias {bias:g}: only "
                                              f"a bipolar output is supported (one threshold per "
                                              f"channel, [{channels}, 1] or [1, 1], out_scale 2, "
                                              f"out_bias -1)")
        # +1 where acc * s >= T: the least such integer acc is ceil(T / s), computed exactly.
        integer = [-((-Fraction(float(t)) / Fraction(float(s))).__floor__())
                   for t, s in zip(np.broadcast_to(thresholds[:, 0], (channels,)), dot.scale)]
        self._binary_layer(output, dot, np.array(integer, object), np.ones(channels, bool), 1.0)

    # Layers --------------------------------------------------------------------------------------

    def _graph_input(self, node, position, activation):
        if self.input is not None:
            raise self._error(node, position, "only one graph input is supported")
        dims = self.graph_inputs[node.input[0]].type.tensor_type.shape.dim
        shape = [d.dim_value for d in dims]
        if len(shape) != 2 or shape[0] not in (0, 1) or not shape[1]:
            raise self._error(node, position, f"the input must be [1, K], not {shape}")
        self.tensors[activation.tensor] = Tensor(
            name=activation.tensor, shape=(shape[1],),
            dtype="binary" if activation.binary else "int8",
            scale=None if activation.binary else activation.scale,
            zero_point=None if activation.binary else activation.zero_point)
        self.activations[activation.tensor] = activation
        self.input = activation.tensor

    def _binary_layer(self, output, dot, thresholds, ascending, scale):
        """A hidden layer whose output is +1/-1 where acc >= thresholds (ascending) or
        acc <= thresholds (descending); see the module docstring for the two forms."""
        reach = dot.reach()
        thresholds = np.clip(np.asarray(thresholds, object), -reach, reach).astype(np.int64)
        source = dot.source.tensor
        if dot.on_xnor_engine:
            self._emit(output, ops.BinaryDense(weights=dot.weights.values.T,
                                               thresholds=thresholds, ascending=ascending),
                       source)
        else:
            channels = len(thresholds)
            signed = self._emit(f"{output}/sign_input", ops.Dense(
                weights=dot.weights.values, bias=-thresholds,
                multiplier=np.full(channels, _SIGN_MULTIPLIER),
                shift=np.full(channels, _SIGN_SHIFT), input_zero_point=dot.source.zero_point),
                source)
            self._emit(output, ops.Sign(thresholds=np.zeros(channels, np.int32),
                                        ascending=ascending), signed)
        self.activations[output] = _Activation(output, True, scale)

    def _int8_layer(self, node, position, dot, low, high, zero_point):
        """A dot requantized to the int8 output of its Quant (`ops.Dense`, one rounding)."""
        scale = self._scale(node, position)
        zero_point = self._zero_point(node, position, zero_point)
        multipliers, shifts = [], []
        for channel, ratio in enumerate(dot.scale / np.float64(scale[0])):
            multiplier, shift = quantize_multiplier(float(ratio))
            if shift > 0:
                raise self._error(node, position, f"output channel {channel} has effective "
                                                  f"scale {ratio:.6g} >= 1; the requantizer only "
                                                  f"shifts right")
            multipliers.append(multiplier)
            shifts.append(shift)
        channels = len(multipliers)
        output = node.output[0]
        self._emit(output, ops.Dense(
            weights=dot.weights.values, bias=np.zeros(channels, np.int32),
            multiplier=np.array(multipliers), shift=np.array(shifts),
            input_zero_point=dot.source.zero_point, output_zero_point=zero_point,
            act_min=low, act_max=high), dot.source.tensor, scale=float(scale[0]))
        self.activations[output] = _Activation(output, False, float(scale[0]), zero_point)

    # Other ops -----------------------------------------------------------------------------------

    def matmul(self, node, position):
        a, b = node.input[:2]
        if a not in self.activations:
            raise self._error(node, position, f"the first operand {a!r} must be a quantized "
                                              f"activation (BipolarQuant, Quant or a layer "
                                              f"output)")
        weights = self.weights.get(b)
        if weights is None and b in self.constants:
            weights = self._plain_weights(node, position, self.constants[b])
        if weights is None:
            raise self._error(node, position, f"the second operand {b!r} must be weights "
                                              f"(BipolarQuant or Quant of a constant, or a "
                                              f"constant of integers)")
        source = self.activations[a]
        features = self.tensors[source.tensor].shape[0]
        if weights.values.shape[0] != features:
            raise self._error(node, position, f"weights {list(weights.values.shape)} do not "
                                              f"take {features} inputs")
        self.dots[node.output[0]] = _Dot(source, weights)

    def _plain_weights(self, node, position, values):
        values = np.asarray(values)
        if values.ndim != 2 or not np.all(np.isfinite(values)) or np.any(values % 1) \
                or values.min() < INT8_MIN or values.max() > INT8_MAX:
            raise self._error(node, position, "constant weights must be a 2-D matrix of "
                                              "integers in [-128, 127] (or go through Quant / "
                                              "BipolarQuant)")
        return _Weights(values.astype(np.int64), np.ones(values.shape[1]))

    def batch_normalization(self, node, position):
        source = node.input[0]
        if source not in self.dots:
            raise self._error(node, position, "BatchNormalization must follow a MatMul")
        parameters = [self.constants.get(name) for name in node.input[1:5]]
        if any(p is None for p in parameters):
            raise self._error(node, position, "the BatchNorm parameters must be constants")
        with np.errstate(invalid="ignore"):     # a corrupted value may be a signalling NaN
            parameters = [p.astype(np.float64) for p in parameters]
        epsilon = _attribute(node, "epsilon", 1e-5)
        channels = self.dots[source].weights.values.shape[1]
        if any(p.shape != (channels,) or not np.all(np.isfinite(p)) for p in parameters) \
                or not np.all(parameters[3] + epsilon > 0):
            raise self._error(node, position, f"the BatchNorm parameters must be {channels} "
                                              f"finite values each, with var + epsilon > 0")
        self.normalized[node.output[0]] = (self.dots.pop(source), (*parameters, epsilon))

    def identity(self, node, position):
        for table in (self.activations, self.dots, self.normalized, self.weights):
            if node.input[0] in table:
                table[node.output[0]] = table.pop(node.input[0])
                return
        raise self._error(node, position, f"Identity of {node.input[0]!r}, which is not a "
                                          f"layer output")

    def _output(self, name):
        if name in self.dots:
            dot = self.dots.pop(name)
            if not dot.on_xnor_engine:
                raise ModelImportError(f"the QONNX output {name!r} is a MatMul with int8 "
                                       f"operands; quantize it with a Quant of at most 8 bits "
                                       f"(an INT8 last layer), the graph has no int32 INT8 dot")
            scale = dot.scale
            self._emit(name, ops.BinaryDense(weights=dot.weights.values.T), dot.source.tensor,
                       scale=float(scale[0]) if np.all(scale == scale[0]) else tuple(scale))
            return name
        if name in self.activations:
            return self.activations[name].tensor
        raise ModelImportError(f"the QONNX output {name!r} is not a MatMul, quantizer or "
                               f"threshold output")

    def _emit(self, name, op, source, scale=None):
        spec = op.output_spec((self.tensors[source],))
        self.tensors[name] = Tensor(name=name, shape=spec.shape, dtype=spec.dtype,
                                    scale=scale, zero_point=spec.zero_point)
        self.nodes.append(Node(name=name, op=op, inputs=(source,), output=name))
        return name


def _attribute(node, name, default):
    from onnx import helper
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _integer_range(bits, signed, narrow):
    """qonnx's min_int/max_int: the integers a Quant of `bits` bits can hold."""
    if signed:
        return -(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - (2 if narrow else 1)


_HANDLERS = {"BipolarQuant": _Lowering.bipolar_quant, "Quant": _Lowering.quant,
             "MultiThreshold": _Lowering.multi_threshold, "MatMul": _Lowering.matmul,
             "BatchNormalization": _Lowering.batch_normalization,
             "Identity": _Lowering.identity}
