"""The golden models against independent math: float arithmetic, direct loops, hand-worked cases."""

import math

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
