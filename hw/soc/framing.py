"""Frame engine: decodes request frames from a byte stream, runs them on the bus, encodes replies.

Frames and the sequence rules are defined in `hw.soc.protocol`. The engine is the bus initiator
of `hw.soc.bridge`.

Receive path (one byte per cycle at most; the UART delivers one per 10 bit times)::

    rx bytes --> Unstuffer --symbols (byte, or a sync: `start`)--> FSM

    HUNT --start--> HEADER (8 bytes + CRC) --> CHECK_HEADER
      ^    ^            ^ start: the frame restarts   |  read, retry, or refused: REPLY
      |    |            '-----------------------------|  new write with a good header
      |    |                                          v
      |    |  PAYLOAD (length bytes + CRC, into the staging buffer) --> CHECK_PAYLOAD
      |    '--- start: the frame restarts                               good CRC |
      |                                                                          v
      +--- FINISH <-- SEND_CRC <-- [SEND_DATA] <-- REPLY header <--------- COMMIT

    FSM --symbols--> SkidBuffer (reply slice) --> Stuffer --> tx bytes

* Byte stuffing (`Unstuffer`, `Stuffer`): a sync byte on the line is always a frame start, so
  the engine never has to trust a length to find the next frame. Any refusal is answered at
  once, and whatever is left of the refused frame is skipped in HUNT up to the next sync byte;
  a sync byte in the middle of a frame drops that frame (unanswered: the host's retry follows)
  and starts the new one.
* Verify, then commit: a write's payload is received into a staging buffer (`Memory`, one word
  per 4 bytes, ``max_payload`` bytes) and copied to the bus only after its CRC checked out, so a
  corrupted or truncated write -- register or bulk -- changes nothing. The copy runs at one word
  per cycle (``length / 4 + 1`` cycles), far faster than the line delivers the payload, and the
  host waits for the reply anyway (stop-and-wait), so no second buffer is needed.
* Reads stream from the bus at line rate: the next words are fetched while the current one is
  being sent (a read's data arrives `bridge.INITIATOR_READ_LATENCY` cycles after it, so
  `PREFETCH_WORDS` are read ahead), so ``tx`` sees a continuous stream of data bytes even when
  it takes one per cycle (an escaped byte takes two). Writes are fire-and-forget (one per cycle).
* Sequence rules: ``last_seq`` and ``last_status`` record the last request taken in sequence
  with a final status; a write repeating ``last_seq`` is answered ``last_status`` without being
  applied, a write with any seq but ``last_seq + 1`` is answered BAD_SEQ, reads always run.
* Errors: a frame during which the line stays quiet for ``frame_timeout`` cycles is answered
  TRUNCATED (or dropped silently if not even the seq arrived). Symbols outside frames are
  skipped while hunting for the next sync byte, and bytes that arrive while a reply is being
  sent are drained and dropped.

Latency: the reply starts 1 cycle after the header CRC for reads and errors, and
``length / 4 + 3`` cycles after the payload CRC for writes, plus a cycle in each stuffing stage
and one in the reply slice between the FSM and the stuffer; a read reply's first data byte leaves
``INITIATOR_READ_LATENCY + 3`` (10) cycles after the reply header's last byte. Throughput: the
line rate in both directions, plus the staging copy per write.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.pipeline import SkidBuffer
from hw.soc.bridge import ADDRESS_WIDTH, INITIATOR_READ_LATENCY, Bus, MemoryMap, WindowKind
from hw.soc.protocol import (CRC_INIT, CRC_POLY, ESCAPE, ESCAPE_XOR, MAX_PAYLOAD, REPLY_HEADER,
                             REPLY_SYNC, REQUEST_SYNC, STUFFED_BYTES, WORD_BYTES, Opcode,
                             RequestHeader, Status)

__all__ = ["FrameEngine", "Stuffer", "Unstuffer", "SYMBOL", "crc16_next"]

HEADER_BYTES = RequestHeader.as_shape().size // 8
REPLY_HEADER_BYTES = 1 + REPLY_HEADER.size      # the start symbol (sync byte), then the header
# Words a read reply fetches ahead: a read issued the cycle after a word moves on to be sent is
# sendable INITIATOR_READ_LATENCY + 2 cycles after that word moved on, and the words ahead of it
# take WORD_BYTES cycles each to send at full rate.
PREFETCH_WORDS = -(-(INITIATOR_READ_LATENCY + 2) // WORD_BYTES)

# A frame symbol: a byte of the frame, or (`start`) the sync byte that begins one.
SYMBOL = data.StructLayout({"data": 8, "start": 1})


class Unstuffer(wiring.Component):
    """Line bytes in on `i`, frame symbols out on `o` (`protocol.stuff` undone).

    A `sync` byte is a `start` symbol; `ESCAPE` is dropped and the byte after it XORed with
    `ESCAPE_XOR`; any other byte passes. Latency 1 (registered output), one byte per cycle.

    Parameters
    ----------
    sync : int
        The sync byte of the frames received (`protocol.REQUEST_SYNC` on the device).
    """

    def __init__(self, *, sync):
        self.sync = sync
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(SYMBOL))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        escaped = Signal()
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(~o.valid | o.ready):
            m.d.comb += i.ready.eq(1)
            with m.If(i.valid):
                with m.If(i.payload == self.sync):
                    m.d.sync += [o.valid.eq(1), o.payload.start.eq(1), escaped.eq(0)]
                with m.Elif(i.payload == ESCAPE):
                    m.d.sync += escaped.eq(1)
                with m.Else():
                    m.d.sync += [o.valid.eq(1), o.payload.start.eq(0), escaped.eq(0),
                                 o.payload.data.eq(i.payload ^ Mux(escaped, ESCAPE_XOR, 0))]
        return m


class Stuffer(wiring.Component):
    """Frame symbols in on `i`, line bytes out on `o` (`protocol.stuff`).

    A `start` symbol is sent as the `sync` byte, a byte of `protocol.STUFFED_BYTES` as `ESCAPE`
    then the byte XOR `ESCAPE_XOR` (two cycles), any other byte as itself. Latency 1 (registered
    output), one byte per cycle.

    Parameters
    ----------
    sync : int
        The sync byte of the frames sent (`protocol.REPLY_SYNC` on the device).
    """

    def __init__(self, *, sync):
        self.sync = sync
        super().__init__({"i": In(stream.Signature(SYMBOL)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        escape_sent = Signal()
        special = Cat(i.payload.data == byte for byte in STUFFED_BYTES).any()
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If((~o.valid | o.ready) & i.valid):
            m.d.sync += o.valid.eq(1)
            with m.If(i.payload.start):
                m.d.comb += i.ready.eq(1)
                m.d.sync += o.payload.eq(self.sync)
            with m.Elif(special & ~escape_sent):
                m.d.sync += [o.payload.eq(ESCAPE), escape_sent.eq(1)]
            with m.Else():
                m.d.comb += i.ready.eq(1)
                m.d.sync += [o.payload.eq(i.payload.data ^ Mux(escape_sent, ESCAPE_XOR, 0)),
                             escape_sent.eq(0)]
        return m


def crc16_next(crc, byte):
    """The CRC-16/CCITT-FALSE register after shifting in `byte` (MSB first), as logic."""
    bits = [crc[i] for i in range(16)]
    for i in reversed(range(8)):
        feedback = bits[15] ^ byte[i]
        bits = [feedback] + [bits[j - 1] ^ feedback if (CRC_POLY >> j) & 1 else bits[j - 1]
                             for j in range(1, 16)]
    return Cat(*bits)


class FrameEngine(wiring.Component):
    """Request frames in on `rx`, replies out on `tx`, accesses on `bus`.

    Parameters
    ----------
    memory_map : MemoryMap
        The windows requests may address (the engine refuses everything else).
    max_payload : int
        Largest payload in bytes, a power of two in 4..`protocol.MAX_PAYLOAD`; the staging buffer
        holds that many bytes.
    frame_timeout : int
        Cycles of silence on `rx` inside a frame after which it counts as truncated.

    Ports
    -----
    rx : In(stream.Signature(8)), tx : Out(stream.Signature(8))
        Bytes from and to the host.
    bus : Out(Bus(address_width=30))
        Word bus to the windows (through a `BusDecoder`).
    frame_done : Out(1), frame_status : Out(Status)
        A one-cycle pulse per reply sent, with its status.
    byte_discarded : Out(1)
        A one-cycle pulse per symbol skipped outside a frame.
    last_seq : Out(8)
        The seq of the last request taken in sequence (the LAST_SEQ register).
    """

    def __init__(self, *, memory_map, max_payload=MAX_PAYLOAD, frame_timeout):
        if not isinstance(memory_map, MemoryMap):
            raise TypeError(f"memory_map must be a MemoryMap, not {memory_map!r}")
        if (not isinstance(max_payload, int) or isinstance(max_payload, bool)
                or max_payload & (max_payload - 1) or not WORD_BYTES <= max_payload <= MAX_PAYLOAD):
            raise ValueError(f"max_payload must be a power of two in {WORD_BYTES}..{MAX_PAYLOAD}, "
                             f"not {max_payload!r}")
        if not isinstance(frame_timeout, int) or isinstance(frame_timeout, bool) \
                or frame_timeout < 1:
            raise ValueError(f"frame_timeout must be a positive number of cycles, "
                             f"not {frame_timeout!r}")
        self.memory_map = memory_map
        self.max_payload = max_payload
        self.frame_timeout = frame_timeout
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(Bus(address_width=ADDRESS_WIDTH)),
            "frame_done": Out(1),
            "frame_status": Out(Status),
            "byte_discarded": Out(1),
            "last_seq": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        max_words = self.max_payload // WORD_BYTES
        m.submodules.unstuffer = unstuffer = Unstuffer(sync=REQUEST_SYNC)
        m.submodules.stuffer = stuffer = Stuffer(sync=REPLY_SYNC)
        # The reply symbols reach the stuffer through a register slice: the FSM sees a ready
        # from a flip-flop, so the stuffer's escape decision is not in front of the reply's
        # byte select, CRC and counters (the 85F critical path of the link 2.0 merge).
        m.submodules.reply_slice = reply_slice = SkidBuffer(SYMBOL)
        wiring.connect(m, wiring.flipped(self.rx), unstuffer.i)
        wiring.connect(m, reply_slice.o, stuffer.i)
        wiring.connect(m, stuffer.o, wiring.flipped(self.tx))
        rx, tx = unstuffer.o, reply_slice.i

        m.submodules.staging = staging = Memory(shape=32, depth=max_words, init=[])
        stage_write = staging.write_port()
        stage_read = staging.read_port()

        header = Signal(RequestHeader)
        header_index = Signal(range(HEADER_BYTES + 2))
        rx_crc = Signal(16, init=CRC_INIT)
        tx_crc = Signal(16, init=CRC_INIT)
        quiet = Signal(range(self.frame_timeout + 1))
        timed_out = Signal()        # registered quiet == frame_timeout: no compare before the FSM
        status = Signal(Status)             # of the reply being sent
        record = Signal()                   # the reply's request is the new last one in sequence
        byte_count = Signal(range(self.max_payload + 3))
        word_count = Signal(range(max_words + 1))
        word_shift = Signal(32)
        bus_word = Signal(ADDRESS_WIDTH)
        reply_index = Signal(range(REPLY_HEADER_BYTES))
        crc_byte = Signal()
        last_seq = Signal(8)
        next_seq = Signal(8, init=1)        # last_seq + 1, registered
        last_status = Signal(Status)
        m.d.comb += self.last_seq.eq(last_seq)

        opcode, length = header.opcode, header.length
        words = length[2:]
        known_opcode = Cat(opcode == op.value for op in Opcode).any()
        writes = (opcode == Opcode.WRITE_REGISTERS.value) | (opcode == Opcode.BULK_WRITE.value)
        bulk = (opcode == Opcode.BULK_READ.value) | (opcode == Opcode.BULK_WRITE.value)
        length_ok = (length != 0) & (length[:2] == 0) & (length <= self.max_payload)
        in_sequence = header.seq == next_seq
        # Registered, latency 2: the header's two CRC bytes come after its last byte, so the
        # status is valid by CHECK_HEADER.
        access = self.memory_map.access_status(
            m, address=header.address, length=length, write=writes,
            kind=Mux(bulk, WindowKind.MEMORY, WindowKind.REGISTERS))
        checked = Mux(length_ok, access, Status.BAD_LENGTH)
        returns_data = (status == Status.OK) & known_opcode & ~writes
        # Index of a read reply's last data byte, registered (no decrementer before the compare
        # in SEND_DATA): the header is steady long before.
        last_byte = Signal.like(length)
        m.d.sync += last_byte.eq(length - 1)
        last_word = Signal(ADDRESS_WIDTH)       # the same for a write's last bus word
        m.d.sync += last_word.eq(header.address[2:] + words - 1)

        received = Signal()
        m.d.comb += received.eq(rx.valid & rx.ready & ~rx.payload.start)
        next_rx_crc = crc16_next(rx_crc, rx.payload.data)
        # The bus request is straight from registers (the decoder registers it again); address
        # and data only count with a strobe.
        m.d.comb += [self.frame_status.eq(status), bus.address.eq(bus_word),
                     bus.write_data.eq(stage_read.data)]

        def start_frame():
            m.d.sync += [quiet.eq(0), timed_out.eq(0), header_index.eq(0), rx_crc.eq(CRC_INIT),
                         tx_crc.eq(CRC_INIT), reply_index.eq(0), crc_byte.eq(0), record.eq(0)]
            m.next = "HEADER"

        def receive_with_timeout():
            """Take symbols; `timed_out` is high once the line has been quiet `frame_timeout`
            cycles in this frame. A start symbol begins the next frame (this one is dropped)."""
            m.d.comb += rx.ready.eq(1)
            m.d.sync += [quiet.eq(Mux(rx.valid, 0, quiet + 1)),
                         timed_out.eq(~rx.valid & (quiet == self.frame_timeout - 1))]
            with m.If(rx.valid & rx.payload.start):
                start_frame()

        def drain_rx():
            m.d.comb += [rx.ready.eq(1), self.byte_discarded.eq(rx.valid)]

        def send(byte):
            m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(byte)]
            return tx.ready

        def reply(new_status, *, recorded):
            m.d.sync += [status.eq(new_status), record.eq(recorded)]
            m.next = "REPLY"

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    with m.If(rx.payload.start):
                        start_frame()
                    with m.Else():
                        m.d.comb += self.byte_discarded.eq(1)

            with m.State("HEADER"):
                receive_with_timeout()
                with m.If(received):
                    m.d.sync += [rx_crc.eq(next_rx_crc), header_index.eq(header_index + 1)]
                    with m.Switch(header_index):
                        for index in range(HEADER_BYTES):
                            with m.Case(index):
                                m.d.sync += header.as_value().word_select(index, 8).eq(
                                    rx.payload.data)
                    with m.If(header_index == HEADER_BYTES + 1):    # the second CRC byte
                        m.next = "CHECK_HEADER"
                with m.Elif(timed_out & ~rx.valid):
                    with m.If(header_index == 0):
                        m.next = "HUNT"
                    with m.Else():
                        reply(Status.TRUNCATED, recorded=0)

            with m.State("CHECK_HEADER"):
                m.d.sync += [rx_crc.eq(CRC_INIT), byte_count.eq(0), quiet.eq(0), timed_out.eq(0),
                             bus_word.eq(header.address[2:])]
                with m.If(rx_crc != 0):
                    reply(Status.BAD_CRC, recorded=0)
                with m.Elif(~known_opcode):
                    reply(Status.BAD_OPCODE, recorded=in_sequence)
                with m.Elif(~writes):
                    reply(checked, recorded=in_sequence)
                with m.Elif(header.seq == last_seq):
                    reply(last_status, recorded=0)      # a retry: answered, not applied again
                with m.Elif(~in_sequence):
                    reply(Status.BAD_SEQ, recorded=0)
                with m.Elif(checked != Status.OK):
                    reply(checked, recorded=1)
                with m.Else():
                    m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                receive_with_timeout()
                incoming_word = Cat(word_shift[8:], rx.payload.data)
                m.d.comb += [
                    stage_write.addr.eq(byte_count[2:]),
                    stage_write.data.eq(incoming_word),
                    stage_write.en.eq(received & (byte_count < length) & (byte_count[:2] == 3)),
                ]
                with m.If(received):
                    m.d.sync += [rx_crc.eq(next_rx_crc), byte_count.eq(byte_count + 1),
                                 word_shift.eq(incoming_word)]
                    with m.If(byte_count == length + 1):
                        m.next = "CHECK_PAYLOAD"
                with m.Elif(timed_out & ~rx.valid):
                    reply(Status.TRUNCATED, recorded=0)

            with m.State("CHECK_PAYLOAD"):
                m.d.sync += word_count.eq(0)
                with m.If(rx_crc != 0):
                    reply(Status.BAD_CRC, recorded=0)
                with m.Else():
                    m.d.sync += [status.eq(Status.OK), record.eq(1)]
                    m.next = "COMMIT"

            with m.State("COMMIT"):
                # word_count counts staging reads; a word read in one cycle is written in the
                # next, so `read_pending` marks the cycles with a word on stage_read.data.
                read_pending = Signal()
                m.d.comb += [stage_read.addr.eq(word_count), stage_read.en.eq(1)]
                m.d.sync += read_pending.eq(word_count != words)
                with m.If(word_count != words):
                    m.d.sync += word_count.eq(word_count + 1)
                with m.If(read_pending):
                    m.d.comb += bus.write.eq(1)
                    m.d.sync += bus_word.eq(bus_word + 1)
                    with m.If(bus_word == last_word):
                        m.d.sync += read_pending.eq(0)
                        m.next = "REPLY"

            with m.State("REPLY"):
                drain_rx()
                reply_header = Cat(Const(0, 8), header.seq, status,
                                   Mux(returns_data, length, 0))
                byte = reply_header.word_select(reply_index, 8)
                m.d.comb += tx.payload.start.eq(reply_index == 0)
                with m.If(send(byte)):
                    m.d.sync += reply_index.eq(reply_index + 1)
                    with m.If(reply_index != 0):
                        m.d.sync += tx_crc.eq(crc16_next(tx_crc, byte))
                    with m.If(reply_index == REPLY_HEADER_BYTES - 1):
                        m.d.sync += [byte_count.eq(0), word_count.eq(0)]
                        with m.If(returns_data):
                            m.next = "SEND_DATA"
                        with m.Else():
                            m.next = "SEND_CRC"

            with m.State("SEND_DATA"):
                drain_rx()
                self._send_data(m, tx, last_byte, words, bus_word, word_count, byte_count,
                                word_shift, tx_crc)

            with m.State("SEND_CRC"):
                drain_rx()
                with m.If(send(Mux(crc_byte, tx_crc[:8], tx_crc[8:]))):
                    m.d.sync += crc_byte.eq(1)
                    with m.If(crc_byte):
                        m.next = "FINISH"

            with m.State("FINISH"):
                # Not draining: the host may start its next frame right after our last byte.
                m.d.comb += self.frame_done.eq(1)
                with m.If(record):
                    m.d.sync += [last_seq.eq(header.seq), next_seq.eq(header.seq + 1),
                                 last_status.eq(status)]
                m.next = "HUNT"
        return m

    def _send_data(self, m, tx, last_byte, words, bus_word, fetched, sent, word_shift, tx_crc):
        """Stream `words` bus words out on `tx`, fetching words ahead while earlier ones are sent.

        Reads land in a small FIFO (`PREFETCH_WORDS` deep) and move on into `word_shift` as its
        last byte is sent. A read is issued whenever fewer than `PREFETCH_WORDS` words are in
        flight or waiting (counted in a register, so a word that moves on frees its slot for a
        read in the next cycle). Such a read's word is in the FIFO, ready to move on,
        `INITIATOR_READ_LATENCY` + 2 cycles after the word that freed the slot moved on: within
        the `PREFETCH_WORDS` * 4 cycles the words ahead of it take to send, so the data bytes
        leave in a continuous stream."""
        bus = self.bus
        word_valid = Signal()       # word_shift holds bytes still to send
        in_flight = Signal(INITIATOR_READ_LATENCY)     # one bit per cycle since each read
        pending = Signal(range(PREFETCH_WORDS + 1))     # words read, not yet in word_shift
        m.submodules.prefetch = prefetch = SyncFIFO(width=32, depth=PREFETCH_WORDS)

        m.d.comb += [tx.valid.eq(word_valid), tx.payload.data.eq(word_shift[:8])]
        sent_last_of_word = Signal()
        m.d.comb += sent_last_of_word.eq(tx.valid & tx.ready & (sent[:2] == 3))
        with m.If(tx.valid & tx.ready):
            m.d.sync += [tx_crc.eq(crc16_next(tx_crc, tx.payload.data)), sent.eq(sent + 1),
                         word_shift.eq(word_shift >> 8)]
            with m.If(sent_last_of_word):
                m.d.sync += word_valid.eq(0)
            with m.If(sent == last_byte):
                m.next = "SEND_CRC"
        move_on = Signal()
        m.d.comb += [move_on.eq(prefetch.r_rdy & (~word_valid | sent_last_of_word)),
                     prefetch.r_en.eq(move_on),
                     prefetch.w_data.eq(bus.read_data),
                     prefetch.w_en.eq(in_flight[-1])]
        with m.If(move_on):
            m.d.sync += [word_shift.eq(prefetch.r_data), word_valid.eq(1)]
        fetch = (pending != PREFETCH_WORDS) & (fetched != words)
        m.d.sync += [in_flight.eq(Cat(fetch, in_flight[:-1])),
                     pending.eq(pending + fetch - move_on)]
        with m.If(fetch):
            m.d.comb += bus.read.eq(1)
            m.d.sync += [fetched.eq(fetched + 1), bus_word.eq(bus_word + 1)]
