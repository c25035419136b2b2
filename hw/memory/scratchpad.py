"""Banked int8 scratchpad in ECP5 block RAM.

The scratchpad holds activations and weights as rows of `row_bytes` int8 lanes (``max(R, C)`` of
the array). It is split into `banks` equal banks, each an `amaranth.lib.memory.Memory` with one
write port and one read port -- exactly the pseudo-dual-port mode of a DP16KD, so yosys maps each
bank onto block RAM without replicating it. Banks exist so the compute side can read A and W (or
two tiles) in the same cycle: read port ``b`` reads bank ``b``.

Addressing: the single write port takes a global row address whose top bits select the bank
(``bank = addr >> log2(depth // banks)``), so the load/store units see one flat address space;
each read port takes an address local to its bank.

Timing (one row per cycle on every port)::

    cycle      t            t+1
    read[b]    addr, en=1   data = bank[b][addr] as of the start of cycle t
    write      addr, data, en=1 -> visible to reads issued at t+1 or later

Reads are not transparent: a read issued in the same cycle as a write to the same row returns the
old contents (the DP16KD behaviour across ports).
"""

from amaranth.hdl import Module, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import Out

from ._parameters import check_int, check_power_of_two

__all__ = ["Scratchpad"]


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
    """

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
        for index in range(self.banks):
            bank = memory.Memory(shape=self.row_layout, depth=self.bank_depth, init=[])
            m.submodules[f"bank{index}"] = bank
            write_port = bank.write_port()
            read_port = bank.read_port()
            m.d.comb += [
                write_port.addr.eq(self.write.addr[:self.bank_addr_width]),
                write_port.data.eq(self.write.data),
                write_port.en.eq(self.write.en & (bank_select == index)),
                read_port.addr.eq(self.read[index].addr),
                read_port.en.eq(self.read[index].en),
                self.read[index].data.eq(read_port.data),
            ]
        return m
