"""Int32 accumulator memory with pipelined write-or-accumulate.

Rows of `cols` int32 words (one output row of the array) in ECP5 block RAM. Each transfer on the
`write` stream either stores its row (``accumulate=0``) or adds it lane-wise to the row already at
that address (``accumulate=1``), so the K-chunks of a weight-stationary GEMM sum in place. The
read-modify-write is a four-stage pipeline that sustains one row per cycle, including
back-to-back accumulations into the same address::

    cycle         t                t+1                     t+2                   t+3
    write stream  accept {addr,..} -                       -                     -
    memory read   issue read(addr) read data -> register   -                     -
    forwarding    -                choose the newest row   old = the chosen row  -
                                   written since the read  (zero for a plain
                                   (choice registered)     write)
    add           -                -                       old + data -> commit  -
    memory write  -                -                       -                     mem[addr] <- commit

The block RAM's read data (about 5.6 ns clock-to-out on the ECP5, which has no output register
mapping in yosys) goes into flip-flops; the adder works from registers and ends in flip-flops
(`commit`), and the memory is written from those one cycle later, so neither the read data nor the
sums cross the die to the block RAMs in the cycle they are formed. A read misses the rows written
in the cycle it is issued (a collision) and in the two cycles after, before its own row reaches
the adder: `commit` (written in the adder's cycle) and two forwarding registers (`newer`, `older`:
written one and two cycles before) hold them. Which of them, if any, a row takes is decided and
registered while the row waits for its read data, so no address comparator sits in front of the
adder; a plain write takes zero there, so the adder's sums need no multiplexer after it.
Additions wrap modulo 2^32 (the golden model guarantees the true sums fit int32). The forwarding
covers a row written in the very cycle it is read, so the memory is
`hw.synthesis.UNDEFINED_ON_COLLISION` and yosys needs no read-first emulation. Out of context
(`sim.synth`, 12 lanes, 2048 rows): 1548 LUT4, 2368 FF.

The `drain` port reads rows out for requantization through the same physical read port (the other
DP16KD port is the RMW write, so the memory is never replicated). Its request is registered first
and then has priority: in the cycle after ``drain.en`` is high, ``write.ready`` is low (a
flip-flop, so no drain arbitration reaches the write stream's handshake). Its data is stage 2's
read register, so ``drain.data`` is valid exactly `DRAIN_LATENCY` = 3 cycles after ``drain.en``::

    cycle          t                  t+1                      t+2            t+3
    drain          en, addr           RAM reads addr           -> register    data
    write stream   (may accept)       ready = 0                -              -

A row accepted on `write` in cycle t is written at the end of cycle t+3. A drain read issued in
cycle t shows every row accepted up to cycle t-3 (written by the end of cycle t); the row
accepted in cycle t-2 is written in the cycle the RAM reads, so a drain of its address returns an
undefined row, and rows accepted from cycle t-1 on are not in it. ``idle`` is high when no
accepted row is still in the pipeline, so a drain read issued while ``idle`` is high sees every
row accepted before that cycle.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.synthesis import UNDEFINED_ON_COLLISION

from ._parameters import check_int, check_power_of_two

__all__ = ["AccumulatorMemory"]


class _OldRow(enum.Enum, shape=2):
    """Where stage 2 takes the row it accumulates onto: the registered read, or the row written
    this cycle (`COMMIT`), in the previous cycle (`NEWER`) or the one before (`OLDER`)."""
    MEMORY = 0
    COMMIT = 1
    NEWER = 2
    OLDER = 3


class AccumulatorMemory(wiring.Component):
    """`depth` rows of `cols` int32 lanes with write-or-accumulate.

    Parameters (keyword-only)
    -------------------------
    cols : int
        Lanes per row, 1..64 (the array's ``cols``).
    depth : int
        Rows, a power of two >= 2 (``AcceleratorConfig.accumulator_rows``).

    Members
    -------
    write : In(stream.Signature(StructLayout{addr, data: ArrayLayout(signed(32), cols), accumulate}))
    drain : Out(Signature{en: In(1), addr: In(addr_width), data: Out(row_layout)})
    idle : Out(1)
    """

    DRAIN_LATENCY = 3

    def __init__(self, *, cols, depth):
        owner = "AccumulatorMemory"
        self.cols = check_int(owner, "cols", cols, 1, 64)
        self.depth = check_power_of_two(owner, "depth", depth, 2)
        self.addr_width = (depth - 1).bit_length()
        self.row_layout = data.ArrayLayout(signed(32), cols)
        self.write_layout = data.StructLayout({
            "addr": self.addr_width,
            "data": self.row_layout,
            "accumulate": 1,
        })
        super().__init__({
            "write": In(stream.Signature(self.write_layout)),
            "drain": Out(wiring.Signature({
                "en": In(1),
                "addr": In(self.addr_width),
                "data": Out(self.row_layout),
            })),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.storage = storage = memory.Memory(shape=self.row_layout, depth=self.depth,
                                                       init=[], attrs=UNDEFINED_ON_COLLISION)
        read_port = storage.read_port()
        write_port = storage.write_port()

        drain_en = Signal()
        drain_addr = Signal.like(self.drain.addr, name="drain_addr_registered")
        m.d.sync += [drain_en.eq(self.drain.en), drain_addr.eq(self.drain.addr)]
        m.d.comb += [
            self.write.ready.eq(~drain_en),
            read_port.addr.eq(Mux(drain_en, drain_addr, self.write.payload.addr)),
            read_port.en.eq(1),
        ]

        # Stage 1: the accepted row waits for its read data.
        fetch = Signal(self.write_layout)
        fetch_valid = Signal()
        m.d.sync += [
            fetch_valid.eq(self.write.valid & self.write.ready),
            # Loaded every cycle (fetch_valid qualifies it): no enable from the drain port's
            # arbitration reaches these ~400 flip-flops.
            fetch.eq(self.write.payload),
        ]

        # Stage 2: read data registered, the new row computed into stage 3 (`commit`), which
        # writes it. `commit` and the rows written in the two cycles before it (`newer`,
        # `older`) are the rows a stage-2 row's read missed.
        update = Signal(self.write_layout)
        update_valid = Signal()
        read_row = Signal(self.row_layout)
        m.d.sync += [
            update.eq(fetch),
            update_valid.eq(fetch_valid),
            read_row.eq(read_port.data),    # also the drain port's data
        ]
        written_layout = data.StructLayout({"row": self.row_layout, "addr": self.addr_width,
                                            "valid": 1})
        commit = Signal(written_layout)
        newer = Signal(written_layout)
        older = Signal(written_layout)
        source = self._forwarding_source(m, fetch.addr, update_valid, update.addr,
                                         commit, newer)
        addend = Signal(self.row_layout)
        # A plain write adds its row to zero: the choice sits in the forwarding multiplexer's
        # LUTs, and the adder's sums go straight to flip-flops.
        with m.If(update.accumulate):
            with m.Switch(source):
                with m.Case(_OldRow.MEMORY):
                    m.d.comb += addend.eq(read_row)
                with m.Case(_OldRow.COMMIT):
                    m.d.comb += addend.eq(commit.row)
                with m.Case(_OldRow.NEWER):
                    m.d.comb += addend.eq(newer.row)
                with m.Case(_OldRow.OLDER):
                    m.d.comb += addend.eq(older.row)
        for lane in range(self.cols):
            m.d.sync += commit.row[lane].eq(addend[lane] + update.data[lane])
        m.d.sync += [
            commit.valid.eq(update_valid),
            commit.addr.eq(update.addr),
            newer.eq(commit),
            older.eq(newer),
        ]

        m.d.comb += [
            self.drain.data.eq(read_row),
            write_port.addr.eq(commit.addr),
            write_port.data.eq(commit.row),
            write_port.en.eq(commit.valid),
            self.idle.eq(~fetch_valid & ~update_valid & ~commit.valid),
        ]
        return m

    @staticmethod
    def _forwarding_source(m, fetch_addr, update_valid, update_addr, commit, newer):
        """The registered `_OldRow` of the row in stage 1 for its cycle in stage 2, decided a
        cycle ahead so no address comparator sits in front of the adder. When that row reaches
        stage 2, `update` has moved to `commit`, `commit` to `newer` and `newer` to `older`; the
        newest matching row wins."""
        source = Signal(_OldRow)
        with m.If(update_valid & (update_addr == fetch_addr)):
            m.d.sync += source.eq(_OldRow.COMMIT)
        with m.Elif(commit.valid & (commit.addr == fetch_addr)):
            m.d.sync += source.eq(_OldRow.NEWER)
        with m.Elif(newer.valid & (newer.addr == fetch_addr)):
            m.d.sync += source.eq(_OldRow.OLDER)
        with m.Else():
            m.d.sync += source.eq(_OldRow.MEMORY)
        return source
