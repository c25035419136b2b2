"""The host link protocol: frames, opcodes, status codes, memory map and register map.

This module is the one definition shared by the hardware frame engine (`hw.soc.framing`), the CSR
block (`hw.soc.csr`) and the host driver (`sw.driver`). The enums are `amaranth.lib.enum.Enum`
with a shape, so the gateware decodes them directly and the host uses them as plain Python enums.

Frames (all multi-byte fields little-endian except the CRC, which is sent most significant byte
first so that running the CRC over a field *and* its CRC leaves a zero remainder -- the hardware
checks for zero instead of comparing)::

    request  A5 5A | seq opcode address:u32 length:u16 | hcrc:u16 | payload[length] pcrc:u16
                     `------- header, CRC hcrc -------'            `- write opcodes only -'
    reply    5A A5 | seq status length:u16 | data[length] | crc:u16
                     `------------- CRC crc ------------'

* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, MSB first, no final XOR); the request header
  has its own CRC so a corrupted length or address is caught before any payload is accepted.
* ``length`` counts payload bytes: the bytes a write carries or a read asks for. It is a multiple
  of 4 (the bus is 32 bits wide), 4..max_payload; the device reports its max_payload in the
  MAX_PAYLOAD register (at most `MAX_PAYLOAD`).
* A reply echoes the request's ``seq``; ``length`` is the number of data bytes that follow
  (the read data for a successful read, 0 otherwise).
* Stop-and-wait: the host sends the next frame only after the reply to the previous one. A write
  whose seq equals the last *executed* write's seq is a retry: the device replies OK without
  applying it again. The host's first frame after connecting is a read, which forgets the last
  write's seq.

Address space: byte addresses, 32-bit words, one 16 MiB slot per memory window: the identity,
core and control register windows share the first slot (`CSR_BASE`, `CORE_CONTROL_BASE`,
`CONTROL_BASE`), the core's memories follow from `SCRATCHPAD_BASE` (`CORE_MEMORY_WINDOWS`),
and the identity registers report every base (version 1.1). Register operations must target
register windows, bulk operations memory windows; an access must lie entirely inside one window,
otherwise the reply is BAD_ADDRESS and nothing happens.
"""

import dataclasses
import struct
from typing import NamedTuple

from amaranth.lib import data, enum

from hw.config import AcceleratorConfig, DATAFLOWS, MULTIPLIERS

__all__ = [
    "REQUEST_SYNC", "REPLY_SYNC", "MAGIC", "VERSION_MAJOR", "VERSION_MINOR", "VERSION",
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

REQUEST_SYNC = bytes([0xA5, 0x5A])
REPLY_SYNC = bytes([0x5A, 0xA5])    # different from the request's, so an echoing line is obvious

MAGIC = int.from_bytes(b"ECNN", "little")
VERSION_MAJOR = 1                    # incompatible frame or register map changes
VERSION_MINOR = 1                    # compatible additions (new registers, windows); 1: the core
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


# Bytes a frame adds around its payload: what bulk efficiency is measured against.
REQUEST_OVERHEAD = len(REQUEST_SYNC) + REQUEST_HEADER.size + CRC.size + CRC.size
REPLY_OVERHEAD = len(REPLY_SYNC) + REPLY_HEADER.size + CRC.size


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
# The core's sizes that are not AcceleratorConfig fields (`hw.core.core_from_config` overrides);
# the device reports them in CORE_* registers.
CORE_SIZES = ("binary_max_k", "binary_max_n", "parameter_rows", "binary_result_rows",
              "queue_depth", "max_pool_width")


def core_memory_base(name):
    """Byte address of the core memory window `name` (a `CORE_MEMORY_WINDOWS` entry)."""
    return SCRATCHPAD_BASE + WINDOW_SLOT_BYTES * CORE_MEMORY_WINDOWS.index(name)


# CONFIG_MULTIPLIER holds the mapping's index in MULTIPLIERS and, from this bit on, a mixed
# array's dsp_pes (0 for the others): an all-DSP or all-LUT array's register reads as it always did.
_DSP_PES_SHIFT = 8


def _config_codecs():
    """Field name -> (register name, encode(config), decode(register value)), in field order.
    A field whose encode is None is packed into the register of the field before it."""
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
            codecs[field.name] = (f"CONFIG_{field.name.upper()}",
                                  lambda config, name=field.name: getattr(config, name),
                                  lambda value: value)
        else:
            raise RuntimeError(f"AcceleratorConfig.{field.name} has no register encoding in "
                               f"hw/soc/protocol.py: add one so the device can report it")
    return codecs


_CONFIG_CODECS = _config_codecs()
CONFIG_REGISTERS = tuple(dict.fromkeys(register for register, _, _ in _CONFIG_CODECS.values()))

ID_REGISTERS = (
    "MAGIC", "VERSION", "MAX_PAYLOAD", "SCRATCHPAD_BASE", "SCRATCHPAD_BYTES",
    *CONFIG_REGISTERS,
    "STATUS",           # bit 0: a frame failed since the last clear
    "LAST_ERROR",       # Status of the last failed frame (0 = none since the last clear)
    "FRAMES_OK", "FRAMES_BAD", "BYTES_DISCARDED",
    # Version 1.1: where the core's windows are and its sizes.
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
    """The CONFIG_* register values (name -> 32-bit int) describing `config`."""
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
    """The `AcceleratorConfig` described by CONFIG_* register values (name -> int).

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


def _with_crc(data):
    return data + CRC.pack(crc16(data))


def _check_crc(data, what):
    if crc16(data) != 0:
        raise ValueError(f"{what} CRC mismatch")


class Request(NamedTuple):
    seq: int
    opcode: Opcode
    address: int
    length: int
    payload: bytes = b""

    def encode(self):
        """The request frame as bytes (payload and its CRC only for write opcodes)."""
        header = REQUEST_HEADER.pack(self.seq, int(Opcode(self.opcode).value), self.address,
                                     self.length)
        frame = REQUEST_SYNC + _with_crc(header)
        if Opcode(self.opcode).writes:
            if len(self.payload) != self.length:
                raise ValueError(f"A {Opcode(self.opcode).name} request of length {self.length} "
                                 f"needs that many payload bytes, not {len(self.payload)}")
            frame += _with_crc(bytes(self.payload))
        elif self.payload:
            raise ValueError(f"A {Opcode(self.opcode).name} request carries no payload")
        return frame

    @classmethod
    def decode(cls, frame):
        """Parse one complete request frame; `ValueError` says what is wrong."""
        frame = bytes(frame)
        header_end = len(REQUEST_SYNC) + REQUEST_HEADER.size + CRC.size
        if frame[:len(REQUEST_SYNC)] != REQUEST_SYNC or len(frame) < header_end:
            raise ValueError("Not a request frame: bad sync or too short")
        _check_crc(frame[len(REQUEST_SYNC):header_end], "Request header")
        seq, opcode, address, length = REQUEST_HEADER.unpack_from(frame, len(REQUEST_SYNC))
        opcode = Opcode(opcode)
        payload = b""
        if opcode.writes:
            _check_crc(frame[header_end:], "Request payload")
            payload = frame[header_end:-CRC.size]
            if len(payload) != length:
                raise ValueError(f"Request payload is {len(payload)} bytes, header says {length}")
        elif len(frame) != header_end:
            raise ValueError(f"{opcode.name} request has {len(frame) - header_end} trailing bytes")
        return cls(seq, opcode, address, length, payload)


class Reply(NamedTuple):
    seq: int
    status: Status
    data: bytes = b""

    def encode(self):
        return REPLY_SYNC + _with_crc(
            REPLY_HEADER.pack(self.seq, int(Status(self.status).value), len(self.data))
            + bytes(self.data))

    @classmethod
    def decode(cls, frame):
        """Parse one complete reply frame; `ValueError` says what is wrong."""
        frame = bytes(frame)
        body_start = len(REPLY_SYNC)
        if frame[:body_start] != REPLY_SYNC or len(frame) < REPLY_OVERHEAD:
            raise ValueError("Not a reply frame: bad sync or too short")
        _check_crc(frame[body_start:], "Reply")
        seq, status, length = REPLY_HEADER.unpack_from(frame, body_start)
        data = frame[body_start + REPLY_HEADER.size:-CRC.size]
        if len(data) != length:
            raise ValueError(f"Reply carries {len(data)} data bytes, header says {length}")
        return cls(seq, Status(status), data)
