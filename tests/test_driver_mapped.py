"""The driver's memory-mapped path (`MappedLink`, as for ``pcie://``) against the simulated SoC's
bus: ``sim://tiny?line=bus`` -- 32-bit loads and stores straight onto `BusSoC`'s bus, no frames.
Layers bit-exact with `sim.reference`, identity read back, refused addresses, URL options."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hw.config import PRESETS
from hw.soc.bridge import INITIATOR_READ_LATENCY
from hw.soc.protocol import CORE_SIZES, Status
from sim import reference
from sw.driver import Accelerator, DeviceError, InvalidURL
from sw.driver.link import FrameLink, MappedLink
from sw.driver.link import open_link
from sw.driver.sim import SimBusTransport

URL = "sim://tiny?line=bus"
TINY = PRESETS["tiny"]
SCRATCHPAD = 0x0100_0000
# The tiny SoC's windows as documented in hw.soc.soc / tests/test_soc.py (default core sizes).
WINDOW_BASES = {"core_control": 0x400, "scratchpad": SCRATCHPAD, "accumulator": 0x0200_0000,
                "parameters": 0x0300_0000, "binary_weights": 0x0400_0000,
                "binary_thresholds": 0x0500_0000, "binary_results": 0x0600_0000}


@pytest.fixture(scope="module")
def device():
    with Accelerator.open(URL) as accelerator:
        yield accelerator


def requant_params(rng, channels):
    scales = rng.uniform(1e-4, 2e-2, channels)
    multiplier, shift = zip(*(reference.quantize_multiplier(scale) for scale in scales))
    return np.array(multiplier), np.array(shift)


def test_the_link_is_mapped_loads_and_stores(device):
    assert isinstance(device.link, MappedLink)
    assert isinstance(device.link.transport, SimBusTransport)
    before = device.link.transport.device.cycles
    device.read_register("MAGIC")
    # One bus access: the strobe's cycle, then the read data INITIATOR_READ_LATENCY later.
    assert device.link.transport.device.cycles - before == 1 + INITIATOR_READ_LATENCY


def test_identity_and_config_read_back(device):
    assert device.config == TINY
    assert device.version == (2, 0)
    assert device.max_payload == 4096
    assert (device.scratchpad_base, device.scratchpad_bytes) == (SCRATCHPAD, 256 * 4)
    assert device.windows == WINDOW_BASES
    assert [device.read_register(f"CORE_{name.upper()}") for name in CORE_SIZES] == \
        [1024, 256, 1024, 1024, 8, 64]
    assert device.link_status() == {"STATUS": 0, "LAST_ERROR": Status.OK, "FRAMES_OK": 0,
                                    "FRAMES_BAD": 0, "BYTES_DISCARDED": 0}     # no frames
    device.write_register("SCRATCH", 0xDEAD_BEEF)
    assert device.read_register("SCRATCH") == 0xDEAD_BEEF
    assert device.read_register("CONTROL") == 0


def test_bulk_round_trip(device):
    data = bytes(range(7, 7 + 40))
    device.bulk_write(SCRATCHPAD + 4 * 250 - len(data) + 24, data)
    assert device.bulk_read(SCRATCHPAD + 4 * 250 - len(data) + 24, len(data)) == data


@settings(max_examples=4, deadline=None)
@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_matmul_bit_exact(device, m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-5000, 5000, n, dtype=np.int32)
    multiplier, shift = requant_params(rng, n)
    got = device.matmul(a, w, bias, multiplier=multiplier, shift=shift, output_zero_point=3)
    np.testing.assert_array_equal(got, reference.requantize(
        reference.gemm(a, w, bias), multiplier, shift, output_zero_point=3))
    np.testing.assert_array_equal(device.matmul_int32(a, w, bias), reference.gemm(a, w, bias))


@pytest.mark.parametrize("shape, kernel, stride, padding, zero_point", [
    ((1, 4, 4, 2), (3, 3, 2, 3), 1, 1, 0),
    ((5, 5, 1), (2, 2, 1, 5), 2, 0, -7),
])
def test_conv2d_bit_exact(device, shape, kernel, stride, padding, zero_point):
    rng = np.random.default_rng(sum(shape) + sum(kernel))
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    w = rng.integers(-128, 128, kernel, dtype=np.int8)
    bias = rng.integers(-3000, 3000, kernel[3], dtype=np.int32)
    multiplier, shift = requant_params(rng, kernel[3])
    got = device.conv2d(x, w, bias, stride=stride, padding=padding, input_zero_point=zero_point,
                        multiplier=multiplier, shift=shift)
    np.testing.assert_array_equal(got, reference.requantize(
        reference.conv2d(x, w, bias, stride=stride, padding=padding,
                         input_zero_point=zero_point), multiplier, shift))


@settings(max_examples=3, deadline=None)
@given(st.integers(1, 4), st.integers(1, 70), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_binary_dense_bit_exact(device, m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = reference.pack_bits(rng.choice([-1, 1], (m, k)).astype(np.int8))
    w = reference.pack_bits(rng.choice([-1, 1], (n, k)).astype(np.int8))
    thresholds, ascending = rng.integers(-k, k + 1, n), rng.integers(0, 2, n).astype(bool)
    dots = reference.binary_dense(a, w, k)
    np.testing.assert_array_equal(device.binary_dense(a, w, k), dots)
    np.testing.assert_array_equal(device.binary_dense(a, w, k, thresholds, ascending),
                                  reference.threshold_activation(dots, thresholds, ascending))


@pytest.mark.parametrize("operation, status, message", [
    (lambda d: d.bulk_read(0x0700_0000, 4), Status.BAD_ADDRESS, "Load from 0x7000000"),
    (lambda d: d.read_registers(0x0000_0500, 1), Status.BAD_ADDRESS, "Load from 0x500"),
    (lambda d: d.bulk_read(SCRATCHPAD + 1020, 8), Status.BAD_ADDRESS, "Load from 0x1000400"),
    (lambda d: d.bulk_write(0x0300_4000, bytes(4)), Status.BAD_ADDRESS, "Store to 0x3004000"),
    (lambda d: d.link.transport.read32(SCRATCHPAD + 2), Status.BAD_ADDRESS, "aligned word"),
    (lambda d: d.write_register("MAGIC", 1), Status.READ_ONLY, "identity window is read-only"),
    (lambda d: d.bulk_write(0x0200_0000, bytes(4)), Status.READ_ONLY, "accumulator window"),
])
def test_refused_addresses_raise_device_error(device, operation, status, message):
    with pytest.raises(DeviceError, match=message) as error:
        operation(device)
    assert error.value.status == status
    assert status.name in str(error.value)


def test_stores_are_word_by_word(device):
    # Unlike a frame (refused whole), mapped stores run one word at a time, as over a PCIe BAR:
    # a range running off the scratchpad's end stores the words inside, then raises.
    device.bulk_write(SCRATCHPAD + 1020, b"keep")
    with pytest.raises(DeviceError, match="Store to 0x1000400"):
        device.bulk_write(SCRATCHPAD + 1020, b"lostword")
    assert device.bulk_read(SCRATCHPAD + 1020, 4) == b"lost"


def test_size_options_and_dispatch():
    url = "sim://tiny?line=bus&scratchpad_rows=512&queue_depth=4"
    with Accelerator.open(url) as device:
        assert device.config == TINY.replace(scratchpad_rows=512, queue_depth=4)
        assert device.core_status()["queue_free"] == 4
    with open_link("sim://tiny?max_payload=64") as link:
        assert isinstance(link, FrameLink)


@pytest.mark.parametrize("url, message", [
    ("sim://tiny?line=bus&backend=cxxrtl", "pysim only"),
    ("sim://tiny?line=bus&divisor=8", "Unknown option\\(s\\) \\['divisor'\\]"),
    ("sim://tiny?line=bus&retries=2", "Unknown option\\(s\\) \\['retries'\\]"),
    ("sim://huge?line=bus", "Unknown preset 'huge'"),
    ("sim://tiny?line=wire", "Bad option line='wire'"),
])
def test_bus_url_errors(url, message):
    with pytest.raises(InvalidURL, match=message):
        open_link(url)
