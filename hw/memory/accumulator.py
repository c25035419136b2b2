"""Int32 accumulator memory with pipelined write-or-accumulate.

Rows of `cols` int32 words (one output row of the array) in ECP5 block RAM. Each transfer on the
`write` stream either stores its row (``accumulate=0``) or adds it lane-wise to the row already at
that address (``accumulate=1``), so the K-chunks of a weight-stationary GEMM sum in place. The
read-modify-write is a two-stage pipeline that sustains one row per cycle, including back-to-back
accumulations into the same address::

    cycle          t                     t+1
    write stream   accept {addr, data}   -
    memory read    issue read(addr)      old = forwarded row if the row written at t had the same
                                         address (a non-transparent read misses it), else read data
    memory write   -                     mem[addr] <- old + data (or data)

Only the row written in the cycle before is invisible to a read, so one forwarding register is
enough. Additions wrap modulo 2^32 (the golden model guarantees the true sums fit int32).

The `drain` port reads rows out for requantization through the same physical read port (the other
DP16KD port is the RMW write, so the memory is never replicated). A drain read has priority: in a
cycle with ``drain.en`` high, ``write.ready`` is low. ``drain.data`` is valid exactly one cycle
after ``drain.en`` and shows the contents before any write of that same cycle.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

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
    """

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
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.storage = storage = memory.Memory(shape=self.row_layout, depth=self.depth,
                                                       init=[])
        read_port = storage.read_port()
        write_port = storage.write_port()

        m.d.comb += [
            self.write.ready.eq(~self.drain.en),
            read_port.addr.eq(Mux(self.drain.en, self.drain.addr, self.write.payload.addr)),
            read_port.en.eq(1),
            self.drain.data.eq(read_port.data),
        ]

        pending = Signal(self.write_layout)
        pending_valid = Signal()
        m.d.sync += pending_valid.eq(self.write.valid & self.write.ready)
        with m.If(self.write.ready):
            m.d.sync += pending.eq(self.write.payload)

        last_addr = Signal(self.addr_width)
        last_row = Signal(self.row_layout)
        last_valid = Signal()
        forward = last_valid & (last_addr == pending.addr)
        old_row = Signal(self.row_layout)
        m.d.comb += old_row.eq(Mux(forward, last_row, read_port.data))

        new_row = Signal(self.row_layout)
        for lane in range(self.cols):
            m.d.comb += new_row[lane].eq(
                Mux(pending.accumulate, old_row[lane] + pending.data[lane], pending.data[lane]))

        m.d.comb += [
            write_port.addr.eq(pending.addr),
            write_port.data.eq(new_row),
            write_port.en.eq(pending_valid),
        ]
        m.d.sync += [
            last_valid.eq(pending_valid),
            last_addr.eq(pending.addr),
            last_row.eq(new_row),
        ]
        return m
