"""Links: register and memory access to a device over a transport, selected by URL.

`open_link(url)` parses the URL, opens the transport and wraps it:

* ``sim://``, ``uart://`` -> `FrameLink`: request/reply frames (`hw.soc.protocol`), stop-and-wait,
  with a timeout per reply and retries, under the protocol's sequence rules: the link reads the
  device's LAST_SEQ before its first request and after any request it gave up on, numbers each
  new request LAST_SEQ + 1 and re-sends a retry with the *same* seq, so a write whose reply was
  lost is not applied twice and a new write is never taken for a retry. Transfers longer than
  the device's max payload are split.
* ``pcie://`` -> `MappedLink`: 32-bit loads and stores at the same bus addresses.

Both offer the same four operations on byte addresses: `read_registers`, `write_registers`
(lists of 32-bit words, register windows) and `bulk_read`, `bulk_write` (bytes, memory windows),
and `now()`, the transport's clock (seconds; simulated time on ``sim://``) for bounding waits.
Frame-link options in the URL: ``timeout`` (seconds per reply; default from the transport's
line rate) and ``retries`` (default 3).
"""

import struct

from hw.soc import protocol
from hw.soc.protocol import (CRC, MAX_PAYLOAD, REPLY_HEADER, REPLY_SYNC, WORD_BYTES, Opcode,
                             Request, Status, crc16, unstuff_prefix)
from sw.driver.errors import (DeviceError, InvalidURL, LinkTimeout, ProtocolError)
from sw.driver.transport import Closable, non_negative_int, positive_float, split_url

__all__ = ["Link", "FrameLink", "MappedLink", "open_link", "SCHEMES"]

DEFAULT_RETRIES = 3
# A reply attempt ends after this many reply timeouts even if bytes keep coming (a babbling
# line, replies to other requests), and waiting for quiet after this many chunks of bytes.
_ATTEMPT_TIMEOUTS = 4
_QUIET_READS = 16

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

    def now(self):
        """Seconds on the transport's clock (simulated time for a simulation)."""
        return self.transport.now()

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
        self._last_seq = None       # the device's LAST_SEQ as far as we know; None: unknown
        self._sent_seq = 0          # the seq of the last request sent
        self._pending = bytearray()     # line bytes received and not parsed yet
        self._replying = False      # a request was given up on: the device may still be replying
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
        """One new request, retried until a reply comes back intact; returns the reply data.

        Numbered LAST_SEQ + 1 (after reading LAST_SEQ if it is unknown). A BAD_SEQ answer
        (the device's sequence moved without us: another host, a replayed frame) means the
        write was not applied: the link re-reads LAST_SEQ and sends it once more."""
        self._check_open(f"send {opcode.name} of {length} bytes at {address:#x}")
        for _ in range(2):
            if self._last_seq is None:
                self._synchronize()
            seq = (self._last_seq + 1) & 0xFF
            status, data = self._exchange(Request(seq, opcode, address, length, payload))
            if status != Status.BAD_SEQ:
                break
            self._last_seq = None
        else:
            raise ProtocolError(f"{opcode.name} at {address:#x}: the device refused its seq "
                                f"twice (BAD_SEQ) right after telling its LAST_SEQ; is another "
                                f"host talking to it?")
        self._last_seq = seq            # a final status: the device recorded it
        if status != Status.OK:
            raise DeviceError(f"{opcode.name} of {length} bytes at {address:#x} refused: "
                              f"{status.name} ({_HINTS[status]})", status=status)
        expected = 0 if opcode.writes else length
        if len(data) != expected:
            raise ProtocolError(f"{opcode.name} of {length} bytes at {address:#x}: the reply "
                                f"carries {len(data)} bytes")
        return data

    def _synchronize(self):
        """Learn the device's LAST_SEQ: a read (reads run with any seq) of the register. The
        device moves its sequence on to our seq if that was LAST_SEQ + 1, else keeps it."""
        seq = (self._sent_seq + 1) & 0xFF
        status, data = self._exchange(Request(seq, Opcode.READ_REGISTERS,
                                              protocol.register_address("LAST_SEQ"), WORD_BYTES))
        if status != Status.OK or len(data) != WORD_BYTES:
            raise ProtocolError(f"Reading LAST_SEQ was answered {status.name} with "
                                f"{len(data)} bytes: is this an ecpnn device of protocol "
                                f"{protocol.VERSION_MAJOR}?")
        last_seq = int.from_bytes(data, "little") & 0xFF
        self._last_seq = seq if seq == (last_seq + 1) & 0xFF else last_seq

    def _exchange(self, request):
        """Send `request` until a reply other than BAD_CRC/TRUNCATED comes back; (status,
        data). LAST_SEQ is unknown until the caller has the answer (the device may or may not
        have taken the request), so giving up (`LinkTimeout`, `ProtocolError`) leaves it so."""
        self._last_seq = None
        self._sent_seq = request.seq
        frame = request.encode()
        expected = 0 if request.opcode.writes else request.length
        timeout = self.timeout or self.transport.reply_timeout(expected + len(frame))
        failures = []
        for attempt in range(1 + self.retries):
            if attempt or self._replying:
                self._wait_for_quiet()
            self._discard_input()
            self.transport.write(frame)
            try:
                status, data = self._receive_reply(request.seq, timeout)
            except _LostReply as lost:
                failures.append(str(lost))
                continue
            if status in _RETRY_STATUSES:
                failures.append(f"the device answered {status.name}")
                continue
            return status, data
        self._replying = True
        what = f"{request.opcode.name} at {request.address:#x}"
        summary = "; ".join(failures)
        if all(failure.startswith("no reply") for failure in failures):
            raise LinkTimeout(f"{what}: no reply after {len(failures)} attempts ({summary}). "
                              f"Is the device powered, the bitstream loaded and the baud rate "
                              f"right?")
        raise ProtocolError(f"{what} failed {len(failures)} times: {summary}. Line noise or a "
                            f"baud-rate mismatch?")

    def _discard_input(self):
        self._pending.clear()
        self.transport.discard_input()

    def _wait_for_quiet(self):
        """Let the device finish whatever reply it is sending: it ignores the line meanwhile,
        so a retry sent into a reply would be lost."""
        quiet = self.transport.reply_timeout(0)
        for _ in range(_QUIET_READS):
            if not self.transport.read(MAX_PAYLOAD, quiet):
                break
        self._pending.clear()
        self._replying = False

    def _hunt(self, timeout, deadline):
        """Skip line bytes up to and including the next reply sync byte."""
        while REPLY_SYNC not in self._pending:
            self._pending.clear()
            data = self.transport.read(1, timeout)
            if not data:
                raise _LostReply(f"no reply within {timeout:.3g} s")
            if self.transport.now() > deadline:
                raise _LostReply(f"no reply sync byte within {_ATTEMPT_TIMEOUTS} x "
                                 f"{timeout:.3g} s of line bytes")
            self._pending += data
        del self._pending[:self._pending.index(REPLY_SYNC) + 1]

    def _read_frame_bytes(self, count, timeout, what):
        """`count` bytes of the reply being received, unstuffed; `_Restart` at a sync byte."""
        out = b""
        while True:
            plain, used, at_sync = unstuff_prefix(self._pending, count - len(out))
            out += plain
            del self._pending[:used]
            if at_sync:
                raise _Restart
            if len(out) == count:
                return out
            # The frame has at least this many line bytes left: never reads past its end.
            need = count - len(out) + len(self._pending)
            self._pending += self.transport.read(need - len(self._pending), timeout)
            if len(self._pending) < need:
                raise _LostReply(f"reply cut short ({what}: {len(out)} of {count} bytes "
                                 f"within {timeout:.3g} s)")

    def _receive_reply(self, seq, timeout):
        deadline = self.transport.now() + _ATTEMPT_TIMEOUTS * timeout
        while True:
            if self.transport.now() > deadline:
                raise _LostReply(f"no reply to seq {seq} within {_ATTEMPT_TIMEOUTS} x "
                                 f"{timeout:.3g} s of line bytes")
            self._hunt(timeout, deadline)
            try:
                header = self._read_frame_bytes(REPLY_HEADER.size, timeout, "header")
                reply_seq, status, length = REPLY_HEADER.unpack(header)
                if length > MAX_PAYLOAD:
                    raise _LostReply(f"corrupt reply (length {length})")
                rest = self._read_frame_bytes(length + CRC.size, timeout, "data")
            except _Restart:
                continue            # a sync byte inside: that reply was cut, another starts
            if crc16(header + rest) != 0:
                raise _LostReply("reply CRC mismatch")
            if reply_seq != seq:
                continue        # an answer to an earlier request
            try:
                return Status(status), rest[:length]
            except ValueError:
                raise ProtocolError(f"The device answered with unknown status {status:#x}; "
                                    f"driver and bitstream disagree on the protocol") from None


class _LostReply(Exception):
    pass


class _Restart(Exception):
    """A sync byte in the middle of a reply."""


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


def _frame_link(transport_cls, url, target, query):
    transport, options = transport_cls.from_url(url, target, query, _FRAME_LINK_OPTIONS)
    try:
        return FrameLink(transport, **options)
    except BaseException:
        transport.close()
        raise


_FRAME_LINK_OPTIONS = {"timeout": (positive_float, None),
                       "retries": (non_negative_int, DEFAULT_RETRIES)}

# Each transport's module is imported when its scheme is opened: pyserial for uart://, the
# simulated SoC (Amaranth's simulator, the gateware) for sim://.


def _open_uart(url, target, query):
    from sw.driver.uart import UartTransport
    return _frame_link(UartTransport, url, target, query)


def _open_pcie(url, target, query):
    from sw.driver.pcie import PcieTransport
    transport, _ = PcieTransport.from_url(url, target, query, {})
    return MappedLink(transport)


def _open_sim(url, target, query):
    """``sim://``: frames over `SimTransport`, or for ``line=bus`` the `MappedLink` (the
    ``pcie://`` code path) over `SimBusTransport`, the simulated SoC's bus itself."""
    from sw.driver import sim
    if sim.requests_bus_line(url, query):
        transport, _ = sim.SimBusTransport.from_url(url, target, query, {})
        return MappedLink(transport)
    return _frame_link(sim.SimTransport, url, target, query)


SCHEMES = {
    "sim": _open_sim,
    "uart": _open_uart,
    "pcie": _open_pcie,
}


def open_link(url):
    """A `Link` to the device at `url` (sim://, uart://, pcie://); `InvalidURL` if malformed."""
    scheme, target, query = split_url(url)
    if scheme not in SCHEMES:
        raise InvalidURL(f"Unknown transport {scheme!r} in {url!r}; known are "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    return SCHEMES[scheme](url, target, query)
