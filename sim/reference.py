"""NumPy golden models: the definition of every number the hardware produces.

Tests compare RTL against these functions bit-exactly; the driver's CPU fallback calls them too.
Everything is integer arithmetic on int64 intermediates, so results do not depend on the platform,
except the average pooling of ONNX models (`average_pool2d` "float32_half_to_even"), which
follows onnxruntime's float32 arithmetic operation by operation (IEEE float32, the same on every
platform NumPy runs on).

INT8 path (ARCHITECTURE.md, numerics contract)::

    acc = A(int8, MxK) @ W(int8, KxN) + bias(int32, N)            gemm / conv2d
    out = clamp(requant(acc, M0[c], shift[c]) + zp_out, act_min, act_max)   requantize

Requantization is bit-exact with TFLite (LiteRT) as it runs each op:

* ``rounding="double"`` (CONV_2D): gemmlowp ``SaturatingRoundingDoublingHighMul(acc, M0)`` then
  ``RoundingDivideByPOT(x, -shift)``: two roundings, both half away from zero.
* ``rounding="single"`` (FULLY_CONNECTED in current LiteRT):
  ``(acc * M0 + 2^(30-shift)) >> (31-shift)``: one rounding, half toward +infinity.

The two differ on ties (about 0.1% of outputs), so every layer names its form.

Binary (W1A1) path: values are +1/-1; bit 1 = +1, bit 0 = -1, packed little-endian along K
(element k is bit ``k % 8`` of byte ``k // 8``, padding bits 0); ``dot = K - 2*popcount(a ^ w)``.
"""

import math

import numpy as np

__all__ = [
    "INT8_MIN", "INT8_MAX", "INT32_MIN", "INT32_MAX", "ROUNDING_MODES",
    "AVERAGE_ROUNDINGS",
    "gemm", "fold_zero_point", "quantize_multiplier", "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot", "requantize", "im2col", "conv_output_size", "same_padding",
    "conv2d", "max_pool2x2",
    "multiply_by_quantized_multiplier", "tflite_scale", "depthwise_conv2d", "add_multipliers",
    "add", "max_pool2d", "average_pool2d", "mean_multiplier", "mean_hw", "requantize_int8",
    "concatenate", "pad", "softmax_int8", "SOFTMAX_OUTPUT_SCALE", "SOFTMAX_OUTPUT_ZERO_POINT",
    "pack_bits", "unpack_bits", "binary_dense", "threshold_activation", "fold_batchnorm_sign",
    "binary_conv2d",
]

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ROUNDING_MODES = ("double", "single")
AVERAGE_ROUNDINGS = ("half_away_from_zero", "float32_half_to_even")


# Input checking ----------------------------------------------------------------------------------

def _as_int_array(name, value, dtype, ndim=None):
    """`value` as an ndarray of integer dtype `dtype`; rejects floats, bools and wrong ranks."""
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array ({np.dtype(dtype).name}), "
                        f"not dtype {array.dtype}")
    if ndim is not None and array.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, not shape {array.shape}")
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"{name} must hold {np.dtype(dtype).name} values in "
                         f"[{info.min}, {info.max}], found [{array.min()}, {array.max()}]")
    return array.astype(dtype)


def _check_int32(name, values):
    if values.size and (values.min() < INT32_MIN or values.max() > INT32_MAX):
        raise OverflowError(f"{name} leaves int32 (range [{values.min()}, {values.max()}]); "
                            f"the hardware accumulates in int32")
    return values.astype(np.int32)


def _per_channel(name, value, channels, dtype=np.int64):
    array = _as_int_array(name, value, dtype)
    if array.ndim == 0:
        array = np.full(channels, array)
    if array.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (one per output channel), "
                         f"not {array.shape}")
    return array.astype(np.int64)


# INT8 GEMM ---------------------------------------------------------------------------------------

def gemm(a, w, bias=None):
    """``a @ w + bias`` with int8 operands and exact int32 accumulation.

    a: int8 [M, K]; w: int8 [K, N]; bias: int32 [N] or None. Returns int32 [M, N]; raises
    `OverflowError` if a result does not fit int32 (K > 131,072 could).
    """
    a = _as_int_array("a", a, np.int8, 2)
    w = _as_int_array("w", w, np.int8, 2)
    if a.shape[1] != w.shape[0]:
        raise ValueError(f"gemm: a is {a.shape} and w is {w.shape}; a's columns (K) must equal "
                         f"w's rows")
    acc = a.astype(np.int64) @ w.astype(np.int64)
    if bias is not None:
        acc = acc + _per_channel("bias", _as_int_array("bias", bias, np.int32), w.shape[1])
    return _check_int32("gemm result", acc)


def fold_zero_point(bias, w, input_zero_point):
    """Fold an input zero point into the bias: ``bias - zp * w.sum(0)`` (int32).

    With it, ``(a - zp) @ w + bias == a @ w + fold_zero_point(bias, w, zp)``, so the hardware sees
    plain int8 x int8. w is int8 [K, N]; bias int32 [N] or None.
    """
    w = _as_int_array("w", w, np.int8, 2)
    zp = _check_zero_point("input_zero_point", input_zero_point)
    base = np.zeros(w.shape[1], np.int64) if bias is None else \
        _per_channel("bias", _as_int_array("bias", bias, np.int32), w.shape[1])
    return _check_int32("folded bias", base - zp * w.astype(np.int64).sum(axis=0))


def _check_zero_point(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not INT8_MIN <= value <= INT8_MAX:
        raise ValueError(f"{name} must be in [{INT8_MIN}, {INT8_MAX}], not {value}")
    return int(value)


# Requantization (TFLite) -------------------------------------------------------------------------

def quantize_multiplier(real_multiplier):
    """TFLite ``QuantizeMultiplier``: ``real ~= m0 * 2^(shift - 31)`` with m0 in [2^30, 2^31).

    Returns ``(m0, shift)``; ``(0, 0)`` for a zero multiplier. Like TFLite, the fraction from
    ``frexp`` is rounded to 31 bits (``round`` = half away from zero), a rounded fraction of
    exactly 1.0 moves to the next exponent, and shifts below -31 flush to zero.
    """
    if not isinstance(real_multiplier, (int, float, np.floating, np.integer)) \
            or isinstance(real_multiplier, bool):
        raise TypeError(f"real_multiplier must be a number, not {real_multiplier!r}")
    real_multiplier = float(real_multiplier)
    if not math.isfinite(real_multiplier) or real_multiplier < 0:
        raise ValueError(f"real_multiplier must be finite and >= 0, not {real_multiplier}")
    if real_multiplier == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real_multiplier)
    # std::round: half away from zero (Python's round() is half to even).
    q = int(math.floor(fraction * (1 << 31) + 0.5))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return q, shift


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values (vectorised, int64 out).

    ``(a*b + nudge) / 2^31`` truncated toward zero, nudge = 2^30 for a*b >= 0 else 1 - 2^30;
    the only overflow, a = b = INT32_MIN, saturates to INT32_MAX.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    product = a * b
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    # C integer division truncates toward zero; numpy's // floors.
    quotient = np.where(total >= 0, total >> 31, -((-total) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, quotient)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2^exponent`` rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError(f"exponent must be in [0, 31], not {exponent}")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def requantize(acc, multiplier, shift, output_zero_point=0, act_min=INT8_MIN, act_max=INT8_MAX,
               rounding="double"):
    """Per-output-channel int32 -> int8 requantization, bit-exact with TFLite.

    acc: int32 [..., N] (bias already added); multiplier: M0 per channel in [2^30, 2^31), or 0;
    shift: per channel in [-31, 0] (right shifts; scales >= 1.0 are not supported by the
    hardware and rejected here); `rounding`: "double" (CONV_2D) or "single" (FULLY_CONNECTED).
    Returns int8 [..., N] = clamp(scaled + output_zero_point, act_min, act_max).
    """
    acc = _as_int_array("acc", acc, np.int32)
    if acc.ndim == 0:
        raise ValueError("acc must have at least one dimension (channels last)")
    channels = acc.shape[-1]
    multiplier = _per_channel("multiplier", multiplier, channels)
    shift = _per_channel("shift", shift, channels)
    bad = (multiplier != 0) & ((multiplier < (1 << 30)) | (multiplier > INT32_MAX))
    if np.any(bad):
        raise ValueError(f"multiplier must be 0 or in [2^30, 2^31) as QuantizeMultiplier "
                         f"produces, found {multiplier[bad][:4].tolist()}")
    if np.any((shift < -31) | (shift > 0)):
        raise ValueError(f"shift must be in [-31, 0] (effective scale < 1.0), found "
                         f"{shift[(shift < -31) | (shift > 0)][:4].tolist()}")
    zero_point = _check_zero_point("output_zero_point", output_zero_point)
    low = _check_zero_point("act_min", act_min)
    high = _check_zero_point("act_max", act_max)
    if low > high:
        raise ValueError(f"act_min ({low}) must not exceed act_max ({high})")
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, not {rounding!r}")

    acc64 = acc.astype(np.int64)
    if rounding == "double":
        scaled = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(acc64, multiplier),
                                        -shift)
    else:
        total_shift = 31 - shift
        # acc * M0 < 2^62 in magnitude and the rounding term < 2^62: no int64 overflow.
        scaled = (acc64 * multiplier + (np.int64(1) << (total_shift - 1))) >> total_shift
    return np.clip(scaled + zero_point, low, high).astype(np.int8)


# Convolution -------------------------------------------------------------------------------------

def _pair(name, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, not {value!r}")


def _padding(value):
    """Normalise padding to (top, bottom, left, right)."""
    if isinstance(value, tuple) and len(value) == 4:
        pads = value
    elif isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, tuple) for v in value):
        (top, bottom), (left, right) = value
        pads = (top, bottom, left, right)
    else:
        ph, pw = _pair("padding", value)
        pads = (ph, ph, pw, pw)
    if not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 0
               for p in pads):
        raise ValueError(f"padding must be non-negative integers (an int, (ph, pw), "
                         f"((top, bottom), (left, right)) or (top, bottom, left, right)), "
                         f"not {value!r}")
    return tuple(int(p) for p in pads)


def conv_output_size(size, kernel, stride, pad_before, pad_after):
    """Output length of a VALID convolution over a padded axis."""
    return (size + pad_before + pad_after - kernel) // stride + 1


def same_padding(height, width, kh, kw, stride):
    """TFLite SAME padding as (top, bottom, left, right); the odd pixel goes bottom/right."""
    sh, sw = _pair("stride", stride)
    pads = []
    for size, kernel, step in ((height, kh, sh), (width, kw, sw)):
        out = -(-size // step)
        total = max((out - 1) * step + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def im2col(x, kh, kw, stride=1, padding=0, pad_value=0):
    """Expand NHWC `x` into patch rows for a convolution as GEMM.

    x: [B, H, W, C] or [H, W, C]. Returns [B*Ho*Wo, KH*KW*C] with rows ordered (b, ho, wo) and
    columns ordered (kh, kw, c), padded positions filled with `pad_value`.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[np.newaxis]
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC [B, H, W, C] or [H, W, C], not shape {x.shape}")
    sh, sw = _pair("stride", stride)
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, not {stride!r}")
    for name, kernel in (("kh", kh), ("kw", kw)):
        if not isinstance(kernel, (int, np.integer)) or kernel < 1:
            raise ValueError(f"{name} must be a positive integer, not {kernel!r}")
    top, bottom, left, right = _padding(padding)
    batch, height, width, channels = x.shape
    out_h = conv_output_size(height, kh, sh, top, bottom)
    out_w = conv_output_size(width, kw, sw, left, right)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {kh}x{kw} kernel with stride {stride} and padding {padding} does "
                         f"not fit a {height}x{width} input")
    padded = np.full((batch, height + top + bottom, width + left + right, channels), pad_value,
                     dtype=x.dtype)
    padded[:, top:top + height, left:left + width, :] = x
    patches = np.empty((batch, out_h, out_w, kh, kw, channels), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patches[:, :, :, i, j, :] = padded[:, i:i + sh * (out_h - 1) + 1:sh,
                                               j:j + sw * (out_w - 1) + 1:sw, :]
    return patches.reshape(batch * out_h * out_w, kh * kw * channels)


def conv2d(x, w, bias=None, stride=1, padding=0, input_zero_point=0):
    """INT8 NHWC convolution as im2col GEMM, returning the int32 accumulators.

    x: int8 [B, H, W, Cin] or [H, W, Cin]; w: int8 HWIO [KH, KW, Cin, Cout]; bias: int32 [Cout].
    Padding is filled with `input_zero_point` and the zero point is folded into the bias, so the
    result is ``sum((x - zp) * w) + bias`` over every window, shaped [B, Ho, Wo, Cout] (or
    [Ho, Wo, Cout] for an unbatched x).
    """
    x = _as_int_array("x", x, np.int8, (3, 4))
    w = _as_int_array("w", w, np.int8, 4)
    cin = w.shape[2]
    if x.shape[-1] != cin:
        raise ValueError(f"conv2d: x has {x.shape[-1]} channels but w (HWIO {w.shape}) expects "
                         f"{cin}")
    zp = _check_zero_point("input_zero_point", input_zero_point)
    return _convolve(x, w, stride, padding, zp,
                     lambda columns, weights: gemm(columns, weights,
                                                   fold_zero_point(bias, weights, zp)))


def _convolve(x, w, stride, padding, pad_value, matmul):
    """Convolution as GEMM: ``matmul(im2col(x), w as [KH*KW*Cin, Cout])`` reshaped to NHWC
    (HWC for an unbatched x)."""
    batched = x.ndim == 4
    xb = x if batched else x[np.newaxis]
    kh, kw, cin, cout = w.shape
    top, bottom, left, right = _padding(padding)
    sh, sw = _pair("stride", stride)
    out_h = conv_output_size(xb.shape[1], kh, sh, top, bottom)
    out_w = conv_output_size(xb.shape[2], kw, sw, left, right)
    columns = im2col(xb, kh, kw, stride, padding, pad_value=pad_value)
    result = matmul(columns, w.reshape(kh * kw * cin, cout))
    result = result.reshape(xb.shape[0], out_h, out_w, cout)
    return result if batched else result[0]


def max_pool2x2(x):
    """2x2 max-pool, stride 2, VALID (an odd last row/column is dropped), NHWC or HWC."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be NHWC or HWC, not shape {x.shape}")
    height, width = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
    if height == 0 or width == 0:
        raise ValueError(f"max_pool2x2 needs at least a 2x2 input, not {x.shape}")
    x = x[..., :height, :width, :]
    return np.maximum.reduce([x[..., 0::2, 0::2, :], x[..., 0::2, 1::2, :],
                              x[..., 1::2, 0::2, :], x[..., 1::2, 1::2, :]])


# Graph operations: TFLite int8 kernels beyond GEMM -----------------------------------------------
#
# Each is the integer arithmetic of a TFLite reference kernel (tflite/kernels/internal/reference),
# with the parameters derived from the tensors' scales as the kernel's Prepare does. TFLite
# stores scales as float32 and derives multipliers from them in double: `tflite_scale` rounds a
# scale to float32 first, so the derived integers match the runtime's. tests/test_litert.py runs
# each against LiteRT 2.3.0 (default interpreter with XNNPACK, builtin and reference kernels):
# ADD, MAX/AVERAGE_POOL_2D, PAD and CONCATENATION are bit-exact with all three; the rest follow
# the reference kernels, and their docstrings say where the other two differ.

SOFTMAX_OUTPUT_SCALE = 1.0 / 256
SOFTMAX_OUTPUT_ZERO_POINT = -128
_ADD_LEFT_SHIFT = 20      # TFLite ADD, 8-bit inputs: 255 << 20 stays well inside int32
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def tflite_scale(name, value):
    """`value` as TFLite stores a quantization scale: float32, finite and > 0 (a Python float)."""
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and 0 < value <= _FLOAT32_MAX) or np.float32(value) == 0:
        raise ValueError(f"{name} must be a finite float32 > 0, not {value!r}")
    return float(np.float32(value))


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite ``MultiplyByQuantizedMultiplier`` as LiteRT builds it (double rounding)::

        RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), M0),
                            max(-shift, 0))

    x: int32 values; multiplier: M0 in [0, 2^31) (not necessarily normalised: MEAN divides it);
    shift: in [-31, 30]. Unlike `requantize` it takes the left shifts that ADD, MEAN and QUANTIZE
    derive. Returns int64 values; raises OverflowError where ``x * 2^shift`` leaves int32 (C
    undefined behaviour in TFLite).
    """
    x = np.asarray(x, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any((multiplier < 0) | (multiplier > INT32_MAX)):
        raise ValueError(f"multiplier must be in [0, 2^31), not {multiplier}")
    if np.any((shift < -31) | (shift > 30)):
        raise ValueError(f"shift must be in [-31, 30], not {shift}")
    shifted = _check_int32("x * 2^shift", x << np.maximum(shift, 0)).astype(np.int64)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier),
                                  np.maximum(-shift, 0))


def depthwise_conv2d(x, w, bias=None, stride=1, padding=0, input_zero_point=0):
    """INT8 NHWC depthwise convolution (TFLite DEPTHWISE_CONV_2D), the int32 accumulators.

    x: int8 [B, H, W, Cin] or [H, W, Cin]; w: int8 [KH, KW, Cin, M] with M the depth multiplier
    (TFLite's [1, KH, KW, Cin*M] filter reshaped); bias: int32 [Cin*M]. Output channel
    ``c*M + m`` is ``sum((x[.., c] - zp) * w[.., c, m]) + bias[c*M + m]`` over its window;
    padding is filled with `input_zero_point`, so it adds 0 as TFLite's skipped taps do.
    Returns int32 [B, Ho, Wo, Cin*M] (or [Ho, Wo, Cin*M] for an unbatched x). Requantized with
    `requantize` "double" it is LiteRT's builtin and reference DEPTHWISE_CONV_2D, with "single"
    its default interpreter (XNNPACK), which rounds once (tests/test_litert.py).
    """
    x = _as_int_array("x", x, np.int8, (3, 4))
    w = _as_int_array("w", w, np.int8, 4)
    kh, kw, cin, multiplier = w.shape
    if x.shape[-1] != cin:
        raise ValueError(f"depthwise_conv2d: x has {x.shape[-1]} channels but w ([KH, KW, Cin, M] "
                         f"{w.shape}) expects {cin}")
    zp = _check_zero_point("input_zero_point", input_zero_point)
    batched = x.ndim == 4
    xb = x if batched else x[np.newaxis]
    columns = im2col(xb, kh, kw, stride, padding, pad_value=zp)
    windows = columns.reshape(len(columns), kh * kw, cin).astype(np.int64) - zp
    acc = np.einsum("pkc,kcm->pcm", windows, w.reshape(kh * kw, cin, multiplier).astype(np.int64))
    acc = acc.reshape(len(columns), cin * multiplier)
    if bias is not None:
        acc = acc + _per_channel("bias", _as_int_array("bias", bias, np.int32), cin * multiplier)
    top, bottom, left, right = _padding(padding)
    sh, sw = _pair("stride", stride)
    shape = (xb.shape[0], conv_output_size(xb.shape[1], kh, sh, top, bottom),
             conv_output_size(xb.shape[2], kw, sw, left, right), cin * multiplier)
    result = _check_int32("depthwise_conv2d result", acc).reshape(shape)
    return result if batched else result[0]


def add_multipliers(input1_scale, input2_scale, output_scale):
    """TFLite ADD's int8 parameters (``PrepareGeneralSubgraph``): ((M1, shift1), (M2, shift2),
    (M_out, shift_out)) from ``QuantizeMultiplierSmallerThanOneExp`` of ``s1 / (2 max(s1, s2))``,
    ``s2 / (2 max(s1, s2))`` and ``2 max(s1, s2) / (2^20 s_out)``.

    Raises ValueError when the output multiplier is not below 1, as TFLite rejects it.
    """
    s1 = tflite_scale("input1_scale", input1_scale)
    s2 = tflite_scale("input2_scale", input2_scale)
    so = tflite_scale("output_scale", output_scale)
    twice_max = 2 * max(s1, s2)
    output_real = twice_max / ((1 << _ADD_LEFT_SHIFT) * so)
    if output_real >= 1:
        raise ValueError(f"ADD needs output_scale > 2 * max(input scales) / 2^20, not {so!r} for "
                         f"input scales {s1!r} and {s2!r}")
    return tuple(quantize_multiplier(real)
                 for real in (s1 / twice_max, s2 / twice_max, output_real))


def add(x1, x2, *, input1_scale, input1_zero_point, input2_scale, input2_zero_point,
        output_scale, output_zero_point, act_min=INT8_MIN, act_max=INT8_MAX):
    """TFLite int8 ADD (``reference_integer_ops::AddFunc``), same-shape operands::

        a_i = MBQM((x_i - zp_i) * 2^20, M_i, shift_i)          (`add_multipliers`)
        y   = clamp(MBQM(a_1 + a_2, M_out, shift_out) + zp_out, act_min, act_max)

    with MBQM = `multiply_by_quantized_multiplier`. x1, x2: int8 of one shape. Returns int8.
    Bit-exact with LiteRT's three kernel sets (tests/test_litert.py).
    """
    x1 = _as_int_array("x1", x1, np.int8)
    x2 = _as_int_array("x2", x2, np.int8)
    if x1.shape != x2.shape:
        raise ValueError(f"add: x1 {x1.shape} and x2 {x2.shape} must have one shape")
    (m1, s1), (m2, s2), (mo, so) = add_multipliers(input1_scale, input2_scale, output_scale)
    zp1, zp2, zpo, low, high = _activation_range(
        input1_zero_point=input1_zero_point, input2_zero_point=input2_zero_point,
        output_zero_point=output_zero_point, act_min=act_min, act_max=act_max)
    scaled1 = multiply_by_quantized_multiplier((x1.astype(np.int64) - zp1) << _ADD_LEFT_SHIFT,
                                               m1, s1)
    scaled2 = multiply_by_quantized_multiplier((x2.astype(np.int64) - zp2) << _ADD_LEFT_SHIFT,
                                               m2, s2)
    raw = multiply_by_quantized_multiplier(scaled1 + scaled2, mo, so) + zpo
    return np.clip(raw, low, high).astype(np.int8)


def _activation_range(**values):
    """Checked int8 zero points followed by (act_min, act_max), in the order given."""
    checked = [_check_zero_point(name, value) for name, value in values.items()]
    if checked[-2] > checked[-1]:
        raise ValueError(f"act_min ({checked[-2]}) must not exceed act_max ({checked[-1]})")
    return checked


def _pool_windows(x, pool_size, stride, padding, fill):
    """[B, Ho, Wo, KH*KW, C] windows of int8 NHWC `x` (int16, padding = `fill`)."""
    x = _as_int_array("x", x, np.int8, 4)
    kh, kw = _pair("pool_size", pool_size)
    top, bottom, left, right = _padding(padding)
    if kh < 1 or kw < 1 or top >= kh or bottom >= kh or left >= kw or right >= kw:
        # Padding as large as the window would make windows of padding only.
        raise ValueError(f"pool_size {(kh, kw)} must be >= 1 and larger than every side of "
                         f"padding {(top, bottom, left, right)}")
    sh, sw = _pair("stride", stride)
    batch, height, width, channels = x.shape
    out_h = conv_output_size(height, kh, sh, top, bottom)
    out_w = conv_output_size(width, kw, sw, left, right)
    columns = im2col(x.astype(np.int16), kh, kw, stride, (top, bottom, left, right), fill)
    return columns.reshape(batch, out_h, out_w, kh * kw, channels)


def max_pool2d(x, pool_size, stride, padding=0, act_min=INT8_MIN, act_max=INT8_MAX):
    """TFLite int8 MAX_POOL_2D: the max over each window's in-image elements (padding is
    ignored), clamped to [act_min, act_max]. x: int8 NHWC; returns int8 NHWC."""
    low, high = _activation_range(act_min=act_min, act_max=act_max)
    windows = _pool_windows(x, pool_size, stride, padding, fill=np.iinfo(np.int16).min)
    return np.clip(windows.max(axis=3), low, high).astype(np.int8)


def average_pool2d(x, pool_size, stride, padding=0, act_min=INT8_MIN, act_max=INT8_MAX, *,
                   rounding="half_away_from_zero", requantization=None):
    """int8 average pooling over each window's in-image elements (padding is not counted), in
    the rounding form of the runtime the model comes from. x: int8 NHWC; returns int8 NHWC.

    * ``"half_away_from_zero"`` (TFLite AVERAGE_POOL_2D, LiteRT's kernels): per window the
      integer sum divided by the count n as ``(sum +- n/2) / n`` with C division, clamped to
      [act_min, act_max]; input and output share one scale and zero point.
    * ``"float32_half_to_even"`` (onnxruntime's AveragePool between DequantizeLinear and
      QuantizeLinear, as it runs a QDQ model): `requantization` = (input_scale,
      input_zero_point, output_scale, output_zero_point); every element dequantized in float32
      (``s_in * (q - zp_in)``), each window summed in float32 in the order of onnxruntime's MLAS
      pooling kernel (`_mlas_window_sum`), divided by n, then quantized as QuantizeLinear does:
      ``clamp(round_half_to_even(float32(mean / s_out)) + zp_out)`` within [act_min, act_max].
    """
    low, high = _activation_range(act_min=act_min, act_max=act_max)
    if rounding not in AVERAGE_ROUNDINGS:
        raise ValueError(f"rounding must be one of {AVERAGE_ROUNDINGS}, not {rounding!r}")
    if (rounding == "float32_half_to_even") != (requantization is not None):
        raise ValueError("requantization (input_scale, input_zero_point, output_scale, "
                         "output_zero_point) is needed by, and only by, the "
                         "float32_half_to_even rounding")
    ones = np.ones((1, *np.shape(x)[1:3], 1), np.int8)
    counts = _pool_windows(ones, pool_size, stride, padding, fill=0).astype(np.int64).sum(axis=3)
    if rounding == "half_away_from_zero":
        sums = _pool_windows(x, pool_size, stride, padding, fill=0).astype(np.int64).sum(axis=3)
        half = counts // 2
        # C division truncates toward zero: for sum <= 0 that is -((half - sum) // n).
        average = np.where(sums > 0, (sums + half) // counts, -((half - sums) // counts))
    else:
        average = _float32_average(x, pool_size, stride, padding, counts, requantization)
    return np.clip(average, low, high).astype(np.int8)


def _float32_average(x, pool_size, stride, padding, counts, requantization):
    """The float32_half_to_even form of `average_pool2d` before the clamp (int64)."""
    input_scale, input_zero_point, output_scale, output_zero_point = requantization
    s_in = np.float32(tflite_scale("input_scale", input_scale))
    s_out = np.float32(tflite_scale("output_scale", output_scale))
    zp_in, zp_out = (_check_zero_point(name, value) for name, value in (
        ("input_zero_point", input_zero_point), ("output_zero_point", output_zero_point)))
    # Padding is filled with zp_in, which dequantizes to +0.0: adding it changes no sum, as
    # the runtime's skipped (or 0.0-filled) padding does not.
    windows = _pool_windows(x, pool_size, stride, padding, fill=zp_in)
    kh, kw = _pair("pool_size", pool_size)
    values = (windows.astype(np.int32) - zp_in).astype(np.float32) * s_in
    values = values.reshape(*windows.shape[:3], kh, kw, windows.shape[-1])
    sums = _mlas_window_sum(values, _pair("stride", stride)[1])
    means = sums / counts.astype(np.float32)
    return np.rint(means / s_out).astype(np.int64) + zp_out


def _mlas_window_sum(values, stride_width):
    """float32 sums of [B, Ho, Wo, KH, KW, C] windows, added in the order of onnxruntime's MLAS
    pooling (pooling.cpp): with a width stride of 1 or 2 and windows of at most 32x32 its vector
    kernel sums each window column down the rows, then the column sums left to right; otherwise
    its generic kernel adds the elements row by row. Float addition is not associative, so the
    order decides the last bit, and on a rounding tie the result (the QDQ 2x2 pool of the test
    zoo's CIFAR-shaped CNN, 12 inputs: 0 of 24,576 outputs differ from onnxruntime in this
    order, 292 if added row by row). Not modelled: MLAS's global kernel (a window covering the
    whole unpadded input, stride 1) and inputs wider than its 2,045-element row buffer, which
    add in other orders."""
    kh, kw = values.shape[3:5]
    if stride_width <= 2 and kh <= 32 and kw <= 32:
        columns = values[:, :, :, 0]
        for row in range(1, kh):
            columns = columns + values[:, :, :, row]
        total = columns[:, :, :, 0]
        for column in range(1, kw):
            total = total + columns[:, :, :, column]
        return total
    total = values[:, :, :, 0, 0]
    for row, column in list(np.ndindex(kh, kw))[1:]:
        total = total + values[:, :, :, row, column]
    return total


def mean_multiplier(input_scale, output_scale, count):
    """(M, shift) of TFLite's int8 MEAN over `count` elements (``reference_ops::
    QuantizedMeanOrSum``): ``QuantizeMultiplier(s_in / s_out)`` with 1/count folded in as
    ``M = (M << k) / count``, ``shift -= k``, k = min(floor(log2 count), 32, 31 + shift)."""
    ratio = tflite_scale("input_scale", input_scale) / tflite_scale("output_scale", output_scale)
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a positive integer, not {count!r}")
    multiplier, shift = quantize_multiplier(ratio)
    fold = min(int(count).bit_length() - 1, 32, 31 + shift)
    return (multiplier << fold) // int(count), shift - fold


def mean_hw(x, *, input_scale, input_zero_point, output_scale, output_zero_point):
    """TFLite int8 MEAN over H and W (global average pool) as LiteRT's reference kernel
    computes it (``QuantizedMeanOrSum``; LiteRT takes this path unless keep_dims is set)::

        y[b, c] = clamp(MBQM(sum_hw(x[b, :, :, c]) - zp_in * H*W, M, shift) + zp_out)

    with (M, shift) from `mean_multiplier`. x: int8 [B, H, W, C]; returns int8 [B, C].
    Bit-exact with LiteRT's reference kernel, and with its builtin kernel for keep_dims=False.
    Not modelled: the builtin kernel for keep_dims=True (``optimized_integer_ops::Mean``, another
    formula) and the default interpreter's XNNPACK, which rounds in float; both differ from this
    by one step on some outputs (37 of 1,440 measured for XNNPACK).
    """
    x = _as_int_array("x", x, np.int8, 4)
    zp_in, zp_out = (_check_zero_point(name, value) for name, value in (
        ("input_zero_point", input_zero_point), ("output_zero_point", output_zero_point)))
    count = x.shape[1] * x.shape[2]
    multiplier, shift = mean_multiplier(input_scale, output_scale, count)
    sums = _check_int32("MEAN sum", x.astype(np.int64).sum(axis=(1, 2)) - zp_in * count)
    out = multiply_by_quantized_multiplier(sums, multiplier, shift) + zp_out
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


def requantize_int8(x, *, input_scale, input_zero_point, output_scale, output_zero_point):
    """TFLite QUANTIZE int8 -> int8 (``reference_ops::Requantize``)::

        y = clamp(MBQM(x - zp_in, M, shift) + zp_out),  (M, shift) = QuantizeMultiplier(s_in/s_out)

    Bit-exact with LiteRT's reference kernel; its builtin kernel and the default interpreter
    (XNNPACK) differ by one step on a few percent of outputs (163 and 327 of 6,000 measured).
    """
    x = _as_int_array("x", x, np.int8)
    zp_in, zp_out = (_check_zero_point(name, value) for name, value in (
        ("input_zero_point", input_zero_point), ("output_zero_point", output_zero_point)))
    ratio = tflite_scale("input_scale", input_scale) / tflite_scale("output_scale", output_scale)
    multiplier, shift = quantize_multiplier(ratio)
    out = multiply_by_quantized_multiplier(x.astype(np.int64) - zp_in, multiplier, shift) + zp_out
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


def concatenate(xs, *, input_quantizations, output_scale, output_zero_point):
    """Concatenate int8 tensors along the last (channel) axis.

    TFLite's int8 CONCATENATION requires every input to share the output's scale and zero point;
    the converter puts a QUANTIZE before each input that does not. This kernel does the same in
    one step: an input whose (scale, zero point) in `input_quantizations` differs from the
    output's is first rescaled with `requantize_int8`, the others are copied.
    """
    xs = [_as_int_array(f"xs[{index}]", x, np.int8) for index, x in enumerate(xs)]
    if len(xs) < 1 or len(input_quantizations) != len(xs):
        raise ValueError(f"concatenate needs one (scale, zero_point) per input, got "
                         f"{len(input_quantizations)} for {len(xs)} inputs")
    output_scale = tflite_scale("output_scale", output_scale)
    parts = []
    for index, (x, (scale, zero_point)) in enumerate(zip(xs, input_quantizations)):
        if x.shape[:-1] != xs[0].shape[:-1]:
            raise ValueError(f"concatenate: xs[{index}] has shape {x.shape}, which differs from "
                             f"xs[0] {xs[0].shape} outside the last axis")
        same = (tflite_scale(f"input_quantizations[{index}] scale", scale) == output_scale
                and zero_point == output_zero_point)
        parts.append(x if same else requantize_int8(
            x, input_scale=scale, input_zero_point=zero_point, output_scale=output_scale,
            output_zero_point=output_zero_point))
    return np.concatenate(parts, axis=-1)


def pad(x, pads, value):
    """TFLite PAD: `x` [B, *dims] with ``pads[i] = (before, after)`` elements of `value` (the
    zero point, for int8) added on per-sample axis i; the batch axis is not padded."""
    x = np.asarray(x)
    if len(pads) != x.ndim - 1:
        raise ValueError(f"pad needs one (before, after) per per-sample axis ({x.ndim - 1}), "
                         f"not {pads!r}")
    return np.pad(x, [(0, 0), *pads], constant_values=value)


def softmax_int8(x, *, input_scale, beta=1.0):
    """Softmax over the last axis, int8 in and out, as a HOST FLOAT kernel.

    ``p = exp(beta * s_in * (x - max)) / sum(...)`` in float64, quantized with TFLite's fixed
    int8 softmax output quantization (scale 1/256, zero point -128):
    ``y = clamp(round_half_away(p * 256) - 128)``. It is NOT proven bit-exact with LiteRT:
    measured against LiteRT 2.3.0 it equalled the default interpreter and the builtin kernel (a
    float32 lookup table) on all 215,500 outputs of 40 random configurations, and differed from
    the reference kernel (a gemmlowp fixed-point exp) by one step on 6 of them. The zero point
    cancels, so it is not taken.
    """
    x = _as_int_array("x", x, np.int8)
    scale = tflite_scale("input_scale", input_scale)
    if not isinstance(beta, (int, float, np.floating)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0, not {beta!r}")
    logits = (x.astype(np.float64) - x.max(axis=-1, keepdims=True)) * (scale * beta)
    exp = np.exp(logits)
    probabilities = exp / exp.sum(axis=-1, keepdims=True)
    quantized = np.floor(probabilities * 256 + 0.5) + SOFTMAX_OUTPUT_ZERO_POINT
    return np.clip(quantized, INT8_MIN, INT8_MAX).astype(np.int8)


# Binary (W1A1) -----------------------------------------------------------------------------------

def _check_plus_minus_one(name, x):
    x = np.asarray(x)
    if x.dtype.kind not in "iuf" or not np.all((x == 1) | (x == -1)):
        raise ValueError(f"{name} must hold only +1 and -1 values (bit 1 = +1, bit 0 = -1)")
    return x.astype(np.int8)


def pack_bits(x, axis=-1):
    """Pack +1/-1 values into uint8 bytes along `axis`: element k -> bit k%8 of byte k//8.

    +1 is bit 1, -1 is bit 0; the last byte's unused high bits are 0.
    """
    x = _check_plus_minus_one("x", x)
    return np.packbits(x > 0, axis=axis, bitorder="little")


def unpack_bits(packed, k, axis=-1):
    """Inverse of `pack_bits`: the first `k` elements along `axis` as int8 +1/-1."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"packed bits must be uint8 (from pack_bits), not {packed.dtype}")
    if not isinstance(k, (int, np.integer)) or not 0 < k <= packed.shape[axis] * 8:
        raise ValueError(f"k must be in 1..{packed.shape[axis] * 8} for {packed.shape[axis]} "
                         f"packed bytes, not {k!r}")
    bits = np.unpackbits(packed, axis=axis, count=k, bitorder="little")
    return (bits.astype(np.int8) * 2 - 1).astype(np.int8)


def _check_packed(name, packed, k):
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise TypeError(f"{name} must be a 2-D uint8 array of packed bits (from pack_bits), "
                        f"not {packed.dtype} with shape {packed.shape}")
    if packed.shape[1] != -(-k // 8):
        raise ValueError(f"{name} has {packed.shape[1]} bytes per row; K={k} needs "
                         f"{-(-k // 8)} (ceil(K/8))")
    spare = packed.shape[1] * 8 - k
    if spare and np.any(packed[:, -1] >> (8 - spare)):
        raise ValueError(f"{name} has nonzero padding bits beyond K={k}")
    return packed


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def binary_dense(a_packed, w_packed, k):
    """Binary dot products ``K - 2*popcount(a XOR w)`` for every (input row, neuron) pair.

    a_packed: uint8 [M, ceil(K/8)]; w_packed: uint8 [N, ceil(K/8)] (one packed row per output
    neuron). Returns int32 [M, N], each value the +1/-1 dot product of length K.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    a_packed = _check_packed("a_packed", a_packed, k)
    w_packed = _check_packed("w_packed", w_packed, k)
    mismatches = _POPCOUNT8[a_packed[:, np.newaxis, :] ^ w_packed[np.newaxis, :, :]].sum(axis=-1)
    return (k - 2 * mismatches).astype(np.int32)


def threshold_activation(dot, thresholds, ascending):
    """Per-channel threshold: +1 where ``dot >= t`` (ascending) or ``dot <= t`` (descending).

    dot: int [..., N]; thresholds: int [N]; ascending: bool [N]. Returns int8 +1/-1.
    """
    dot = _as_int_array("dot", dot, np.int32)
    channels = dot.shape[-1]
    thresholds = _per_channel("thresholds", _as_int_array("thresholds", thresholds, np.int32),
                              channels)
    ascending = np.asarray(ascending)
    if ascending.dtype != bool or ascending.shape != (channels,):
        raise ValueError(f"ascending must be a bool array of shape ({channels},), "
                         f"not {ascending.dtype} {ascending.shape}")
    fires = np.where(ascending, dot >= thresholds, dot <= thresholds)
    return np.where(fires, 1, -1).astype(np.int8)


def fold_batchnorm_sign(gamma, beta, mean, var, eps=1e-5):
    """Fold ``sign(BatchNorm(dot))`` into integer thresholds and directions (FINN style).

    BatchNorm(d) = gamma * (d - mean) / sqrt(var + eps) + beta, sign(0) = +1. For gamma > 0 the
    output is +1 iff d >= mean - beta*sigma/gamma, so t = ceil of that bound and ascending; for
    gamma < 0 it is +1 iff d <= the bound, so t = floor and descending. gamma == 0 gives a
    constant sign(beta), encoded with an unreachable threshold. Returns (int32 [N], bool [N]).
    The bound is computed in float64 exactly as BatchNorm would be; for integer d it reproduces
    the float comparison except when d lies within rounding error of the bound.
    """
    gamma, beta, mean, var = (np.asarray(v, dtype=np.float64) for v in (gamma, beta, mean, var))
    shapes = {v.shape for v in (gamma, beta, mean, var)}
    if len(shapes) != 1 or gamma.ndim != 1:
        raise ValueError(f"gamma, beta, mean and var must be 1-D arrays of one length, "
                         f"not shapes {[v.shape for v in (gamma, beta, mean, var)]}")
    if np.any(var + eps <= 0):
        raise ValueError("var + eps must be positive")
    sigma = np.sqrt(var + eps)
    # gamma == 0 divides by zero, a tiny gamma overflows: both bounds are replaced or clipped
    # to the int32 range below.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bound = mean - beta * sigma / gamma
    ascending = gamma >= 0
    thresholds = np.where(ascending, np.ceil(bound), np.floor(bound))
    constant = gamma == 0
    # gamma == 0: output is sign(beta) everywhere; "always +1" is dot >= INT32_MIN.
    thresholds = np.where(constant, np.where(beta >= 0, INT32_MIN, INT32_MAX), thresholds)
    thresholds = np.clip(thresholds, INT32_MIN, INT32_MAX)
    return thresholds.astype(np.int32), ascending


def binary_conv2d(x, w, stride=1, padding=0):
    """Binary NHWC convolution via im2col on +1/-1 values, padding with -1 (as FINN).

    x: +1/-1 [B, H, W, Cin] or [H, W, Cin]; w: +1/-1 HWIO [KH, KW, Cin, Cout]. Returns the int32
    dot products [B, Ho, Wo, Cout] (or [Ho, Wo, Cout]).
    """
    x = _check_plus_minus_one("x", x)
    w = _check_plus_minus_one("w", w)
    if x.ndim not in (3, 4) or w.ndim != 4:
        raise ValueError(f"x must be NHWC or HWC and w HWIO, not shapes {x.shape}, {w.shape}")
    cin = w.shape[2]
    if x.shape[-1] != cin:
        raise ValueError(f"binary_conv2d: x has {x.shape[-1]} channels but w expects {cin}")
    return _convolve(x, w, stride, padding, -1,
                     lambda columns, weights: binary_dense(pack_bits(columns),
                                                           pack_bits(weights.T), len(weights)))
