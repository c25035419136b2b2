"""The node kinds of the network graph (`sw.graph`): one frozen dataclass per operation.

An operation holds its attributes (weights, requantization parameters, geometry, the
quantization it was built for) and checks them on construction, so an operation that exists is
one the reference can run. Each kind answers two questions:

* ``output_spec(inputs)``: given its input tensors (objects with ``name``, ``shape`` per sample,
  ``dtype``, ``scale``, ``zero_point``, as `sw.graph.Tensor`), the `TensorSpec` of its output,
  or a ValueError saying which input is wrong and how. The graph prefixes the node's name.
  This is where dtype rules (binary kinds take binary tensors, `Sign` turns int8 into binary)
  and stated quantization (``input_zero_point``, ``input1_scale``, ...: must equal the input
  tensor's) are enforced.
* ``run(*inputs)``: the output for batch-first NumPy inputs, with `sim.reference` kernels only.

Tensor dtypes: ``"int8"`` (affine quantized: real = scale * (q - zero_point)), ``"int32"``
(raw integers, e.g. binary dot products), ``"binary"`` (+1/-1 values held as int8; bit 1 = +1).

Kinds and what they compute (x: the input, batch first)::

    Dense            requantize(gemm(x, weights, folded_bias))            int8|binary [K] -> [N]
    DenseInt32       gemm(x, weights, folded_bias), raw accumulators      int8|binary [K] -> int32
    Conv2D           requantize(conv2d(x, ...)) (+ 2x2 max-pool if pool)  int8 HWC -> int8 HWC
    DepthwiseConv2D  requantize(depthwise_conv2d(x, ...))                 int8 HWC -> int8 HWC
    Flatten          x.reshape(B, -1) (NHWC order)                        any [H, W, C] -> [HWC]
    Reshape          x.reshape(B, *shape)                                 any -> any
    BinaryDense      threshold(popcount dots) or the int32 dots           binary [K] -> binary|int32
    Sign             +1 where x >= threshold[c] (<= if descending)        int8 [.., C] -> binary
    Add              TFLite ADD of two int8 tensors, each with its scale  int8, int8 -> int8
    MaxPool2D        TFLite MAX_POOL_2D, any window/stride/padding        int8 HWC -> int8 HWC
    AveragePool2D    window means, TFLite or onnxruntime rounding         int8 HWC -> int8 HWC
    Mean             TFLite MEAN over H, W (global average pool)          int8 [H, W, C] -> [C]
    Concat           channels, inputs rescaled to the output's quant.     int8 [.., Ci] -> [.., sum]
    Requantize       TFLite QUANTIZE int8 -> int8                         int8 -> int8
    Pad              TFLite PAD with the zero point                       int8 -> int8
    Softmax          host float softmax, TFLite's int8 output quant.      int8 [.., N] -> int8

Requantization fields (Dense, Conv2D, DepthwiseConv2D; DenseInt32 has only the bias and the
input zero point): int32 ``bias``, per output channel M0 (``multiplier``, in [2^30, 2^31) or 0)
and ``shift`` (<= 0) as `sim.reference.quantize_multiplier` returns them, ``input_zero_point``,
``output_zero_point``, ``act_min``/``act_max`` and the ``rounding`` form: "double" (gemmlowp,
LiteRT's reference CONV_2D and DEPTHWISE_CONV_2D) or "single" (one rounding: FULLY_CONNECTED,
and CONV_2D/DEPTHWISE_CONV_2D in LiteRT's default interpreter, whose XNNPACK kernels round once;
tests/test_litert.py). Input zero points are folded into the bias for the hardware
(``folded_bias``); convolution padding is filled with the input zero point so the folding stays
exact at the borders. Kinds that derive their integers from scales (Add, Mean, Concat,
Requantize, Softmax) state the scales and zero points; scales are held as float32 values, as
TFLite stores them.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sim.reference import (AVERAGE_ROUNDINGS, INT8_MAX, INT8_MIN, INT32_MAX, ROUNDING_MODES,
                           SOFTMAX_OUTPUT_SCALE, SOFTMAX_OUTPUT_ZERO_POINT, add, add_multipliers,
                           average_pool2d, binary_dense, concatenate, conv2d, conv_output_size,
                           depthwise_conv2d, fold_zero_point, gemm, max_pool2d, max_pool2x2,
                           mean_hw, pack_bits, pad, requantize, requantize_int8, softmax_int8,
                           threshold_activation, tflite_scale, unpack_bits)

__all__ = ["DTYPES", "TensorSpec", "Dense", "DenseInt32", "Conv2D", "DepthwiseConv2D", "Flatten",
           "Reshape", "BinaryDense", "Sign", "Add", "MaxPool2D", "AveragePool2D", "Mean", "Concat",
           "Requantize", "Pad", "Softmax", "OPERATIONS"]

DTYPES = ("int8", "int32", "binary")


class TensorSpec(NamedTuple):
    """What an operation says of its output. ``scale`` None: the operation does not fix it
    (a requantizing layer's output scale is the model's choice); ``zero_point`` None: binary."""

    shape: tuple
    dtype: str
    scale: float = None
    zero_point: int = None


# Checking ----------------------------------------------------------------------------------------

def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _frozen(owner, name, array):
    array = np.array(array)          # a private copy: the caller's array may change later
    array.setflags(write=False)
    object.__setattr__(owner, name, array)
    return array


def _int_array(owner, name, value, dtype, shape=None, low=None, high=None):
    """Store `value` on `owner` as a read-only integer array of `dtype`, checked."""
    array = np.asarray(value)
    where = f"{type(owner).__name__}.{name}"
    if array.dtype.kind not in "iu":
        raise TypeError(f"{where} must be an integer array ({np.dtype(dtype).name}), "
                        f"not dtype {array.dtype}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{where} must have shape {shape}, not {array.shape}")
    info = np.iinfo(dtype)
    low = info.min if low is None else low
    high = info.max if high is None else high
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"{where} must hold values in [{low}, {high}], "
                         f"found [{array.min()}, {array.max()}]")
    return _frozen(owner, name, array.astype(dtype))


def _int_in(owner, name, low, high):
    value = getattr(owner, name)
    where = f"{type(owner).__name__}.{name}"
    if not _is_int(value):
        raise TypeError(f"{where} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{where} must be in [{low}, {high}], not {value}")
    object.__setattr__(owner, name, int(value))


def _int_tuple(owner, name, length, low):
    value = getattr(owner, name)
    if not (isinstance(value, (tuple, list)) and len(value) == length
            and all(_is_int(v) and v >= low for v in value)):
        raise ValueError(f"{type(owner).__name__}.{name} must be a tuple of {length} integers "
                         f">= {low}, not {value!r}")
    object.__setattr__(owner, name, tuple(int(v) for v in value))


def _scales(owner, *names):
    """Store each named scale as the float32 value TFLite would hold."""
    for name in names:
        try:
            scale = tflite_scale(f"{type(owner).__name__}.{name}", getattr(owner, name))
        except TypeError as error:
            raise ValueError(str(error)) from None
        object.__setattr__(owner, name, scale)


def _activation_range(op):
    for name in ("act_min", "act_max"):
        _int_in(op, name, INT8_MIN, INT8_MAX)
    if op.act_min > op.act_max:
        raise ValueError(f"{type(op).__name__}.act_min ({op.act_min}) must not exceed "
                         f"act_max ({op.act_max})")


def _check_bias(layer, channels):
    """int32 ``bias`` [channels] and the int8 ``input_zero_point``; the bias with the zero point
    folded in (``folded_bias``, what the hardware adds) must fit int32."""
    _int_array(layer, "bias", layer.bias, np.int32, (channels,))
    _int_in(layer, "input_zero_point", INT8_MIN, INT8_MAX)
    try:
        fold_zero_point(layer.bias, layer.weight_matrix, layer.input_zero_point)
    except OverflowError as error:
        raise OverflowError(f"{type(layer).__name__}.bias with input_zero_point "
                            f"{layer.input_zero_point} folded in: {error}") from None


def _check_requant(layer, channels):
    """The requantization fields shared by `Dense`, `Conv2D` and `DepthwiseConv2D`."""
    _check_bias(layer, channels)
    multiplier = _int_array(layer, "multiplier", layer.multiplier, np.int64, (channels,),
                            0, INT32_MAX)
    bad = (multiplier != 0) & (multiplier < (1 << 30))
    if np.any(bad):
        raise ValueError(f"{type(layer).__name__}.multiplier must be 0 or in [2^30, 2^31) as "
                         f"quantize_multiplier returns, found {multiplier[bad][:4].tolist()}")
    _int_array(layer, "shift", layer.shift, np.int64, (channels,), -31, 0)
    _int_in(layer, "output_zero_point", INT8_MIN, INT8_MAX)
    _activation_range(layer)
    if layer.rounding not in ROUNDING_MODES:
        raise ValueError(f"{type(layer).__name__}.rounding must be one of {ROUNDING_MODES}, "
                         f"not {layer.rounding!r}")


def _check_window(op, kernel):
    """stride (sh, sw) >= 1 and padding (top, bottom, left, right) smaller than the window."""
    _int_tuple(op, "stride", 2, 1)
    _int_tuple(op, "padding", 4, 0)
    top, bottom, left, right = op.padding
    kh, kw = kernel
    if top >= kh or bottom >= kh or left >= kw or right >= kw:
        # TFLite SAME/VALID padding is always smaller than the window; more would create
        # windows made only of padding.
        raise ValueError(f"{type(op).__name__}.padding {op.padding} must be smaller than the "
                         f"{kh}x{kw} window on every side")


def _window_output_hw(op, kernel, input_shape):
    (kh, kw), (sh, sw) = kernel, op.stride
    top, bottom, left, right = op.padding
    height = conv_output_size(input_shape[0], kh, sh, top, bottom)
    width = conv_output_size(input_shape[1], kw, sw, left, right)
    if height < 1 or width < 1:
        raise ValueError(f"{type(op).__name__}: a {kh}x{kw} window with stride {op.stride} and "
                         f"padding {op.padding} does not fit an input of shape "
                         f"{tuple(input_shape)}")
    return height, width


def _requantize(layer, acc):
    return requantize(acc, layer.multiplier, layer.shift, layer.output_zero_point,
                      layer.act_min, layer.act_max, layer.rounding)


def _shape_error(layer, expected, input_shape):
    return ValueError(f"{type(layer).__name__} expects a per-sample input of shape {expected}, "
                      f"not {tuple(input_shape)}")


def _hwc_shape(op, input_shape, channels=None):
    if len(input_shape) != 3 or (channels is not None and input_shape[2] != channels):
        raise _shape_error(op, ("H", "W", "C" if channels is None else channels), input_shape)
    return tuple(input_shape)


# Input tensor checks (called from output_spec; the graph names the node) --------------------------

def _input_dtype(op, tensor, dtypes=("int8",)):
    if tensor.dtype not in dtypes:
        raise ValueError(f"input tensor {tensor.name!r} is {tensor.dtype}; "
                         f"{type(op).__name__} takes {' or '.join(dtypes)}")


def _stated_zero_point(op, field, tensor):
    stated = getattr(op, field)
    if tensor.zero_point != stated:
        raise ValueError(f"{field} is {stated} but input tensor {tensor.name!r} has zero point "
                         f"{tensor.zero_point}")


def _stated_scale(op, field, tensor):
    stated = getattr(op, field)
    if tensor.scale != stated:
        found = "no scale" if tensor.scale is None else f"scale {tensor.scale!r}"
        raise ValueError(f"{field} is {stated!r} but input tensor {tensor.name!r} has {found}")


def _stated_quantization(op, tensor, scale_field, zero_point_field):
    _input_dtype(op, tensor)
    _stated_scale(op, scale_field, tensor)
    _stated_zero_point(op, zero_point_field, tensor)


def _check_rescale(op):
    """input_scale, input_zero_point, output_scale, output_zero_point of a rescaling kind."""
    _scales(op, "input_scale", "output_scale")
    for name in ("input_zero_point", "output_zero_point"):
        _int_in(op, name, INT8_MIN, INT8_MAX)


def _same_as_input(tensor, shape=None):
    """The spec of an output that keeps its input's dtype and quantization."""
    return TensorSpec(tuple(tensor.shape) if shape is None else tuple(shape), tensor.dtype,
                      tensor.scale, tensor.zero_point)


# Requantizing layers -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class _DenseLayer:
    """What `Dense` and `DenseInt32` share: int8 weights [K, N] applied to a [K] input (int8, or
    binary: the +1/-1 values as int8 with input_zero_point 0), an int32 bias and the input zero
    point folded into it; the checks, the GEMM view and the output shape."""

    arity = 1

    weights: np.ndarray
    bias: np.ndarray
    input_zero_point: int = 0

    def _check_weights(self):
        weights = _int_array(self, "weights", self.weights, np.int8)
        if weights.ndim != 2 or 0 in weights.shape:
            raise ValueError(f"{type(self).__name__}.weights must be a non-empty 2-D [K, N] "
                             f"array, not shape {weights.shape}")
        return weights.shape[1]

    @property
    def input_features(self):
        return self.weights.shape[0]

    @property
    def output_features(self):
        return self.weights.shape[1]

    @property
    def weight_matrix(self):
        """The GEMM operand W, int8 [K, N]."""
        return self.weights

    @property
    def folded_bias(self):
        """int32 [N]: ``bias - input_zero_point * weights.sum(0)``, the bias the hardware adds."""
        return fold_zero_point(self.bias, self.weights, self.input_zero_point)

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.input_features,):
            raise _shape_error(self, (self.input_features,), input_shape)
        return (self.output_features,)

    def _check_input(self, x):
        _input_dtype(self, x, ("int8", "binary"))
        if x.dtype == "binary" and self.input_zero_point != 0:
            raise ValueError(f"input tensor {x.name!r} is binary (+1/-1 as int8, zero point 0) "
                             f"but input_zero_point is {self.input_zero_point}")
        if x.dtype == "int8":
            _stated_zero_point(self, "input_zero_point", x)
        return self.output_shape(x.shape)


@dataclass(frozen=True, eq=False, kw_only=True)
class Dense(_DenseLayer):
    """A quantized fully connected layer (TFLite FULLY_CONNECTED).

    weights : int8 [K, N]; bias : int32 [N] (the float bias / (input_scale * weight_scale[c]));
    multiplier, shift : per output channel, from `sim.reference.quantize_multiplier`
    (M0 in [2^30, 2^31) or 0, shift in [-31, 0]); input_zero_point, output_zero_point, act_min,
    act_max : int8 (a fused ReLU is ``act_min = output_zero_point``); rounding : "single" as
    FULLY_CONNECTED runs it in current LiteRT ("double" accepted for other runtimes).
    The input may be a binary tensor (the +1/-1 values as int8, input_zero_point 0): the INT8
    layer after binary hidden layers, as FINN networks end.
    """

    multiplier: np.ndarray
    shift: np.ndarray
    output_zero_point: int = 0
    act_min: int = INT8_MIN
    act_max: int = INT8_MAX
    rounding: str = "single"

    def __post_init__(self):
        _check_requant(self, self._check_weights())

    def output_spec(self, inputs):
        (x,) = inputs
        return TensorSpec(self._check_input(x), "int8", None, self.output_zero_point)

    def run(self, x):
        """int8 [M, K] -> int8 [M, N]."""
        return _requantize(self, gemm(x, self.weights, self.folded_bias))


@dataclass(frozen=True, eq=False, kw_only=True)
class DenseInt32(_DenseLayer):
    """A fully connected layer without requantization: the raw int32 accumulators
    ``gemm(x, weights, folded_bias)`` (what `Accelerator.matmul_int32` returns; ONNX's
    MatMulInteger with a bias).

    weights : int8 [K, N]; bias : int32 [N]; input_zero_point : int8, folded into the bias. The
    input is int8 or binary (as for `Dense`). `run` raises OverflowError when a result leaves
    int32, as `sim.reference.gemm` does.
    """

    def __post_init__(self):
        _check_bias(self, self._check_weights())

    def output_spec(self, inputs):
        (x,) = inputs
        return TensorSpec(self._check_input(x), "int32", None, 0)

    def run(self, x):
        """int8 [M, K] -> int32 [M, N]."""
        return gemm(x, self.weights, self.folded_bias)


@dataclass(frozen=True, eq=False, kw_only=True)
class _WindowLayer:
    """What `Conv2D` and `DepthwiseConv2D` share: int8 weights [KH, KW, Cin, ...] slid over an
    NHWC input with `stride` and `padding` (filled with the input zero point), then requantized
    per output channel; the fields and checks, the GEMM view and the output shape. A subclass
    names its weight layout and its output channel count."""

    arity = 1
    weights_layout = ""         # for the error message, e.g. "HWIO [KH, KW, Cin, Cout]"

    weights: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    input_zero_point: int = 0
    output_zero_point: int = 0
    act_min: int = INT8_MIN
    act_max: int = INT8_MAX
    rounding: str = "double"

    def __post_init__(self):
        self._check_kernel()
        _check_requant(self, self.out_channels)

    def _check_kernel(self):
        weights = _int_array(self, "weights", self.weights, np.int8)
        if weights.ndim != 4 or 0 in weights.shape:
            raise ValueError(f"{type(self).__name__}.weights must be a non-empty "
                             f"{self.weights_layout} array, not shape {weights.shape}")
        _check_window(self, weights.shape[:2])

    @property
    def kernel_size(self):
        return self.weights.shape[:2]

    @property
    def in_channels(self):
        return self.weights.shape[2]

    @property
    def weight_matrix(self):
        """The GEMM operand, int8 [KH*KW*(Cin or 1), out_channels]; see the subclass."""
        return self.weights.reshape(-1, self.out_channels)

    @property
    def folded_bias(self):
        """int32 [out_channels]: ``bias - input_zero_point * (sum of the channel's taps)``, the
        bias the hardware adds."""
        return fold_zero_point(self.bias, self.weight_matrix, self.input_zero_point)

    def conv_output_shape(self, input_shape):
        """(Ho, Wo, out_channels) of the window over `input_shape` (H, W, Cin)."""
        input_shape = _hwc_shape(self, tuple(input_shape), self.in_channels)
        return (*_window_output_hw(self, self.kernel_size, input_shape), self.out_channels)

    def output_shape(self, input_shape):
        return self.conv_output_shape(input_shape)

    def output_spec(self, inputs):
        (x,) = inputs
        _input_dtype(self, x)
        _stated_zero_point(self, "input_zero_point", x)
        return TensorSpec(self.output_shape(x.shape), "int8", None, self.output_zero_point)


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv2D(_WindowLayer):
    """A quantized NHWC convolution (TFLite CONV_2D), optionally followed by a 2x2 max-pool.

    weights : int8 HWIO [KH, KW, Cin, Cout]; bias : int32 [Cout]; stride : (sh, sw);
    padding : (top, bottom, left, right), filled with the input zero point; multiplier, shift,
    zero points, act_min/act_max as in `Dense`; rounding : "double" as CONV_2D runs it;
    pool : a stride-2 2x2 max-pool applied to the requantized int8 output (VALID: an odd last
    row/column is dropped). Max-pool commutes with the monotonic requantization, so pooling after
    it equals TFLite's CONV_2D followed by MAX_POOL_2D (`MaxPool2D` is the standalone kind).
    The GEMM operand (`weight_matrix`) is int8 [KH*KW*Cin, Cout] in im2col column order
    (kh, kw, cin).
    """

    weights_layout = "HWIO [KH, KW, Cin, Cout]"

    pool: bool = False

    def __post_init__(self):
        self._check_kernel()
        if not isinstance(self.pool, bool):
            raise TypeError(f"Conv2D.pool must be a bool, not {self.pool!r}")
        _check_requant(self, self.out_channels)

    @property
    def out_channels(self):
        return self.weights.shape[3]

    def output_shape(self, input_shape):
        height, width, channels = self.conv_output_shape(input_shape)
        if not self.pool:
            return height, width, channels
        if height < 2 or width < 2:
            raise ValueError(f"Conv2D: the 2x2 max-pool needs at least a 2x2 output, "
                             f"not {height}x{width}")
        return height // 2, width // 2, channels

    def run(self, x):
        """int8 [B, H, W, Cin] -> int8 [B, Ho, Wo, Cout] (halved by the pool)."""
        acc = conv2d(x, self.weights, self.bias, self.stride, self.padding,
                     self.input_zero_point)
        y = _requantize(self, acc)
        return max_pool2x2(y) if self.pool else y


@dataclass(frozen=True, eq=False, kw_only=True)
class DepthwiseConv2D(_WindowLayer):
    """A quantized NHWC depthwise convolution (TFLite DEPTHWISE_CONV_2D).

    weights : int8 [KH, KW, Cin, M] (M the depth multiplier; output channel c*M + m, TFLite's
    [1, KH, KW, Cin*M] filter reshaped); bias, multiplier, shift : per output channel [Cin*M];
    stride, padding as `Conv2D` (padding filled with the input zero point); zero points,
    act_min/act_max; rounding : "double" as LiteRT's builtin and reference kernels run it,
    "single" as its default interpreter (XNNPACK) does. The GEMM operand (`weight_matrix`) is
    int8 [KH*KW, Cin*M]: column c*M + m holds the taps of output channel c*M + m.
    """

    weights_layout = "[KH, KW, Cin, M]"

    @property
    def out_channels(self):
        return self.weights.shape[2] * self.weights.shape[3]

    def run(self, x):
        """int8 [B, H, W, Cin] -> int8 [B, Ho, Wo, Cin*M]."""
        acc = depthwise_conv2d(x, self.weights, self.bias, self.stride, self.padding,
                               self.input_zero_point)
        return _requantize(self, acc)


# Shape-only kinds --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class Flatten:
    """[B, H, W, C] -> [B, H*W*C] in NHWC (h, w, c) order: a relabelling, no arithmetic."""

    arity = 1

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise _shape_error(self, ("H", "W", "C"), input_shape)
        return (int(np.prod(input_shape)),)

    def output_spec(self, inputs):
        (x,) = inputs
        return _same_as_input(x, self.output_shape(x.shape))

    def run(self, x):
        return x.reshape(x.shape[0], -1)


@dataclass(frozen=True, eq=False, kw_only=True)
class Reshape:
    """TFLite RESHAPE of one sample to `shape` (positive integers, same element count), row-major
    (NHWC) order; dtype and quantization unchanged."""

    arity = 1

    shape: tuple

    def __post_init__(self):
        if not (isinstance(self.shape, (tuple, list)) and self.shape
                and all(_is_int(v) and v > 0 for v in self.shape)):
            raise ValueError(f"Reshape.shape must be a tuple of positive integers, "
                             f"not {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))

    def output_spec(self, inputs):
        (x,) = inputs
        if np.prod(x.shape) != np.prod(self.shape):
            raise ValueError(f"cannot reshape input tensor {x.name!r} of shape {tuple(x.shape)} "
                             f"({int(np.prod(x.shape))} elements) to {self.shape}")
        return _same_as_input(x, self.shape)

    def run(self, x):
        return x.reshape(x.shape[0], *self.shape)


# Binary section and its boundary -----------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class BinaryDense:
    """A W1A1 fully connected layer on the XNOR-popcount engine.

    weights : +1/-1 int8 [N, K], one row per output neuron (`from_packed` takes pack_bits rows);
    thresholds : int32 [N] and ascending : bool [N] (from `sim.reference.fold_batchnorm_sign`)
    for a hidden layer whose output is +1/-1 (binary), or both None for an output layer
    returning the int32 dots ``K - 2*popcount(a XOR w)``.
    """

    arity = 1

    weights: np.ndarray
    thresholds: np.ndarray = None
    ascending: np.ndarray = None

    def __post_init__(self):
        weights = np.asarray(self.weights)
        if weights.dtype.kind not in "iu":
            raise TypeError(f"BinaryDense.weights must be an integer +1/-1 array, "
                            f"not dtype {weights.dtype}")
        if weights.ndim != 2 or 0 in weights.shape:
            raise ValueError(f"BinaryDense.weights must be a non-empty 2-D [N, K] array, "
                             f"not shape {weights.shape}")
        if not np.all((weights == 1) | (weights == -1)):
            raise ValueError("BinaryDense.weights must hold only +1 and -1")
        _frozen(self, "weights", weights.astype(np.int8))
        if (self.thresholds is None) != (self.ascending is None):
            raise ValueError("BinaryDense.thresholds and ascending must both be given (hidden "
                             "layer) or both be None (output layer with int dots)")
        if self.thresholds is not None:
            _check_thresholds(self, weights.shape[0])

    @classmethod
    def from_packed(cls, packed_weights, k, *, thresholds=None, ascending=None):
        """From uint8 [N, ceil(K/8)] rows packed as `sim.reference.pack_bits` does."""
        return cls(weights=unpack_bits(packed_weights, k), thresholds=thresholds,
                   ascending=ascending)

    @property
    def k(self):
        return self.weights.shape[1]

    @property
    def units(self):
        return self.weights.shape[0]

    @property
    def is_output(self):
        return self.thresholds is None

    @property
    def packed_weights(self):
        """uint8 [N, ceil(K/8)]: bit k % 8 of byte k // 8 is weight k (1 = +1)."""
        return pack_bits(self.weights)

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.k,):
            raise _shape_error(self, (self.k,), input_shape)
        return (self.units,)

    def output_spec(self, inputs):
        (x,) = inputs
        _input_dtype(self, x, ("binary",))
        if self.is_output:
            return TensorSpec(self.output_shape(x.shape), "int32", None, 0)
        return TensorSpec(self.output_shape(x.shape), "binary")

    def run(self, x):
        """+1/-1 [M, K] -> +1/-1 int8 [M, N] (hidden) or int32 dots [M, N] (output)."""
        dot = binary_dense(pack_bits(x), self.packed_weights, self.k)
        return dot if self.is_output else threshold_activation(dot, self.thresholds,
                                                               self.ascending)


def _check_thresholds(op, channels):
    # |dot| <= K, so thresholds beyond +-(K+1) add nothing, but fold_batchnorm_sign encodes a
    # constant channel as INT32_MIN/INT32_MAX: the full int32 range is allowed.
    _int_array(op, "thresholds", op.thresholds, np.int32, (channels,))
    ascending = np.asarray(op.ascending)
    if ascending.dtype != bool or ascending.shape != (channels,):
        raise ValueError(f"{type(op).__name__}.ascending must be a bool array of shape "
                         f"({channels},), not {ascending.dtype} {ascending.shape}")
    _frozen(op, "ascending", ascending)


@dataclass(frozen=True, eq=False, kw_only=True)
class Sign:
    """The INT8 -> binary boundary: per channel (last axis) +1 where ``x >= thresholds[c]``
    (ascending) or ``x <= thresholds[c]`` (descending), else -1.

    thresholds : int32 [C] on the int8 values as stored (zero point included), e.g. a folded
    BatchNorm+sign (`sim.reference.fold_batchnorm_sign`) or FINN's MultiThreshold with one step;
    ascending : bool [C], all True by default.
    """

    arity = 1

    thresholds: np.ndarray
    ascending: np.ndarray = None

    def __post_init__(self):
        thresholds = np.asarray(self.thresholds)
        if thresholds.ndim != 1 or not thresholds.size:
            raise ValueError(f"Sign.thresholds must be a non-empty 1-D [C] array, "
                             f"not shape {thresholds.shape}")
        if self.ascending is None:
            object.__setattr__(self, "ascending", np.ones(thresholds.shape, bool))
        _check_thresholds(self, len(thresholds))

    def output_spec(self, inputs):
        (x,) = inputs
        _input_dtype(self, x)
        if not x.shape or x.shape[-1] != len(self.thresholds):
            raise ValueError(f"input tensor {x.name!r} of shape {tuple(x.shape)} must have "
                             f"{len(self.thresholds)} channels (one per threshold) last")
        return TensorSpec(tuple(x.shape), "binary")

    def run(self, x):
        """int8 [B, ..., C] -> +1/-1 int8 [B, ..., C]."""
        return threshold_activation(x, self.thresholds, self.ascending)


# TFLite element-wise, pooling and shape kinds -----------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class Add:
    """TFLite int8 ADD of two same-shape tensors, each with its own scale and zero point.

    input1_scale, input1_zero_point, input2_scale, input2_zero_point, output_scale,
    output_zero_point : the tensors' quantization; act_min/act_max : fused activation.
    The integers the kernel uses (left shift 20, per-input and output M0/shift) are
    `multipliers`, derived as TFLite's Prepare does (`sim.reference.add_multipliers`).
    """

    arity = 2

    input1_scale: float
    input1_zero_point: int
    input2_scale: float
    input2_zero_point: int
    output_scale: float
    output_zero_point: int
    act_min: int = INT8_MIN
    act_max: int = INT8_MAX

    def __post_init__(self):
        _scales(self, "input1_scale", "input2_scale", "output_scale")
        for name in ("input1_zero_point", "input2_zero_point", "output_zero_point"):
            _int_in(self, name, INT8_MIN, INT8_MAX)
        _activation_range(self)
        try:
            self.multipliers
        except ValueError as error:
            raise ValueError(f"Add: {error}") from None

    @property
    def multipliers(self):
        """((M1, shift1), (M2, shift2), (M_out, shift_out)), see `add_multipliers`."""
        return add_multipliers(self.input1_scale, self.input2_scale, self.output_scale)

    def output_spec(self, inputs):
        first, second = inputs
        _stated_quantization(self, first, "input1_scale", "input1_zero_point")
        _stated_quantization(self, second, "input2_scale", "input2_zero_point")
        if tuple(first.shape) != tuple(second.shape):
            raise ValueError(f"input tensors {first.name!r} {tuple(first.shape)} and "
                             f"{second.name!r} {tuple(second.shape)} must have one shape "
                             f"(no broadcasting)")
        return TensorSpec(tuple(first.shape), "int8", self.output_scale, self.output_zero_point)

    def run(self, x1, x2):
        return add(x1, x2, input1_scale=self.input1_scale,
                   input1_zero_point=self.input1_zero_point, input2_scale=self.input2_scale,
                   input2_zero_point=self.input2_zero_point, output_scale=self.output_scale,
                   output_zero_point=self.output_zero_point, act_min=self.act_min,
                   act_max=self.act_max)


@dataclass(frozen=True, eq=False, kw_only=True)
class _Pool2D:
    """Shared fields of the pooling kinds: pool_size (kh, kw), stride (sh, sw), padding
    (top, bottom, left, right) smaller than the window, act_min/act_max. The output keeps the
    input's scale and zero point, as TFLite requires."""

    arity = 1

    pool_size: tuple
    stride: tuple
    padding: tuple = (0, 0, 0, 0)
    act_min: int = INT8_MIN
    act_max: int = INT8_MAX

    def __post_init__(self):
        _int_tuple(self, "pool_size", 2, 1)
        _check_window(self, self.pool_size)
        _activation_range(self)

    def output_spec(self, inputs):
        (x,) = inputs
        _input_dtype(self, x)
        shape = _hwc_shape(self, x.shape)
        return _same_as_input(x, (*_window_output_hw(self, self.pool_size, shape), shape[2]))


class MaxPool2D(_Pool2D):
    """TFLite MAX_POOL_2D: the max of each window's in-image elements (padding ignored)."""

    def run(self, x):
        return max_pool2d(x, self.pool_size, self.stride, self.padding, self.act_min,
                          self.act_max)


@dataclass(frozen=True, eq=False, kw_only=True)
class AveragePool2D(_Pool2D):
    """Each window's in-image mean, in the rounding form of the model's runtime
    (`sim.reference.average_pool2d`):

    rounding : "half_away_from_zero" (TFLite AVERAGE_POOL_2D; the output keeps the input's
    scale and zero point, and the four quantization fields stay None) or
    "float32_half_to_even" (onnxruntime's float AveragePool between DequantizeLinear and
    QuantizeLinear); the latter states input_scale, input_zero_point (the input tensor's) and
    output_scale, output_zero_point (the output's, which may differ).
    """

    rounding: str = "half_away_from_zero"
    input_scale: float = None
    input_zero_point: int = None
    output_scale: float = None
    output_zero_point: int = None

    _QUANTIZATION = ("input_scale", "input_zero_point", "output_scale", "output_zero_point")

    def __post_init__(self):
        super().__post_init__()
        if self.rounding not in AVERAGE_ROUNDINGS:
            raise ValueError(f"AveragePool2D.rounding must be one of {AVERAGE_ROUNDINGS}, "
                             f"not {self.rounding!r}")
        stated = [getattr(self, name) is not None for name in self._QUANTIZATION]
        if self.rounding == "half_away_from_zero":
            if any(stated):
                raise ValueError("AveragePool2D with rounding half_away_from_zero keeps its "
                                 "input's quantization: leave input_scale, input_zero_point, "
                                 "output_scale and output_zero_point None")
            return
        if not all(stated):
            raise ValueError(f"AveragePool2D with rounding {self.rounding} needs input_scale, "
                             f"input_zero_point, output_scale and output_zero_point")
        _check_rescale(self)

    def output_spec(self, inputs):
        spec = super().output_spec(inputs)
        if self.rounding == "half_away_from_zero":
            return spec
        _stated_quantization(self, inputs[0], "input_scale", "input_zero_point")
        return TensorSpec(spec.shape, "int8", self.output_scale, self.output_zero_point)

    def run(self, x):
        requantization = None if self.rounding == "half_away_from_zero" else tuple(
            getattr(self, name) for name in self._QUANTIZATION)
        return average_pool2d(x, self.pool_size, self.stride, self.padding, self.act_min,
                              self.act_max, rounding=self.rounding,
                              requantization=requantization)


@dataclass(frozen=True, eq=False, kw_only=True)
class Mean:
    """TFLite MEAN over H and W (global average pool): int8 [H, W, C] -> int8 [C], rescaled from
    (input_scale, input_zero_point) to (output_scale, output_zero_point) as LiteRT's reference
    kernel does (`sim.reference.mean_hw`; keep_dims=False)."""

    arity = 1

    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int

    def __post_init__(self):
        _check_rescale(self)

    def output_spec(self, inputs):
        (x,) = inputs
        _stated_quantization(self, x, "input_scale", "input_zero_point")
        shape = _hwc_shape(self, x.shape)
        return TensorSpec((shape[2],), "int8", self.output_scale, self.output_zero_point)

    def run(self, x):
        return mean_hw(x, input_scale=self.input_scale, input_zero_point=self.input_zero_point,
                       output_scale=self.output_scale, output_zero_point=self.output_zero_point)


@dataclass(frozen=True, eq=False, kw_only=True)
class Requantize:
    """TFLite QUANTIZE int8 -> int8: from (input_scale, input_zero_point) to (output_scale,
    output_zero_point), `sim.reference.requantize_int8`."""

    arity = 1

    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int

    def __post_init__(self):
        _check_rescale(self)

    def output_spec(self, inputs):
        (x,) = inputs
        _stated_quantization(self, x, "input_scale", "input_zero_point")
        return TensorSpec(tuple(x.shape), "int8", self.output_scale, self.output_zero_point)

    def run(self, x):
        return requantize_int8(x, input_scale=self.input_scale,
                               input_zero_point=self.input_zero_point,
                               output_scale=self.output_scale,
                               output_zero_point=self.output_zero_point)


@dataclass(frozen=True, eq=False, kw_only=True)
class Concat:
    """Concatenation of int8 tensors on the channel (last) axis.

    input_scales, input_zero_points : one per input, as the input tensors state them;
    output_scale, output_zero_point : the output's. An input quantized differently from the
    output is rescaled exactly as the QUANTIZE that TFLite's converter puts before an int8
    CONCATENATION (which itself requires equal quantization); the others are copied.
    """

    arity = None          # two or more inputs

    input_scales: tuple
    input_zero_points: tuple
    output_scale: float
    output_zero_point: int

    def __post_init__(self):
        for name in ("input_scales", "input_zero_points"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or len(value) < 2:
                raise ValueError(f"Concat.{name} must be a tuple with one entry per input "
                                 f"(two or more), not {value!r}")
        if len(self.input_scales) != len(self.input_zero_points):
            raise ValueError(f"Concat.input_scales ({len(self.input_scales)}) and "
                             f"input_zero_points ({len(self.input_zero_points)}) must have one "
                             f"entry per input")
        object.__setattr__(self, "input_scales", tuple(
            tflite_scale(f"Concat.input_scales[{index}]", scale)
            for index, scale in enumerate(self.input_scales)))
        if not all(_is_int(v) and INT8_MIN <= v <= INT8_MAX for v in self.input_zero_points):
            raise ValueError(f"Concat.input_zero_points must be integers in "
                             f"[{INT8_MIN}, {INT8_MAX}], not {self.input_zero_points!r}")
        object.__setattr__(self, "input_zero_points", tuple(map(int, self.input_zero_points)))
        _scales(self, "output_scale")
        _int_in(self, "output_zero_point", INT8_MIN, INT8_MAX)

    @property
    def inputs_count(self):
        return len(self.input_scales)

    def output_spec(self, inputs):
        if len(inputs) != self.inputs_count:
            raise ValueError(f"{len(inputs)} input tensors for {self.inputs_count} stated "
                             f"input quantizations")
        for tensor, scale, zero_point in zip(inputs, self.input_scales, self.input_zero_points):
            _input_dtype(self, tensor)
            found = (tensor.scale, tensor.zero_point)
            if found != (scale, zero_point):
                raise ValueError(f"input tensor {tensor.name!r} has (scale, zero point) {found} "
                                 f"but Concat states {(scale, zero_point)}")
            if not tensor.shape or tuple(tensor.shape[:-1]) != tuple(inputs[0].shape[:-1]):
                raise ValueError(f"input tensor {tensor.name!r} of shape {tuple(tensor.shape)} "
                                 f"must match {inputs[0].name!r} {tuple(inputs[0].shape)} on "
                                 f"every axis but the last")
        channels = sum(tensor.shape[-1] for tensor in inputs)
        return TensorSpec((*inputs[0].shape[:-1], channels), "int8", self.output_scale,
                          self.output_zero_point)

    def run(self, *xs):
        return concatenate(xs, input_quantizations=list(zip(self.input_scales,
                                                            self.input_zero_points)),
                           output_scale=self.output_scale,
                           output_zero_point=self.output_zero_point)


@dataclass(frozen=True, eq=False, kw_only=True)
class Pad:
    """TFLite PAD: pads[i] = (before, after) elements added on per-sample axis i, filled with
    zero_point (which must be the input tensor's; the output keeps its quantization)."""

    arity = 1

    pads: tuple
    zero_point: int = 0

    def __post_init__(self):
        pads = self.pads
        if not (isinstance(pads, (tuple, list)) and pads and all(
                isinstance(p, (tuple, list)) and len(p) == 2
                and all(_is_int(v) and v >= 0 for v in p) for p in pads)):
            raise ValueError(f"Pad.pads must be a tuple of (before, after) pairs of integers "
                             f">= 0, one per per-sample axis, not {pads!r}")
        object.__setattr__(self, "pads", tuple((int(a), int(b)) for a, b in pads))
        _int_in(self, "zero_point", INT8_MIN, INT8_MAX)

    def output_spec(self, inputs):
        (x,) = inputs
        _input_dtype(self, x)
        _stated_zero_point(self, "zero_point", x)
        if len(x.shape) != len(self.pads):
            raise ValueError(f"input tensor {x.name!r} of shape {tuple(x.shape)} needs one "
                             f"(before, after) pair per axis, not {len(self.pads)}")
        return _same_as_input(x, [size + a + b for size, (a, b) in zip(x.shape, self.pads)])

    def run(self, x):
        return pad(x, self.pads, self.zero_point)


@dataclass(frozen=True, eq=False, kw_only=True)
class Softmax:
    """Softmax over the last axis, int8 -> int8 with TFLite's output quantization (scale 1/256,
    zero point -128). A HOST FLOAT kernel (`sim.reference.softmax_int8`): not bit-exact with
    LiteRT's int8 SOFTMAX. input_scale, input_zero_point : the input's; beta : > 0."""

    arity = 1

    input_scale: float
    input_zero_point: int
    beta: float = 1.0

    def __post_init__(self):
        _scales(self, "input_scale")
        _int_in(self, "input_zero_point", INT8_MIN, INT8_MAX)
        if not isinstance(self.beta, (int, float)) or isinstance(self.beta, bool) \
                or not np.isfinite(self.beta) or self.beta <= 0:
            raise ValueError(f"Softmax.beta must be a finite number > 0, not {self.beta!r}")

    def output_spec(self, inputs):
        (x,) = inputs
        _stated_quantization(self, x, "input_scale", "input_zero_point")
        return TensorSpec(tuple(x.shape), "int8", SOFTMAX_OUTPUT_SCALE, SOFTMAX_OUTPUT_ZERO_POINT)

    def run(self, x):
        return softmax_int8(x, input_scale=self.input_scale, beta=self.beta)


OPERATIONS = (Dense, DenseInt32, Conv2D, DepthwiseConv2D, Flatten, Reshape, BinaryDense, Sign, Add,
              MaxPool2D, AveragePool2D, Mean, Concat, Requantize, Pad, Softmax)
