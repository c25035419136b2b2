"""Banked int8 scratchpad in ECP5 block RAM.

The scratchpad holds activations and weights as rows of `row_bytes` int8 lanes (``max(R, C)`` of
the array). It is split into `banks` equal banks, so the compute side can read A and W (or two
tiles) in the same cycle: read port ``b`` reads bank ``b``. A bank is built from
`amaranth.lib.memory.Memory` slices with one write port and one read port -- exactly the
pseudo-dual-port mode of a DP16KD, so yosys maps them onto block RAM without replicating them. A
slice is as wide as one DP16KD is at the bank's depth (`slice_bits`: 4 bits at 4096 rows, 9 at
2048, ...), so each slice is one block RAM and no depth cascade puts a multiplexer between a RAM's
output and its data register (left to itself, yosys maps a 4096 x 96-bit bank onto 2 x 11 blocks
of 2048 x 9 and a 2:1 mux; sliced it takes 24 blocks of 4096 x 4). Banks deeper than 16,384 rows
still cascade.

Addressing: the single write port takes a global row address whose top bits select the bank
(``bank = addr >> log2(depth // banks)``), so the load/store units see one flat address space;
each read port takes an address local to its bank.

Every port is registered on both sides of the block RAM. A read's address and enable go into
flip-flops, the RAM reads in the next cycle, and its data goes straight into a row of flip-flops
(loaded every cycle, no logic in between); a write's address, data and enable go into flip-flops
of its bank (one copy per bank, so each drives half the blocks) and the RAM writes them in the
next cycle. The banks span the die, so every long net into or out of a RAM starts and ends at a
flip-flop (the write port's address reaches 48 blocks per bank on the 85F preset: from the
core's write multiplexer it took 10.4 ns of routing); the cost is `READ_LATENCY` = 3 cycles
instead of 1, and a write reaches the RAM a cycle after it is issued. Timing (one row per cycle
on every port)::

    cycle      t             t+1                t+2                t+3
    read[b]    addr, en=1    RAM reads addr     data -> register   data = bank[b][addr]
    write      addr, data,   RAM writes (end
               en=1          of t+1)

A read issued in cycle t returns the row with every write issued up to cycle t-1; a write issued
in cycle t, whose RAM write falls in the cycle the RAM reads, to the same row makes the read
return an undefined row (the slices are `hw.synthesis.UNDEFINED_ON_COLLISION`; Amaranth's
simulator returns the old row), and later writes are not seen. The core orders such accesses with
FENCE and its units' `busy` (a unit is busy in the cycle it issues its last write).
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import Out

from hw.synthesis import UNDEFINED_ON_COLLISION
from ._parameters import check_int, check_power_of_two

__all__ = ["Scratchpad", "DP16KD_SHAPES", "slice_bits", "block_rams"]

# ECP5 DP16KD aspect ratios (depth, width), deepest first; 512 x 36 is the pseudo-dual-port mode.
DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def slice_bits(depth):
    """Width of the widest DP16KD aspect ratio at least `depth` rows deep (1 beyond 16,384)."""
    return max((width for rows, width in DP16KD_SHAPES if rows >= depth), default=1)


def block_rams(*, row_bytes, depth, banks):
    """DP16KD blocks of a `Scratchpad` with these parameters."""
    bank_depth = depth // banks
    cascade = -(-bank_depth // DP16KD_SHAPES[0][0])
    return banks * cascade * -(-8 * row_bytes // slice_bits(bank_depth))


class Scratchpad(wiring.Component):
    """`banks` banks of ``depth // banks`` rows of `row_bytes` int8 lanes.

    Parameters (keyword-only)
    -------------------------
    row_bytes : int
        Lanes per row, 1..64 (the array side, ``max(rows, cols)``).
    depth : int
        Total rows, a power of two >= 2 (``AcceleratorConfig.scratchpad_rows``).
    banks : int
        Independent banks, a power of two that leaves each bank at least 2 rows deep.

    Members
    -------
    write : ``WritePort.Signature(addr_width=log2(depth), shape=row_layout)`` (driven from outside)
    read : ``banks`` x ``ReadPort.Signature(addr_width=log2(depth // banks), shape=row_layout)``
        (``data`` is valid `READ_LATENCY` cycles after ``en``)
    """

    READ_LATENCY = 3

    def __init__(self, *, row_bytes, depth, banks=1):
        owner = "Scratchpad"
        self.row_bytes = check_int(owner, "row_bytes", row_bytes, 1, 64)
        self.depth = check_power_of_two(owner, "depth", depth, 2)
        self.banks = check_power_of_two(owner, "banks", banks, 1, depth // 2)
        self.bank_depth = depth // banks
        self.row_layout = data.ArrayLayout(signed(8), row_bytes)
        addr_width = (depth - 1).bit_length()
        self.bank_addr_width = (self.bank_depth - 1).bit_length()
        super().__init__({
            "write": Out(memory.WritePort.Signature(addr_width=addr_width, shape=self.row_layout)),
            "read": Out(memory.ReadPort.Signature(addr_width=self.bank_addr_width,
                                                  shape=self.row_layout)).array(banks),
        })

    def elaborate(self, platform):
        m = Module()
        bank_select = self.write.addr[self.bank_addr_width:]
        row_bits, step = self.row_layout.size, slice_bits(self.bank_depth)
        for index in range(self.banks):
            write_addr = Signal(self.bank_addr_width, name=f"write_addr_{index}")
            write_data = Signal(self.row_layout, name=f"write_data_{index}")
            write_en = Signal(name=f"write_en_{index}")
            m.d.sync += write_en.eq(self.write.en & (bank_select == index))
            # Loaded only for this bank's writes: the two banks' registers differ, so synthesis
            # keeps both copies (identical ones would be merged into one driving every block).
            with m.If(bank_select == index):
                m.d.sync += [write_addr.eq(self.write.addr[:self.bank_addr_width]),
                             write_data.eq(self.write.data)]
            read_addr = Signal.like(self.read[index].addr, name=f"read_addr_{index}")
            read_en = Signal(name=f"read_en_{index}")
            read_data = Signal(self.row_layout, name=f"read_data_{index}")
            m.d.sync += [
                read_addr.eq(self.read[index].addr),
                read_en.eq(self.read[index].en),
            ]
            m.d.comb += self.read[index].data.eq(read_data)
            for low in range(0, row_bits, step):
                bits = slice(low, min(low + step, row_bits))
                ram = memory.Memory(shape=bits.stop - bits.start, depth=self.bank_depth, init=[],
                                    attrs=UNDEFINED_ON_COLLISION)
                m.submodules[f"bank{index}_bits{low}"] = ram
                write_port, read_port = ram.write_port(), ram.read_port()
                m.d.sync += read_data.as_value()[bits].eq(read_port.data)
                m.d.comb += [
                    write_port.addr.eq(write_addr),
                    write_port.data.eq(write_data.as_value()[bits]),
                    write_port.en.eq(write_en),
                    read_port.addr.eq(read_addr),
                    read_port.en.eq(read_en),
                ]
        return m
