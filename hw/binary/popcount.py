"""Pipelined popcount adder tree: how many of `width` bits are set.

The tree is built for LUT4 fabric. The leaf level counts each group of 4 bits with three
independent 4-input functions (one LUT4 per output bit, no carry chain) into a register, then
pairs of partial counts are added level by level on carry chains, with a register after every
second adder level and after the last. The longest path is two short adders (at most
``log2(width)`` bits each), which keeps the tree above 125 MHz on ECP5 whatever the width,
with half the registers of a tree registered at every level::

    bits ─┬─ 4 ─ [leaf count] ─▌─┐
          ├─ 4 ─ [leaf count] ─▌─┴─ [+] ─┐
          ├─ 4 ─ [leaf count] ─▌─┐       ├─ [+] ─▌─ ... ─▌─ count
          └─ 4 ─ [leaf count] ─▌─┴─ [+] ─┘
                              (▌ = register)

Latency: ``1 + ceil(log2(width / 4) / 2)`` cycles (the leaf level, then one per two adder levels)
from `bits` to `count`: 1 for 4 bits, 3 for 64, 6 for 4096. Throughput: a new `bits` word every
cycle; the tree has no stall input (its user keeps the matching control bits in a delay line of
the same `latency`).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.synthesis import MAPPING_BOUNDARY

__all__ = ["PopcountTree", "popcount_latency"]

_LEAF_BITS = 4


def _leaf_count(bits):
    """Popcount of 4 bits as 3 bits, each output bit a function of the 4 inputs only."""
    low_pair_carry, low_pair_sum = bits[0] & bits[1], bits[0] ^ bits[1]
    high_pair_carry, high_pair_sum = bits[2] & bits[3], bits[2] ^ bits[3]
    # Both pair sums odd is the only carry into bit 1; it excludes a pair count of 2.
    sums_carry = low_pair_sum & high_pair_sum
    return [low_pair_sum ^ high_pair_sum,
            low_pair_carry ^ high_pair_carry ^ sums_carry,
            low_pair_carry & high_pair_carry]


def _adder_levels(width):
    return (width // _LEAF_BITS).bit_length() - 1


def popcount_latency(width):
    """Cycles from `bits` to `count` of a `PopcountTree` of `width` bits."""
    return 1 + -(-_adder_levels(width) // 2)


class PopcountTree(wiring.Component):
    """Count the set bits of `bits`, `latency` cycles later on `count`.

    Parameters
    ----------
    width : int
        Number of input bits, a power of two from 4 to 4096.
    """

    def __init__(self, *, width):
        if not isinstance(width, int) or isinstance(width, bool):
            raise TypeError(f"PopcountTree width must be an integer, not {width!r}")
        if not (_LEAF_BITS <= width <= 4096 and width & (width - 1) == 0):
            raise ValueError(f"PopcountTree width must be a power of two in 4..4096, not {width}")
        self.width = width
        self.latency = popcount_latency(width)
        super().__init__({
            "bits": In(width),
            "count": Out(range(width + 1)),
        })

    def elaborate(self, platform):
        m = Module()

        level = []
        for group in range(self.width // _LEAF_BITS):
            count = Signal(range(_LEAF_BITS + 1), name=f"leaf_{group}", reset_less=True)
            group_bits = self.bits[group * _LEAF_BITS:(group + 1) * _LEAF_BITS]
            m.d.sync += count.eq(Cat(*_leaf_count(group_bits)))
            level.append(count)

        adder_levels = _adder_levels(self.width)
        for depth in range(1, adder_levels + 1):
            maximum = _LEAF_BITS << depth
            # Counting back from the last level, every other level ends in a register.
            domain = "sync" if (adder_levels - depth) % 2 == 0 else "comb"
            next_level = []
            for pair in range(len(level) // 2):
                # An unregistered level stays its own carry chain (`MAPPING_BOUNDARY`).
                total = Signal(range(maximum + 1), name=f"sum_{depth}_{pair}", reset_less=True,
                               attrs=MAPPING_BOUNDARY if domain == "comb" else {})
                m.d[domain] += total.eq(level[2 * pair] + level[2 * pair + 1])
                next_level.append(total)
            level = next_level

        m.d.comb += self.count.eq(level[0])
        return m
