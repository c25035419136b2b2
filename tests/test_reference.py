"""The golden models against independent math: float arithmetic, direct loops, hand-worked cases."""

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from sim import reference as ref

FAST = settings(max_examples=40, deadline=None)


def int8_arrays(shape):
    return hnp.arrays(np.int8, shape, elements=st.integers(-128, 127))


# GEMM --------------------------------------------------------------------------------------------

@FAST
@given(st.integers(1, 9), st.integers(1, 40), st.integers(1, 9), st.data())
def test_gemm_matches_python_integers(m, k, n, data):
    a = data.draw(int8_arrays((m, k)))
    w = data.draw(int8_arrays((k, n)))
    bias = data.draw(hnp.arrays(np.int32, n, elements=st.integers(-2**24, 2**24)))
    expected = [[sum(int(a[i, t]) * int(w[t, j]) for t in range(k)) + int(bias[j])
                 for j in range(n)] for i in range(m)]
    result = ref.gemm(a, w, bias)
    assert result.dtype == np.int32
    assert result.tolist() == expected


def test_gemm_extreme_operands():
    k = 1000
    a = np.full((2, k), -128, np.int8)
    w = np.full((k, 3), -128, np.int8)
    assert ref.gemm(a, w).tolist() == [[16384 * k] * 3] * 2
    w[:, 1] = 127
    assert ref.gemm(a, w)[0, 1] == -128 * 127 * k


def test_gemm_rejects_overflow_and_bad_input():
    k = 131073   # 131073 * 16384 > 2^31 - 1
    with pytest.raises(OverflowError, match="int32"):
        ref.gemm(np.full((1, k), -128, np.int8), np.full((k, 1), -128, np.int8))
    with pytest.raises(TypeError, match="integer array"):
        ref.gemm(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int8))
    with pytest.raises(ValueError, match="int8 values"):
        ref.gemm(np.full((2, 2), 128), np.zeros((2, 2), np.int8))
    with pytest.raises(ValueError, match="K"):
        ref.gemm(np.zeros((2, 3), np.int8), np.zeros((2, 2), np.int8))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ref.gemm(np.zeros((2, 2), np.int8), np.zeros((2, 2), np.int8), bias=np.zeros(3, np.int32))


@FAST
@given(st.integers(1, 6), st.integers(1, 20), st.integers(1, 6), st.integers(-128, 127), st.data())
def test_fold_zero_point(m, k, n, zp, data):
    a = data.draw(int8_arrays((m, k)))
    w = data.draw(int8_arrays((k, n)))
    bias = data.draw(hnp.arrays(np.int32, n, elements=st.integers(-2**20, 2**20)))
    expected = (a.astype(np.int64) - zp) @ w.astype(np.int64) + bias
    assert (ref.gemm(a, w, ref.fold_zero_point(bias, w, zp)) == expected).all()


# QuantizeMultiplier ------------------------------------------------------------------------------

@pytest.mark.parametrize("real, expected", [
    (0.0, (0, 0)),
    (0.5, (1 << 30, 0)),
    (0.25, (1 << 30, -1)),
    (0.75, (3 << 29, 0)),
    (1.0, (1 << 30, 1)),
    (2.0 ** -40, (0, 0)),                 # below 2^-32: flushed to zero like TFLite
    (1 - 2.0 ** -33, (1 << 30, 1)),       # the fraction rounds to 1.0 and moves up an exponent
])
def test_quantize_multiplier_hand_worked(real, expected):
    assert ref.quantize_multiplier(real) == expected


@FAST
@given(st.floats(min_value=1e-9, max_value=0.999, allow_nan=False))
def test_quantize_multiplier_approximates_real(real):
    m0, shift = ref.quantize_multiplier(real)
    assert (1 << 30) <= m0 < (1 << 31)
    assert math.isclose(m0 * 2.0 ** (shift - 31), real, rel_tol=2.0 ** -30)


def test_quantize_multiplier_rejects_bad_scale():
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite and >= 0"):
            ref.quantize_multiplier(bad)
    with pytest.raises(TypeError):
        ref.quantize_multiplier("0.5")


# Requantization ----------------------------------------------------------------------------------

@pytest.mark.parametrize("acc, m0, shift, double, single", [
    (5, 1 << 30, 0, 3, 3),        # +2.5: both round half up
    (-5, 1 << 30, 0, -2, -2),     # -2.5: SRDHM nudges toward zero here, single floors +0.5
    (3, 1 << 30, -1, 1, 1),       # 0.75
    (1, 1 << 30, -1, 1, 0),       # 0.25: double rounds 0.5 up first, then 0.5 -> 1; single -> 0
    (-3, 1 << 30, -1, -1, -1),    # -0.75
    (-1, 1 << 30, -1, 0, 0),      # -0.25: SRDHM rounds -0.5 toward zero, so both give 0
    (-1, 3 << 29, -1, -1, 0),     # -0.375: double: SRDHM -1.25 -> -1, then -0.5 -> -1; single 0
    (100, (1 << 31) - 1, -31, 0, 0),
    (2**31 - 1, (1 << 31) - 1, -31, 1, 1),
    (-2**31, 1 << 30, 0, -128, -128),   # saturates at act_min
])
def test_requantize_hand_worked(acc, m0, shift, double, single):
    for rounding, expected in (("double", double), ("single", single)):
        result = ref.requantize(np.array([acc], np.int32), [m0], [shift], rounding=rounding)
        assert result.tolist() == [expected], rounding


def test_rounding_divide_by_pot_hand_worked():
    assert ref.rounding_divide_by_pot([5, -5, 6, -6, 7, -7], 1).tolist() == [3, -3, 3, -3, 4, -4]
    assert ref.rounding_divide_by_pot([2**31 - 1, -2**31], 31).tolist() == [1, -1]


def test_srdhm_saturates():
    assert int(ref.saturating_rounding_doubling_high_mul(-2**31, -2**31)) == 2**31 - 1


@FAST
@given(hnp.arrays(np.int32, st.integers(1, 16), elements=st.integers(-2**31, 2**31 - 1)),
       st.floats(min_value=2.0 ** -30, max_value=0.999), st.sampled_from(ref.ROUNDING_MODES))
def test_requantize_within_one_lsb_of_real(acc, scale, rounding):
    m0, shift = ref.quantize_multiplier(scale)
    out = ref.requantize(acc, m0, shift, act_min=-128, act_max=127, rounding=rounding)
    exact = acc.astype(np.float64) * (m0 * 2.0 ** (shift - 31))
    expected = np.clip(np.round(exact), -128, 127)
    assert np.all(np.abs(out.astype(np.float64) - expected) <= 1)


@FAST
@given(hnp.arrays(np.int32, (4, 6), elements=st.integers(-2**20, 2**20)),
       st.lists(st.floats(min_value=1e-6, max_value=0.99), min_size=6, max_size=6),
       st.integers(-128, 127), st.sampled_from(ref.ROUNDING_MODES))
def test_requantize_per_channel_zero_point_and_clamp(acc, scales, zp, rounding):
    params = [ref.quantize_multiplier(s) for s in scales]
    m0 = [p[0] for p in params]
    shift = [p[1] for p in params]
    relu6 = (zp, min(127, zp + 60))
    out = ref.requantize(acc, m0, shift, zp, *relu6, rounding=rounding)
    for c in range(6):
        unclamped = ref.requantize(acc[:, c:c + 1], m0[c], shift[c], 0, rounding=rounding)
        # With zp 0 and full range the per-channel value is exact unless it clamps at +-128.
        inner = ref.requantize(acc[:, c:c + 1], m0[c], shift[c], 0, -128, 127, rounding=rounding)
        assert (unclamped == inner).all()
    assert out.min() >= relu6[0] and out.max() <= relu6[1]
    # The single-rounding form equals floor((acc*M0 + 2^(30-s)) / 2^(31-s)) in exact integers.
    if rounding == "single":
        for c in range(6):
            total = 31 - shift[c]
            for value, got in zip(acc[:, c].tolist(), out[:, c].tolist()):
                scaled = (value * m0[c] + (1 << (total - 1))) >> total
                assert got == max(relu6[0], min(relu6[1], scaled + zp))


def test_requantize_rejects_out_of_range_parameters():
    acc = np.zeros((2, 2), np.int32)
    with pytest.raises(ValueError, match="multiplier"):
        ref.requantize(acc, [1 << 29, 1 << 30], [0, 0])
    with pytest.raises(ValueError, match=r"shift must be in \[-31, 0\]"):
        ref.requantize(acc, [1 << 30] * 2, [1, 0])
    with pytest.raises(ValueError, match="output_zero_point"):
        ref.requantize(acc, [1 << 30] * 2, [0, 0], output_zero_point=200)
    with pytest.raises(ValueError, match="act_min"):
        ref.requantize(acc, [1 << 30] * 2, [0, 0], act_min=10, act_max=5)
    with pytest.raises(ValueError, match="rounding"):
        ref.requantize(acc, [1 << 30] * 2, [0, 0], rounding="nearest")
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ref.requantize(acc, [1 << 30] * 3, [0, 0])
    with pytest.raises(TypeError):
        ref.requantize(acc.astype(np.float32), [1 << 30] * 2, [0, 0])


# Convolution -------------------------------------------------------------------------------------

def direct_conv2d(x, w, bias, stride, pads, zp):
    """Textbook loops: every output pixel sums (x - zp) * w over its window; padding is zp."""
    sh, sw = stride
    top, bottom, left, right = pads
    h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    out_h = (h + top + bottom - kh) // sh + 1
    out_w = (wd + left + right - kw) // sw + 1
    out = np.zeros((out_h, out_w, cout), np.int64)
    for oy in range(out_h):
        for ox in range(out_w):
            for i in range(kh):
                for j in range(kw):
                    y, xx = oy * sh + i - top, ox * sw + j - left
                    if 0 <= y < h and 0 <= xx < wd:
                        out[oy, ox] += (x[y, xx].astype(np.int64) - zp) @ w[i, j].astype(np.int64)
    return out + bias


COMMON_CONVS = [  # (kernel, stride, padding) of common CNN layers
    (3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0), (5, 1, 2), (7, 2, 3), (2, 2, 0), (3, 1, 0),
]


@pytest.mark.parametrize("kernel, stride, pad", COMMON_CONVS)
def test_conv2d_matches_direct_loops(kernel, stride, pad):
    rng = np.random.default_rng(kernel * 100 + stride * 10 + pad)
    x = rng.integers(-128, 128, (9, 8, 3), dtype=np.int8)
    w = rng.integers(-128, 128, (kernel, kernel, 3, 5), dtype=np.int8)
    bias = rng.integers(-1000, 1000, 5, dtype=np.int32)
    zp = int(rng.integers(-128, 128))
    result = ref.conv2d(x, w, bias, stride, pad, zp)
    assert (result == direct_conv2d(x, w, bias, (stride, stride), (pad,) * 4, zp)).all()


@FAST
@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 4), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 3), st.data())
def test_conv2d_same_padding_random(h, wd, cin, kh, kw, stride, data):
    pads = ref.same_padding(h, wd, kh, kw, stride)
    x = data.draw(int8_arrays((2, h, wd, cin)))
    w = data.draw(int8_arrays((kh, kw, cin, 2)))
    zp = data.draw(st.integers(-128, 127))
    result = ref.conv2d(x, w, None, stride, pads, zp)
    assert result.shape[1:3] == (-(-h // stride), -(-wd // stride))   # SAME keeps ceil(H/s)
    for b in range(2):
        expected = direct_conv2d(x[b], w, 0, (stride, stride), pads, zp)
        assert (result[b] == expected).all()


def test_im2col_layout():
    x = np.arange(2 * 3 * 2).reshape(1, 2, 3, 2)
    cols = ref.im2col(x, 2, 2, stride=1, padding=0)
    # Row (ho=0, wo=1) is the window starting at column 1; columns ordered (kh, kw, c).
    assert cols.shape == (2, 8)
    assert cols[1].tolist() == [x[0, 0, 1, 0], x[0, 0, 1, 1], x[0, 0, 2, 0], x[0, 0, 2, 1],
                                x[0, 1, 1, 0], x[0, 1, 1, 1], x[0, 1, 2, 0], x[0, 1, 2, 1]]
    padded = ref.im2col(x, 3, 3, stride=1, padding=1, pad_value=-7)
    assert padded[0, :6].tolist() == [-7] * 6


def test_conv2d_rejects_bad_shapes():
    with pytest.raises(ValueError, match="channels"):
        ref.conv2d(np.zeros((4, 4, 3), np.int8), np.zeros((3, 3, 2, 1), np.int8))
    with pytest.raises(ValueError, match="does not fit"):
        ref.conv2d(np.zeros((2, 2, 1), np.int8), np.zeros((3, 3, 1, 1), np.int8))
    with pytest.raises(ValueError, match="padding"):
        ref.conv2d(np.zeros((4, 4, 1), np.int8), np.zeros((3, 3, 1, 1), np.int8), padding=(-1, 0))


def test_max_pool2x2():
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (2, 5, 7, 3), dtype=np.int8)
    out = ref.max_pool2x2(x)
    assert out.shape == (2, 2, 3, 3)
    for b, y, xx, c in np.ndindex(out.shape):
        assert out[b, y, xx, c] == x[b, 2 * y:2 * y + 2, 2 * xx:2 * xx + 2, c].max()


# Binary ------------------------------------------------------------------------------------------

def plus_minus_one(shape):
    return hnp.arrays(np.int8, shape, elements=st.sampled_from([-1, 1]))


@FAST
@given(st.integers(1, 5), st.integers(1, 70), st.integers(1, 5), st.data())
def test_binary_dense_equals_integer_dot(m, k, n, data):
    a = data.draw(plus_minus_one((m, k)))
    w = data.draw(plus_minus_one((n, k)))
    dot = ref.binary_dense(ref.pack_bits(a), ref.pack_bits(w), k)
    assert (dot == a.astype(np.int64) @ w.T.astype(np.int64)).all()


def test_pack_bits_order_and_roundtrip():
    x = np.array([[1, -1, -1, -1, -1, -1, -1, -1, -1, 1]], np.int8)
    packed = ref.pack_bits(x)
    assert packed.tolist() == [[0b00000001, 0b00000010]]
    assert (ref.unpack_bits(packed, 10) == x).all()


def test_binary_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\+1 and -1"):
        ref.pack_bits(np.array([1, 0, -1]))
    with pytest.raises(ValueError, match="ceil"):
        ref.binary_dense(np.zeros((1, 2), np.uint8), np.zeros((1, 1), np.uint8), 9)
    with pytest.raises(TypeError, match="uint8"):
        ref.binary_dense(np.zeros((1, 2), np.int64), np.zeros((1, 2), np.uint8), 9)
    with pytest.raises(ValueError, match="padding bits"):
        ref.binary_dense(np.array([[0, 0x80]], np.uint8), np.zeros((1, 2), np.uint8), 9)
    with pytest.raises(ValueError, match="ascending"):
        ref.threshold_activation(np.zeros((1, 2), np.int32), [0, 0], [True])


def test_threshold_activation_boundaries():
    dot = np.array([[-2, 0, 2]] * 2, np.int32).T   # shape (3, 2)
    out = ref.threshold_activation(dot, [0, 0], np.array([True, False]))
    assert out[:, 0].tolist() == [-1, 1, 1]        # dot >= 0
    assert out[:, 1].tolist() == [1, 1, -1]        # dot <= 0


@FAST
@given(st.integers(1, 8), st.data())
def test_fold_batchnorm_sign_matches_float_batchnorm(channels, data):
    floats = st.floats(-4, 4, allow_nan=False, allow_infinity=False)
    gamma = np.array(data.draw(st.lists(floats, min_size=channels, max_size=channels)))
    beta = np.array(data.draw(st.lists(floats, min_size=channels, max_size=channels)))
    mean = np.array(data.draw(st.lists(st.floats(-50, 50), min_size=channels, max_size=channels)))
    var = np.array(data.draw(st.lists(st.floats(0.01, 20), min_size=channels, max_size=channels)))
    thresholds, ascending = ref.fold_batchnorm_sign(gamma, beta, mean, var, eps=1e-5)
    dots = np.arange(-64, 65, dtype=np.int32)[:, None].repeat(channels, axis=1)
    normalized = gamma * (dots - mean) / np.sqrt(var + 1e-5) + beta
    expected = np.where(normalized >= 0, 1, -1)
    got = ref.threshold_activation(dots, thresholds, ascending)
    # Exclude dots within float rounding of the decision boundary (documented ambiguity).
    clear = np.abs(normalized) > 1e-9 * (1 + np.abs(gamma) * 64)
    assert (got[clear] == expected[clear]).all()


@pytest.mark.parametrize("kernel, stride, pad", COMMON_CONVS[:5])
def test_binary_conv2d_matches_direct_loops(kernel, stride, pad):
    rng = np.random.default_rng(kernel + 10 * stride + 100 * pad)
    x = rng.choice(np.array([-1, 1], np.int8), (6, 7, 3))
    w = rng.choice(np.array([-1, 1], np.int8), (kernel, kernel, 3, 4))
    dot = ref.binary_conv2d(x, w, stride, pad)
    # Padding with -1 equals an int8 conv whose padding value is -1, i.e. zero point -1 with the
    # zero point folded back in: direct loops over (x - (-1)) * w, then add -1 * w over every tap.
    expected = direct_conv2d(x, w, 0, (stride, stride), (pad,) * 4, -1) \
        - w.astype(np.int64).sum(axis=(0, 1, 2))
    assert (dot == expected).all()


# Graph kernels: independent integer models -------------------------------------------------------
# Python integers only, written from the definitions: SaturatingRoundingDoublingHighMul rounds
# (a*b) / 2^31 half away from zero (nudge, then C division), RoundingDivideByPOT rounds half away
# from zero, and C division truncates toward zero.

def c_div(a, b):
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b > 0) else -quotient


def mbqm_int(x, m0, shift):
    x = x * 2 ** max(shift, 0)
    product = x * m0
    high = c_div(product + (2 ** 30 if product >= 0 else 1 - 2 ** 30), 2 ** 31)
    exponent = max(-shift, 0)
    if exponent == 0:
        return high
    magnitude = (abs(high) + 2 ** (exponent - 1)) >> exponent       # half away from zero
    return magnitude if high >= 0 else -magnitude


def clamp8(value, low=-128, high=127):
    return max(low, min(high, value))


@pytest.mark.parametrize("x, m0, shift, expected", [
    (3, 1 << 30, 1, 3),              # (3 * 2) * 0.5, exact
    (5, 1 << 30, -1, 2),             # SRDHM 2.5 -> 3, then 3 / 2 = 1.5 -> 2 (exact 1.25)
    (-5, 1 << 30, -1, -1),           # SRDHM -2.5 -> -2 (its nudge), then -2 / 2 = -1
    (7, 3 << 29, 0, 5),              # 7 * 0.75 = 5.25
    (100, 1 << 30, 30, None),        # 100 * 2^30 leaves int32
])
def test_multiply_by_quantized_multiplier_hand_worked(x, m0, shift, expected):
    if expected is None:
        with pytest.raises(OverflowError, match="int32"):
            ref.multiply_by_quantized_multiplier(x, m0, shift)
        return
    assert int(ref.multiply_by_quantized_multiplier(x, m0, shift)) == expected \
        == mbqm_int(x, m0, shift)


@FAST
@given(st.integers(-2**20, 2**20), st.integers(0, 2**31 - 1), st.integers(-31, 10))
def test_multiply_by_quantized_multiplier_matches_python_integers(x, m0, shift):
    assert int(ref.multiply_by_quantized_multiplier(x, m0, shift)) == mbqm_int(x, m0, shift)


def direct_depthwise(x, w, bias, stride, pads, zp):
    """Loops over every output pixel, input channel c and multiplier m (output c*M + m)."""
    sh, sw = stride
    top, bottom, left, right = pads
    h, wd, cin = x.shape
    kh, kw, _, mult = w.shape
    out_h, out_w = (h + top + bottom - kh) // sh + 1, (wd + left + right - kw) // sw + 1
    out = np.zeros((out_h, out_w, cin * mult), np.int64)
    for oy, ox, c, m in np.ndindex(out_h, out_w, cin, mult):
        acc = int(bias[c * mult + m])
        for i, j in np.ndindex(kh, kw):
            y, xx = oy * sh + i - top, ox * sw + j - left
            if 0 <= y < h and 0 <= xx < wd:
                acc += (int(x[y, xx, c]) - zp) * int(w[i, j, c, m])
        out[oy, ox, c * mult + m] = acc
    return out


@pytest.mark.parametrize("kernel, stride, pad, mult", [
    (3, 1, 1, 1), (3, 2, 1, 2), (1, 1, 0, 3), (5, 2, 2, 1), (2, 2, 0, 1), (3, 1, 0, 2),
])
def test_depthwise_conv2d_matches_direct_loops(kernel, stride, pad, mult):
    rng = np.random.default_rng(kernel * 1000 + stride * 100 + pad * 10 + mult)
    x = rng.integers(-128, 128, (2, 7, 6, 3), dtype=np.int8)
    w = rng.integers(-128, 128, (kernel, kernel, 3, mult), dtype=np.int8)
    bias = rng.integers(-1000, 1000, 3 * mult, dtype=np.int32)
    zp = int(rng.integers(-128, 128))
    result = ref.depthwise_conv2d(x, w, bias, stride, pad, zp)
    for b in range(2):
        assert (result[b] == direct_depthwise(x[b], w, bias, (stride, stride), (pad,) * 4,
                                              zp)).all()


def test_depthwise_conv2d_asymmetric_padding_and_errors():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (5, 4, 2), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 2, 2, 2), dtype=np.int8)
    pads = (0, 2, 1, 0)
    result = ref.depthwise_conv2d(x, w, None, (2, 1), pads, -128)
    assert (result == direct_depthwise(x, w, np.zeros(4), (2, 1), pads, -128)).all()
    with pytest.raises(ValueError, match="channels"):
        ref.depthwise_conv2d(x, np.zeros((3, 3, 3, 1), np.int8))


def test_add_multipliers_hand_worked():
    # twice_max = 1.0: 0.5 and 0.25 for the inputs, 1.0 / 2^20 for the output.
    assert ref.add_multipliers(0.5, 0.25, 1.0) == ((1 << 30, 0), (1 << 30, -1), (1 << 30, -19))
    with pytest.raises(ValueError, match="output_scale >"):
        ref.add_multipliers(1.0, 1.0, 2.0 ** -20)


def add_int(x1, x2, zps, multipliers, act=(-128, 127)):
    (m1, s1), (m2, s2), (mo, so) = multipliers
    a = mbqm_int((x1 - zps[0]) * 2 ** 20, m1, s1)
    b = mbqm_int((x2 - zps[1]) * 2 ** 20, m2, s2)
    return clamp8(mbqm_int(a + b, mo, so) + zps[2], *act)


@pytest.mark.parametrize("x1, x2, expected", [
    (1, 2, 3), (127, 127, 127), (-128, -128, -128), (-1, 1, 0), (100, -28, 72)])
def test_add_hand_worked(x1, x2, expected):
    quant = dict(input1_scale=1.0, input1_zero_point=0, input2_scale=1.0, input2_zero_point=0,
                 output_scale=1.0, output_zero_point=0)
    assert ref.add(np.array([x1], np.int8), np.array([x2], np.int8), **quant).tolist() == \
        [expected]


@FAST
@given(st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.floats(1e-2, 2.0),
       st.lists(st.integers(-128, 127), min_size=3, max_size=3), st.data())
def test_add_matches_integers_and_real_sum(s1, s2, so, zps, data):
    x1 = data.draw(int8_arrays(12))
    x2 = data.draw(int8_arrays(12))
    low = data.draw(st.integers(-128, 0))
    out = ref.add(x1, x2, input1_scale=s1, input1_zero_point=zps[0], input2_scale=s2,
                  input2_zero_point=zps[1], output_scale=so, output_zero_point=zps[2],
                  act_min=low)
    multipliers = ref.add_multipliers(s1, s2, so)
    s1, s2, so = (float(np.float32(s)) for s in (s1, s2, so))
    for a, b, got in zip(x1.tolist(), x2.tolist(), out.tolist()):
        assert got == add_int(a, b, zps, multipliers, (low, 127))
        real = (s1 * (a - zps[0]) + s2 * (b - zps[1])) / so + zps[2]
        assert abs(got - clamp8(round(real), low)) <= 1


def direct_pool(x, size, stride, pads, reduce):
    """Loops: `reduce` over each window's in-image elements, as Python integers."""
    kh, kw = size
    sh, sw = stride
    top, bottom, left, right = pads
    batch, h, wd, channels = x.shape
    out_h, out_w = (h + top + bottom - kh) // sh + 1, (wd + left + right - kw) // sw + 1
    out = np.zeros((batch, out_h, out_w, channels), np.int64)
    for b, oy, ox, c in np.ndindex(out.shape):
        window = [int(x[b, y, xx, c]) for y in range(oy * sh - top, oy * sh - top + kh)
                  for xx in range(ox * sw - left, ox * sw - left + kw)
                  if 0 <= y < h and 0 <= xx < wd]
        out[b, oy, ox, c] = reduce(window)
    return out


def rounded_mean(values):
    total, count = sum(values), len(values)
    magnitude = (2 * abs(total) + count) // (2 * count)     # floor(|total| / count + 1/2)
    return magnitude if total >= 0 else -magnitude


POOLS = [  # (size, stride, padding)
    ((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (0, 0, 0, 0)), ((3, 3), (1, 1), (1, 1, 1, 1)),
    ((3, 3), (2, 2), (0, 1, 0, 1)), ((2, 3), (1, 2), (1, 0, 2, 0)), ((1, 1), (1, 1), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("size, stride, pads", POOLS)
def test_pools_match_direct_loops(size, stride, pads):
    rng = np.random.default_rng(sum(size) * 100 + sum(stride) * 10 + sum(pads))
    x = rng.integers(-128, 128, (2, 7, 5, 3), dtype=np.int8)
    assert (ref.max_pool2d(x, size, stride, pads) == direct_pool(x, size, stride, pads, max)).all()
    assert (ref.average_pool2d(x, size, stride, pads)
            == direct_pool(x, size, stride, pads, rounded_mean)).all()
    low, high = -20, 30
    assert (ref.average_pool2d(x, size, stride, pads, low, high)
            == np.clip(direct_pool(x, size, stride, pads, rounded_mean), low, high)).all()


def test_average_pool_hand_worked_ties_and_borders():
    x = np.array([1, 2, 3, 5, -1, -2, -3, -5], np.int8).reshape(1, 2, 4, 1)
    # [[1, 2, 3, 5], [-1, -2, -3, -5]]: 2x2 windows stride 2: (1+2-1-2)/4 = 0, (3+5-3-5)/4 = 0
    assert ref.average_pool2d(x, 2, 2)[..., 0].tolist() == [[[0, 0]]]
    # 1x2 windows: 1.5 -> 2, 4 -> 4, -1.5 -> -2, -4 -> -4 (half away from zero)
    assert ref.average_pool2d(x, (1, 2), (1, 2))[..., 0].tolist() == [[[2, 4], [-2, -4]]]
    # 3x3, padding 1: the corner window holds 1, 2, -1, -2 only: 0/4; next: (1+2+3-1-2-3)/6 = 0;
    # the right edge: (3+5-3-5)/4 = 0; a single row shows the counts: (1+2)/2 = 1.5 -> 2.
    assert ref.average_pool2d(x[:, :1], 3, 1, 1)[..., 0].tolist() == [[[2, 2, 3, 4]]]
    # max ignores padding even when every real value is negative.
    assert ref.max_pool2d(-np.abs(x), 3, 1, 1)[..., 0].min() == -3
    with pytest.raises(ValueError, match="larger than every side"):
        ref.max_pool2d(x, 2, 1, (2, 0, 0, 0))


def float32(value):
    """`value` rounded to the nearest float32, as a Python float. A +, *, / of two float32
    values done in double (53 bits >= 2 * 24 + 2) and rounded once this way is exactly the
    float32 operation's result."""
    return struct.unpack("f", struct.pack("f", value))[0]


def onnxruntime_average(x, size, stride, pads, s_in, zp_in, s_out, zp_out):
    """onnxruntime's QDQ AveragePool restated with Python floats: DequantizeLinear
    (float32(s_in * (q - zp_in))), MLAS's float pooling (stride <= 2 and windows <= 32: column
    sums down the rows, then left to right; else row by row), the division by the count of
    in-image elements, then QuantizeLinear (round half to even of float32(mean / s_out), plus
    zp_out, saturated)."""
    (kh, kw), (sh, sw), (top, bottom, left, right) = size, stride, pads
    s_in, s_out = float32(s_in), float32(s_out)
    batch, h, wd, channels = x.shape
    out_h, out_w = (h + top + bottom - kh) // sh + 1, (wd + left + right - kw) // sw + 1
    out = np.zeros((batch, out_h, out_w, channels), np.int64)
    for b, oy, ox, c in np.ndindex(out.shape):
        rows = [y for y in range(oy * sh - top, oy * sh - top + kh) if 0 <= y < h]
        cols = [xx for xx in range(ox * sw - left, ox * sw - left + kw) if 0 <= xx < wd]
        value = {(y, xx): float32((int(x[b, y, xx, c]) - zp_in) * s_in)
                 for y in rows for xx in cols}
        if sw <= 2 and kh <= 32 and kw <= 32:
            order = [[(y, xx) for y in rows] for xx in cols]        # columns, then across
        else:
            order = [[(y, xx)] for y in rows for xx in cols]        # row by row
        total = None
        for group in order:
            part = None
            for key in group:
                part = value[key] if part is None else float32(part + value[key])
            total = part if total is None else float32(total + part)
        mean = float32(total / (len(rows) * len(cols)))
        out[b, oy, ox, c] = clamp8(round(float32(mean / s_out)) + zp_out)   # round: half even
    return out


@pytest.mark.parametrize("size, stride, pads", [*POOLS, ((2, 2), (3, 3), (0, 0, 0, 0)),
                                                ((3, 2), (1, 3), (1, 1, 0, 1))])
def test_float32_average_pool_matches_onnxruntime_restated(size, stride, pads):
    rng = np.random.default_rng(sum(size) * 100 + sum(stride) * 10 + sum(pads) + 7)
    for s_in, zp_in, s_out, zp_out in [(0.0371, -5, 0.0371, -5), (0.5, 0, 0.5, 0),
                                       (0.023, 17, 0.031, -40), (0.0101, -128, 0.0099, 3)]:
        x = rng.integers(-128, 128, (2, 7, 5, 3), dtype=np.int8)
        got = ref.average_pool2d(x, size, stride, pads, rounding="float32_half_to_even",
                                 requantization=(s_in, zp_in, s_out, zp_out))
        want = onnxruntime_average(x, size, stride, pads, s_in, zp_in, s_out, zp_out)
        np.testing.assert_array_equal(got, want)


def test_float32_average_pool_hand_worked_ties():
    # One scale in and out: 1x2 means 0.5, 1.5, -0.5, -1.5 are ties, rounded to even
    # (0, 2, 0, -2) where TFLite's form rounds them away from zero (1, 2, -1, -2).
    x = np.array([1, 0, 3, 0, -1, 0, -3, 0], np.int8).reshape(1, 1, 8, 1)
    quantization = (0.5, 0, 0.5, 0)
    assert ref.average_pool2d(x, (1, 2), (1, 2), rounding="float32_half_to_even",
                              requantization=quantization)[..., 0].tolist() == [[[0, 2, 0, -2]]]
    assert ref.average_pool2d(x, (1, 2), (1, 2))[..., 0].tolist() == [[[1, 2, -1, -2]]]
    # The zero points cancel in the mean and are added after the rounding; act_max clamps.
    shifted = ref.average_pool2d(x + 7, (1, 2), (1, 2), act_max=8,
                                 rounding="float32_half_to_even", requantization=(0.5, 7, 0.5, 7))
    assert shifted[..., 0].tolist() == [[[7, 8, 7, 5]]]
    with pytest.raises(ValueError, match="needed by, and only by"):
        ref.average_pool2d(x, 2, 2, rounding="float32_half_to_even")
    with pytest.raises(ValueError, match="rounding must be one of"):
        ref.average_pool2d(x, 2, 2, rounding="half_even")


@pytest.mark.parametrize("values, expected", [
    ([1, 2, 3, 5], 3),          # 2.75
    ([1, 1, 2], 1),             # 1.33
    ([-1, -2, -3, -5], -3),
    ([1, 2], 2),                # 1.5: SRDHM rounds the positive tie up
    ([-1, -2], -1),             # -1.5: SRDHM's nudge rounds the negative tie toward zero
])
def test_mean_hand_worked(values, expected):
    x = np.array(values, np.int8).reshape(1, 1, len(values), 1)
    assert ref.mean_hw(x, input_scale=0.5, input_zero_point=0, output_scale=0.5,
                       output_zero_point=0).tolist() == [[expected]]


@FAST
@given(st.integers(1, 7), st.integers(1, 7), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0),
       st.integers(-128, 127), st.integers(-128, 127), st.data())
def test_mean_within_one_step_of_real_mean(h, w, s_in, s_out, zp_in, zp_out, data):
    x = data.draw(int8_arrays((2, h, w, 3)))
    out = ref.mean_hw(x, input_scale=s_in, input_zero_point=zp_in, output_scale=s_out,
                      output_zero_point=zp_out)
    s_in, s_out = float(np.float32(s_in)), float(np.float32(s_out))
    for b, c in np.ndindex(2, 3):
        values = [int(v) - zp_in for v in x[b, :, :, c].ravel()]
        real = s_in / s_out * sum(values) / len(values) + zp_out
        assert abs(int(out[b, c]) - clamp8(round(real))) <= 1


def test_mean_multiplier_folds_the_count():
    # ratio 1.0 = 2^30 * 2^(1-31); 4 elements: M unchanged, shift 1 - 2.
    assert ref.mean_multiplier(0.5, 0.5, 4) == (1 << 30, -1)
    assert ref.mean_multiplier(0.5, 0.5, 3) == ((1 << 31) // 3, 0)


@pytest.mark.parametrize("q, zp_in, s_in, zp_out, s_out, expected", [
    (3, 1, 1.0, -2, 0.5, 2),         # (3 - 1) * 2 - 2
    (127, 0, 1.0, 0, 0.5, 127),      # 254 saturates
    (-128, 0, 1.0, 0, 0.5, -128),
    (5, 0, 0.5, 0, 1.0, 3),          # 2.5 -> 3
    (-5, 0, 0.5, 0, 1.0, -2),        # -2.5: SRDHM nudges the tie toward zero (as TFLite)
])
def test_requantize_int8_hand_worked(q, zp_in, s_in, zp_out, s_out, expected):
    out = ref.requantize_int8(np.array([q], np.int8), input_scale=s_in, input_zero_point=zp_in,
                              output_scale=s_out, output_zero_point=zp_out)
    assert out.tolist() == [expected]


@FAST
@given(int8_arrays(20), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.integers(-128, 127),
       st.integers(-128, 127))
def test_requantize_int8_within_one_step_of_real(x, s_in, s_out, zp_in, zp_out):
    out = ref.requantize_int8(x, input_scale=s_in, input_zero_point=zp_in, output_scale=s_out,
                              output_zero_point=zp_out)
    s_in, s_out = float(np.float32(s_in)), float(np.float32(s_out))
    for q, got in zip(x.tolist(), out.tolist()):
        assert abs(got - clamp8(round((q - zp_in) * s_in / s_out) + zp_out)) <= 1


def test_concatenate_copies_equal_and_rescales_other_inputs():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (2, 3, 3, 2), dtype=np.int8)
    b = rng.integers(-128, 128, (2, 3, 3, 4), dtype=np.int8)
    out = ref.concatenate([a, b], input_quantizations=[(0.1, 5), (0.2, -3)], output_scale=0.1,
                          output_zero_point=5)
    assert out.shape == (2, 3, 3, 6)
    assert (out[..., :2] == a).all()
    assert (out[..., 2:] == ref.requantize_int8(b, input_scale=0.2, input_zero_point=-3,
                                                output_scale=0.1, output_zero_point=5)).all()
    with pytest.raises(ValueError, match="outside the last axis"):
        ref.concatenate([a, b[:, :2]], input_quantizations=[(0.1, 5)] * 2, output_scale=0.1,
                        output_zero_point=5)


def test_pad_fills_borders_with_the_value():
    x = np.arange(12, dtype=np.int8).reshape(1, 2, 3, 2)
    out = ref.pad(x, [(1, 0), (0, 2), (0, 0)], -7)
    assert out.shape == (1, 3, 5, 2)
    assert (out[:, 1:, :3] == x).all()
    assert (out[:, 0] == -7).all() and (out[:, :, 3:] == -7).all()


def test_softmax_int8_quantization():
    x = np.array([[0, 0], [127, -128], [10, 10], [-128, -128]], np.int8)
    out = ref.softmax_int8(x, input_scale=0.1)
    # 0.5 -> 128 - 128 = 0; certain -> 256 - 128 saturates at 127, 0 -> -128.
    assert out.tolist() == [[0, 0], [127, -128], [0, 0], [0, 0]]
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (50, 10), dtype=np.int8)
    out = ref.softmax_int8(x, input_scale=0.05, beta=1.5)
    logits = 0.05 * 1.5 * x.astype(np.float64)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # Within half a step of p, except where p * 256 - 128 saturates at 127.
    distance = np.abs((out.astype(int) + 128) / 256 - np.minimum(probabilities, 255 / 256))
    assert distance.max() <= 0.5 / 256 + 1e-12
