"""ECP5 system clock: an ``EHXPLLL`` whose dividers are computed for the requested frequency, and
a reset held until the PLL locks.

`pll_parameters(input_hz, output_hz)` searches the divider space the way Project Trellis'
``ecppll`` does (CLKI_DIV 1..128, CLKFB_DIV 1..80, CLKOP_DIV 1..128, phase-detector frequency
3.125..400 MHz, VCO 400..800 MHz, feedback from CLKOP so ``f_out = f_in * CLKFB_DIV / CLKI_DIV``;
among equally close settings the first found wins unless another has its VCO closer to 600 MHz).
Arithmetic is exact (`fractions.Fraction`), so "reachable" means exactly reachable (the clock a
build reports and the UART's bit timing are computed from is the one the PLL makes). An
unreachable frequency raises `ValueError` naming the nearest reachable ones on either side.

`SystemClock` instantiates the PLL on a board clock input and drives the ``sync`` domain
(which its parent defines)::

    clk_in (25 MHz) --> EHXPLLL --CLKOP--> sync.clk
                            |
                          LOCK --> ResetSynchronizer --> DCCA --> sync.rst (held until locked,
                                                                  released synchronously two sync
                                                                  edges later)

The reset reaches most of the design's flip-flops (about 8,600 in the 85F SoC). A plain fabric net
with that fanout spans the die and sets Fmax, so it goes through a ``DCCA`` onto one of the
ECP5's global networks, as the clock does (nextpnr routes a DCCA's output on a global).

Latency: the domain stays in reset until LOCK rises plus two ``sync`` cycles.
"""

import math
from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import ClockDomain, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["PLLParameters", "pll_parameters", "reachable_frequencies", "nearest_reachable",
           "SystemClock", "format_mhz", "CLKI_DIV_RANGE", "CLKFB_DIV_RANGE", "CLKOP_DIV_RANGE",
           "PFD_RANGE_HZ", "VCO_RANGE_HZ"]

CLKI_DIV_RANGE = range(1, 129)
CLKFB_DIV_RANGE = range(1, 81)
CLKOP_DIV_RANGE = range(1, 129)
PFD_RANGE_HZ = (3_125_000, 400_000_000)
VCO_RANGE_HZ = (400_000_000, 800_000_000)
_VCO_PREFERRED_HZ = 600_000_000


@dataclass(frozen=True)
class PLLParameters:
    """One EHXPLLL setting with CLKOP fed back (``FEEDBK_PATH="CLKOP"``)."""

    input_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def pfd_hz(self):
        return Fraction(self.input_hz, self.clki_div)

    @property
    def output_hz(self):
        return self.pfd_hz * self.clkfb_div

    @property
    def vco_hz(self):
        return self.output_hz * self.clkop_div

    @property
    def clkop_cphase(self):
        # ecppll shifts the primary output by 180 degrees ("Lattice seems to do this"); with CLKOP
        # as the feedback the static phase does not change the output frequency or lock.
        return self.clkop_div // 2


def _check_hz(name, value):
    if not isinstance(value, (int, float, Fraction)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of Hz, not {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
    return Fraction(value)


def _candidates(input_hz):
    """Every (clki_div, clkfb_div, clkop_div) in ecppll's search order with PFD and VCO in range."""
    for clki_div in CLKI_DIV_RANGE:
        pfd = Fraction(input_hz, clki_div)
        if not PFD_RANGE_HZ[0] <= pfd <= PFD_RANGE_HZ[1]:
            continue
        for clkfb_div in CLKFB_DIV_RANGE:
            output = pfd * clkfb_div
            lowest = max(CLKOP_DIV_RANGE.start, math.ceil(VCO_RANGE_HZ[0] / output))
            highest = min(CLKOP_DIV_RANGE.stop - 1, math.floor(VCO_RANGE_HZ[1] / output))
            for clkop_div in range(lowest, highest + 1):
                yield clki_div, clkfb_div, clkop_div


def _closest(input_hz, output_hz):
    best, best_key = None, None
    for clki_div, clkfb_div, clkop_div in _candidates(input_hz):
        params = PLLParameters(input_hz, clki_div, clkfb_div, clkop_div)
        key = (abs(params.output_hz - output_hz), abs(params.vco_hz - _VCO_PREFERRED_HZ))
        if best_key is None or key < best_key:
            best, best_key = params, key
    return best


def reachable_frequencies(input_hz):
    """All output frequencies (exact `Fraction` Hz) the PLL can make from `input_hz`, sorted."""
    input_hz = _check_hz("input_hz", input_hz)
    return sorted({Fraction(input_hz, clki_div) * clkfb_div
                   for clki_div, clkfb_div, _ in _candidates(input_hz)})


def nearest_reachable(input_hz, output_hz):
    """The reachable frequencies just below and just above `output_hz`, as ``(below, above)``
    lists of at most one each."""
    target = _check_hz("output_hz", output_hz)
    reachable = reachable_frequencies(input_hz)
    below = [f for f in reachable if f < target][-1:]
    above = [f for f in reachable if f > target][:1]
    return below, above


def format_mhz(hz):
    return f"{float(hz) / 1e6:.6g} MHz"


def pll_parameters(input_hz, output_hz):
    """The EHXPLLL dividers that make exactly `output_hz` from `input_hz` (both in Hz).

    Raises `ValueError` naming the nearest reachable frequencies when no setting is exact.
    """
    input_hz = _check_hz("input_hz", input_hz)
    output_hz = _check_hz("output_hz", output_hz)
    if input_hz.denominator != 1:
        raise ValueError(f"input_hz must be a whole number of Hz, not {input_hz}")
    best = _closest(int(input_hz), output_hz)
    if best is None:
        raise ValueError(f"No EHXPLLL setting exists for a {format_mhz(input_hz)} input "
                         f"(phase detector range {PFD_RANGE_HZ[0] / 1e6:g}..{PFD_RANGE_HZ[1] / 1e6:g} MHz)")
    if best.output_hz != output_hz:
        below, above = nearest_reachable(input_hz, output_hz)
        options = " or ".join(format_mhz(f) for f in below + above)
        raise ValueError(f"The ECP5 PLL cannot make exactly {format_mhz(output_hz)} from "
                         f"{format_mhz(input_hz)}; the nearest reachable frequencies are {options}")
    return best


class SystemClock(wiring.Component):
    """Drives clock domain `domain` from an ``EHXPLLL`` at `output_hz`, in reset until locked.

    Parameters
    ----------
    input_hz : int
        Frequency of ``clk_in`` (the board oscillator).
    output_hz : int
        Requested system clock; must be exactly reachable (see `pll_parameters`).
    domain : str
        Name of the clock domain driven here. The parent defines it (``m.domains``), above
        everything that uses it: a domain defined in a sibling is deprecated in Amaranth 0.5.

    Ports: ``clk_in`` (the buffered board clock), ``locked`` (PLL lock, for a status LED).
    """

    clk_in: In(1)
    locked: Out(1)

    def __init__(self, *, input_hz, output_hz, domain="sync"):
        if not isinstance(domain, str) or not domain:
            raise TypeError(f"domain must be a non-empty string, not {domain!r}")
        self.parameters = pll_parameters(input_hz, output_hz)
        self.domain = domain
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        params = self.parameters
        # A named signal between CLKOP and the domain, so the platform can constrain its frequency.
        clock = Signal(name=f"{self.domain}_pll_clk")
        m.d.comb += ClockSignal(self.domain).eq(clock)
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{params.input_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{float(params.output_hz) / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=params.clki_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=params.clkop_div,
            p_CLKOP_CPHASE=params.clkop_cphase, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=params.clkfb_div,
            i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, i_CLKFB=clock,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clock, o_LOCK=self.locked,
        )
        # The synchronizer runs in a private domain on the same clock; its reset output is
        # buffered onto a global network to become the domain's reset.
        unbuffered = f"{self.domain}_reset_unbuffered"
        m.domains += ClockDomain(unbuffered, local=True)
        m.d.comb += ClockSignal(unbuffered).eq(clock)
        m.submodules.reset_sync = ResetSynchronizer(~self.locked, domain=unbuffered)
        m.submodules.reset_buffer = Instance("DCCA", i_CLKI=ResetSignal(unbuffered), i_CE=1,
                                             o_CLKO=ResetSignal(self.domain))
        if platform is not None:
            platform.add_clock_constraint(clock, float(params.output_hz))
        return m
