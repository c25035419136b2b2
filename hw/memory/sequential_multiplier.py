"""Products without DSP blocks, for per-command set-up and validation arithmetic.

The array and the requantizer need every MULT18X18D of the ECP5, so the few products a command
needs once (image sizes, address strides, row counts) are formed here by shift-and-add:

* `SequentialMultiplier`: ``a * b mod 2**product_width`` (unsigned; a two's complement `a`
  sign-extended to `product_width` bits gives the signed product modulo the same power of two),
  `bits_per_cycle` bits of `b` per cycle. Timing, with ``n = ceil(b.bit_length() /
  bits_per_cycle)`` (so a small `b` is fast)::

      cycle   0         1       ...   1+n
              request   add           product valid (held until taken)

  A new request is accepted from the cycle after the product is taken: one product every
  ``n + 2`` cycles. ``product.valid`` is a flip-flop (set with the last add), so whatever takes
  the product starts from a register.
* `sequence_products`: drives one multiplier through a fixed list of products (each step may read
  the results of earlier ones), optionally skipping steps whose condition is false (one cycle
  each); ``done`` pulses one cycle after the last result is registered. A step's operands are
  selected and registered in its first cycle and requested in its second, so the operand
  multiplexer (and any arithmetic in an operand) ends at flip-flops, not at the multiplier's
  request handshake: an enabled step costs ``n + 3`` cycles.
* `multiply_by_constant`: a product with an elaboration-time constant as shifted additions.
"""

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._parameters import check_int

__all__ = ["SequentialMultiplier", "sequence_products", "multiply_by_constant"]


class SequentialMultiplier(wiring.Component):
    """Shift-and-add multiplier (see module docstring for the timing).

    Parameters (keyword-only): a_width, b_width, product_width (1..64), bits_per_cycle (1..8).

    Members
    -------
    request : In(stream.Signature({a: a_width, b: b_width}))
    product : Out(stream.Signature(product_width))     a * b mod 2**product_width
    """

    def __init__(self, *, a_width, b_width, product_width, bits_per_cycle=1):
        self.a_width = check_int("SequentialMultiplier", "a_width", a_width, 1, 64)
        self.b_width = check_int("SequentialMultiplier", "b_width", b_width, 1, 64)
        self.product_width = check_int("SequentialMultiplier", "product_width", product_width,
                                       1, 64)
        self.bits_per_cycle = check_int("SequentialMultiplier", "bits_per_cycle",
                                        bits_per_cycle, 1, 8)
        super().__init__({
            "request": In(stream.Signature(data.StructLayout({"a": a_width, "b": b_width}))),
            "product": Out(stream.Signature(product_width)),
        })

    def elaborate(self, platform):
        m = Module()
        step = self.bits_per_cycle
        busy = Signal()
        multiplicand = Signal(self.product_width)      # a << (bits of b consumed so far)
        remaining = Signal(self.b_width)               # bits of b not consumed yet
        finished = Signal()                            # registered: busy and remaining == 0
        total = Signal(self.product_width)

        m.d.comb += [
            self.request.ready.eq(~busy),
            self.product.valid.eq(finished),
            self.product.payload.eq(total),
        ]
        with m.If(self.request.valid & self.request.ready):
            m.d.sync += [multiplicand.eq(self.request.payload.a),
                         remaining.eq(self.request.payload.b), total.eq(0), busy.eq(1),
                         finished.eq(self.request.payload.b == 0)]
        with m.Elif(self.product.valid & self.product.ready):
            m.d.sync += [busy.eq(0), finished.eq(0)]
        with m.Elif(busy):
            partial = 0
            for bit in range(min(step, self.b_width)):
                partial = partial + Mux(remaining[bit], multiplicand << bit, 0)
            m.d.sync += [total.eq(total + partial), multiplicand.eq(multiplicand << step),
                         remaining.eq(remaining >> step),
                         finished.eq((remaining >> step) == 0)]
        return m


def sequence_products(m, multiplier, steps, *, start):
    """Compute ``target = a * b`` for each ``(target, a, b)`` or ``(target, a, b, condition)`` of
    `steps` in order on `multiplier`, starting when `start` is high while idle. A step whose
    condition is false leaves its target alone and costs one cycle; an enabled one registers its
    operands in its first cycle and requests the product in its second. Returns ``(busy, done)``:
    `busy` from the cycle after `start` until the last result is registered, `done` high in the
    cycle after that (every target then holds its product)."""
    step = Signal(range(len(steps) + 1))        # 0 = idle, i + 1 = steps[i] in flight
    operands = Signal.like(multiplier.request.payload, name="operands")
    loaded = Signal()                           # `operands` hold the current step's
    requested = Signal()
    done = Signal()
    m.d.sync += [done.eq(0), loaded.eq(0)]
    m.d.comb += [multiplier.product.ready.eq(1), multiplier.request.payload.eq(operands)]
    with m.Switch(step):
        with m.Case(0):
            with m.If(start):
                m.d.sync += step.eq(1)
        for index, (target, a, b, *condition) in enumerate(steps):
            enabled = Value.cast(condition[0] if condition else 1).bool()
            advance = [step.eq(0), done.eq(1)] if index == len(steps) - 1 else [step.eq(index + 2)]
            with m.Case(index + 1):
                # The operands follow the step alone, enabled or not (timing: a condition
                # decoded from a command is then not in front of the operand registers, whose
                # inputs are one parallel multiplexer on `step`; the values are the step's own
                # while it lasts).
                m.d.sync += [operands.a.eq(a), operands.b.eq(b)]
                with m.If(~enabled):
                    m.d.sync += advance
                with m.Else():
                    m.d.sync += loaded.eq(1)
                    m.d.comb += multiplier.request.valid.eq(loaded & ~requested)
                    with m.If(multiplier.request.valid & multiplier.request.ready):
                        m.d.sync += requested.eq(1)
                    with m.If(multiplier.product.valid):
                        m.d.sync += [target.eq(multiplier.product.payload), requested.eq(0),
                                     loaded.eq(0), *advance]
    return step != 0, done


def multiply_by_constant(value, constant):
    """``value * constant`` (a non-negative int) as a sum of shifted copies of `value`."""
    check_int("multiply_by_constant", "constant", constant, 0)
    terms = [value << bit for bit in range(constant.bit_length()) if constant >> bit & 1]
    total = 0
    for term in terms:
        total = total + term
    return total
