"""System tests: driver -> frame protocol -> SoC -> core -> engines, on both simulation backends.

Every result is compared bit-exactly with `sim.reference` (or `sw.model.run_reference`); the
compiled (CXXRTL) and Python (pysim) simulations of the same SoC must also agree on the
hardware counters of the same work. pysim cases are kept small (it runs ~10k cycles/s).
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hw.core import ErrorCode, Opcode, encode
from sim import cxxrtl, reference
from sw.driver import Accelerator, CommandError
from sw.model import (BinaryDense, Conv2D, Dense, Flatten, Int8Input, QuantizedModel, SignInput,
                      run_reference)

BACKENDS = ["pysim", "cxxrtl"]
URL = "sim://tiny?max_payload=256&backend={}"     # 4x4 array, scratchpad 256 rows, acc 64 rows
EXAMPLES = {"pysim": 3, "cxxrtl": 12}
_open = {}


def _device(backend):
    if backend == "cxxrtl" and not cxxrtl.available():
        pytest.skip(f"CXXRTL backend unusable here: {cxxrtl.unavailable_reason()}")
    if backend not in _open:
        _open[backend] = Accelerator.open(URL.format(backend))
    return _open[backend]


@pytest.fixture(scope="module", params=BACKENDS)
def device(request):
    yield _device(request.param)


@pytest.fixture(scope="module", autouse=True)
def _close_devices():
    yield
    for accelerator in _open.values():
        accelerator.close()
    _open.clear()


def requant_params(rng, channels, scale_range=(1e-4, 1e-2)):
    multiplier, shift = zip(*(reference.quantize_multiplier(float(scale))
                              for scale in rng.uniform(*scale_range, channels)))
    return np.array(multiplier), np.array(shift)


def expected_requant(acc, multiplier, shift, zp, act_min, act_max, rounding):
    return reference.requantize(acc, multiplier, shift, zp, act_min, act_max, rounding)


def examples(device):
    return EXAMPLES["cxxrtl" if "backend=cxxrtl" in device.url else "pysim"]


# INT8 ----------------------------------------------------------------------------------------

def test_matmul_random(device):
    @settings(max_examples=examples(device), deadline=None)
    @given(st.integers(1, 6), st.integers(1, 11), st.integers(1, 9), st.integers(0, 2**32 - 1),
           st.sampled_from(reference.ROUNDING_MODES), st.integers(-128, 127),
           st.booleans())
    def check(m, k, n, seed, rounding, zero_point, relu):
        rng = np.random.default_rng(seed)
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        w = rng.integers(-128, 128, (k, n), dtype=np.int8)
        bias = rng.integers(-20000, 20000, n).astype(np.int32)
        multiplier, shift = requant_params(rng, n)
        act_min = zero_point if relu else -128
        got = device.matmul(a, w, bias, multiplier=multiplier, shift=shift,
                            output_zero_point=zero_point, act_min=act_min, act_max=127,
                            rounding=rounding)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, expected_requant(
            reference.gemm(a, w, bias), multiplier, shift, zero_point, act_min, 127, rounding))
    check()


def test_matmul_int32_accumulators(device):
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (5, 9), dtype=np.int8)
    w = rng.integers(-128, 128, (9, 6), dtype=np.int8)
    bias = rng.integers(-2**31, 2**31 - 2**22, 6).astype(np.int32)
    np.testing.assert_array_equal(device.matmul_int32(a, w, bias), reference.gemm(a, w, bias))
    # Extreme operands: every product -128 * -128.
    a, w = np.full((2, 8), -128, np.int8), np.full((8, 3), -128, np.int8)
    np.testing.assert_array_equal(device.matmul_int32(a, w), reference.gemm(a, w))
    with pytest.raises(OverflowError):
        device.matmul_int32(a, w, np.full(3, 2**31 - 1, np.int32))


def test_conv2d_random(device):
    @settings(max_examples=examples(device), deadline=None)
    @given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2**32 - 1),
           st.booleans(), st.integers(-128, 127), st.integers(1, 2))
    def check(kh, kw, stride, seed, pool, zero_point, batch):
        rng = np.random.default_rng(seed)
        height, width = rng.integers(max(kh, 2), 6), rng.integers(max(kw, 2), 6)
        cin, cout = rng.integers(1, 6), rng.integers(1, 7)
        padding = tuple(int(rng.integers(0, size)) for size in (kh, kh, kw, kw))
        out_h = reference.conv_output_size(height, kh, stride, padding[0], padding[1])
        out_w = reference.conv_output_size(width, kw, stride, padding[2], padding[3])
        pool = bool(pool and out_h >= 2 and out_w >= 2)
        x = rng.integers(-128, 128, (batch, height, width, cin), dtype=np.int8)
        w = rng.integers(-128, 128, (kh, kw, cin, cout), dtype=np.int8)
        bias = rng.integers(-5000, 5000, cout).astype(np.int32)
        multiplier, shift = requant_params(rng, cout)
        got = device.conv2d(x, w, bias, stride=stride, padding=padding,
                            input_zero_point=zero_point, multiplier=multiplier, shift=shift,
                            output_zero_point=-3, act_min=-100, act_max=120, pool=pool)
        expected = expected_requant(reference.conv2d(x, w, bias, stride, padding, zero_point),
                                    multiplier, shift, -3, -100, 120, "double")
        if pool:
            expected = reference.max_pool2x2(expected)
        np.testing.assert_array_equal(got, expected)
        # Unbatched input, unbatched output.
        np.testing.assert_array_equal(
            device.conv2d(x[0], w, bias, stride=stride, padding=padding,
                          input_zero_point=zero_point, multiplier=multiplier, shift=shift,
                          output_zero_point=-3, act_min=-100, act_max=120, pool=pool),
            expected[0])
    check()


@pytest.mark.parametrize("backend", [pytest.param("pysim", marks=pytest.mark.slow), "cxxrtl"])
def test_layers_larger_than_the_buffers_are_split(backend):
    device = _device(backend)
    # Weights of 40 x 20 need 200 rows (the weight bank has 128): 2 groups of output channels;
    # 12 rows of A with their outputs do not fit the activation bank at once: row chunks.
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (12, 40), dtype=np.int8)
    w = rng.integers(-128, 128, (40, 20), dtype=np.int8)
    multiplier, shift = requant_params(rng, 20, (1e-5, 1e-3))
    np.testing.assert_array_equal(
        device.matmul(a, w, None, multiplier=multiplier, shift=shift, rounding="single"),
        reference.requantize(reference.gemm(a, w), multiplier, shift, rounding="single"))
    # 3 images of 5x5x5 (25 x 2 input rows, 2x2 x 2 output rows each): two rounds.
    x = rng.integers(-128, 128, (3, 5, 5, 5), dtype=np.int8)
    wc = rng.integers(-128, 128, (3, 3, 5, 6), dtype=np.int8)
    multiplier, shift = requant_params(rng, 6, (1e-5, 1e-3))
    np.testing.assert_array_equal(
        device.conv2d(x, wc, None, padding=1, multiplier=multiplier, shift=shift, pool=True),
        reference.max_pool2x2(reference.requantize(reference.conv2d(x, wc, None, 1, 1),
                                                   multiplier, shift)))


# Binary ----------------------------------------------------------------------------------------

def test_binary_dense_random(device):
    @settings(max_examples=examples(device), deadline=None)
    @given(st.integers(1, 5), st.integers(1, 100), st.integers(1, 11), st.integers(0, 2**32 - 1))
    def check(m, k, n, seed):
        rng = np.random.default_rng(seed)
        a = reference.pack_bits(rng.choice([-1, 1], (m, k)).astype(np.int8))
        w = reference.pack_bits(rng.choice([-1, 1], (n, k)).astype(np.int8))
        dots = reference.binary_dense(a, w, k)
        got = device.binary_dense(a, w, k)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, dots)
        thresholds = rng.integers(-k - 2, k + 3, n)
        ascending = rng.integers(0, 2, n).astype(bool)
        np.testing.assert_array_equal(
            device.binary_dense(a, w, k, thresholds, ascending),
            reference.threshold_activation(dots, thresholds, ascending))
    check()


def test_binary_edges(device):
    # All-agree and all-disagree vectors (dots +-k), thresholds on both sides of the range.
    k, n = 33, 5
    ones = np.ones((2, k), np.int8)
    a = reference.pack_bits(np.stack([ones[0], -ones[1]]))
    w = reference.pack_bits(np.ones((n, k), np.int8))
    thresholds = np.array([k, -k, k + 1, -(2**31), 2**31 - 1])
    ascending = np.array([True, False, True, True, False])
    dots = reference.binary_dense(a, w, k)
    np.testing.assert_array_equal(device.binary_dense(a, w, k), dots)
    np.testing.assert_array_equal(device.binary_dense(a, w, k, thresholds, ascending),
                                  reference.threshold_activation(dots, thresholds, ascending))


# Models ----------------------------------------------------------------------------------------

def small_int8_model(rng):
    def requant(channels):
        multiplier, shift = requant_params(rng, channels, (1e-4, 3e-3))
        return dict(multiplier=multiplier, shift=shift)
    conv = Conv2D(weights=rng.integers(-128, 128, (3, 3, 2, 5), dtype=np.int8),
                  bias=rng.integers(-3000, 3000, 5), padding=(1, 1, 1, 1),
                  input_zero_point=4, output_zero_point=-10, act_min=-10, pool=True,
                  **requant(5))
    dense = Dense(weights=rng.integers(-128, 128, (2 * 2 * 5, 3), dtype=np.int8),
                  bias=rng.integers(-3000, 3000, 3), input_zero_point=-10, output_zero_point=2,
                  **requant(3))
    return QuantizedModel(layers=(conv, Flatten(), dense), input_shape=(4, 4, 2),
                          input=Int8Input(scale=0.05, zero_point=4), output_scale=0.1)


def small_binary_model(rng):
    def hidden(k, n):
        return BinaryDense(weights=rng.choice([-1, 1], (n, k)),
                           thresholds=rng.integers(-4, 5, n),
                           ascending=rng.integers(0, 2, n).astype(bool))
    return QuantizedModel(layers=(hidden(20, 9), hidden(9, 6),
                                  BinaryDense(weights=rng.choice([-1, 1], (4, 6)))),
                          input_shape=(20,), input=SignInput(threshold=0.0))


@pytest.mark.parametrize("build", [small_int8_model, small_binary_model])
def test_run_model_equals_the_reference(device, build):
    rng = np.random.default_rng(11)
    model = build(rng)
    x = model.quantize_input(rng.normal(0, 1, (3, *model.input_shape)))
    np.testing.assert_array_equal(device.run(model, x), run_reference(model, x))
    if model.is_binary:     # packed input bits are accepted too
        packed = reference.pack_bits(x)
        np.testing.assert_array_equal(device.run(model, packed), run_reference(model, x))


# Errors ----------------------------------------------------------------------------------------

_A, _W = np.zeros((2, 3), np.int8), np.zeros((3, 4), np.int8)
_REQUANT = dict(multiplier=1 << 30, shift=-1)


@pytest.mark.parametrize("call, error, message", [
    (lambda d: d.matmul(_A.astype(np.float32), _W, **_REQUANT), TypeError,
     "a must be an integer array"),
    (lambda d: d.matmul(_A, _W[:2], **_REQUANT), ValueError, "K differs"),
    (lambda d: d.matmul(_A, np.full((3, 4), 200, np.int16), **_REQUANT), ValueError,
     "w must hold int8 values"),
    (lambda d: d.matmul(_A, _W, multiplier=[1 << 30] * 3, shift=0), ValueError,
     "multiplier must have shape \\(4,\\)"),
    (lambda d: d.matmul(_A, _W, multiplier=5, shift=0), ValueError, "M0 in \\[2\\^30"),
    (lambda d: d.matmul(_A, _W, multiplier=1 << 30, shift=1), ValueError,
     "shift must hold values in \\[-31, 0\\]"),
    (lambda d: d.matmul(_A, _W, rounding="up", **_REQUANT), ValueError, "rounding must be one"),
    (lambda d: d.matmul(_A, _W, act_min=10, act_max=0, **_REQUANT), ValueError,
     "act_max must be in \\[10, 127\\]"),
    (lambda d: d.matmul(_A, np.zeros((3, 0), np.int8), **_REQUANT), ValueError,
     "must not be empty"),
    (lambda d: d.matmul(np.zeros((1, 600), np.int8), np.zeros((600, 1), np.int8), **_REQUANT),
     ValueError, "one block of 4 output channels needs 600 weight rows"),
    (lambda d: d.conv2d(np.zeros((4, 4), np.int8), np.zeros((1, 1, 4, 1), np.int8),
                        **_REQUANT), ValueError, "x must have \\(3, 4\\) dimension"),
    (lambda d: d.conv2d(np.zeros((4, 4, 2), np.int8), np.zeros((1, 1, 3, 1), np.int8),
                        **_REQUANT), ValueError, "x has 2 channels but w"),
    (lambda d: d.conv2d(np.zeros((4, 4, 1), np.int8), np.zeros((1, 1, 1, 1), np.int8),
                        stride=(1, 2), **_REQUANT), ValueError, "one stride for both axes"),
    (lambda d: d.conv2d(np.zeros((4, 4, 1), np.int8), np.zeros((1, 1, 1, 1), np.int8),
                        padding=(1, -1), **_REQUANT), ValueError, "padding must be in \\[0, 15"),
    (lambda d: d.conv2d(np.zeros((1, 4, 1), np.int8), np.zeros((1, 1, 1, 1), np.int8),
                        pool=True, **_REQUANT), ValueError, "max-pool needs at least a 2x2"),
    (lambda d: d.conv2d(np.zeros((16, 16, 1), np.int8), np.zeros((1, 1, 1, 1), np.int8),
                        **_REQUANT), ValueError,
     "the scratchpad's activation bank \\(its lower half\\) has 128 rows"),
    (lambda d: d.binary_dense(np.zeros((1, 2), np.uint8), np.zeros((1, 2), np.uint8), 17),
     ValueError, "must have 3 bytes per row for k=17"),
    (lambda d: d.binary_dense(np.full((1, 2), -1), np.zeros((1, 2), np.uint8), 16),
     ValueError, "a_bits must hold uint8 values"),
    (lambda d: d.binary_dense(np.zeros((1, 129), np.uint8), np.zeros((1, 129), np.uint8), 1025),
     ValueError, "k must be in \\[1, 1024\\]"),
    (lambda d: d.binary_dense(np.zeros((1, 1), np.uint8), np.zeros((2, 1), np.uint8), 8,
                              thresholds=[0, 0]), ValueError, "both be given"),
    (lambda d: d.run("model", np.zeros((1, 4))), TypeError, "QuantizedModel"),
])
def test_bad_inputs_are_refused_before_anything_is_sent(device, call, error, message):
    frames = device.link_status()["FRAMES_OK"]
    with pytest.raises(error, match=message):
        call(device)
    assert device.link_status()["FRAMES_OK"] == frames + 1     # only the status read above


def test_a_refused_command_raises_command_error(device):
    # The public calls validate everything first, so push a bad command the way they push.
    rows = device.core.scratchpad_rows
    device._push([encode(Opcode.GEMM, a_base=rows - 1, w_base=0, acc_base=0, accumulate=0, m=2,
                         k_blocks=1, k_last=4, n_blocks=1, n_last=4), encode(Opcode.FENCE)])
    with pytest.raises(CommandError, match="GEMM.*SCRATCHPAD_RANGE") as error:
        device._finish()
    assert error.value.code == ErrorCode.SCRATCHPAD_RANGE and error.value.command == "GEMM"
    # The error is cleared: the device works on.
    assert device.core_status()["error_code"] == ErrorCode.NONE
    a, w = np.ones((1, 2), np.int8), np.ones((2, 1), np.int8)
    np.testing.assert_array_equal(device.matmul_int32(a, w), [[2]])


def test_backends_agree_on_the_counters():
    devices = [_device(backend) for backend in BACKENDS]
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (6, 7), dtype=np.int8)
    w = rng.integers(-128, 128, (7, 6), dtype=np.int8)
    multiplier, shift = requant_params(rng, 6)
    bits = reference.pack_bits(rng.choice([-1, 1], (3, 40)).astype(np.int8))
    figures = []
    for device in devices:
        device.clear_perf_counters()
        result = device.matmul(a, w, multiplier=multiplier, shift=shift)
        dots = device.binary_dense(bits, bits, 40)
        counters = device.perf_counters()
        figures.append((result.tobytes(), dots.tobytes(),
                        {name: counters[name] for name in
                         ("compute_busy", "compute_stall", "store_busy", "binary_busy", "macs",
                          "binary_ops", "commands_retired")}))
    assert figures[0] == figures[1]
    assert figures[0][2]["macs"] == 6 * 7 * 6
    assert figures[0][2]["binary_ops"] == 2 * 40 * 3 * 3
