"""Processing element of the INT8 systolic array, and its two-stage multiplier.

`Multiplier` computes a product with a fixed latency of 2 cycles (operands registered, product
registered); its operands are signed int8 by default, or any shapes that fit the DSP's signed
18-bit ports (signed up to 18 bits, unsigned up to 17; the requantizer's partial products)::

    cycle    t        t+1            t+2
    a, b     a0,b0    a1,b1          a2,b2
    product  .        .              a0*b0      (one product per cycle)

``mapping="dsp"`` puts the whole product on one ECP5 ``MULT18X18D`` using the DSP's own input
registers (A, B) and output register: on this flow fabric registers around an inferred multiplier
reached 72 MHz, the DSP's own registers 149 MHz, and yosys does not move fabric registers into the
DSP. Its control pins (clock enable, reset, operand sign and source) are tied by two constant LUT4s
of its own, placed beside it, not by nextpnr's constant nets. When elaborated without a platform
(simulation) the same two registers are modelled behaviourally; ``tests/test_systolic_dsp.py``
proves the two equivalent with yosys.
``mapping="lut"`` (signed int8 operands only) builds the product in fabric:
`hw.systolic.lut_multiplier.LutMultiplier`, LUT4 partial products summed on carry chains, pipelined
to the same latency, so a PE of either kind has the same timing (arrays can mix them).

`ProcessingElement` is one cell of the array for either dataflow. Operands enter on the left
(``a``) and the top (``w``, output-stationary only) and leave registered on the right/bottom, so a
neighbour sees them one cycle later; ``control`` (valid, first, last of a tile) travels with ``a``.
Throughput is one MAC per cycle.

* ``dataflow="output_stationary"``: the PE accumulates ``a * w`` into an int32 accumulator; a beat
  flagged ``first`` restarts the sum. The beat flagged ``last`` also copies the finished sum into
  ``result`` and pulses ``finished`` (both visible 3 cycles after that beat entered the PE: 2 of
  multiplier, 1 of accumulation), so the next tile can accumulate while the array drains
  ``result``.
* ``dataflow="weight_stationary"``: the PE holds a weight in ``active`` and computes
  ``psum_out = psum_in + a * active`` (``psum_out`` valid 3 cycles after ``a`` entered, matching
  ``psum_in`` from the PE above, which is 1 cycle ahead in the skew). The partial sum is
  ``psum_shape`` wide: ``exact_sum_shape(n)`` holds any sum of n products exactly, so the PE in
  row i of a column needs ``exact_sum_shape(i + 1)`` (16 to 21 bits for up to 32 rows), not 32.
  A second, ``shadow`` weight register is part of a shift chain (``shadow_in`` ->
  ``shadow_out`` when ``shift``), loaded while ``active`` computes; a beat flagged ``first``
  (start of a tile) swaps ``shadow`` into ``active`` for itself and every later beat.

Only the valid bits in ``control`` are reset; datapath registers are reset-less because every
value in them is qualified by a valid bit (``first`` restarts the accumulator), which keeps reset
nets off the wide datapath.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.config import DATAFLOWS, PE_MULTIPLIERS
from hw.synthesis import UNMERGED_REGISTER
from hw.systolic.lut_multiplier import LutMultiplier

__all__ = ["Multiplier", "ProcessingElement", "TileControl", "OPERAND_SHAPE", "PRODUCT_SHAPE",
           "ACCUMULATOR_SHAPE", "exact_sum_shape", "check_choice"]

OPERAND_SHAPE = signed(8)
PRODUCT_SHAPE = signed(16)        # -128 * -128 = 16384 fits; so does -128 * 127
ACCUMULATOR_SHAPE = signed(32)
_LARGEST_PRODUCT = 128 * 128      # -128 * -128; the most negative product, -128 * 127, is smaller


def exact_sum_shape(products):
    """The narrowest signed shape that holds every sum of `products` int8 x int8 products.

    Sums lie in ``[-products * 16256, products * 16384]``; e.g. 19 bits for the 12 of a
    12-row weight-stationary column.
    """
    if not isinstance(products, int) or isinstance(products, bool) or products < 1:
        raise ValueError(f"exact_sum_shape needs a number of products >= 1, not {products!r}")
    return signed((products * _LARGEST_PRODUCT).bit_length() + 1)

# Flags travelling with each operand beat through the skew.
TileControl = data.StructLayout({"valid": 1, "first": 1, "last": 1})

# Parameters of the MULT18X18D: input A/B registers and the output register on CLK0, no pipeline
# register, everything else at the primitive's defaults. The equivalence test reads these.
MULT18X18D_PARAMETERS = {
    "REG_INPUTA_CLK": "CLK0",
    "REG_INPUTB_CLK": "CLK0",
    "REG_OUTPUT_CLK": "CLK0",
}
DSP_WIDTH = 18
# INIT of a LUT4 whose output is 1 (0) whatever its inputs.
LOCAL_ONE = Const(0xFFFF, 16)
LOCAL_ZERO = Const(0x0000, 16)


def check_choice(name, value, allowed):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {allowed}, not {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, not {value!r}")


def _check_dsp_operand(name, shape):
    shape = Shape.cast(shape)
    limit = DSP_WIDTH if shape.signed else DSP_WIDTH - 1
    if not 1 <= shape.width <= limit:
        raise ValueError(f"Multiplier {name} must fit a signed {DSP_WIDTH}-bit DSP port (signed "
                         f"up to {DSP_WIDTH} bits, unsigned up to {DSP_WIDTH - 1}), not {shape!r}")
    return shape


class Multiplier(wiring.Component):
    """``a * b`` (int8 x int8 -> int16 by default), latency 2, one product per cycle (see module
    docstring). The product is as wide as both operands together, signed if either is."""

    LATENCY = 2

    def __init__(self, *, mapping, a_shape=OPERAND_SHAPE, b_shape=OPERAND_SHAPE, site=None):
        check_choice("mapping", mapping, PE_MULTIPLIERS)
        if site is not None and not isinstance(site, str):
            raise TypeError(f"Multiplier site must be a BEL name or None, not {site!r}")
        self.mapping = mapping
        self.site = site            # nextpnr BEL of the MULT18X18D (hw.systolic.floorplan)
        self.a_shape = _check_dsp_operand("a_shape", a_shape)
        self.b_shape = _check_dsp_operand("b_shape", b_shape)
        if mapping == "lut" and not (self.a_shape == self.b_shape == OPERAND_SHAPE):
            raise ValueError(f"Multiplier mapping 'lut' takes {OPERAND_SHAPE!r} operands only, "
                             f"not {self.a_shape!r} x {self.b_shape!r}")
        width = self.a_shape.width + self.b_shape.width
        self.product_shape = (signed(width) if self.a_shape.signed or self.b_shape.signed
                              else unsigned(width))
        super().__init__({
            "a": In(self.a_shape),
            "b": In(self.b_shape),
            "product": Out(self.product_shape),
        })

    def elaborate(self, platform):
        m = Module()
        if self.mapping == "lut":
            m.submodules.lut_multiplier = lut_multiplier = LutMultiplier()
            m.d.comb += [lut_multiplier.a.eq(self.a), lut_multiplier.b.eq(self.b),
                         self.product.eq(lut_multiplier.product)]
        elif platform is not None:
            self._elaborate_mult18x18d(m)
        else:
            self._elaborate_behavioural(m)
        return m

    def _elaborate_behavioural(self, m):
        a = Signal(self.a_shape, reset_less=True)
        b = Signal(self.b_shape, reset_less=True)
        product = Signal(self.product_shape, reset_less=True)
        m.d.sync += [a.eq(self.a), b.eq(self.b), product.eq(a * b)]
        m.d.comb += self.product.eq(product)

    def _elaborate_mult18x18d(self, m):
        a = Signal(signed(DSP_WIDTH))
        b = Signal(signed(DSP_WIDTH))
        p = Signal(2 * DSP_WIDTH)
        # Sign- or zero-extended to the ports' 18 signed bits: the 36-bit product is exact.
        m.d.comb += [a.eq(self.a), b.eq(self.b),
                     self.product.eq(p[:self.product_shape.width])]
        ports = {}
        for bit in range(DSP_WIDTH):
            ports[f"i_A{bit}"] = a[bit]
            ports[f"i_B{bit}"] = b[bit]
            ports[f"i_C{bit}"] = Const(0, 1)
        for bit in range(2 * DSP_WIDTH):
            ports[f"o_P{bit}"] = p[bit]
        # The control pins' constants come from two LUT4s of this multiplier's own (`LOCAL_ONE`,
        # `LOCAL_ZERO`), which the placer puts beside its DSP. nextpnr routes these pins when they
        # are tied to a constant, all from one driver for the whole die: on the 85F SoC those
        # arcs (6 per DSP) were 463 of the router's last, slowest thousand arcs.
        one, zero = Signal(name="local_one"), Signal(name="local_zero")
        for name, init, output in (("local_one", LOCAL_ONE, one), ("local_zero", LOCAL_ZERO, zero)):
            m.submodules[name] = Instance("LUT4", p_INIT=init, o_Z=output,
                                          **{f"i_{pin}": Const(0, 1) for pin in "ABCD"})
        placement = {} if self.site is None else {"a_BEL": self.site}
        m.submodules.mult18x18d = Instance(
            "MULT18X18D", **placement,
            **{f"p_{name}": value for name, value in MULT18X18D_PARAMETERS.items()},
            i_SIGNEDA=one, i_SIGNEDB=one, i_SOURCEA=zero, i_SOURCEB=zero,
            i_CLK0=ClockSignal(), i_CE0=one, i_RST0=zero,
            **ports)


class ProcessingElement(wiring.Component):
    """One cell of the systolic array (see module docstring for both dataflows)."""

    LATENCY = Multiplier.LATENCY + 1       # operands in -> accumulated / psum_out visible

    def __init__(self, *, dataflow, multiplier, dsp_site=None, psum_shape=ACCUMULATOR_SHAPE):
        check_choice("dataflow", dataflow, DATAFLOWS)
        check_choice("multiplier", multiplier, PE_MULTIPLIERS)
        psum_shape = Shape.cast(psum_shape)
        if not psum_shape.signed or psum_shape.width < PRODUCT_SHAPE.width:
            raise ValueError(f"ProcessingElement psum_shape must be signed and at least "
                             f"{PRODUCT_SHAPE.width} bits wide, not {psum_shape!r}")
        self.dataflow = dataflow
        self.multiplier = multiplier
        self.dsp_site = dsp_site
        members = {
            "a": In(OPERAND_SHAPE),
            "control": In(TileControl),
            "a_out": Out(OPERAND_SHAPE),
            "control_out": Out(TileControl),
        }
        if dataflow == "output_stationary":
            members.update({
                "w": In(OPERAND_SHAPE),
                "w_out": Out(OPERAND_SHAPE),
                "result": Out(ACCUMULATOR_SHAPE),
                "finished": Out(1),
            })
        else:
            members.update({
                "psum_in": In(psum_shape),
                "psum_out": Out(psum_shape),
                "shadow_in": In(OPERAND_SHAPE),
                "shadow_out": Out(OPERAND_SHAPE),
                "shift": In(1),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.multiplier = multiplier = Multiplier(mapping=self.multiplier,
                                                          site=self.dsp_site)

        a_forward = Signal(OPERAND_SHAPE, reset_less=True)
        # Every PE on an anti-diagonal sees the same control: unmerged, each row keeps its own
        # chain of control registers next to its PEs.
        control_forward = Signal(TileControl, attrs=UNMERGED_REGISTER)
        m.d.sync += [a_forward.eq(self.a), control_forward.eq(self.control)]
        m.d.comb += [self.a_out.eq(a_forward), self.control_out.eq(control_forward),
                     multiplier.a.eq(self.a)]

        if self.dataflow == "output_stationary":
            self._elaborate_output_stationary(m, multiplier)
        else:
            self._elaborate_weight_stationary(m, multiplier)
        return m

    def _elaborate_output_stationary(self, m, multiplier):
        # Control delayed by the multiplier latency lines up with `multiplier.product`.
        product_control = self.control
        for stage in range(Multiplier.LATENCY):
            delayed = Signal(TileControl, name=f"product_control_{stage}")
            m.d.sync += delayed.eq(product_control)
            product_control = delayed

        w_forward = Signal(OPERAND_SHAPE, reset_less=True)
        m.d.sync += w_forward.eq(self.w)
        m.d.comb += [self.w_out.eq(w_forward), multiplier.b.eq(self.w)]

        accumulator = Signal(ACCUMULATOR_SHAPE, reset_less=True)
        result = Signal(ACCUMULATOR_SHAPE, reset_less=True)
        total = Signal(ACCUMULATOR_SHAPE)
        m.d.comb += total.eq(Mux(product_control.first, 0, accumulator) + multiplier.product)
        with m.If(product_control.valid):
            m.d.sync += accumulator.eq(total)
            with m.If(product_control.last):
                m.d.sync += result.eq(total)
        m.d.sync += self.finished.eq(product_control.valid & product_control.last)
        m.d.comb += self.result.eq(result)

    def _elaborate_weight_stationary(self, m, multiplier):
        shadow = Signal(OPERAND_SHAPE, reset_less=True)
        active = Signal(OPERAND_SHAPE, reset_less=True)
        weight = Signal(OPERAND_SHAPE)
        with m.If(self.shift):
            m.d.sync += shadow.eq(self.shadow_in)
        # The swapping beat itself must already multiply by the new weight.
        m.d.comb += weight.eq(Mux(self.control.valid & self.control.first, shadow, active))
        m.d.sync += active.eq(weight)
        m.d.comb += [multiplier.b.eq(weight), self.shadow_out.eq(shadow)]

        psum = Signal(self.psum_out.shape(), reset_less=True)
        m.d.sync += psum.eq(self.psum_in + multiplier.product)
        m.d.comb += self.psum_out.eq(psum)
