"""The synthesis directives of `hw.synthesis`, checked on what yosys makes of small designs, and
the block-RAM mapping of the scratchpad and the array's result FIFO."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.memory.scratchpad import Scratchpad, block_rams, slice_bits
from hw.systolic.array import ResultFIFO
from hw.synthesis import MAPPING_BOUNDARY, UNDEFINED_ON_COLLISION, UNMERGED_REGISTER
from sim.synth import synthesize


class _Directed(wiring.Component):
    """A small design whose key signal or memory carries `attrs` (a directive or none)."""

    def __init__(self, attrs):
        self.attrs = attrs
        super().__init__()


class _RegisteredRam(_Directed):
    """1024 x 8 bits, one write and one read port, the read data registered."""
    write_addr: In(10)
    write_data: In(8)
    read_addr: In(10)
    read_data: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = memory.Memory(shape=8, depth=1024, init=[], attrs=self.attrs)
        write, read = ram.write_port(), ram.read_port()
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data),
                     write.en.eq(1), read.addr.eq(self.read_addr)]
        m.d.sync += self.read_data.eq(read.data)
        return m


@pytest.mark.parametrize("attrs, emulated", [({}, True), (UNDEFINED_ON_COLLISION, False)])
def test_undefined_on_collision_drops_read_first_emulation(attrs, emulated):
    cells = synthesize(_RegisteredRam(attrs), "ram")
    assert cells["DP16KD"] == 1
    # Read-first emulation: a copy of the written byte and address, a comparator and a mux.
    assert (cells["LUT4"] > 0) == emulated
    assert (cells["FF"] > 8) == emulated


class _TwinRegisters(_Directed):
    """Two registers loaded with the same input."""
    d: In(1)
    q: Out(2)

    def elaborate(self, platform):
        m = Module()
        twins = [Signal(name=f"twin_{index}", attrs=self.attrs) for index in range(2)]
        for index, twin in enumerate(twins):
            m.d.sync += twin.eq(self.d)
            m.d.comb += self.q[index].eq(twin)
        return m


@pytest.mark.parametrize("attrs, flip_flops", [({}, 1), (UNMERGED_REGISTER, 2)])
def test_unmerged_register_is_not_shared(attrs, flip_flops):
    assert synthesize(_TwinRegisters(attrs), "twins")["FF"] == flip_flops


class _ChainedAdders(_Directed):
    """(a + b) + (c + d), 8-bit operands, the sum registered."""
    a: In(8)
    b: In(8)
    c: In(8)
    d: In(8)
    total: Out(10)

    def elaborate(self, platform):
        m = Module()
        left, right = Signal(9, attrs=self.attrs), Signal(9, attrs=self.attrs)
        m.d.comb += [left.eq(self.a + self.b), right.eq(self.c + self.d)]
        m.d.sync += self.total.eq(left + right)
        return m


def test_mapping_boundary_keeps_each_adder_on_its_carry_chain():
    merged = synthesize(_ChainedAdders({}), "adders")
    apart = synthesize(_ChainedAdders(MAPPING_BOUNDARY), "adders")
    # Three ripple adders of 9 and 10 result bits, two bits per CCU2C: 5 cells each, no LUT.
    assert apart["CCU2C"] == 3 * 5 and apart["LUT4"] == 0
    # Without the boundary yosys sums the four operands at once, mostly in LUTs.
    assert merged["LUT4"] > 0 and merged["CCU2C"] < apart["CCU2C"]


@pytest.mark.parametrize("depth, bits", [(16384, 1), (8192, 2), (4096, 4), (2048, 9),
                                         (1024, 18), (512, 36), (16, 36), (32768, 1)])
def test_slice_bits(depth, bits):
    assert slice_bits(depth) == bits


@pytest.mark.parametrize("row_bytes, depth, blocks", [
    (12, 8192, 2 * 24),         # ULX3S-85F: banks of 4096 rows, 96 bits in 4096 x 4 blocks
    (8, 8192, 2 * 16),          # 45F
    (6, 2048, 2 * 3),           # 12F/25F: 1024 rows, 48 bits in 1024 x 18 blocks
])
def test_scratchpad_maps_one_block_per_slice(row_bytes, depth, blocks):
    cells = synthesize(Scratchpad(row_bytes=row_bytes, depth=depth, banks=2), "scratchpad")
    assert cells["DP16KD"] == blocks == block_rams(row_bytes=row_bytes, depth=depth, banks=2)
    # Nothing between a block RAM and its registers: the flip-flops are each bank's read and
    # write ports' address, enable and data registers, and the only LUT4s decode the write bank.
    address_bits = (depth // 2 - 1).bit_length()
    assert cells["FF"] == 2 * 2 * (address_bits + 1 + 8 * row_bytes)
    assert cells["LUT4"] <= 2 and cells["PFUMX"] == 0


class _Fifo(wiring.Component):
    """A `fifo_class` FIFO of 72-bit rows, 41 deep (the 16x16 array's result FIFO depth)."""
    w_data: In(72)
    w_en: In(1)
    r_en: In(1)
    r_data: Out(72)

    def __init__(self, fifo_class):
        self.fifo_class = fifo_class
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = self.fifo_class(width=72, depth=41)
        m.d.comb += [fifo.w_data.eq(self.w_data), fifo.w_en.eq(self.w_en),
                     fifo.r_en.eq(self.r_en), self.r_data.eq(fifo.r_data)]
        return m


def test_result_fifo_stays_in_distributed_ram():
    """A plain `SyncFIFOBuffered` that deep goes to block RAM, whose unregistered read data was
    the 16x16 SoC's critical path; `ResultFIFO` keeps it in LUT RAM."""
    plain = synthesize(_Fifo(SyncFIFOBuffered), "fifo")
    kept = synthesize(_Fifo(ResultFIFO), "fifo")
    assert plain["DP16KD"] > 0
    assert kept["DP16KD"] == 0 and kept["DPR16X4"] > 0
