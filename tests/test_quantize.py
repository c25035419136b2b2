"""`sw.quantize` against float math: steps, zero points, rounding and whole-layer error bounds."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sw.model import Dense
from sw.quantize import (activation_range, calibrate, choose_activation_params, dequantize,
                         quantize, quantize_bias, quantize_layer, quantize_weights_per_channel,
                         requant_multipliers, round_half_away)

FAST = settings(max_examples=25, deadline=None)
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@FAST
@given(a=finite, b=finite)
def test_activation_params_cover_the_range_with_exact_zero(a, b):
    low, high = min(a, b), max(a, b)
    scale, zero_point = choose_activation_params(low, high)
    assert -128 <= zero_point <= 127
    assert quantize(0.0, scale, zero_point) == zero_point
    assert dequantize(np.int8(zero_point), scale, zero_point) == 0.0
    width = max(high, 0.0) - min(low, 0.0)
    if width / 255 < np.finfo(np.float64).tiny:
        # Zero, or so narrow that the scale would not be a normal float (documented).
        assert scale == 1.0
    else:
        assert scale * 255 == pytest.approx(width, rel=1e-12)
        # The ends of the widened range are within half a step (zero point rounding) + 1 ulp.
        assert dequantize(np.int8(-128), scale, zero_point) <= min(low, 0.0) + scale * 0.5 + 1e-9
        assert dequantize(np.int8(127), scale, zero_point) >= max(high, 0.0) - scale * 0.5 - 1e-9


@FAST
@given(a=finite, b=finite, seed=st.integers(0, 2**32 - 1))
def test_quantize_dequantize_error_within_half_a_step(a, b, seed):
    low, high = min(a, b), max(a, b)
    scale, zero_point = choose_activation_params(low, high)
    lo_q = dequantize(np.int8(-128), scale, zero_point)
    hi_q = dequantize(np.int8(127), scale, zero_point)
    x = np.random.default_rng(seed).uniform(lo_q, hi_q, 50)
    error = np.abs(dequantize(quantize(x, scale, zero_point), scale, zero_point) - x)
    assert np.all(error <= scale / 2 * (1 + 1e-9))


def test_calibrate_and_clamping():
    scale, zero_point = calibrate(np.array([[0.0, 1.0], [0.5, 0.25]]))
    assert (scale, zero_point) == (1 / 255, -128)
    scale, zero_point = calibrate(np.array([-1.0, 3.0]))      # zero point round(-128 + 63.75)
    assert scale == 4 / 255 and zero_point == -64
    assert choose_activation_params(2.0, 5.0) == (5 / 255, -128)   # widened to contain 0
    assert choose_activation_params(-3.0, -1.0) == (3 / 255, 127)
    assert choose_activation_params(0.0, 0.0) == (1.0, -128)
    # Found by hypothesis: a denormal-wide range used to underflow the scale to 0.0.
    assert choose_activation_params(0.0, 5e-324) == (1.0, -128)
    assert choose_activation_params(-1e-310, 0.0) == (1.0, -128)
    assert choose_activation_params(0.0, 2.225073858507e-311) == (1.0, -128)
    np.testing.assert_array_equal(quantize([1e9, -1e9], 1.0, 0), [127, -128])


def test_rounding_is_half_away_from_zero():
    np.testing.assert_array_equal(round_half_away([0.5, 1.5, 2.5, -0.5, -2.5, 0.49]),
                                  [1, 2, 3, -1, -3, 0])
    np.testing.assert_array_equal(quantize([0.5, -0.5, 2.5], 1.0, 0), [1, -1, 3])


@FAST
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 20), n=st.integers(1, 6))
def test_weights_symmetric_per_channel(seed, k, n):
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, rng.uniform(0.01, 10, n), (k, n))
    q, scales = quantize_weights_per_channel(weights)
    assert q.dtype == np.int8 and q.min() >= -127
    np.testing.assert_allclose(scales, np.abs(weights).max(axis=0) / 127, rtol=1e-12)
    assert np.all(np.abs(q).max(axis=0) == 127)          # the largest weight maps to +-127
    assert np.all(np.abs(q * scales - weights) <= scales / 2 * (1 + 1e-9))


def test_weights_conv_layout_and_zero_channel():
    weights = np.zeros((3, 3, 2, 3))
    weights[..., 1] = -0.5
    weights[0, 0, 0, 2] = 2.0
    q, scales = quantize_weights_per_channel(weights)
    np.testing.assert_array_equal(scales, [1.0, 0.5 / 127, 2.0 / 127])
    assert np.all(q[..., 0] == 0) and np.all(q[..., 1] == -127) and q[0, 0, 0, 2] == 127


@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_bias_scale_is_input_times_weight_scale(seed):
    rng = np.random.default_rng(seed)
    weight_scales = rng.uniform(1e-3, 1e-1, 5)
    input_scale = float(rng.uniform(1e-3, 1e-1))
    bias = rng.normal(0, 1, 5)
    q = quantize_bias(bias, input_scale, weight_scales)
    step = input_scale * weight_scales
    assert q.dtype == np.int32
    assert np.all(np.abs(q * step - bias) <= step / 2 * (1 + 1e-9))
    np.testing.assert_array_equal(quantize_bias([1e30, -1e30], 1.0, [1.0, 1.0]),
                                  [2**31 - 1, -(2**31 - 1)])


@FAST
@given(input_scale=st.floats(1e-4, 1.0), output_scale=st.floats(1e-2, 10.0),
       weight_scales=st.lists(st.floats(1e-4, 1e-2), min_size=1, max_size=4))
def test_requant_multipliers_represent_the_real_scale(input_scale, output_scale, weight_scales):
    m0, shift = requant_multipliers(input_scale, weight_scales, output_scale)
    real = input_scale * np.array(weight_scales) / output_scale
    nonzero = m0 != 0
    assert np.all((m0[nonzero] >= 2**30) & (m0[nonzero] < 2**31)) and np.all(shift <= 0)
    # Ignoring flushed channels (real < 2^-32), m0 * 2^(shift-31) is real to 31 bits.
    np.testing.assert_allclose((m0 * 2.0 ** (shift - 31))[nonzero], real[nonzero], rtol=2**-30)
    assert np.all(real[~nonzero] < 2**-31)


def test_requant_multiplier_just_below_one_takes_the_largest_below():
    # 1.0 * 0.01 / 0.010000000000000002 = 1 - 2.2e-16 rounds to 1.0 at 31 bits (found by
    # hypothesis): the requantizer cannot shift left, so 1 - 2^-31 stands for it.
    m0, shift = requant_multipliers(1.0, [0.01], 0.010000000000000002)
    assert (m0.tolist(), shift.tolist()) == ([2**31 - 1], [0])


def test_requant_multiplier_at_or_above_one_is_rejected():
    with pytest.raises(ValueError, match=r"channel 1: effective scale 2 .* >= 1.0"):
        requant_multipliers(1.0, [0.5, 2.0], 1.0)
    with pytest.raises(ValueError, match="output_scale must be a finite number > 0"):
        requant_multipliers(1.0, [0.5], 0.0)


@pytest.mark.parametrize("activation, scale, zero_point, expected", [
    (None, 0.1, 5, (-128, 127)),
    ("relu", 0.1, 5, (5, 127)),
    ("relu", 0.1, -128, (-128, 127)),
    ("relu6", 0.1, -128, (-128, -68)),      # 6 / 0.1 = 60 steps above the zero point
    ("relu6", 0.01, -128, (-128, 127)),     # 600 steps: clamped to int8
    ("relu6", 0.04, 0, (0, 127)),           # 150 steps
    ("relu6", 6 / 255, -128, (-128, 127)),
])
def test_activation_range(activation, scale, zero_point, expected):
    assert activation_range(activation, scale, zero_point) == expected


@pytest.mark.parametrize("call, error, words", [
    (lambda: activation_range("gelu", 1.0, 0), ValueError, "activation must be one of"),
    (lambda: quantize([1.0], -1.0, 0), ValueError, "scale must be a finite number > 0"),
    (lambda: quantize([1.0], 1.0, 200), ValueError, "zero_point must be in [-128, 127]"),
    (lambda: quantize([np.nan], 1.0, 0), ValueError, "x must be finite"),
    (lambda: dequantize(np.array([1.5]), 1.0, 0), TypeError, "q must be an integer array"),
    (lambda: choose_activation_params(2.0, 1.0), ValueError, "x_min (2.0) must not exceed"),
    (lambda: calibrate(np.array([])), ValueError, "samples must not be empty"),
    (lambda: quantize_weights_per_channel(np.ones(3)), ValueError, "output channel last"),
    (lambda: quantize_bias(np.ones(2), 1.0, np.ones(3)), ValueError, "bias must have shape (3,)"),
    (lambda: quantize_layer(np.ones((2, 2)), None, input_scale=1.0, input_zero_point=300,
                            output_scale=1.0, output_zero_point=0), ValueError,
     "input_zero_point must be in"),
])
def test_rejects(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


@FAST
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 32), n=st.integers(1, 8),
       relu=st.booleans())
def test_quantized_dense_tracks_float_math(seed, k, n, relu):
    """A `Dense` built by `quantize_layer`, dequantized, is the float layer up to a derived bound.

    The float layer runs on the dequantized int8 input, so the only errors are the weights
    (<= w_scale/2 each), the bias (<= in_scale*w_scale/2), the requantization (<= 1 output step
    with two roundings) and clamping, which the output range is chosen to avoid.
    """
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1 / np.sqrt(k), (k, n))
    bias = rng.normal(0, 0.5, n)
    input_scale, input_zp = calibrate(rng.uniform(-1.0, 2.0, 2))
    x_q = rng.integers(-128, 128, (16, k)).astype(np.int8)
    x = dequantize(x_q, input_scale, input_zp)
    reference = x @ weights + bias
    if relu:
        reference = np.maximum(reference, 0.0)
    output_scale, output_zp = calibrate(np.concatenate([reference.ravel(), [-1.0, 1.0]]) * 1.1)
    layer = Dense(**quantize_layer(weights, bias, input_scale=input_scale,
                                   input_zero_point=input_zp, output_scale=output_scale,
                                   output_zero_point=output_zp,
                                   activation="relu" if relu else None))
    y = dequantize(layer.run(x_q), output_scale, output_zp)
    w_scales = np.abs(weights).max(axis=0) / 127
    bound = (np.abs(x).sum(axis=1, keepdims=True) * w_scales / 2
             + input_scale * w_scales / 2 + output_scale)
    assert np.all(np.abs(y - reference) <= bound * (1 + 1e-9))
