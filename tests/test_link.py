# amaranth: UnusedElaboratable=no
"""The frame engine in the SoC, at the byte streams: bit-exact with the host encoder and an
independent model of the memory map and the sequence rules, recovery from corrupted lines, no
side effects on errors, byte stuffing against its reference (`protocol.stuff`)."""

import gc
import random
import struct

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import given, settings, strategies as st

from hw.config import PRESETS
from hw.soc.bridge import (ADDRESS_WIDTH, INITIATOR_READ_LATENCY, Bus, BusDecoder, MemoryMap,
                           Window, WindowKind, memory_read_data, register_read_data)
from hw.soc.framing import SYMBOL, FrameEngine, Stuffer, Unstuffer
from hw.soc.protocol import (ESCAPE, REPLY_SYNC, REQUEST_SYNC, Opcode, Reply, Request, Status,
                             crc16, stuff, unstuff)
from hw.soc.soc import SoCCore
from sim.harness import receive, send, vcd_path

CONFIG = PRESETS["tiny"]            # scratchpad: 256 rows x 4 bytes
MAX_PAYLOAD = 64
FRAME_TIMEOUT = 40
QUIET_CYCLES = 3 * FRAME_TIMEOUT    # no reply by then: the device dropped the frame

# The memory map as the protocol documents it, written out here rather than taken from the code.
ID_BASE, ID_WORDS = 0x0000_0000, 34      # 22 link registers, 12 for the core's windows, sizes
CORE_BASE, CORE_BYTES = 0x0000_0400, 256     # the core's registers: live, not modelled here
CORE_MEMORIES_END = 0x0700_0000             # the core's memory windows, one 16 MiB slot each
CONTROL_BASE, CONTROL_WORDS = 0x0000_0800, 2
SCRATCHPAD_BASE, SCRATCHPAD_BYTES = 0x0100_0000, 256 * 4
ID_HEAD = [int.from_bytes(b"ECNN", "little"), 2 << 16 | 0, MAX_PAYLOAD, SCRATCHPAD_BASE,
           SCRATCHPAD_BYTES, 4, 4]     # MAGIC, VERSION, MAX_PAYLOAD, scratchpad, rows, cols


class Model:
    """What the device must do, from the protocol's rules (not from the gateware)."""

    def __init__(self):
        self.scratchpad = bytearray(SCRATCHPAD_BYTES)
        self.scratch = 0
        self.last_seq, self.last_status = 0, Status.OK      # after reset

    def reply(self, request):
        seq, opcode = request.seq, Opcode(request.opcode)
        if opcode.writes and seq == self.last_seq:
            return Reply(seq, self.last_status)         # a retry: not applied again
        if opcode.writes and seq != (self.last_seq + 1) & 0xFF:
            return Reply(seq, Status.BAD_SEQ)
        reply = self._execute(request)
        if seq == (self.last_seq + 1) & 0xFF:
            self.last_seq, self.last_status = seq, reply.status
        return reply

    def _window(self, address, length):
        for base, size, bulk, writable in (
                (ID_BASE, 4 * ID_WORDS, False, False),
                (CONTROL_BASE, 4 * CONTROL_WORDS, False, True),
                (SCRATCHPAD_BASE, SCRATCHPAD_BYTES, True, True)):
            if base <= address and address + length <= base + size:
                return base, bulk, writable
        return None

    def _execute(self, request):
        seq, opcode, address, length, payload = request
        opcode = Opcode(opcode)
        if length == 0 or length % 4 or length > MAX_PAYLOAD:
            return Reply(seq, Status.BAD_LENGTH)
        window = self._window(address, length) if address % 4 == 0 else None
        if window is None or window[1] != opcode.bulk:
            return Reply(seq, Status.BAD_ADDRESS)
        base, _, writable = window
        if opcode.writes and not writable:
            return Reply(seq, Status.READ_ONLY)
        if opcode.writes:
            self._write(base, address, payload)
            return Reply(seq, Status.OK)
        return Reply(seq, Status.OK, self._read(base, address, length))

    def _write(self, base, address, payload):
        if base == SCRATCHPAD_BASE:
            offset = address - base
            self.scratchpad[offset:offset + len(payload)] = payload
        else:
            for index, (word,) in enumerate(struct.iter_unpack("<I", payload)):
                if address + 4 * index == CONTROL_BASE:
                    self.scratch = word

    def _read(self, base, address, length):
        if base == SCRATCHPAD_BASE:
            return bytes(self.scratchpad[address - base:address - base + length])
        words = ID_HEAD if base == ID_BASE else [self.scratch, 0]
        first = (address - base) // 4
        return struct.pack(f"<{length // 4}I", *words[first:first + length // 4])


def run_line(chunks, *, gap_probability=0.0, stall_probability=0.0, seed=0, name="link"):
    """Feed `chunks` (bytes, or an int: that many idle cycles) into a SoCCore, stop-and-wait like
    the host: after each chunk, until a reply is complete or the line has been quiet for
    `QUIET_CYCLES`. Returns the replies."""
    dut = SoCCore(config=CONFIG, max_payload=MAX_PAYLOAD, frame_timeout=FRAME_TIMEOUT)
    received = bytearray()

    async def host_sender(ctx):
        rng = random.Random(seed)
        for chunk in chunks:
            if isinstance(chunk, int):
                await ctx.tick().repeat(chunk)
                continue
            replies_before = count_replies(received)
            await send(ctx, dut.rx, list(chunk), gap_probability=gap_probability, rng=rng)
            quiet, seen = 0, len(received)
            while count_replies(received) == replies_before and quiet < QUIET_CYCLES:
                await ctx.tick()
                quiet = 0 if len(received) != seen else quiet + 1
                seen = len(received)

    async def host_receiver(ctx):
        rng = random.Random(seed + 1)
        while True:
            received.extend(await receive(ctx, dut.tx, 1, stall_probability=stall_probability,
                                          rng=rng))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host_sender)
    sim.add_testbench(host_receiver, background=True)
    path = vcd_path(name)
    if path:
        with sim.write_vcd(path):
            sim.run()
    else:
        sim.run()
    return parse_replies(bytes(received))


def reply_frames(stream):
    """The reply frames in `stream` (each from its sync byte up to the next one); nothing may
    come before the first."""
    head, *parts = bytes(stream).split(bytes([REPLY_SYNC]))
    assert head == b"", f"bytes outside reply frames: {head.hex()}"
    return [bytes([REPLY_SYNC]) + part for part in parts]


def count_replies(stream):
    """Complete replies in `stream` so far (the last may still be arriving)."""
    count = 0
    for frame in reply_frames(stream):
        body = unstuff(frame[1:].removesuffix(bytes([ESCAPE])))
        if len(body) < 4 or len(body) < 6 + (body[2] | body[3] << 8):
            break
        count += 1
    return count


def parse_replies(stream):
    return [Reply.decode(frame) for frame in reply_frames(stream)]


# Request strategies --------------------------------------------------------------------------

def _words(draw, count):
    return draw(st.binary(min_size=4 * count, max_size=4 * count))


@st.composite
def good_request(draw, seq):
    kind = draw(st.sampled_from(["bulk_write", "bulk_read", "scratch_write", "control_read",
                                 "id_read"]))
    if kind in ("bulk_write", "bulk_read"):
        words = draw(st.integers(1, MAX_PAYLOAD // 4))
        offset = 4 * draw(st.integers(0, SCRATCHPAD_BYTES // 4 - words))
        if kind == "bulk_write":
            return Request(seq, Opcode.BULK_WRITE, SCRATCHPAD_BASE + offset, 4 * words,
                           _words(draw, words))
        return Request(seq, Opcode.BULK_READ, SCRATCHPAD_BASE + offset, 4 * words)
    if kind == "scratch_write":
        return Request(seq, Opcode.WRITE_REGISTERS, CONTROL_BASE, 4, _words(draw, 1))
    if kind == "control_read":
        return Request(seq, Opcode.READ_REGISTERS, CONTROL_BASE, 8)
    words = draw(st.integers(1, len(ID_HEAD)))
    first = draw(st.integers(0, len(ID_HEAD) - words))
    return Request(seq, Opcode.READ_REGISTERS, ID_BASE + 4 * first, 4 * words)


@st.composite
def bad_request(draw, seq):
    """Requests the device must refuse (by address, window kind, length or read-only)."""
    kind = draw(st.sampled_from(["unaligned", "outside", "straddle", "wrong_kind", "length",
                                 "read_only"]))
    opcode = draw(st.sampled_from(list(Opcode)))
    words = draw(st.integers(1, MAX_PAYLOAD // 4))
    if kind == "unaligned":
        address = SCRATCHPAD_BASE + 4 * draw(st.integers(0, 16)) + draw(st.integers(1, 3))
    elif kind == "outside":
        address = 4 * draw(st.integers(0, 2**30 - 1))
        if any(base <= address < base + size for base, size in
               ((ID_BASE, 4 * ID_WORDS + MAX_PAYLOAD), (CONTROL_BASE, 8 + MAX_PAYLOAD),
                (CORE_BASE - MAX_PAYLOAD, CORE_BYTES + MAX_PAYLOAD),
                (SCRATCHPAD_BASE - MAX_PAYLOAD, CORE_MEMORIES_END - SCRATCHPAD_BASE
                 + MAX_PAYLOAD))):
            address = CORE_MEMORIES_END      # the slot after the core's memories: nothing there
    elif kind == "straddle":
        words = draw(st.integers(2, MAX_PAYLOAD // 4))
        address = SCRATCHPAD_BASE + SCRATCHPAD_BYTES - 4 * draw(st.integers(1, words - 1))
        address = draw(st.sampled_from([address, ID_BASE + 4 * ID_WORDS - 4,
                                        CONTROL_BASE + 4]))
    elif kind == "wrong_kind":
        address = draw(st.sampled_from([SCRATCHPAD_BASE, CONTROL_BASE]))
        words = 1
        opcode = draw(st.sampled_from(
            [Opcode.READ_REGISTERS, Opcode.WRITE_REGISTERS] if address == SCRATCHPAD_BASE
            else [Opcode.BULK_READ, Opcode.BULK_WRITE]))
    elif kind == "length":
        address = SCRATCHPAD_BASE
        opcode = draw(st.sampled_from([Opcode.BULK_READ, Opcode.BULK_WRITE]))
        length = draw(st.sampled_from([0, 1, 2, 3, 5, 62, MAX_PAYLOAD + 4, 65535]))
        payload = bytes(length) if opcode.writes and length <= MAX_PAYLOAD else b""
        return Request(seq, opcode, address, length, payload)
    else:
        address, words = ID_BASE, draw(st.integers(1, 4))
        opcode = Opcode.WRITE_REGISTERS
    payload = _words(draw, words) if opcode.writes else b""
    return Request(seq, opcode, address, 4 * words, payload)


def encode(request):
    """Like Request.encode, but also for lengths the host driver would never send."""
    if request.opcode.writes and len(request.payload) != request.length:
        header = struct.pack("<BBIH", request.seq, request.opcode.value, request.address,
                             request.length)
        return bytes([REQUEST_SYNC]) + stuff(header + struct.pack(">H", crc16(header)))
    return request.encode()


@st.composite
def request_sequences(draw, min_size=1, max_size=6, bad=True, first_seq=1):
    """Requests numbered mostly as a host would (the next seq), now and then repeating the
    previous seq (a retry) or with any seq (a replayed or stray frame)."""
    requests, seq = [], first_seq
    for _ in range(draw(st.integers(min_size, max_size))):
        strategy = st.one_of(good_request(seq), bad_request(seq)) if bad else good_request(seq)
        requests.append(draw(strategy))
        seq = draw(st.sampled_from([(seq + 1) & 0xFF, (seq + 1) & 0xFF, seq,
                                    draw(st.integers(0, 255))]))
    return requests


# Tests -----------------------------------------------------------------------------------------

@settings(max_examples=8, deadline=None)
@given(request_sequences(), st.sampled_from([0.0, 0.3]), st.sampled_from([0.0, 0.4]),
       st.integers(0, 99))
def test_replies_are_bit_exact_with_the_model(requests, gaps, stalls, seed):
    model = Model()
    expected = [model.reply(request) for request in requests]
    # Close with a read of the whole scratchpad: refused requests must have left it alone.
    tail = [Request(index, Opcode.BULK_READ, SCRATCHPAD_BASE + offset, MAX_PAYLOAD)
            for index, offset in enumerate(range(0, SCRATCHPAD_BYTES, MAX_PAYLOAD))]
    expected += [model.reply(request) for request in tail]
    replies = run_line([encode(request) for request in requests + tail],
                       gap_probability=gaps, stall_probability=stalls, seed=seed)
    assert replies == expected


@pytest.mark.parametrize("opcode", [0x00, 0x05, 0x80, 0xFF])
def test_unknown_opcode(opcode):
    header = struct.pack("<BBIH", 9, opcode, SCRATCHPAD_BASE, 4)
    frame = bytes([REQUEST_SYNC]) + stuff(header + struct.pack(">H", crc16(header)))
    check = Request(10, Opcode.BULK_READ, SCRATCHPAD_BASE, 4).encode()
    assert run_line([frame, check]) == [Reply(9, Status.BAD_OPCODE),
                                        Reply(10, Status.OK, bytes(4))]


def test_sequence_rules():
    """A repeated seq is a retry (answered with the first answer, not applied), a seq out of
    sequence is refused, reads run with any seq and move the sequence on only in sequence, and
    refused requests move it on too (the issue's 255 refusals no longer wrap onto a write)."""
    def write(seq, data):
        return Request(seq, Opcode.BULK_WRITE, SCRATCHPAD_BASE, 4, data)

    def read(seq):
        return Request(seq, Opcode.BULK_READ, SCRATCHPAD_BASE, 4)

    refused = Request(3, Opcode.BULK_WRITE, SCRATCHPAD_BASE + 2, 4, b"xxxx")     # unaligned
    replies = run_line([request.encode() for request in (
        write(1, b"AAAA"), write(1, b"BBBB"), read(7), write(7, b"CCCC"), read(2),
        refused, refused._replace(payload=b"yyyy"), write(3, b"DDDD"), write(4, b"EEEE"),
        read(4))])
    assert replies == [
        Reply(1, Status.OK), Reply(1, Status.OK),       # the retry is not applied: AAAA stays
        Reply(7, Status.OK, b"AAAA"),                   # out of sequence: read, not recorded
        Reply(7, Status.BAD_SEQ),
        Reply(2, Status.OK, b"AAAA"),                   # in sequence: recorded
        Reply(3, Status.BAD_ADDRESS), Reply(3, Status.BAD_ADDRESS),     # recorded, retried
        Reply(3, Status.BAD_ADDRESS),                   # seq 3 is the refusal's: not applied
        Reply(4, Status.OK), Reply(4, Status.OK, b"EEEE")]


def test_a_refused_header_never_exposes_a_frame_inside_the_payload():
    """Issue 22, failure 4: a bulk write refused at its header (header CRC, length, opcode)
    whose data happens to hold a complete frame. Before byte stuffing the engine went on reading
    the payload as the line and executed that frame; now the frame's sync byte is stuffed in
    the payload and the engine hunts for the next real sync byte."""
    inner = Request(1, Opcode.WRITE_REGISTERS, CONTROL_BASE, 4, b"EVIL").encode()
    assert bytes([REQUEST_SYNC]) not in stuff(inner)
    payload = inner + bytes(-len(inner) % 4)
    outer = bytearray(Request(1, Opcode.BULK_WRITE, SCRATCHPAD_BASE, len(payload),
                              payload).encode())
    bad_crc = bytes(outer[:10]) + bytes([outer[10] ^ 0x40]) + bytes(outer[11:])
    header = struct.pack("<BBIH", 1, 0x7E, SCRATCHPAD_BASE, len(payload))
    bad_opcode = bytes([REQUEST_SYNC]) + stuff(header + struct.pack(">H", crc16(header))) \
        + bytes(outer[12:])
    check = Request(2, Opcode.READ_REGISTERS, CONTROL_BASE, 4).encode()
    for line, status in ((bad_crc, Status.BAD_CRC), (bad_opcode, Status.BAD_OPCODE)):
        replies = run_line([line, check])
        assert [reply.status for reply in replies] == [status, Status.OK]
        assert replies[1].data == bytes(4)          # SCRATCH: EVIL was not written


GARBAGE = st.binary(min_size=1, max_size=12).map(lambda data: data.replace(b"\xa5", b"\x00"))


@st.composite
def corrupted(draw, frame):
    """(bytes on the line, whether the device may answer with a status other than an error)."""
    kind = draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
    position = draw(st.integers(0, len(frame) - 1))
    if kind == "flip":
        bit = draw(st.integers(0, 7))
        return frame[:position] + bytes([frame[position] ^ 1 << bit]) + frame[position + 1:]
    if kind == "drop":
        return frame[:position] + frame[position + 1:]
    if kind == "insert":
        position = max(position, 1)     # inside the frame; garbage before it is another test
        return frame[:position] + draw(GARBAGE) + frame[position:]
    return frame[:max(position, 1)]


@settings(max_examples=20, deadline=None)
@given(st.data(), request_sequences(max_size=2, bad=False), st.sampled_from([0.0, 0.3]))
def test_corrupted_frames_are_refused_and_the_line_recovers(data, before, gaps):
    model = Model()
    expected_before = [model.reply(request) for request in before]
    # The victim is in sequence (its write would be applied) but corrupted: it changes nothing,
    # and the requests after it follow as if it had never been sent.
    victim = data.draw(good_request(seq=(model.last_seq + 1) & 0xFF))
    line = data.draw(corrupted(victim.encode()))
    after = data.draw(request_sequences(max_size=2, bad=False, first_seq=victim.seq))
    expected_after = [model.reply(request) for request in after]
    scratchpad_read = Request(201, Opcode.BULK_READ, SCRATCHPAD_BASE + 4 * data.draw(
        st.integers(0, SCRATCHPAD_BYTES // 4 - MAX_PAYLOAD // 4)), MAX_PAYLOAD)
    expected_after.append(model.reply(scratchpad_read))
    chunks = [request.encode() for request in before] + [line, 3 * FRAME_TIMEOUT] \
        + [request.encode() for request in after + [scratchpad_read]]
    replies = run_line(chunks, gap_probability=gaps, seed=len(line))
    head, middle, tail = (replies[:len(expected_before)],
                          replies[len(expected_before):len(replies) - len(expected_after)],
                          replies[len(replies) - len(expected_after):])
    assert head == expected_before
    assert tail == expected_after
    assert len(middle) <= 2 and all(reply.status != Status.OK for reply in middle)
    if middle:
        assert middle[0].status in (Status.BAD_CRC, Status.TRUNCATED, Status.BAD_OPCODE,
                                    Status.BAD_LENGTH, Status.BAD_ADDRESS, Status.READ_ONLY)


@settings(max_examples=10, deadline=None)
@given(st.lists(GARBAGE, min_size=2, max_size=4), st.integers(0, 255))
def test_garbage_between_frames_is_skipped(garbage, seq):
    requests = [Request(1 + i, Opcode.BULK_WRITE, SCRATCHPAD_BASE + 4 * i, 4,
                        bytes([i] * 4)) for i in range(len(garbage) - 1)]
    requests.append(Request(seq ^ 0x80, Opcode.BULK_READ, SCRATCHPAD_BASE, 4 * len(requests)))
    chunks = [part for pair in zip(garbage, (r.encode() for r in requests)) for part in pair]
    model = Model()
    assert run_line(chunks) == [model.reply(request) for request in requests]


def test_truncated_header_and_payload_are_answered_truncated():
    write = Request(1, Opcode.BULK_WRITE, SCRATCHPAD_BASE, 8, b"12345678").encode()
    read = Request(4, Opcode.BULK_READ, SCRATCHPAD_BASE, 8).encode()
    replies = run_line([write[:5], 2 * FRAME_TIMEOUT, write[:-1], 2 * FRAME_TIMEOUT,
                        write[:1], 2 * FRAME_TIMEOUT, read])     # [:1]: the sync byte alone
    assert replies == [Reply(1, Status.TRUNCATED), Reply(1, Status.TRUNCATED),
                       Reply(4, Status.OK, bytes(8))]


def test_bad_header_crc_is_answered_at_once_and_the_payload_skipped():
    """The whole frame is sent, payload included. (Under protocol 1 this test sent the header
    alone: the engine answered a bad header CRC and went back to hunting *inside* the payload,
    so a test that sent it would have had the payload parsed as the line -- issue 22, failure
    4. With stuffed frames the payload holds no sync byte and is skipped.)"""
    header = struct.pack("<BBIH", 1, Opcode.BULK_WRITE.value, SCRATCHPAD_BASE, 4)
    payload = b"abcd" + struct.pack(">H", crc16(b"abcd"))
    frame = bytes([REQUEST_SYNC]) + stuff(header + struct.pack(">H", crc16(header) ^ 1) + payload)
    read = Request(6, Opcode.BULK_READ, SCRATCHPAD_BASE, 4).encode()
    assert run_line([frame, read]) == [Reply(1, Status.BAD_CRC), Reply(6, Status.OK, bytes(4))]


class StuffingLoop(wiring.Component):
    """A `Stuffer` (sync `REPLY_SYNC`) feeding an `Unstuffer` of the same sync byte, with the
    line bytes between them visible."""

    i: In(stream.Signature(SYMBOL))
    o: Out(stream.Signature(SYMBOL))
    line: Out(stream.Signature(8))      # a copy of the bytes between them (observe only)

    def elaborate(self, platform):
        m = Module()
        m.submodules.stuffer = stuffer = Stuffer(sync=REPLY_SYNC)
        m.submodules.unstuffer = unstuffer = Unstuffer(sync=REPLY_SYNC)
        wiring.connect(m, wiring.flipped(self.i), stuffer.i)
        wiring.connect(m, stuffer.o, unstuffer.i)
        wiring.connect(m, unstuffer.o, wiring.flipped(self.o))
        m.d.comb += [self.line.valid.eq(stuffer.o.valid & stuffer.o.ready),
                     self.line.payload.eq(stuffer.o.payload)]
        return m


@settings(max_examples=15, deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=4), st.sampled_from([0.0, 0.5]),
       st.sampled_from([0.0, 0.5]), st.integers(0, 99))
def test_stuffing_gateware_matches_the_reference(frames, gaps, stalls, seed):
    """Each frame (a start symbol, then its bytes -- biased towards the stuffed values) goes
    through the Stuffer as `protocol.stuff` says and comes out of the Unstuffer unchanged."""
    rng = random.Random(seed)
    special = [REQUEST_SYNC, REPLY_SYNC, ESCAPE, 0x85, 0x7A, 0xE3]
    frames = [bytes(rng.choice(special) if rng.random() < 0.4 else byte for byte in frame)
              for frame in frames]
    symbols = [symbol for frame in frames
               for symbol in [{"data": 0, "start": 1}] + [{"data": b, "start": 0} for b in frame]]
    dut = StuffingLoop()
    line, out = bytearray(), []

    async def producer(ctx):
        await send(ctx, dut.i, symbols, gap_probability=gaps, rng=rng)

    async def consumer(ctx):
        out.extend(await receive(ctx, dut.o, len(symbols), stall_probability=stalls,
                                 rng=random.Random(seed + 1)))

    async def observer(ctx):
        async for _, _, valid, payload in ctx.tick().sample(dut.line.valid, dut.line.payload):
            if valid:
                line.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(observer, background=True)
    sim.run()
    assert bytes(line) == b"".join(bytes([REPLY_SYNC]) + stuff(frame) for frame in frames)
    assert [(symbol["start"], symbol["data"] if not symbol["start"] else 0) for symbol in out] \
        == [(symbol["start"], symbol["data"]) for symbol in symbols]


# Parameters ------------------------------------------------------------------------------------

def _map():
    return MemoryMap([Window("memory", 0, 64, WindowKind.MEMORY, writable=True)])


@pytest.mark.parametrize("kwargs, error, message", [
    ({"memory_map": "x"}, TypeError, "memory_map must be a MemoryMap"),
    ({"max_payload": 48}, ValueError, "max_payload must be a power of two in 4..4096, not 48"),
    ({"max_payload": 8192}, ValueError, "not 8192"),
    ({"frame_timeout": 0}, ValueError, "frame_timeout must be a positive number"),
    ({"frame_timeout": 1.5}, ValueError, "not 1.5"),
])
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_frame_engine_parameters(kwargs, error, message):
    with pytest.raises(error, match=message) as raised:
        FrameEngine(**{"memory_map": _map(), "frame_timeout": 10, **kwargs})
    del raised
    gc.collect()    # the half-built component warns when collected: do it inside the filter


@pytest.mark.parametrize("windows, error, message", [
    ([Window("a", 0, 64, WindowKind.MEMORY, True), Window("b", 32, 64, WindowKind.MEMORY, True)],
     ValueError, "overlap"),
    ([Window("a", 0, 64, WindowKind.MEMORY, True), Window("a", 64, 64, WindowKind.MEMORY, True)],
     ValueError, "unique"),
    ([], TypeError, "non-empty"),
])
def test_memory_map_checks(windows, error, message):
    with pytest.raises(error, match=message):
        MemoryMap(windows)


@pytest.mark.parametrize("args, message", [
    (("w", 2, 64, WindowKind.MEMORY, True), "base must be an integer multiple of 4"),
    (("w", 0, 0, WindowKind.MEMORY, True), "non-empty range"),
    (("w", 2**32 - 4, 8, WindowKind.MEMORY, True), "non-empty range"),
    (("not a name", 0, 4, WindowKind.MEMORY, True), "identifier"),
])
def test_window_checks(args, message):
    with pytest.raises(ValueError, match=message):
        Window(*args)


# The decoder with three targets of its own: three registers (the first writable) in a window
# aligned to its address bits, a read-only memory of 64-bit rows in a window that is not (served
# from a plain RAM read port), and another such memory in an aligned window, served from a read
# port with address and data registers (row latency 3).
REGISTERS_FIRST, REGISTER_VALUES = 0x40, [None, 0x2222_2222, 0x3333_3333]
MEMORY_FIRST, MEMORY_ROWS = 0x81, [0x1111_0000_AAAA_0000 + row for row in range(3)]
PORTED_FIRST, PORTED_ROWS = 0x88, [0x5555_0000_CCCC_0000 + row for row in range(2)]


class DecoderBench(wiring.Component):
    bus: In(Bus(address_width=ADDRESS_WIDTH))

    def __init__(self):
        self.memory_map = MemoryMap([
            Window("registers", 4 * REGISTERS_FIRST, 4 * len(REGISTER_VALUES),
                   WindowKind.REGISTERS, True),
            Window("memory", 4 * MEMORY_FIRST, 4 * (2 * len(MEMORY_ROWS) - 1), WindowKind.MEMORY,
                   False),
            Window("ported", 4 * PORTED_FIRST, 4 * 2 * len(PORTED_ROWS), WindowKind.MEMORY,
                   False),
        ])
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = decoder = BusDecoder(memory_map=self.memory_map)
        wiring.connect(m, wiring.flipped(self.bus), decoder.bus)
        registers = decoder.registers
        writable = Signal(32)
        with m.If(registers.write & (registers.address == 0)):
            m.d.sync += writable.eq(registers.write_data)
        register_read_data(m, registers, {0: writable, 1: REGISTER_VALUES[1],
                                          2: REGISTER_VALUES[2]})
        m.submodules.rows = rows = Memory(shape=64, depth=len(MEMORY_ROWS), init=MEMORY_ROWS)
        read_port = rows.read_port()
        memory = decoder.memory
        m.d.comb += [read_port.addr.eq(memory.address[1:]), read_port.en.eq(memory.read)]
        memory_read_data(m, memory, row=read_port.data, word=memory.address[0])
        m.submodules.ported_rows = ported_rows = Memory(shape=64, depth=len(PORTED_ROWS),
                                                        init=PORTED_ROWS)
        ported_port = ported_rows.read_port()
        ported = decoder.ported
        ported_address, ported_data = Signal(1), Signal(64)
        m.d.sync += [ported_address.eq(ported.address[1:]), ported_data.eq(ported_port.data)]
        m.d.comb += [ported_port.addr.eq(ported_address), ported_port.en.eq(1)]
        memory_read_data(m, ported, row=ported_data, word=ported.address[0], row_latency=3)
        return m


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["read", "write", "idle"]),
                          st.integers(REGISTERS_FIRST - 2, PORTED_FIRST + 2 * len(PORTED_ROWS)),
                          st.integers(0, 2**32 - 1)), min_size=1, max_size=40))
def test_decoder_timing_and_order(accesses):
    """Back-to-back accesses: each read's data exactly INITIATOR_READ_LATENCY cycles later, as
    the address map says after every earlier write (writes to read-only or unmapped words are
    dropped, unmapped words read 0)."""
    dut = DecoderBench()
    writable = 0
    checked = []

    def value(address):
        if address == REGISTERS_FIRST:
            return writable
        if REGISTERS_FIRST < address < REGISTERS_FIRST + len(REGISTER_VALUES):
            return REGISTER_VALUES[address - REGISTERS_FIRST]
        for first, rows, words in ((MEMORY_FIRST, MEMORY_ROWS, 2 * len(MEMORY_ROWS) - 1),
                                   (PORTED_FIRST, PORTED_ROWS, 2 * len(PORTED_ROWS))):
            offset = address - first
            if 0 <= offset < words:
                return rows[offset // 2] >> (32 * (offset % 2)) & 0xFFFF_FFFF
        return 0

    async def testbench(ctx):
        nonlocal writable
        expected = {}
        padded = [*accesses, *[("idle", 0, 0)] * INITIATOR_READ_LATENCY]
        for cycle, (kind, address, data) in enumerate(padded):
            ctx.set(dut.bus.address, address)
            ctx.set(dut.bus.read, kind == "read")
            ctx.set(dut.bus.write, kind == "write")
            ctx.set(dut.bus.write_data, data)
            if kind == "read":
                expected[cycle + INITIATOR_READ_LATENCY] = value(address)
            elif kind == "write" and address == REGISTERS_FIRST:
                writable = data
            await ctx.tick()
            if cycle + 1 in expected:
                checked.append((ctx.get(dut.bus.read_data), expected.pop(cycle + 1)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert [got for got, _ in checked] == [want for _, want in checked]
    assert len(checked) == sum(kind == "read" for kind, _, _ in accesses)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("row_latency", [0, 2, 4])
def test_memory_read_data_row_latency_checks(row_latency):
    bus = Bus(address_width=4).flip().create()
    with pytest.raises(ValueError, match=f"row_latency must be 1 .* or 3 .*not {row_latency}"):
        memory_read_data(Module(), bus, row=Signal(64), word=bus.address[0],
                         row_latency=row_latency)


def test_read_reply_data_bytes_are_back_to_back():
    """With `tx` always ready, a bulk read's data bytes leave in consecutive cycles, the first
    INITIATOR_READ_LATENCY + 3 cycles after the reply header's last byte (module docstring)."""
    dut = SoCCore(config=CONFIG, max_payload=MAX_PAYLOAD, frame_timeout=FRAME_TIMEOUT)
    request = Request(7, Opcode.BULK_READ, SCRATCHPAD_BASE, MAX_PAYLOAD)
    cycles, received = [], bytearray()

    async def host(ctx):
        await send(ctx, dut.rx, list(request.encode()))
        ctx.set(dut.tx.ready, 1)
        for cycle in range(QUIET_CYCLES):
            _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            if valid:
                cycles.append(cycle)
                received.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host)
    sim.run()
    assert parse_replies(bytes(received)) == [Model().reply(request)]
    # Sync, seq, status, length: 5 bytes (none of them stuffed), then the data (zeros).
    data = cycles[5:5 + MAX_PAYLOAD]
    assert data[0] - cycles[4] == INITIATOR_READ_LATENCY + 3
    assert data == list(range(data[0], data[0] + MAX_PAYLOAD))
