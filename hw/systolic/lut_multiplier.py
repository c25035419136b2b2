"""Signed 8 x 8 -> 16-bit multiplier in ECP5 fabric (LUT4s and CCU2C carry chains), pipelined.

`LutMultiplier` is the PE's product where no MULT18X18D is left for it. It has the DSP multiplier's
timing exactly (`hw.systolic.pe.Multiplier`: latency 2, one product per cycle), so a PE of either
kind is the same PE to the array::

    cycle      t          t+1                  t+2
    a, b       a0, b0     a1, b1               a2, b2
    stage 1    .          partial sums of a0*b0
    product    .          .                    a0*b0

The product is the sum of eight rows, row k being ``a[k] & b`` at weight 2^k, in the modified
Baugh-Wooley form for two's complement: the bits with exactly one operand sign bit are NANDs, and
the correction constant (2^8 + 2^15, modulo 2^16) sits in two otherwise empty bit positions of
rows 0 and 7, so it costs nothing. Every row is unsigned; the sum is the product modulo 2^16.

* Stage 1 (from the operands, which arrive from the neighbouring PEs' registers, in a
  weight-stationary PE through its weight select): the 64 partial product bits (one LUT4 each)
  and one level of two-operand adders (carry chains), the rows summed in pairs into four 10-bit
  registers.
* Stage 2: two more levels of adders (rows 0-3 and rows 4-7, then both) into the product
  register.

Cutting after the first adder level rather than the second balances the stages: on the ULX3S 12F
(4x4 weight-stationary array, 125 MHz target) the cut after two levels put the PE's weight select,
a partial product and two carry chains in one stage, 8.35 ns with routing (119.75 MHz).

Each adder starts at the lowest bit where both of its operands have bits: the bits below are one
operand's bits passed through, not carry cells adding zero.

The module is mapped on its own (`hw.synthesis.OWN_MAPPING`), so the logic in front of it stays
out of its partial products.

Cost, measured: ``synth_ecp5`` of the multiplier alone 64 LUT4 + 36 CCU2C + 56 FF (no DSP). In an
array (ULX3S 12F self-test, 4x4 weight-stationary, 125 MHz, nextpnr), 161 LUT4 and 56 FF more per
PE than a MULT18X18D PE (`boards.budget.LUT_COST`); its stage registers met 150 MHz there
(arrival 6.10 ns, `boards.budget.LUT_MULTIPLIER_MAX_MHZ`).
"""

from amaranth.hdl import Cat, Const, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.synthesis import OWN_MAPPING

__all__ = ["LutMultiplier"]

_WIDTH = 8
_PRODUCT_WIDTH = 2 * _WIDTH


def _shifted_sum(low, high, shift):
    """``low + (high << shift)`` for unsigned values, with the carry chain only over the bits
    where both have bits."""
    return Cat(low[:shift], low[shift:] + high)


class LutMultiplier(wiring.Component):
    """``product = a * b`` for signed 8-bit operands, latency 2, one product per cycle (see module
    docstring)."""

    LATENCY = 2

    def __init__(self):
        super().__init__({
            "a": In(signed(_WIDTH)),
            "b": In(signed(_WIDTH)),
            "product": Out(signed(_PRODUCT_WIDTH)),
        })

    def _rows(self):
        """The eight unsigned Baugh-Wooley rows; row k weighs 2^k."""
        a, b = self.a.as_unsigned(), self.b.as_unsigned()
        top = _WIDTH - 1
        rows = []
        for k in range(_WIDTH):
            bits = [a[k] & b[j] for j in range(_WIDTH)]
            if k == top:
                bits[:top] = [~bit for bit in bits[:top]]
            else:
                bits[top] = ~bits[top]
            if k in (0, top):
                # The correction 2^8 (row 0, bit 8) + 2^15 (row 7, bit 8): a NAND at weight 2^p
                # is its negative term plus 2^p; the 14 of them add 2 * (2^14 - 2^7), and
                # -(2^15 - 2^8) = 2^15 + 2^8 modulo 2^16 takes that away.
                bits.append(Const(1, 1))
            rows.append(Cat(*bits))
        return rows

    def elaborate(self, platform):
        m = Module()
        rows = self._rows()
        # Stage 1: rows 2k and 2k+1 summed, 10 bits each (row pair 3 sums to 1277, but it
        # weighs 2^6: its bits from 2^10 on would only reach product bits from 2^16 on).
        pairs = [Signal(unsigned(10), name=f"pair_{k // 2}", reset_less=True)
                 for k in range(0, _WIDTH, 2)]
        m.d.sync += [pair.eq(_shifted_sum(rows[k], rows[k + 1], 1))
                     for pair, k in zip(pairs, range(0, _WIDTH, 2))]
        # Stage 2: rows 0-3 (at most 1021 + 4 * 765 < 2^12) and rows 4-7 (weighing 2^4, kept
        # modulo 2^12 for the same reason), then both.
        lower = _shifted_sum(pairs[0], pairs[1], 2)[:12]
        upper = _shifted_sum(pairs[2], pairs[3], 2)[:_PRODUCT_WIDTH - 4]
        # Mapped on its own (`OWN_MAPPING`): otherwise ABC9 merges a weight-stationary PE's
        # weight select into every partial product, doubling their LUT4s.
        product = Signal(unsigned(_PRODUCT_WIDTH), reset_less=True, attrs=OWN_MAPPING)
        m.d.sync += product.eq(_shifted_sum(lower, upper, 4))
        m.d.comb += self.product.eq(product)
        return m
