"""Quantized network descriptions and their NumPy reference executor.

A `QuantizedModel` is what the host hands the accelerator: a tuple of layers plus how float inputs
become the integers the first layer takes (`Int8Input` or `SignInput`) and how the last layer's
integers become scores. Every layer is a frozen dataclass whose arrays are checked (dtype, shape,
range) and made read-only on construction, so a model that exists is a model the hardware can
run. `run_reference` executes a model with `sim.reference` functions only; it is the definition
of what running the model on the hardware must return, layer by layer (`run_reference_layers`).

Per-layer contract (what the hardware execution must reproduce bit-exactly; x is the previous
layer's output, batch first)::

    Dense      acc = gemm(x, weights, folded_bias)        folded_bias = fold_zero_point(bias,
               y   = requantize(acc, multiplier, shift,                  weights, input_zero_point)
                                output_zero_point, act_min, act_max, rounding)   int8 [M, N]
    Conv2D     acc = conv2d(x, weights, bias, stride, padding, input_zero_point)
                     (= im2col(x, pad_value=input_zero_point) @ weight_matrix + folded_bias)
               y   = requantize(acc, ... rounding)                    int8 [B, Ho, Wo, Cout]
               y   = max_pool2x2(y) when pool                         (after requant, odd edge
                                                                        rows/columns dropped)
    Flatten    y   = x.reshape(B, -1)        NHWC order (h, w, c): no data moves on chip
    BinaryDense dot = binary_dense(pack_bits(x), pack_bits(weights), k)         int32 [M, N]
               y   = threshold_activation(dot, thresholds, ascending)  +1/-1 [M, N] (hidden)
               y   = dot                                               (thresholds=None: last)

The requant parameters are what the hardware's parameter memory holds per output channel: the
int32 `folded_bias`, M0 (`multiplier`, in [2^30, 2^31)) and the right shift ``-shift`` (0..31);
`shift` itself is kept as `sim.reference.quantize_multiplier` returns it (<= 0). Input zero
points never reach the hardware: they are folded into the bias, and a convolution's padding is
filled with the input zero point so that the folding stays exact at the borders.

A model is either all INT8 (`Dense`, `Conv2D`, `Flatten`) or all binary (`BinaryDense`); every
hidden binary layer thresholds, only the last may output int dots. Consecutive INT8 layers must
agree on the zero point between them (``output_zero_point`` of one = ``input_zero_point`` of the
next), and shapes must chain from `QuantizedModel.input_shape`.
"""

from dataclasses import dataclass

import numpy as np

from sim.reference import (INT8_MAX, INT8_MIN, INT32_MAX, ROUNDING_MODES,
                           binary_dense, conv2d, conv_output_size, fold_zero_point, gemm,
                           max_pool2x2, pack_bits, requantize, threshold_activation, unpack_bits)
from sw.quantize import quantize

__all__ = ["Dense", "Conv2D", "Flatten", "BinaryDense", "Int8Input", "SignInput",
           "QuantizedModel", "run_reference", "run_reference_layers"]


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


def _check_requant(layer, channels):
    """The requantization fields shared by `Dense` and `Conv2D`."""
    _int_array(layer, "bias", layer.bias, np.int32, (channels,))
    multiplier = _int_array(layer, "multiplier", layer.multiplier, np.int64, (channels,),
                            0, INT32_MAX)
    bad = (multiplier != 0) & (multiplier < (1 << 30))
    if np.any(bad):
        raise ValueError(f"{type(layer).__name__}.multiplier must be 0 or in [2^30, 2^31) as "
                         f"quantize_multiplier returns, found {multiplier[bad][:4].tolist()}")
    _int_array(layer, "shift", layer.shift, np.int64, (channels,), -31, 0)
    for name in ("input_zero_point", "output_zero_point", "act_min", "act_max"):
        _int_in(layer, name, INT8_MIN, INT8_MAX)
    if layer.act_min > layer.act_max:
        raise ValueError(f"{type(layer).__name__}.act_min ({layer.act_min}) must not exceed "
                         f"act_max ({layer.act_max})")
    if layer.rounding not in ROUNDING_MODES:
        raise ValueError(f"{type(layer).__name__}.rounding must be one of {ROUNDING_MODES}, "
                         f"not {layer.rounding!r}")
    # The folded bias is what the hardware adds; it must fit its int32 accumulator lanes.
    try:
        fold_zero_point(layer.bias, layer.weight_matrix, layer.input_zero_point)
    except OverflowError as error:
        raise OverflowError(f"{type(layer).__name__}.bias with input_zero_point "
                            f"{layer.input_zero_point} folded in: {error}") from None


def _requantize(layer, acc):
    return requantize(acc, layer.multiplier, layer.shift, layer.output_zero_point,
                      layer.act_min, layer.act_max, layer.rounding)


def _shape_error(layer, expected, input_shape):
    return ValueError(f"{type(layer).__name__} expects a per-sample input of shape {expected}, "
                      f"not {tuple(input_shape)}")


# INT8 layers -------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class Dense:
    """A quantized fully connected layer (TFLite FULLY_CONNECTED).

    weights : int8 [K, N]; bias : int32 [N] (the float bias / (input_scale * weight_scale[c]));
    multiplier, shift : per output channel, from `sim.reference.quantize_multiplier`
    (M0 in [2^30, 2^31) or 0, shift in [-31, 0]); input_zero_point, output_zero_point, act_min,
    act_max : int8 (a fused ReLU is ``act_min = output_zero_point``); rounding : "single" as
    FULLY_CONNECTED runs it in current LiteRT ("double" accepted for other runtimes).
    """

    weights: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    input_zero_point: int = 0
    output_zero_point: int = 0
    act_min: int = INT8_MIN
    act_max: int = INT8_MAX
    rounding: str = "single"

    def __post_init__(self):
        weights = _int_array(self, "weights", self.weights, np.int8)
        if weights.ndim != 2 or 0 in weights.shape:
            raise ValueError(f"Dense.weights must be a non-empty 2-D [K, N] array, "
                             f"not shape {weights.shape}")
        _check_requant(self, weights.shape[1])

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

    def run(self, x):
        """int8 [M, K] -> int8 [M, N]."""
        return _requantize(self, gemm(x, self.weights, self.folded_bias))


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv2D:
    """A quantized NHWC convolution (TFLite CONV_2D), optionally followed by a 2x2 max-pool.

    weights : int8 HWIO [KH, KW, Cin, Cout]; bias : int32 [Cout]; stride : (sh, sw);
    padding : (top, bottom, left, right), filled with the input zero point; multiplier, shift,
    zero points, act_min/act_max as in `Dense`; rounding : "double" as CONV_2D runs it;
    pool : a stride-2 2x2 max-pool applied to the requantized int8 output (VALID: an odd last
    row/column is dropped). Max-pool commutes with the monotonic requantization, so pooling after
    it equals TFLite's CONV_2D followed by MAX_POOL_2D.
    """

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
    pool: bool = False

    def __post_init__(self):
        weights = _int_array(self, "weights", self.weights, np.int8)
        if weights.ndim != 4 or 0 in weights.shape:
            raise ValueError(f"Conv2D.weights must be a non-empty HWIO [KH, KW, Cin, Cout] array, "
                             f"not shape {weights.shape}")
        for name, length, low in (("stride", 2, 1), ("padding", 4, 0)):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and len(value) == length
                    and all(_is_int(v) and v >= low for v in value)):
                raise ValueError(f"Conv2D.{name} must be a tuple of {length} integers >= {low}, "
                                 f"not {value!r}")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        top, bottom, left, right = self.padding
        kh, kw = weights.shape[:2]
        if top >= kh or bottom >= kh or left >= kw or right >= kw:
            # TFLite SAME/VALID padding is always smaller than the kernel; more would create
            # windows made only of padding.
            raise ValueError(f"Conv2D.padding {self.padding} must be smaller than the "
                             f"{kh}x{kw} kernel on every side")
        if not isinstance(self.pool, bool):
            raise TypeError(f"Conv2D.pool must be a bool, not {self.pool!r}")
        _check_requant(self, weights.shape[3])

    @property
    def kernel_size(self):
        return self.weights.shape[:2]

    @property
    def in_channels(self):
        return self.weights.shape[2]

    @property
    def out_channels(self):
        return self.weights.shape[3]

    @property
    def weight_matrix(self):
        """The GEMM operand, int8 [KH*KW*Cin, Cout] in im2col column order (kh, kw, cin)."""
        return self.weights.reshape(-1, self.out_channels)

    @property
    def folded_bias(self):
        """int32 [Cout]: ``bias - input_zero_point * weights.sum((0, 1, 2))``."""
        return fold_zero_point(self.bias, self.weight_matrix, self.input_zero_point)

    def conv_output_shape(self, input_shape):
        """(Ho, Wo, Cout) before the optional pool."""
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[2] != self.in_channels:
            raise _shape_error(self, ("H", "W", self.in_channels), input_shape)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom, left, right = self.padding
        height = conv_output_size(input_shape[0], kh, sh, top, bottom)
        width = conv_output_size(input_shape[1], kw, sw, left, right)
        if height < 1 or width < 1:
            raise ValueError(f"Conv2D: a {kh}x{kw} kernel with stride {self.stride} and padding "
                             f"{self.padding} does not fit an input of shape {input_shape}")
        return height, width, self.out_channels

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
class Flatten:
    """[B, H, W, C] -> [B, H*W*C] in NHWC (h, w, c) order: a relabelling, no arithmetic."""

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise _shape_error(self, ("H", "W", "C"), input_shape)
        return (int(np.prod(input_shape)),)

    def run(self, x):
        return x.reshape(x.shape[0], -1)


# Binary layer ------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class BinaryDense:
    """A W1A1 fully connected layer on the XNOR-popcount engine.

    weights : +1/-1 int8 [N, K], one row per output neuron (`from_packed` takes pack_bits rows);
    thresholds : int32 [N] and ascending : bool [N] (from `sim.reference.fold_batchnorm_sign`)
    for a hidden layer whose output is +1/-1, or both None for an output layer returning the
    int32 dots ``K - 2*popcount(a XOR w)``.
    """

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
        if self.thresholds is None:
            return
        channels = weights.shape[0]
        # |dot| <= K, so thresholds beyond +-(K+1) add nothing, but fold_batchnorm_sign encodes
        # a constant channel as INT32_MIN/INT32_MAX: the full int32 range is allowed.
        _int_array(self, "thresholds", self.thresholds, np.int32, (channels,))
        ascending = np.asarray(self.ascending)
        if ascending.dtype != bool or ascending.shape != (channels,):
            raise ValueError(f"BinaryDense.ascending must be a bool array of shape ({channels},), "
                             f"not {ascending.dtype} {ascending.shape}")
        _frozen(self, "ascending", ascending)

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

    def run(self, x):
        """+1/-1 [M, K] -> +1/-1 int8 [M, N] (hidden) or int32 dots [M, N] (output)."""
        dot = binary_dense(pack_bits(x), self.packed_weights, self.k)
        return dot if self.is_output else threshold_activation(dot, self.thresholds,
                                                               self.ascending)


# Model -------------------------------------------------------------------------------------------

def _positive_float(owner, name):
    value = getattr(owner, name)
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{type(owner).__name__}.{name} must be a finite number > 0, "
                         f"not {value!r}")
    object.__setattr__(owner, name, float(value))


@dataclass(frozen=True, kw_only=True)
class Int8Input:
    """Affine input quantization: ``q = clamp(round_half_away(x / scale) + zero_point)``."""

    scale: float
    zero_point: int = 0

    def __post_init__(self):
        _positive_float(self, "scale")
        _int_in(self, "zero_point", INT8_MIN, INT8_MAX)

    def __call__(self, x):
        return quantize(x, self.scale, self.zero_point)


@dataclass(frozen=True, kw_only=True)
class SignInput:
    """Binarized input: +1 where ``x >= threshold``, else -1 (int8)."""

    threshold: float

    def __post_init__(self):
        if not isinstance(self.threshold, (int, float, np.floating, np.integer)) \
                or isinstance(self.threshold, bool) or not np.isfinite(self.threshold):
            raise ValueError(f"SignInput.threshold must be a finite number, "
                             f"not {self.threshold!r}")
        object.__setattr__(self, "threshold", float(self.threshold))

    def __call__(self, x):
        return np.where(np.asarray(x, dtype=np.float64) >= self.threshold, 1, -1).astype(np.int8)


_INT8_LAYERS = (Dense, Conv2D, Flatten)


@dataclass(frozen=True, eq=False, kw_only=True)
class QuantizedModel:
    """A network the accelerator runs end to end.

    layers : a sequence of layers (stored as a tuple); input_shape : one sample's shape, e.g.
    ``(64,)`` or ``(8, 8, 1)`` (HWC); input : `Int8Input` for INT8 models, `SignInput` for binary
    ones; output_scale : the real value of one step of the last INT8 layer's output (scores =
    ``(y - output_zero_point) * output_scale``), None for binary models, whose scores are dots.
    """

    layers: tuple
    input_shape: tuple
    input: object
    output_scale: float = None

    def __post_init__(self):
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ValueError("QuantizedModel.layers must not be empty")
        binary = isinstance(layers[0], BinaryDense)
        allowed = (BinaryDense,) if binary else _INT8_LAYERS
        for index, layer in enumerate(layers):
            if not isinstance(layer, allowed):
                raise TypeError(f"QuantizedModel.layers[{index}] is {type(layer).__name__}; a "
                                f"{'binary' if binary else 'INT8'} model takes only "
                                f"{[cls.__name__ for cls in allowed]}")
        if not (isinstance(self.input_shape, (tuple, list)) and self.input_shape
                and all(_is_int(v) and v > 0 for v in self.input_shape)):
            raise ValueError(f"QuantizedModel.input_shape must be a tuple of positive integers, "
                             f"not {self.input_shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        if binary:
            self._check_binary(layers)
        else:
            self._check_int8(layers)
        shape = self.input_shape
        for index, layer in enumerate(layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as error:
                raise ValueError(f"QuantizedModel.layers[{index}]: {error}") from None

    def _check_binary(self, layers):
        if not isinstance(self.input, SignInput):
            raise TypeError(f"QuantizedModel.input of a binary model must be a SignInput, "
                            f"not {self.input!r}")
        if self.output_scale is not None:
            raise ValueError("QuantizedModel.output_scale must be None for a binary model "
                             "(its scores are the int dots)")
        for index, layer in enumerate(layers[:-1]):
            if layer.is_output:
                raise ValueError(f"QuantizedModel.layers[{index}] is a BinaryDense without "
                                 f"thresholds; only the last layer may output int dots")

    def _check_int8(self, layers):
        if not isinstance(self.input, Int8Input):
            raise TypeError(f"QuantizedModel.input of an INT8 model must be an Int8Input, "
                            f"not {self.input!r}")
        _positive_float(self, "output_scale")
        if isinstance(layers[-1], Flatten):
            raise ValueError("QuantizedModel.layers must not end with Flatten")
        zero_point, source = self.input.zero_point, "input.zero_point"
        for index, layer in enumerate(layers):
            if isinstance(layer, Flatten):
                continue
            if layer.input_zero_point != zero_point:
                raise ValueError(f"QuantizedModel.layers[{index}].input_zero_point is "
                                 f"{layer.input_zero_point} but its input's zero point "
                                 f"({source}) is {zero_point}")
            zero_point = layer.output_zero_point
            source = f"layers[{index}].output_zero_point"

    @property
    def is_binary(self):
        return isinstance(self.layers[0], BinaryDense)

    @property
    def output_shape(self):
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def quantize_input(self, x):
        """Float samples [M, *input_shape] -> what the first layer takes (int8 or +1/-1 int8)."""
        return self.input(x)

    def scores(self, y):
        """The last layer's integers as float scores (dequantized, or the dots as floats)."""
        y = np.asarray(y, dtype=np.float64)
        if self.is_binary:
            return y
        return (y - self.layers[-1].output_zero_point) * self.output_scale

    def predict(self, x):
        """Class indices for float samples, through the reference executor."""
        return np.argmax(run_reference(self, self.quantize_input(x)), axis=-1)


# Executor ----------------------------------------------------------------------------------------

def _check_model_input(model, x):
    x = np.asarray(x)
    if model.is_binary and x.dtype == np.uint8:
        x = unpack_bits(x, model.input_shape[0])
    expected = model.input_shape
    if x.ndim != len(expected) + 1 or x.shape[1:] != expected:
        raise ValueError(f"input must have shape [M, {', '.join(map(str, expected))}], "
                         f"not {x.shape}")
    if x.dtype.kind not in "iu":
        raise TypeError(f"input must be an integer array, not dtype {x.dtype}; quantize floats "
                        f"with model.quantize_input")
    if model.is_binary:
        if not np.all((x == 1) | (x == -1)):
            raise ValueError("a binary model's input must hold only +1 and -1 (or be uint8 "
                             "packed bits)")
        return x.astype(np.int8)
    if x.size and (x.min() < INT8_MIN or x.max() > INT8_MAX):
        raise ValueError(f"an INT8 model's input must be in [{INT8_MIN}, {INT8_MAX}], "
                         f"found [{x.min()}, {x.max()}]")
    return x.astype(np.int8)


def run_reference_layers(model, x):
    """Every layer's output for input `x`, in order: int8 [M, ...], +1/-1 int8 or int32 dots.

    x: a batch [M, *model.input_shape] of int8 (INT8 models) or +1/-1 int8 (binary models; uint8
    [M, ceil(K/8)] packed bits are accepted too). Each output is the next layer's input.
    """
    if not isinstance(model, QuantizedModel):
        raise TypeError(f"model must be a QuantizedModel, not {type(model).__name__}")
    activations = _check_model_input(model, x)
    outputs = []
    for layer in model.layers:
        activations = layer.run(activations)
        outputs.append(activations)
    return outputs


def run_reference(model, x):
    """The model's final output for input `x` (see `run_reference_layers`)."""
    return run_reference_layers(model, x)[-1]

