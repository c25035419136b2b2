"""The CSR block in the SoC, through the frame protocol: identity, config, counters, control."""

import gc

import pytest

from hw.config import DATAFLOWS, MULTIPLIERS, PRESETS
from hw.soc.csr import CONSTANT_REGISTERS, CsrBlock
from hw.soc.protocol import Opcode, Status
from sw.driver.errors import DeviceError
from sw.driver.link import FrameLink
from sw.driver.sim import SimTransport

CONFIG = PRESETS["default"].replace(scratchpad_rows=16)     # 12x12: every field non-trivial
ID = {name: 4 * index for index, name in enumerate(
    ["MAGIC", "VERSION", "MAX_PAYLOAD", "SCRATCHPAD_BASE", "SCRATCHPAD_BYTES", "CONFIG_ROWS",
     "CONFIG_COLS", "CONFIG_DATAFLOW", "CONFIG_MULTIPLIER", "CONFIG_REQUANT_LANES",
     "CONFIG_SCRATCHPAD_ROWS", "CONFIG_ACCUMULATOR_ROWS", "CONFIG_BINARY_WIDTH",
     "CONFIG_BINARY_LANES", "CONFIG_CLOCK_HZ", "CONFIG_UART_BAUD", "STATUS", "LAST_ERROR",
     "FRAMES_OK", "FRAMES_BAD", "BYTES_DISCARDED", "LAST_SEQ", "CORE_CONTROL_BASE",
     "ACCUMULATOR_BASE",
     "PARAMETERS_BASE", "BINARY_WEIGHTS_BASE", "BINARY_THRESHOLDS_BASE", "BINARY_RESULTS_BASE",
     "CORE_BINARY_MAX_K", "CORE_BINARY_MAX_N", "CORE_PARAMETER_ROWS",
     "CORE_BINARY_RESULT_ROWS", "CORE_QUEUE_DEPTH", "CORE_MAX_POOL_WIDTH"])}
SCRATCH, CONTROL = 0x800, 0x804


@pytest.fixture
def link():
    return FrameLink(SimTransport(config=CONFIG, max_payload=128))


def read(link, name):
    return link.read_registers(ID[name], 1)[0]


def test_identity_and_config_registers(link):
    values = link.read_registers(0, 16)
    assert values == [
        # 12-byte scratchpad rows take 4 words each (the core's power-of-two row stride).
        int.from_bytes(b"ECNN", "little"), 0x0002_0000, 128, 0x0100_0000, 16 * 16,
        12, 12, DATAFLOWS.index(CONFIG.dataflow), MULTIPLIERS.index(CONFIG.multiplier),
        CONFIG.requant_lanes, 16, CONFIG.accumulator_rows, CONFIG.binary_width,
        CONFIG.binary_lanes, 105_000_000, 3_000_000]


def test_counters_last_error_and_clear(link):
    assert read(link, "FRAMES_OK") == 2             # the link's connect reads
    with pytest.raises(DeviceError, match="BAD_ADDRESS"):
        link.read_registers(0x500, 1)               # past the core's registers
    with pytest.raises(DeviceError, match="READ_ONLY"):
        link.write_registers(ID["MAGIC"], [0])
    assert link.read_registers(ID["STATUS"], 4) == [1, Status.READ_ONLY.value, 3, 2]
    link.transport.write(b"\x00\x11\x22garbage")    # no sync byte among them
    # Those 10, and the 6 payload and CRC bytes of the refused write (answered at its header).
    assert read(link, "BYTES_DISCARDED") == 16
    link.write_registers(CONTROL, [1])
    # Cleared, then the clearing write and this read counted.
    assert link.read_registers(ID["STATUS"], 5) == [0, 0, 1, 0, 0]


def test_last_seq_follows_the_requests_taken_in_sequence(link):
    # Read while the read itself is under way: the record before it, which the read (taken
    # in sequence) then moves on by one, and the write after it by one more.
    last = read(link, "LAST_SEQ")
    link.write_registers(SCRATCH, [1])
    assert read(link, "LAST_SEQ") == (last + 2) & 0xFF


def test_scratch_is_read_write_and_control_reads_zero(link):
    link.write_registers(SCRATCH, [0xCAFE_F00D, 0])
    assert link.read_registers(SCRATCH, 2) == [0xCAFE_F00D, 0]
    assert read(link, "MAGIC") == int.from_bytes(b"ECNN", "little")


def test_reads_past_the_identity_window_are_refused(link):
    with pytest.raises(DeviceError) as error:
        link.transact(Opcode.READ_REGISTERS, ID["CORE_MAX_POOL_WIDTH"], 8)
    assert error.value.status == Status.BAD_ADDRESS


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("constants, error, message", [
    ("x", TypeError, "constants must be a dict"),
    ({}, ValueError, "missing \\['ACCUMULATOR_BASE', 'BINARY_RESULTS_BASE'"),
    ({**{name: 0 for name in CONSTANT_REGISTERS}, "EXTRA": 1}, ValueError, "unknown \\['EXTRA'\\]"),
    ({**{name: 0 for name in CONSTANT_REGISTERS}, "MAGIC": 1 << 32}, ValueError,
     "Register MAGIC must be an integer in 0..2\\^32-1"),
])
def test_csr_parameters(constants, error, message):
    with pytest.raises(error, match=message) as raised:
        CsrBlock(constants=constants)
    del raised
    gc.collect()    # the half-built component warns when collected: do it inside the filter
