"""Float -> int8 post-training quantization, the way the TFLite converter does it.

* Activations: per tensor, asymmetric. From a calibration range [min, max] (widened to contain 0)
  ``scale = (max - min) / 255`` and ``zero_point = round(-128 - min / scale)`` clamped to int8,
  so real 0.0 is exactly the integer ``zero_point``; ``q = clamp(round(x / scale) + zero_point)``.
* Weights: per output channel (the last axis, as in [K, N] dense and HWIO conv weights),
  symmetric: zero point 0, ``scale[c] = max|w[..., c]| / 127``, values clamped to [-127, 127]
  (-128 is never used, so negating a weight cannot overflow).
* Bias: int32, ``round(b[c] / (input_scale * weight_scale[c]))``, clamped to +-(2^31 - 1).
* Requantization: ``quantize_multiplier(input_scale * weight_scale[c] / output_scale)`` per
  channel (computed in double, as TFLite does); the hardware shifts right only, so an effective
  scale >= 1.0 is rejected.
* Fused activations: ReLU is ``act_min = max(-128, output_zero_point)``; ReLU6 also clamps at
  ``output_zero_point + round(6 / output_scale)``.

Rounding is half away from zero (``std::round``, TFLite's ``TfLiteRound``) everywhere, computed
in float64. `quantize_layer` bundles the steps into the keyword arguments `sw.model.Dense` and
`sw.model.Conv2D` take.
"""

import numpy as np

from sim.reference import INT8_MAX, INT8_MIN, INT32_MAX, quantize_multiplier

__all__ = ["ACTIVATIONS", "WEIGHT_MAX", "round_half_away", "choose_activation_params",
           "calibrate", "quantize", "dequantize", "quantize_weights_per_channel", "quantize_bias",
           "requant_multipliers", "activation_range", "quantize_layer"]

ACTIVATIONS = (None, "relu", "relu6")
WEIGHT_MAX = 127


def _finite_array(name, value):
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _check_scale(name, scale):
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) \
            or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be a finite number > 0, not {scale!r}")
    return float(scale)


def _check_zero_point(name, zero_point):
    if isinstance(zero_point, bool) or not isinstance(zero_point, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {zero_point!r}")
    if not INT8_MIN <= zero_point <= INT8_MAX:
        raise ValueError(f"{name} must be in [{INT8_MIN}, {INT8_MAX}], not {zero_point}")
    return int(zero_point)


def round_half_away(x):
    """Round to the nearest integer, ties away from zero (C ``std::round``), as float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def choose_activation_params(x_min, x_max):
    """Per-tensor asymmetric int8 ``(scale, zero_point)`` for the real range [x_min, x_max].

    The range is widened to contain 0 so that 0.0 is exactly representable (zero padding and ReLU
    rely on it). A range of width 0 (all zeros), or one so narrow that its scale would not be a
    normal float (below 255 * 2.2e-308, where the division underflows), gives scale 1.0.
    """
    x_min, x_max = (float(_finite_array(name, value))
                    for name, value in (("x_min", x_min), ("x_max", x_max)))
    if x_min > x_max:
        raise ValueError(f"x_min ({x_min}) must not exceed x_max ({x_max})")
    low, high = min(x_min, 0.0), max(x_max, 0.0)
    scale = (high - low) / (INT8_MAX - INT8_MIN)
    if scale < np.finfo(np.float64).tiny:
        scale = 1.0
    zero_point = INT8_MIN - low / scale
    zero_point = int(np.clip(round_half_away(zero_point), INT8_MIN, INT8_MAX))
    return scale, zero_point


def calibrate(samples):
    """`choose_activation_params` over the min/max of a calibration tensor."""
    samples = _finite_array("samples", samples)
    if samples.size == 0:
        raise ValueError("samples must not be empty")
    return choose_activation_params(samples.min(), samples.max())


def quantize(x, scale, zero_point):
    """``clamp(round(x / scale) + zero_point, -128, 127)`` as int8."""
    scale = _check_scale("scale", scale)
    zero_point = _check_zero_point("zero_point", zero_point)
    q = round_half_away(_finite_array("x", x) / scale) + zero_point
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(q, scale, zero_point):
    """``(q - zero_point) * scale`` as float64."""
    scale = _check_scale("scale", scale)
    zero_point = _check_zero_point("zero_point", zero_point)
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise TypeError(f"q must be an integer array, not dtype {q.dtype}")
    return (q.astype(np.float64) - zero_point) * scale


def quantize_weights_per_channel(weights):
    """Symmetric per-output-channel int8 weights: ``(int8 weights, float64 scales [C])``.

    The output channel is the last axis. An all-zero channel gets scale 1.0.
    """
    weights = _finite_array("weights", weights)
    if weights.ndim < 2 or 0 in weights.shape:
        raise ValueError(f"weights must be a non-empty array with the output channel last, "
                         f"not shape {weights.shape}")
    magnitude = np.abs(weights).reshape(-1, weights.shape[-1]).max(axis=0)
    scales = np.where(magnitude > 0, magnitude / WEIGHT_MAX, 1.0)
    q = np.clip(round_half_away(weights / scales), -WEIGHT_MAX, WEIGHT_MAX)
    return q.astype(np.int8), scales


def quantize_bias(bias, input_scale, weight_scales):
    """int32 bias ``round(bias[c] / (input_scale * weight_scales[c]))``, clamped to int32."""
    input_scale = _check_scale("input_scale", input_scale)
    weight_scales = _finite_array("weight_scales", weight_scales)
    bias = _finite_array("bias", bias)
    if weight_scales.ndim != 1 or np.any(weight_scales <= 0):
        raise ValueError("weight_scales must be a 1-D array of positive scales")
    if bias.shape != weight_scales.shape:
        raise ValueError(f"bias must have shape {weight_scales.shape} (one per output channel), "
                         f"not {bias.shape}")
    q = round_half_away(bias / (input_scale * weight_scales))
    return np.clip(q, -INT32_MAX, INT32_MAX).astype(np.int32)


def requant_multipliers(input_scale, weight_scales, output_scale):
    """Per-channel ``(M0 int64 [C], shift int64 [C])`` of ``input_scale * w[c] / output_scale``.

    Raises ValueError when an effective scale is >= 1.0: requantization only shifts right. A
    scale just below 1.0 that rounds up to 1.0 at 31 bits takes the largest multiplier below it,
    ``(2^31 - 1, 0)``: 2^-31 from 1.0.
    """
    input_scale = _check_scale("input_scale", input_scale)
    output_scale = _check_scale("output_scale", output_scale)
    weight_scales = _finite_array("weight_scales", weight_scales)
    if weight_scales.ndim != 1 or np.any(weight_scales <= 0):
        raise ValueError("weight_scales must be a 1-D array of positive scales")
    pairs = []
    for channel, weight_scale in enumerate(weight_scales):
        real = input_scale * float(weight_scale) / output_scale
        m0, shift = quantize_multiplier(real)
        if shift > 0 and real < 1.0:
            m0, shift = 2**31 - 1, 0
        if shift > 0:
            raise ValueError(f"channel {channel}: effective scale {real:g} = input_scale * "
                             f"weight_scale / output_scale is >= 1.0; the requantizer shifts "
                             f"right only (widen the output range)")
        pairs.append((m0, shift))
    m0, shift = zip(*pairs)
    return np.array(m0, dtype=np.int64), np.array(shift, dtype=np.int64)


def activation_range(activation, output_scale, output_zero_point):
    """``(act_min, act_max)`` of a fused activation: None, "relu" or "relu6"."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
    output_scale = _check_scale("output_scale", output_scale)
    zero_point = _check_zero_point("output_zero_point", output_zero_point)
    if activation is None:
        return INT8_MIN, INT8_MAX
    act_max = INT8_MAX
    if activation == "relu6":
        act_max = int(min(INT8_MAX, zero_point + round_half_away(6.0 / output_scale)))
    return max(INT8_MIN, zero_point), act_max


def quantize_layer(weights, bias, *, input_scale, input_zero_point, output_scale,
                   output_zero_point, activation=None):
    """Quantize one float layer (output channel last) into `Dense`/`Conv2D` keyword arguments.

    Returns a dict with ``weights`` (int8), ``bias`` (int32), ``multiplier``, ``shift``,
    ``input_zero_point``, ``output_zero_point``, ``act_min``, ``act_max``; the layer's own
    options (rounding, stride, padding, pool) are added by the caller.
    """
    weights_q, weight_scales = quantize_weights_per_channel(weights)
    if bias is None:
        bias = np.zeros(weight_scales.shape)
    multiplier, shift = requant_multipliers(input_scale, weight_scales, output_scale)
    act_min, act_max = activation_range(activation, output_scale, output_zero_point)
    return {
        "weights": weights_q,
        "bias": quantize_bias(bias, input_scale, weight_scales),
        "multiplier": multiplier,
        "shift": shift,
        "input_zero_point": _check_zero_point("input_zero_point", input_zero_point),
        "output_zero_point": int(output_zero_point),
        "act_min": act_min,
        "act_max": act_max,
    }
