"""Links: register and memory access to a device over a transport, selected by URL.

`open_link(url)` parses the URL, opens the transport and wraps it:

* ``sim://``, ``uart://`` -> `FrameLink`: request/reply frames (`hw.soc.protocol`), stop-and-wait,
  with a timeout per reply and retries. A retry re-sends the same frame with the *same* seq, so a
  write whose reply was lost is not applied twice (the device answers a repeated write's seq OK
  without applying it). Transfers longer than the device's max payload are split.
* ``pcie://`` -> `MappedLink`: 32-bit loads and stores at the same bus addresses.

Both offer the same four operations on byte addresses: `read_registers`, `write_registers`
(lists of 32-bit words, register windows) and `bulk_read`, `bulk_write` (bytes, memory windows).
Frame-link options in the URL: ``timeout`` (seconds per reply; default from the transport's
line rate) and ``retries`` (default 3).
"""

import importlib
import struct

from hw.soc import protocol
from hw.soc.protocol import (CRC, MAX_PAYLOAD, REPLY_HEADER, REPLY_SYNC, WORD_BYTES, Opcode,
                             Request, Status, crc16)
from sw.driver.errors import (DeviceError, InvalidURL, LinkTimeout, ProtocolError)
from sw.driver.transport import Closable, non_negative_int, positive_float, split_url

__all__ = ["Link", "FrameLink", "MappedLink", "open_link", "SCHEMES"]

DEFAULT_RETRIES = 3

_HINTS = {
    Status.BAD_OPCODE: "the device does not know this operation (driver newer than bitstream?)",
    Status.BAD_ADDRESS: "unaligned, outside every window, crossing a window's end, or the wrong "
                        "kind of window (register operations need a register window, bulk "
                        "operations a memory window)",
    Status.BAD_LENGTH: "the length must be a multiple of 4 between 4 and the device's "
                       "max payload",
    Status.READ_ONLY: "the register window is read-only",
}
_RETRY_STATUSES = (Status.BAD_CRC, Status.TRUNCATED)


def _check_words(address, values=None, count=None):
    if address % WORD_BYTES:
        raise ValueError(f"Register address {address:#x} is not a multiple of {WORD_BYTES}")
    if count is not None and count < 1:
        raise ValueError(f"count must be positive, not {count}")
    for value in values or ():
        if not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"Register values must be integers in 0..2^32-1, not {value!r}")


def _check_bytes(address, length):
    if address % WORD_BYTES or length % WORD_BYTES or length < 1:
        raise ValueError(f"Bulk transfers move whole 32-bit words: address {address:#x} and "
                         f"length {length} must be positive multiples of {WORD_BYTES}")


class Link(Closable):
    """Register and memory access to one device."""

    def read_registers(self, address, count):
        """`count` 32-bit registers from byte `address` on."""
        raise NotImplementedError

    def write_registers(self, address, values):
        raise NotImplementedError

    def bulk_read(self, address, length):
        """`length` bytes of a memory window from byte `address` on."""
        raise NotImplementedError

    def bulk_write(self, address, data):
        raise NotImplementedError

    def _release(self):
        self.transport.close()


class FrameLink(Link):
    """The frame protocol over a `ByteTransport`.

    Parameters
    ----------
    transport : ByteTransport
    timeout : float or None
        Seconds (of the transport's clock) to wait for each part of a reply; None: the
        transport's estimate for the reply's size.
    retries : int
        Extra attempts after a lost, corrupted or truncated frame.
    """

    def __init__(self, transport, *, timeout=None, retries=DEFAULT_RETRIES):
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.max_payload = WORD_BYTES      # until the device tells
        self._seq = 0
        # The first frame is a read: it also makes the device forget the seq of the last write
        # it executed, so a new session's first write is never taken for a retry.
        self.max_payload = self.read_registers(protocol.register_address("MAX_PAYLOAD"), 1)[0]
        if not WORD_BYTES <= self.max_payload <= MAX_PAYLOAD:
            raise ProtocolError(f"The device reports a max payload of {self.max_payload} bytes; "
                                f"this driver handles {WORD_BYTES}..{MAX_PAYLOAD}")

    def read_registers(self, address, count):
        _check_words(address, count=count)
        data = self._chunked(Opcode.READ_REGISTERS, address, count * WORD_BYTES)
        return list(struct.unpack(f"<{count}I", data))

    def write_registers(self, address, values):
        values = list(values)
        _check_words(address, values)
        self._chunked(Opcode.WRITE_REGISTERS, address, len(values) * WORD_BYTES,
                      struct.pack(f"<{len(values)}I", *values))

    def bulk_read(self, address, length):
        _check_bytes(address, length)
        return self._chunked(Opcode.BULK_READ, address, length)

    def bulk_write(self, address, data):
        data = bytes(data)
        _check_bytes(address, len(data))
        self._chunked(Opcode.BULK_WRITE, address, len(data), data)

    def _chunked(self, opcode, address, length, payload=None):
        result = bytearray()
        for offset in range(0, length, self.max_payload):
            size = min(self.max_payload, length - offset)
            chunk = b"" if payload is None else payload[offset:offset + size]
            result += self.transact(opcode, address + offset, size, chunk)
        return bytes(result)

    def transact(self, opcode, address, length, payload=b""):
        """One request, retried until a reply comes back intact; returns the reply data."""
        self._check_open(f"send {opcode.name} of {length} bytes at {address:#x}")
        self._seq = (self._seq + 1) & 0xFF
        request = Request(self._seq, opcode, address, length, payload)
        frame = request.encode()
        expected = 0 if opcode.writes else length
        timeout = self.timeout or self.transport.reply_timeout(expected + len(frame))
        failures = []
        for attempt in range(1 + self.retries):
            if attempt:
                self._wait_for_quiet()
            self.transport.discard_input()
            self.transport.write(frame)
            try:
                status, data = self._receive_reply(request.seq, timeout)
            except _LostReply as lost:
                failures.append(str(lost))
                continue
            if status in _RETRY_STATUSES:
                failures.append(f"the device answered {status.name}")
                continue
            if status != Status.OK:
                raise DeviceError(f"{opcode.name} of {length} bytes at {address:#x} refused: "
                                  f"{status.name} ({_HINTS[status]})", status=status)
            if len(data) != expected:
                raise ProtocolError(f"{opcode.name} of {length} bytes at {address:#x}: the reply "
                                    f"carries {len(data)} bytes")
            return data
        summary = "; ".join(failures)
        if all(failure.startswith("no reply") for failure in failures):
            raise LinkTimeout(f"{opcode.name} at {address:#x}: no reply after "
                              f"{len(failures)} attempts ({summary}). Is the device powered, "
                              f"the bitstream loaded and the baud rate right?")
        raise ProtocolError(f"{opcode.name} at {address:#x} failed {len(failures)} times: "
                            f"{summary}. Line noise or a baud-rate mismatch?")

    def _wait_for_quiet(self):
        """Let the device finish whatever reply it is sending: it ignores the line meanwhile,
        so a retry sent into a reply would be lost."""
        quiet = self.transport.reply_timeout(0)
        while self.transport.read(MAX_PAYLOAD, quiet):
            pass

    def _read(self, count, timeout, what):
        data = self.transport.read(count, timeout)
        if len(data) < count:
            if what == "sync":
                raise _LostReply(f"no reply within {timeout:.3g} s")
            raise _LostReply(f"reply cut short ({what}: {len(data)} of {count} bytes within "
                             f"{timeout:.3g} s)")
        return data

    def _receive_reply(self, seq, timeout):
        while True:
            window = b""
            while window != REPLY_SYNC:
                window = (window + self._read(1, timeout, "sync"))[-len(REPLY_SYNC):]
            header = self._read(REPLY_HEADER.size, timeout, "header")
            reply_seq, status, length = REPLY_HEADER.unpack(header)
            if length > MAX_PAYLOAD:
                raise _LostReply(f"corrupt reply (length {length})")
            rest = self._read(length + CRC.size, timeout, "data")
            if crc16(header + rest) != 0:
                raise _LostReply("reply CRC mismatch")
            if reply_seq != seq:
                continue        # an answer to an earlier attempt
            try:
                return Status(status), rest[:length]
            except ValueError:
                raise ProtocolError(f"The device answered with unknown status {status:#x}; "
                                    f"driver and bitstream disagree on the protocol") from None


class _LostReply(Exception):
    pass


class MappedLink(Link):
    """The same operations as 32-bit loads and stores through a `MappedTransport`."""

    def __init__(self, transport):
        self.transport = transport

    def read_registers(self, address, count):
        _check_words(address, count=count)
        return [self.transport.read32(address + WORD_BYTES * i) for i in range(count)]

    def write_registers(self, address, values):
        values = list(values)
        _check_words(address, values)
        for i, value in enumerate(values):
            self.transport.write32(address + WORD_BYTES * i, value)

    def bulk_read(self, address, length):
        _check_bytes(address, length)
        return struct.pack(f"<{length // WORD_BYTES}I",
                           *self.read_registers(address, length // WORD_BYTES))

    def bulk_write(self, address, data):
        data = bytes(data)
        _check_bytes(address, len(data))
        self.write_registers(address, struct.unpack(f"<{len(data) // WORD_BYTES}I", data))


def _frame_transport(module, cls):
    def open_(url, target, query):
        transport_cls = getattr(importlib.import_module(module), cls)
        transport, options = transport_cls.from_url(url, target, query, _FRAME_LINK_OPTIONS)
        try:
            return FrameLink(transport, **options)
        except BaseException:
            transport.close()
            raise
    return open_


def _open_pcie(url, target, query):
    from sw.driver.pcie import PcieTransport
    transport, _ = PcieTransport.from_url(url, target, query, {})
    return MappedLink(transport)


_FRAME_LINK_OPTIONS = {"timeout": (positive_float, None),
                       "retries": (non_negative_int, DEFAULT_RETRIES)}

_open_sim_frames = _frame_transport("sw.driver.sim", "SimTransport")


def _open_sim(url, target, query):
    """``sim://``: frames over `SimTransport`, or for ``line=bus`` the `MappedLink` (the
    ``pcie://`` code path) over `SimBusTransport`, the simulated SoC's bus itself."""
    sim = importlib.import_module("sw.driver.sim")
    if sim.requests_bus_line(url, query):
        transport, _ = sim.SimBusTransport.from_url(url, target, query, {})
        return MappedLink(transport)
    return _open_sim_frames(url, target, query)


SCHEMES = {
    "sim": _open_sim,
    "uart": _frame_transport("sw.driver.uart", "UartTransport"),
    "pcie": _open_pcie,
}


def open_link(url):
    """A `Link` to the device at `url` (sim://, uart://, pcie://); `InvalidURL` if malformed."""
    scheme, target, query = split_url(url)
    if scheme not in SCHEMES:
        raise InvalidURL(f"Unknown transport {scheme!r} in {url!r}; known are "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    return SCHEMES[scheme](url, target, query)
