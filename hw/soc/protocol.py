"""The host link protocol: frames, opcodes, status codes, memory map and register map.

This module is the one definition shared by the hardware frame engine (`hw.soc.framing`), the CSR
block (`hw.soc.csr`) and the host driver (`sw.driver`). The enums are `amaranth.lib.enum.Enum`
with a shape, so the gateware decodes them directly and the host uses them as plain Python enums.

Frames (all multi-byte fields little-endian except the CRC, which is sent most significant byte
first so that running the CRC over a field *and* its CRC leaves a zero remainder -- the hardware
checks for zero instead of comparing)::

    request  A5 | stuffed( seq opcode address:u32 length:u16 hcrc:u16 [payload[length] pcrc:u16] )
                           `-------- header, CRC hcrc --------'     `--- write opcodes only ---'
    reply    5A | stuffed( seq status length:u16 data[length] crc:u16 )
                           `------------- CRC crc -------------'

* Byte stuffing: every byte after the sync byte that is one of `STUFFED_BYTES` (the two sync
  bytes and `ESCAPE`) is sent as `ESCAPE`, byte ^ `ESCAPE_XOR`. So a sync byte on the line is
  always the start of a frame and nothing else: after a frame is refused at its header (bad
  CRC, unknown opcode, bad length, address or sequence) the receiver skips to the next sync
  byte, and no byte of the refused frame's payload can be taken for a frame start. A sync byte
  inside a frame ends it (the line lost bytes, or the sender restarted) and starts the next
  one. Cost: 3 of 256 byte values take two bytes (about 1.2% on random data). HDLC-style
  stuffing rather than COBS: the encoder needs no lookahead, so the gateware streams replies
  straight from the bus through a one-byte state machine.
* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, MSB first, no final XOR) over the unstuffed
  bytes; the request header has its own CRC, so a corrupted length, address or seq is caught
  before any payload is accepted.
* Residual risk after a header CRC failure: the payload holds no sync byte, so the receiver
  can only mistake part of it for a frame if a line error turns a byte into the sync byte
  *and* the 10 unstuffed bytes after it pass the 16-bit header CRC: probability 2^-16 (1.5e-5)
  per line error that creates a sync byte. Such a false header is harmless unless it also
  carries a write opcode (2 in 256), exactly the next seq (1 in 256; a repeated one is answered
  without applying) and is followed by a payload with a correct 16-bit CRC: 2^-16 * 2^-15 *
  2^-16 = 2^-47 (7e-15) per such line error before anything is written.
* ``length`` counts payload bytes: the bytes a write carries or a read asks for. It is a multiple
  of 4 (the bus is 32 bits wide), 4..max_payload; the device reports its max_payload in the
  MAX_PAYLOAD register (at most `MAX_PAYLOAD`).
* A reply echoes the request's ``seq``; ``length`` is the number of data bytes that follow
  (the read data for a successful read, 0 otherwise).

Sequence numbers (stop-and-wait: the host sends the next frame only after the reply to the
previous one, or after giving it up). The device keeps ``last_seq`` (the LAST_SEQ register) and
the status it answered to that request: the seq of the last request it took *in sequence*
(``seq == last_seq + 1`` mod 256) and finished with a final status (OK, or a refusal that a
retry would meet again: BAD_OPCODE, BAD_LENGTH, BAD_ADDRESS, READ_ONLY). BAD_CRC, TRUNCATED and
BAD_SEQ leave it alone: the request was not taken, and its retry must be. A request whose header
checked out is then

* a write with ``seq == last_seq + 1``: new -- checked, applied if OK, recorded;
* a write with ``seq == last_seq``: a retry of the write (or refusal) already recorded --
  answered with the recorded status, *not* applied again;
* any other write: BAD_SEQ (not applied, not recorded): a frame from an earlier exchange
  (replayed, or a host that lost track);
* a read, with any seq: executed (reads change nothing); recorded when in sequence.

The host (`sw.driver.link.FrameLink`) learns ``last_seq`` by reading LAST_SEQ before its first
write and after any request it gave up on, then numbers each new request ``last_seq + 1`` and
keeps the number across the retries of one request. So the device's record is always the
host's previous request or the current one: a new write is never taken for a retry (its seq is
the record + 1), a retry is never applied twice (its seq is the record once applied), and no
count of refused, lost or unanswered requests changes that (a read never needs a record, and
the host resynchronises before any request that follows one it gave up on). Reading LAST_SEQ
with seq ``x`` leaves the record at ``x`` if ``x == LAST_SEQ + 1`` (an in-sequence read), else
at the value read.

Address space: byte addresses, 32-bit words, one 16 MiB slot per memory window: the identity,
core and control register windows share the first slot (`CSR_BASE`, `CORE_CONTROL_BASE`,
`CONTROL_BASE`), the core's memories follow from `SCRATCHPAD_BASE` (`CORE_MEMORY_WINDOWS`),
and the identity registers report every base. Register operations must target register
windows, bulk operations memory windows; an access must lie entirely inside one window,
otherwise the reply is BAD_ADDRESS and nothing happens.
"""

import dataclasses
import re
import struct
from typing import NamedTuple

from amaranth.lib import data, enum

from hw.config import AcceleratorConfig, DATAFLOWS, MULTIPLIERS

__all__ = [
    "REQUEST_SYNC", "REPLY_SYNC", "ESCAPE", "ESCAPE_XOR", "STUFFED_BYTES", "stuff", "unstuff",
    "unstuff_prefix",
    "MAGIC", "VERSION_MAJOR", "VERSION_MINOR", "VERSION",
    "MAX_PAYLOAD", "WORD_BYTES", "REQUEST_HEADER", "RequestHeader", "REPLY_HEADER",
    "CRC", "CRC_INIT", "CRC_POLY",
    "REQUEST_OVERHEAD", "REPLY_OVERHEAD",
    "Opcode", "Status",
    "WINDOW_SLOT_BYTES", "CSR_BASE", "CORE_CONTROL_BASE", "PERF_COUNTERS_BASE", "CONTROL_BASE",
    "SCRATCHPAD_BASE", "CORE_MEMORY_WINDOWS", "CORE_SIZES", "core_memory_base", "ID_REGISTERS",
    "CONTROL_REGISTERS", "CONFIG_REGISTERS", "register_address",
    "STATUS_ERROR", "CONTROL_CLEAR_ERRORS",
    "encode_config", "decode_config", "crc16", "Request", "Reply",
]

REQUEST_SYNC = 0xA5
REPLY_SYNC = 0x5A                   # different from the request's, so an echoing line is obvious
ESCAPE = 0xC3
ESCAPE_XOR = 0x20
STUFFED_BYTES = (REQUEST_SYNC, REPLY_SYNC, ESCAPE)   # never sent as themselves after the sync
assert not {byte ^ ESCAPE_XOR for byte in STUFFED_BYTES} & set(STUFFED_BYTES)

MAGIC = int.from_bytes(b"ECNN", "little")
VERSION_MAJOR = 2                    # incompatible frame or register map changes; 2: stuffed
VERSION_MINOR = 0                    # frames, sequence rules, LAST_SEQ; compatible additions
VERSION = VERSION_MAJOR << 16 | VERSION_MINOR

MAX_PAYLOAD = 4096                   # protocol limit; a device may accept less (MAX_PAYLOAD register)
WORD_BYTES = 4

REQUEST_HEADER = struct.Struct("<BBIH")       # seq, opcode, address, length
REPLY_HEADER = struct.Struct("<BBH")          # seq, status, length
CRC = struct.Struct(">H")
CRC_INIT = 0xFFFF
CRC_POLY = 0x1021

class RequestHeader(data.Struct):
    """The request header as the gateware sees it: the bytes of `REQUEST_HEADER`, first byte in
    the least significant bits (struct layouts are little-endian, like the wire)."""
    seq: 8
    opcode: 8           # may hold a value that is no Opcode: the engine answers BAD_OPCODE
    address: 32
    length: 16


# Bytes a frame adds around its payload (before stuffing): what bulk efficiency is measured
# against.
REQUEST_OVERHEAD = 1 + REQUEST_HEADER.size + CRC.size + CRC.size
REPLY_OVERHEAD = 1 + REPLY_HEADER.size + CRC.size


class Opcode(enum.Enum, shape=8):
    READ_REGISTERS = 0x01
    WRITE_REGISTERS = 0x02
    BULK_READ = 0x03
    BULK_WRITE = 0x04

    @property
    def writes(self):
        """Whether the request carries a payload that the device writes."""
        return self in (Opcode.WRITE_REGISTERS, Opcode.BULK_WRITE)

    @property
    def bulk(self):
        """Whether the request targets a memory window (else a register window)."""
        return self in (Opcode.BULK_READ, Opcode.BULK_WRITE)


class Status(enum.Enum, shape=8):
    OK = 0x00
    BAD_CRC = 0x01          # header or payload CRC mismatch; nothing was applied
    BAD_OPCODE = 0x02
    BAD_ADDRESS = 0x03      # unaligned, outside every window, crossing a window end, wrong kind
    BAD_LENGTH = 0x04       # zero, not a multiple of 4, or above the device's max_payload
    TRUNCATED = 0x05        # the line went quiet mid-frame (inter-byte timeout)
    READ_ONLY = 0x06        # a write to a read-only register window
    BAD_SEQ = 0x07          # a write whose seq is neither LAST_SEQ + 1 nor LAST_SEQ: not applied

    @property
    def final(self):
        """Whether a retry of the request would meet this status again (so the device records
        it with the request's seq): OK and the refusals that depend on the request only."""
        return self not in (Status.BAD_CRC, Status.TRUNCATED, Status.BAD_SEQ)


# Memory map ---------------------------------------------------------------------------------------

WINDOW_SLOT_BYTES = 1 << 24
CSR_BASE = 0x0000_0000               # read-only identification, config, status, counters
CORE_CONTROL_BASE = 0x0000_0400      # the core's register window (`hw.core.isa`): command
PERF_COUNTERS_BASE = CORE_CONTROL_BASE  # register, queue and error status, performance counters
CONTROL_BASE = 0x0000_0800           # read-write registers
SCRATCHPAD_BASE = 0x0100_0000        # the scratchpad memory window, first of the core's memories

# The core's memory windows (`hw.core.Core` bus ports), one slot each from SCRATCHPAD_BASE on.
CORE_MEMORY_WINDOWS = ("scratchpad", "accumulator", "parameters", "binary_weights",
                       "binary_thresholds", "binary_results")
# The AcceleratorConfig fields that size the core's memories and queue: the device reports them
# in CORE_* registers after the core's window bases, every other field in a CONFIG_* register.
CORE_SIZES = ("binary_max_k", "binary_max_n", "parameter_rows", "binary_result_rows",
              "queue_depth", "max_pool_width")


def core_memory_base(name):
    """Byte address of the core memory window `name` (a `CORE_MEMORY_WINDOWS` entry)."""
    return SCRATCHPAD_BASE + WINDOW_SLOT_BYTES * CORE_MEMORY_WINDOWS.index(name)


# CONFIG_MULTIPLIER holds the mapping's index in MULTIPLIERS and, from this bit on, a mixed
# array's dsp_pes (0 for the others): an all-DSP or all-LUT array's register reads as it always did.
_DSP_PES_SHIFT = 8


def _config_codecs():
    """Field name -> (register name, encode(config), decode(register value)), in field order:
    CORE_<NAME> for the `CORE_SIZES`, CONFIG_<NAME> for the rest. A field whose encode is None
    is packed into the register of the field before it."""
    special = {
        "dataflow": ("CONFIG_DATAFLOW", lambda config: DATAFLOWS.index(config.dataflow),
                     lambda value: DATAFLOWS[value]),
        "multiplier": ("CONFIG_MULTIPLIER",
                       lambda config: (MULTIPLIERS.index(config.multiplier)
                                       | (config.dsp_pes or 0) << _DSP_PES_SHIFT),
                       lambda value: MULTIPLIERS[value & ((1 << _DSP_PES_SHIFT) - 1)]),
        "dsp_pes": ("CONFIG_MULTIPLIER", None, lambda value: (value >> _DSP_PES_SHIFT) or None),
        # Reported in Hz; decoding gives clock_mhz back exactly for any whole-Hz clock.
        "clock_mhz": ("CONFIG_CLOCK_HZ", lambda config: config.clock_hz,
                      lambda value: value / 1e6),
    }
    codecs = {}
    for field in dataclasses.fields(AcceleratorConfig):
        if field.name in special:
            codecs[field.name] = special[field.name]
        elif field.type in (int, "int"):
            prefix = "CORE" if field.name in CORE_SIZES else "CONFIG"
            codecs[field.name] = (f"{prefix}_{field.name.upper()}",
                                  lambda config, name=field.name: getattr(config, name),
                                  lambda value: value)
        else:
            raise RuntimeError(f"AcceleratorConfig.{field.name} has no register encoding in "
                               f"hw/soc/protocol.py: add one so the device can report it")
    return codecs


_CONFIG_CODECS = _config_codecs()
CONFIG_REGISTERS = tuple(dict.fromkeys(register for name, (register, _, _) in _CONFIG_CODECS.items()
                                       if name not in CORE_SIZES))

ID_REGISTERS = (
    "MAGIC", "VERSION", "MAX_PAYLOAD", "SCRATCHPAD_BASE", "SCRATCHPAD_BYTES",
    *CONFIG_REGISTERS,
    "STATUS",           # bit 0: a frame failed since the last clear
    "LAST_ERROR",       # Status of the last failed frame (0 = none since the last clear)
    "FRAMES_OK", "FRAMES_BAD", "BYTES_DISCARDED",
    "LAST_SEQ",         # seq of the last request taken in sequence (see the module docstring)
    # Where the core's windows are and its sizes.
    "CORE_CONTROL_BASE", *(f"{name.upper()}_BASE" for name in CORE_MEMORY_WINDOWS[1:]),
    *(f"CORE_{name.upper()}" for name in CORE_SIZES),
)
CONTROL_REGISTERS = (
    "SCRATCH",          # read-write, no effect: a link test
    "CONTROL",          # write 1 to bit 0 to clear STATUS, LAST_ERROR and the link counters
)
STATUS_ERROR = 1 << 0
CONTROL_CLEAR_ERRORS = 1 << 0

_REGISTER_ADDRESSES = {
    **{name: CSR_BASE + WORD_BYTES * index for index, name in enumerate(ID_REGISTERS)},
    **{name: CONTROL_BASE + WORD_BYTES * index for index, name in enumerate(CONTROL_REGISTERS)},
}
assert len(ID_REGISTERS) * WORD_BYTES <= CORE_CONTROL_BASE - CSR_BASE


def register_address(name):
    """Byte address of the register `name`; `KeyError` lists the known names."""
    try:
        return _REGISTER_ADDRESSES[name]
    except KeyError:
        raise KeyError(f"Unknown register {name!r}; known registers are "
                       f"{sorted(_REGISTER_ADDRESSES)}") from None


def encode_config(config):
    """The CONFIG_* and CORE_* size register values (name -> 32-bit int) describing `config`."""
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
    values = {}
    for name, (register, encode, _) in _CONFIG_CODECS.items():
        if encode is None:
            continue
        value = encode(config)
        if not 0 <= value < 1 << 32:
            raise ValueError(f"AcceleratorConfig.{name}={getattr(config, name)!r} does not fit "
                             f"in a 32-bit register")
        values[register] = value
    return values


def decode_config(values):
    """The `AcceleratorConfig` described by CONFIG_* and CORE_* size register values
    (name -> int).

    Raises `ValueError` (from the config's own checks, or for an unknown choice index) when the
    values describe no valid config."""
    fields = {}
    for name, (register, _, decode) in _CONFIG_CODECS.items():
        try:
            fields[name] = decode(values[register])
        except IndexError:
            raise ValueError(f"Register {register} holds {values[register]}, which encodes no "
                             f"known {name}") from None
    return AcceleratorConfig(**fields)


# Frames -------------------------------------------------------------------------------------------

def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ CRC_POLY if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of `data` (continuing from `crc`)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


_STUFFED = re.compile(b"[" + re.escape(bytes(STUFFED_BYTES)) + b"]")


def stuff(data):
    """`data` as sent after a sync byte: each of `STUFFED_BYTES` becomes `ESCAPE`, byte ^
    `ESCAPE_XOR`."""
    return _STUFFED.sub(lambda match: bytes([ESCAPE, match[0][0] ^ ESCAPE_XOR]), bytes(data))


def unstuff_prefix(data, count):
    """(plain, used, at_sync): up to `count` bytes unstuffed from the front of `data` (line
    bytes after a sync byte), how many line bytes they took, and whether a sync byte stopped it
    (a frame start: what follows belongs to another frame). An escape byte at the very end is
    left unused until the byte after it arrives. The host's incremental receiver."""
    plain = bytearray()
    index = 0
    while index < len(data) and len(plain) < count:
        byte = data[index]
        if byte in (REQUEST_SYNC, REPLY_SYNC):
            return bytes(plain), index, True
        if byte == ESCAPE:
            if index + 1 == len(data):
                break
            plain.append(data[index + 1] ^ ESCAPE_XOR)
            index += 2
        else:
            plain.append(byte)
            index += 1
    return bytes(plain), index, False


def unstuff(data):
    """The bytes `stuff` turned into `data`; `ValueError` for a sync byte or a bad escape."""
    data = bytes(data)
    plain, _, _ = unstuff_prefix(data, len(data))
    if stuff(plain) != data:
        raise ValueError("Bad byte stuffing: a sync byte, or an escape not followed by an "
                         "escaped sync or escape byte")
    return plain


def _with_crc(data):
    return data + CRC.pack(crc16(data))


def _check_crc(data, what):
    if crc16(data) != 0:
        raise ValueError(f"{what} CRC mismatch")


def _body(frame, sync, what):
    frame = bytes(frame)
    if not frame or frame[0] != sync:
        raise ValueError(f"Not a {what} frame: it must start with the sync byte {sync:#04x}")
    return unstuff(frame[1:])


class Request(NamedTuple):
    seq: int
    opcode: Opcode
    address: int
    length: int
    payload: bytes = b""

    def encode(self):
        """The request frame as bytes (payload and its CRC only for write opcodes)."""
        body = _with_crc(REQUEST_HEADER.pack(self.seq, int(Opcode(self.opcode).value),
                                             self.address, self.length))
        if Opcode(self.opcode).writes:
            if len(self.payload) != self.length:
                raise ValueError(f"A {Opcode(self.opcode).name} request of length {self.length} "
                                 f"needs that many payload bytes, not {len(self.payload)}")
            body += _with_crc(bytes(self.payload))
        elif self.payload:
            raise ValueError(f"A {Opcode(self.opcode).name} request carries no payload")
        return bytes([REQUEST_SYNC]) + stuff(body)

    @classmethod
    def decode(cls, frame):
        """Parse one complete request frame; `ValueError` says what is wrong."""
        body = _body(frame, REQUEST_SYNC, "request")
        header_end = REQUEST_HEADER.size + CRC.size
        if len(body) < header_end:
            raise ValueError("Request frame too short for a header")
        _check_crc(body[:header_end], "Request header")
        seq, opcode, address, length = REQUEST_HEADER.unpack_from(body)
        opcode = Opcode(opcode)
        payload = b""
        if opcode.writes:
            _check_crc(body[header_end:], "Request payload")
            payload = body[header_end:-CRC.size]
            if len(payload) != length:
                raise ValueError(f"Request payload is {len(payload)} bytes, header says {length}")
        elif len(body) != header_end:
            raise ValueError(f"{opcode.name} request has {len(body) - header_end} trailing bytes")
        return cls(seq, opcode, address, length, payload)


class Reply(NamedTuple):
    seq: int
    status: Status
    data: bytes = b""

    def encode(self):
        return bytes([REPLY_SYNC]) + stuff(_with_crc(
            REPLY_HEADER.pack(self.seq, int(Status(self.status).value), len(self.data))
            + bytes(self.data)))

    @classmethod
    def decode(cls, frame):
        """Parse one complete reply frame; `ValueError` says what is wrong."""
        body = _body(frame, REPLY_SYNC, "reply")
        if len(body) < REPLY_HEADER.size + CRC.size:
            raise ValueError("Reply frame too short")
        _check_crc(body, "Reply")
        seq, status, length = REPLY_HEADER.unpack_from(body)
        data = body[REPLY_HEADER.size:-CRC.size]
        if len(data) != length:
            raise ValueError(f"Reply carries {len(data)} data bytes, header says {length}")
        return cls(seq, Status(status), data)
