"""The host driver: Accelerator over sim:// (byte streams and UART pins), retries through a
faulty line, pcie:// against a file-backed window, URL errors, every transport and link after
close(), and the pty server end to end."""

import os
import random
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hw.config import PRESETS
from sw.driver import (Accelerator, DeviceError, DeviceMismatch, InvalidURL, LinkClosed,
                       LinkError, LinkTimeout, ProtocolError, open_link)
from sw.driver.link import FrameLink
from sw.driver.pcie import PcieTransport
from sw.driver.sim import SimBusTransport, SimTransport
from sw.driver.uart import UartTransport
from hw.soc.protocol import Status
from sim import reference

SCRATCHPAD = 0x0100_0000
TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def device():
    with Accelerator.open("sim://tiny?max_payload=64") as accelerator:
        yield accelerator


def test_open_reads_identity_from_the_device(device):
    assert device.config == TINY
    assert device.version == (2, 0)
    assert device.max_payload == 64
    assert (device.scratchpad_base, device.scratchpad_bytes) == (SCRATCHPAD, 256 * 4)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 63), st.integers(1, 48), st.integers(0, 2**32 - 1))
def test_bulk_and_register_round_trips(device, word_offset, words, seed):
    # Longer than max_payload: the link splits the transfer into several frames.
    data = random.Random(seed).randbytes(4 * words)
    device.bulk_write(SCRATCHPAD + 4 * word_offset, data)
    assert device.bulk_read(SCRATCHPAD + 4 * word_offset, len(data)) == data
    device.write_register("SCRATCH", seed)
    assert device.read_register("SCRATCH") == seed


@pytest.mark.parametrize("operation, status", [
    (lambda d: d.bulk_read(SCRATCHPAD + 1020, 8), Status.BAD_ADDRESS),
    (lambda d: d.bulk_read(0x0000_0000, 4), Status.BAD_ADDRESS),
    (lambda d: d.read_registers(SCRATCHPAD, 1), Status.BAD_ADDRESS),
    (lambda d: d.write_register("MAGIC", 1), Status.READ_ONLY),
    (lambda d: d.read_registers(0x0000_0500, 1), Status.BAD_ADDRESS),    # past the core's
    (lambda d: d.bulk_read(0x0700_0000, 4), Status.BAD_ADDRESS),    # after the last window
])
def test_refused_requests_raise_device_error(device, operation, status):
    with pytest.raises(DeviceError) as error:
        operation(device)
    assert error.value.status == status
    assert status.name in str(error.value)


def test_unaligned_requests_are_refused_before_sending(device):
    with pytest.raises(ValueError, match="multiples of 4"):
        device.bulk_write(SCRATCHPAD + 2, b"1234")
    with pytest.raises(ValueError, match="0..2\\^32-1"):
        device.write_register("SCRATCH", -1)


class FaultyLine(SimTransport):
    """The simulated SoC behind a line that corrupts chosen frames in either direction."""

    def __init__(self, faults, **kwargs):
        super().__init__(config=TINY, max_payload=64, **kwargs)
        self.faults = faults            # frame number -> (direction, kind, position)
        self.frames = 0
        self.reply_fault = None
        self.held_back = bytearray()

    def write(self, data):
        self.frames += 1
        direction, kind, position = self.faults.get(self.frames, (None, None, 0))
        position %= len(data)
        if direction == "request":
            data = corrupt(data, kind, position)
        # Reply faults hit one of the first 8 bytes: sync, header or the CRC of a short reply.
        self.reply_fault = (kind, position % 8) if direction == "reply" else None
        self.reply_offset = 0
        super().write(data)

    def read(self, count, timeout):
        data = bytes(self.held_back) + super().read(max(0, count - len(self.held_back)), timeout)
        self.held_back.clear()
        offset, self.reply_offset = self.reply_offset, self.reply_offset + len(data)
        if self.reply_fault and offset <= self.reply_fault[1] < self.reply_offset:
            kind, position = self.reply_fault
            self.reply_fault = None
            data = corrupt(data, kind, position - offset)
        self.held_back += data[count:]          # inserted garbage: deliver it later
        return data[:count]

    def discard_input(self):
        self.held_back.clear()
        super().discard_input()


def corrupt(data, kind, position):
    if kind == "flip":
        return data[:position] + bytes([data[position] ^ 0x10]) + data[position + 1:]
    if kind == "drop":
        return data[:position] + data[position + 1:]
    if kind == "garbage":
        return data[:position] + b"\x5a\xa5\x00\x13" + data[position:]
    return data[:position]                                          # truncate


@settings(max_examples=12, deadline=None)
@given(st.dictionaries(st.integers(2, 7), st.tuples(
    st.sampled_from(["request", "reply"]), st.sampled_from(["flip", "drop", "garbage",
                                                             "truncate"]),
    st.integers(0, 200)), max_size=3), st.binary(min_size=4, max_size=4))
def test_retries_recover_from_a_faulty_line(faults, scratch):
    line = FaultyLine(faults)
    link = FrameLink(line, retries=4)
    data = bytes(range(96))
    link.bulk_write(SCRATCHPAD + 64, data)              # two frames
    link.write_registers(0x800, [int.from_bytes(scratch, "little")])
    assert link.bulk_read(SCRATCHPAD + 64, 96) == data
    assert link.read_registers(0x800, 1) == [int.from_bytes(scratch, "little")]


def test_a_write_whose_reply_is_lost_is_applied_once():
    # The reply to the write is cut; the retry carries the same seq and is answered OK
    # without being applied again -- visible because the device counts one executed write
    # and one retried frame, and the data is right.
    line = FaultyLine({3: ("reply", "truncate", 3)})
    link = FrameLink(line, retries=2)
    link.bulk_write(SCRATCHPAD, b"ABCDEFGH")
    assert line.frames == 4         # connect (LAST_SEQ, MAX_PAYLOAD), write, its retry
    assert link.bulk_read(SCRATCHPAD, 8) == b"ABCDEFGH"


def test_no_reply_raises_link_timeout_after_the_retries():
    line = FaultyLine({n: ("request", "truncate", 1) for n in range(3, 12)})
    link = FrameLink(line, retries=2)
    with pytest.raises(LinkTimeout, match="no reply after 3 attempts") as error:
        link.read_registers(0, 1)
    assert isinstance(error.value, TimeoutError)


def test_persistent_corruption_raises_protocol_error():
    line = FaultyLine({n: ("reply", "flip", 2) for n in range(3, 12)})      # the status byte
    link = FrameLink(line, retries=1)
    with pytest.raises(ProtocolError, match="failed 2 times: reply CRC mismatch"):
        link.read_registers(0, 1)


@pytest.mark.parametrize("divisor", ["4", "13/3"])
def test_uart_line_in_simulation(divisor):
    # 13/3: bits of 4 or 5 cycles, as a clock that is not a multiple of the baud rate gives them.
    with Accelerator.open(f"sim://tiny?line=uart&divisor={divisor}") as device:
        assert device.config == TINY
        device.bulk_write(SCRATCHPAD + 8, b"uart-pins-ok")
        assert device.bulk_read(SCRATCHPAD + 8, 12) == b"uart-pins-ok"


# pcie:// against a file-backed window ------------------------------------------------------------

def write_identity(path, *, magic=int.from_bytes(b"ECNN", "little"), version=2 << 16,
                   dataflow=0):
    """A file laid out like the device's BAR: the identity registers, then the scratchpad."""
    config = [4, 4, dataflow, 0, 2, 256, 64, 32, 4, 105_000_000, 3_000_000]  # PRESETS["tiny"]
    live = [0] * 6              # STATUS, LAST_ERROR, FRAMES_OK/BAD, BYTES_DISCARDED, LAST_SEQ
    windows = [0x400] + [SCRATCHPAD + (i << 24) for i in range(1, 6)]     # core control, memories
    core_sizes = [1024, 256, 1024, 1024, 8, 64]                      # CORE_*, the same
    words = [magic, version, 4096, SCRATCHPAD, 1024, *config, *live, *windows, *core_sizes]
    with open(path, "wb") as file:
        file.truncate(SCRATCHPAD + 1024)
        file.write(struct.pack(f"<{len(words)}I", *words))


def test_pcie_file_window(tmp_path):
    path = tmp_path / "bar0"
    write_identity(path)
    with Accelerator.open(f"pcie://file:{path}") as device:
        assert device.config == TINY
        device.bulk_write(SCRATCHPAD + 16, b"0123456789abcdef")
        assert device.bulk_read(SCRATCHPAD + 16, 16) == b"0123456789abcdef"
        with pytest.raises(LinkError, match="not an aligned word inside"):
            device.bulk_read(SCRATCHPAD + 1024, 4)
    with open(path, "rb") as file:
        file.seek(SCRATCHPAD + 16)
        assert file.read(16) == b"0123456789abcdef"


@pytest.mark.parametrize("kwargs, message", [
    ({"magic": 0xFFFFFFFF}, "not an ecpnn accelerator: MAGIC reads 0xffffffff"),
    ({"version": 3 << 16}, "speaks protocol 3.0, this driver needs 2.0"),
    ({"version": 1 << 16 | 1}, "speaks protocol 1.1, this driver needs 2.0"),
    # An earlier bitstream built output-stationary: its core could not run GEMM or CONV.
    ({"dataflow": 1}, "reports a config this driver cannot read: .* runs dataflow "
                      "'weight_stationary' only, not 'output_stationary'"),
])
def test_device_mismatch(tmp_path, kwargs, message):
    path = tmp_path / "bar0"
    write_identity(path, **kwargs)
    with pytest.raises(DeviceMismatch, match=message):
        Accelerator.open(f"pcie://file:{path}")


# URLs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, message", [
    ("ttyUSB0", "must look like 'scheme://target"),
    ("tcp://localhost:1234", "Unknown transport 'tcp'"),
    ("sim://tiny?line=fast", "Bad option line='fast'.*must be one of"),
    ("sim://tiny?speed=1", "Unknown option\\(s\\) \\['speed'\\]"),
    ("sim://huge", "Unknown preset 'huge'"),
    ("sim://tiny?divisor=2", "at least 4"),
    ("sim://tiny?divisor=7/2", "at least 4"),
    ("sim://tiny?divisor=fast", "Bad option divisor='fast'"),
    ("sim://tiny?max_payload=100", "power of two"),
    ("sim://tiny?queue_depth=1", "AcceleratorConfig.queue_depth must be in 2..256, not 1"),
    ("sim://tiny?line=bus&parameter_rows=3", "AcceleratorConfig.parameter_rows must be a power "
                                            "of two"),
    ("sim://tiny?retries=-1", "non-negative"),
    ("sim://tiny?timeout=0", "positive number of seconds"),
    ("sim://tiny?line", "Cannot parse the options"),
    ("uart:///dev/ttyUSB0?baud=fast", "Bad option baud='fast'"),
    ("uart:///dev/ttyUSB0?parity=E", "Unknown option\\(s\\) \\['parity'\\]"),
    ("uart://", "names no serial port"),
    ("pcie://01:00.0", "expected a PCI address like pcie://0000:01:00.0"),
    ("pcie://0000:01:00.0?bar=9", "BARs 0..5"),
    ("pcie://file:/tmp/x?bar=1", "not of a file"),
    ("pcie://file:", "names no file"),
])
def test_url_errors(url, message):
    with pytest.raises(InvalidURL, match=message) as error:
        open_link(url)
    assert isinstance(error.value, ValueError)


def test_missing_devices_are_link_errors(tmp_path):
    with pytest.raises(LinkError, match="Cannot open serial port"):
        open_link(f"uart://{tmp_path}/ttyNONE")
    with pytest.raises(LinkError, match="lspci -D"):
        open_link(f"pcie://file:{tmp_path}/none")


def test_pyserial_url_loop_never_answers():
    # loop:// echoes the request back; a request is not a reply, so the driver times out.
    with pytest.raises(LinkTimeout):
        open_link("uart://loop://?timeout=0.02&retries=1")


# After close() ----------------------------------------------------------------------------------

def pcie_file(tmp_path):
    write_identity(tmp_path / "bar0")
    return tmp_path / "bar0"


# (operation, what LinkClosed says was attempted); the first works before close().
BYTE_OPERATIONS = [(lambda t: t.read(4, 1e-4), "Cannot read from"),
                   (lambda t: t.write(b"\x00" * 12), "Cannot write 12 bytes to"),
                   (lambda t: t.discard_input(), "Cannot discard the input of")]
MAPPED_OPERATIONS = [(lambda t: t.read32(SCRATCHPAD), f"Cannot load from {SCRATCHPAD:#x}"),
                     (lambda t: t.write32(SCRATCHPAD + 4, 1),
                      f"Cannot store to {SCRATCHPAD + 4:#x}")]


@pytest.mark.parametrize("make_transport, operations, name", [
    (lambda tmp_path: SimTransport(config=TINY), BYTE_OPERATIONS, "the simulated SoC"),
    (lambda tmp_path: UartTransport("loop://"), BYTE_OPERATIONS, "serial port 'loop://'"),
    (lambda tmp_path: SimBusTransport(config=TINY), MAPPED_OPERATIONS,
     "the simulated SoC's bus"),
    (lambda tmp_path: PcieTransport(str(pcie_file(tmp_path))), MAPPED_OPERATIONS, "bar0"),
], ids=["sim", "uart", "sim-bus", "pcie-file"])
def test_every_transport_refuses_use_after_close(tmp_path, make_transport, operations, name):
    transport = make_transport(tmp_path)
    works, _ = operations[0]
    works(transport)
    assert not transport.closed
    transport.close()
    transport.close()                   # harmless
    assert transport.closed
    for operation, attempted in operations:
        with pytest.raises(LinkClosed, match=attempted) as error:
            operation(transport)
        assert name in str(error.value) and "closed" in str(error.value)
        assert isinstance(error.value, LinkError)


@pytest.mark.parametrize("url, attempted", [
    ("sim://tiny", "Cannot send READ_REGISTERS of 4 bytes at 0x800"),       # FrameLink
    ("pcie-file", "Cannot load from 0x800 of"),                             # MappedLink
])
def test_the_link_and_the_accelerator_refuse_use_after_close(tmp_path, url, attempted):
    if url == "pcie-file":
        url = f"pcie://file:{pcie_file(tmp_path)}"
    with Accelerator.open(url) as device:
        device.write_register("SCRATCH", 7)
    device.close()                      # again: harmless
    assert device.closed and device.link.closed and device.link.transport.closed
    with pytest.raises(LinkClosed, match=f"{attempted}.*: the link was closed"):
        device.read_register("SCRATCH")
    with pytest.raises(LinkClosed, match="closed"):
        device.bulk_write(SCRATCHPAD, b"1234")
    with pytest.raises(LinkClosed, match="closed"):
        device.matmul(np.ones((2, 4), np.int8), np.ones((4, 4), np.int8), None,
                      multiplier=2**30, shift=0)


# The pty server --------------------------------------------------------------------------------

def test_pty_server_end_to_end():
    server = subprocess.Popen([sys.executable, "-m", "sim.serve", "--pty", "--seconds", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        path = server.stdout.readline().strip()
        assert path.startswith("/dev/")
        with Accelerator.open(f"uart://{path}?baud=115200&timeout=5") as device:
            assert device.config == TINY
            data = bytes(range(256)) * 2
            device.bulk_write(SCRATCHPAD, data)
            assert device.bulk_read(SCRATCHPAD, len(data)) == data
            # The layer API through the pty: the served SoC has the core.
            a = np.array([[3, -1], [0, 2]], np.int8)
            w = np.array([[1, 2, 3], [-4, 5, 6]], np.int8)
            np.testing.assert_array_equal(device.matmul_int32(a, w), reference.gemm(a, w))
    finally:
        server.terminate()
        server.wait(timeout=10)
