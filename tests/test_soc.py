"""The SoC around the core (pysim): memory map, identity registers, refused addresses, counters,
output-stationary configs refused, queue back-pressure and the UART pins."""

import gc

import numpy as np
import pytest

from hw.config import PRESETS
from hw.soc.protocol import CORE_SIZES, Status
from hw.soc.soc import BusSoC, SoC, SoCCore
from sim import reference
from sw.driver import Accelerator, DeviceError

TINY = PRESETS["tiny"]      # 4x4, scratchpad 256 rows, accumulator 64 rows, binary 32b x 4 lanes

# The tiny core's windows worked out by hand from the core's documented layout (default core
# sizes: binary_max_k 1024, binary_max_n 256, 1024 parameter and binary result rows).
WINDOWS = {   # name: (base, bytes)
    "core_control": (0x0000_0400, 64 * 4),
    "scratchpad": (0x0100_0000, 256 * 1 * 4),             # 1 word per 4-byte row
    "accumulator": (0x0200_0000, 64 * 4 * 4),             # 4 lanes per row
    "parameters": (0x0300_0000, 1024 * 4 * 4),            # 4 words per entry
    "binary_weights": (0x0400_0000, (1024 // 32) * (256 // 4) * 4 * 4),   # beats x folds x lanes
    "binary_thresholds": (0x0500_0000, (1024 // 32) * (256 // 4) * 4 * 4),  # as deep as weights
    "binary_results": (0x0600_0000, 1024 * 8 * 4),        # 4 dots + 1 bit word, stride 8
}


@pytest.fixture(scope="module")
def device():
    with Accelerator.open("sim://tiny?max_payload=256&queue_depth=4&binary_max_n=8") \
            as accelerator:
        yield accelerator


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_memory_map_has_every_core_window():
    soc = SoCCore(config=TINY)
    windows = {window.name: (window.base, window.size) for window in soc.memory_map.windows}
    assert windows == {"identity": (0, 34 * 4), "control": (0x800, 8), **WINDOWS}
    del soc
    gc.collect()    # the unelaborated SoC warns when collected: do it inside the filter


def test_identity_reports_windows_and_core_sizes(device):
    assert device.version == (2, 0)
    assert device.windows == {name: base for name, (base, _) in WINDOWS.items()}
    assert {name: getattr(device.config, name) for name in CORE_SIZES} == {
        "binary_max_k": 1024, "binary_max_n": 8, "parameter_rows": 1024,
        "binary_result_rows": 1024, "queue_depth": 4, "max_pool_width": 64}
    for name in CORE_SIZES:
        assert device.read_register(f"CORE_{name.upper()}") == getattr(device.config, name)
    assert device.core_status()["queue_free"] == 4


@pytest.mark.parametrize("operation", [
    lambda d: d.read_registers(0x0000_0500, 1),                      # past the core registers
    lambda d: d.read_registers(0x0000_04FC, 2),                      # straddling its end
    lambda d: d.bulk_read(0x0000_0400, 4),                           # registers by bulk
    lambda d: d.bulk_read(0x0200_0400, 4),                           # past the accumulator
    lambda d: d.bulk_write(0x0300_4000, bytes(4)),                   # past the parameters
    lambda d: d.bulk_read(0x0600_8000, 4),                           # past the binary results
    lambda d: d.bulk_read(0x0700_0000, 4),                           # after every window
    lambda d: d.read_registers(0x0100_0000, 1),                      # memory by registers
])
def test_outside_every_window_is_bad_address(device, operation):
    with pytest.raises(DeviceError) as error:
        operation(device)
    assert error.value.status == Status.BAD_ADDRESS


@pytest.mark.parametrize("operation", [
    lambda d: d.bulk_write(0x0200_0000, bytes(4)),                   # accumulator: read-only
    lambda d: d.bulk_write(0x0600_0000, bytes(4)),                   # binary results: read-only
])
def test_read_only_core_windows(device, operation):
    with pytest.raises(DeviceError) as error:
        operation(device)
    assert error.value.status == Status.READ_ONLY


def test_counters_and_queue_back_pressure(device):
    # 3 images -> 3 x (CONV, REQUANT_STORE) = 6 commands (one compiled program; the driver's
    # wait for them ends the run, no FENCE) through a 4-deep queue.
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (3, 4, 4, 3), dtype=np.int8)
    w = rng.integers(-128, 128, (2, 2, 3, 5), dtype=np.int8)
    multiplier, shift = zip(*(reference.quantize_multiplier(s) for s in (1e-3, 2e-3, 3e-4,
                                                                          1e-4, 5e-3)))
    device.clear_perf_counters()
    got = device.conv2d(x, w, None, multiplier=multiplier, shift=shift)
    counters = device.perf_counters()
    np.testing.assert_array_equal(got, reference.requantize(
        reference.conv2d(x, w), np.array(multiplier), np.array(shift)))
    assert counters["macs"] == 3 * 3 * 3 * (2 * 2 * 3) * 5
    assert counters["commands_retired"] >= 6
    assert counters["cycles"] >= counters["active_cycles"] >= counters["compute_busy"] > 0
    device.clear_perf_counters()
    assert device.perf_counters()["macs"] == 0


def test_binary_layers_wider_than_the_engine_are_split(device):
    # 19 neurons on an engine that holds 8 per layer: three weight loads.
    rng = np.random.default_rng(6)
    a = reference.pack_bits(rng.choice([-1, 1], (3, 45)).astype(np.int8))
    w = reference.pack_bits(rng.choice([-1, 1], (19, 45)).astype(np.int8))
    thresholds, ascending = rng.integers(-9, 10, 19), rng.integers(0, 2, 19).astype(bool)
    dots = reference.binary_dense(a, w, 45)
    np.testing.assert_array_equal(device.binary_dense(a, w, 45), dots)
    np.testing.assert_array_equal(device.binary_dense(a, w, 45, thresholds, ascending),
                                  reference.threshold_activation(dots, thresholds, ascending))


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("soc_class", [SoCCore, BusSoC, SoC])
def test_output_stationary_soc_is_refused_at_construction(soc_class):
    with pytest.raises(ValueError) as error:
        soc_class(config=TINY.replace(dataflow="output_stationary"))
    message = str(error.value)
    del error
    gc.collect()    # the half-built core warns when collected: do it inside the filter
    assert "the SoC, runs dataflow 'weight_stationary' only, not 'output_stationary'" in message
    assert "hw.systolic.SystolicArray" in message
    assert "python -m sim.bench systolic --dataflow output_stationary" in message


@pytest.mark.slow      # every byte is 40 cycles of pysim
def test_core_through_the_uart_pins():
    with Accelerator.open("sim://tiny?line=uart&max_payload=64") as device:
        a = np.array([[1, -2, 3]], np.int8)
        w = np.array([[4], [5], [-6]], np.int8)
        np.testing.assert_array_equal(device.matmul_int32(a, w, [7]), [[4 - 10 - 18 + 7]])


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs, error, message", [
    ({"config": "tiny"}, TypeError, "config must be an AcceleratorConfig"),
])
def test_soc_parameters(kwargs, error, message):
    with pytest.raises(error, match=message) as raised:
        SoCCore(**kwargs)
    del raised
    gc.collect()
