"""Int32 accumulator memory with pipelined write-or-accumulate.

Rows of `cols` int32 words (one output row of the array) in ECP5 block RAM. Each transfer on the
`write` stream either stores its row (``accumulate=0``) or adds it lane-wise to the row already at
that address (``accumulate=1``), so the K-chunks of a weight-stationary GEMM sum in place. The
read-modify-write is a three-stage pipeline that sustains one row per cycle, including
back-to-back accumulations into the same address::

    cycle          t                  t+1                      t+2
    write stream   accept {addr,...}  -                        -
    memory read    issue read(addr)   read data -> register    -
    forwarding     -                  compare addr with the    old = the newer matching row, else
                                      rows written at t, t+1   the registered read data
    memory write   -                  -                        mem[addr] <- old + data (or data)

The block RAM's read data (about 5.6 ns clock-to-out on the ECP5, which has no output register
mapping in yosys) goes into flip-flops; the adder works from registers. A read misses the rows
written in the two cycles before its write, so two forwarding registers hold them. Additions wrap
modulo 2^32 (the golden model guarantees the true sums fit int32). The forwarding also covers a
row written in the very cycle it is read, so the memory is `hw.synthesis.UNDEFINED_ON_COLLISION`
and yosys needs no read-first emulation (out of context, 12 lanes: 1583 -> 1187 LUT4, 2748 ->
1968 FF).

The `drain` port reads rows out for requantization through the same physical read port (the other
DP16KD port is the RMW write, so the memory is never replicated). Its request is registered first
and then has priority: in the cycle after ``drain.en`` is high, ``write.ready`` is low (a
flip-flop, so no drain arbitration reaches the write stream's handshake). Its data is stage 2's
read register, so ``drain.data`` is valid exactly `DRAIN_LATENCY` = 3 cycles after ``drain.en``::

    cycle          t                  t+1                      t+2            t+3
    drain          en, addr           RAM reads addr           -> register    data
    write stream   (may accept)       ready = 0                -              -

A drain read issued in cycle t shows every row accepted on `write` up to cycle t-2 (written by
the end of cycle t); the row accepted in cycle t-1 is written in the cycle the RAM reads, so a
drain of its address returns an undefined row. ``idle`` is high when no accepted row is still in
the pipeline, so a drain read issued while ``idle`` is high sees every accepted row. A row
accepted in cycle t is written at the end of cycle t+2.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.synthesis import UNDEFINED_ON_COLLISION

from ._parameters import check_int, check_power_of_two

__all__ = ["AccumulatorMemory"]


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

        # Stage 2: read data registered, forwarding decided.
        update = Signal(self.write_layout)
        update_valid = Signal()
        read_row = Signal(self.row_layout)
        # Rows written in the previous cycle (newer) and the one before.
        newer_row, older_row = Signal(self.row_layout), Signal(self.row_layout)
        newer_addr, older_addr = Signal(self.addr_width), Signal(self.addr_width)
        newer_valid, older_valid = Signal(), Signal()
        use_newer, use_older = Signal(), Signal()
        m.d.sync += [
            update.eq(fetch),
            update_valid.eq(fetch_valid),
            read_row.eq(read_port.data),    # also the drain port's data
            # The row written this cycle becomes `newer` and the current `newer` becomes
            # `older` when `fetch` reaches stage 2.
            use_newer.eq(update_valid & (update.addr == fetch.addr)),
            use_older.eq(newer_valid & (newer_addr == fetch.addr)),
        ]
        old_row = Signal(self.row_layout)
        with m.If(use_newer):
            m.d.comb += old_row.eq(newer_row)
        with m.Elif(use_older):
            m.d.comb += old_row.eq(older_row)
        with m.Else():
            m.d.comb += old_row.eq(read_row)
        new_row = Signal(self.row_layout)
        for lane in range(self.cols):
            m.d.comb += new_row[lane].eq(
                Mux(update.accumulate, old_row[lane] + update.data[lane], update.data[lane]))

        m.d.comb += [
            self.drain.data.eq(read_row),
            write_port.addr.eq(update.addr),
            write_port.data.eq(new_row),
            write_port.en.eq(update_valid),
            self.idle.eq(~fetch_valid & ~update_valid),
        ]
        m.d.sync += [
            newer_valid.eq(update_valid),
            newer_addr.eq(update.addr),
            newer_row.eq(new_row),
            older_valid.eq(newer_valid),
            older_addr.eq(newer_addr),
            older_row.eq(newer_row),
        ]
        return m
