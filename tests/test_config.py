"""`AcceleratorConfig`'s host-link rule: any clock with at least 4 cycles per UART bit, the bit
time exact (a fraction when the clock is not a multiple of the baud rate)."""

from fractions import Fraction

import pytest

from hw.config import AcceleratorConfig


@pytest.mark.parametrize("clock_mhz, baud, divisor", [
    (100.0, 3_000_000, Fraction(100, 3)),
    (90.0, 3_000_000, 30),
    (125.0, 3_000_000, Fraction(125, 3)),
    (100.0, 115_200, Fraction(15625, 18)),
    (12.0, 3_000_000, 4),
])
def test_uart_divisor_is_clock_over_baud_exactly(clock_mhz, baud, divisor):
    config = AcceleratorConfig(clock_mhz=clock_mhz, uart_baud=baud)
    assert config.uart_divisor == divisor
    assert type(config.uart_divisor) is type(divisor)


@pytest.mark.parametrize("clock_mhz, baud, message", [
    (10.0, 3_000_000, "at least 4 clock cycles per bit (at most 2500000 baud)"),
    (11.9, 3_000_000, "at most 2975000 baud"),
])
def test_too_fast_a_baud_rate_is_rejected(clock_mhz, baud, message):
    with pytest.raises(ValueError, match=r"uart_baud=3000000 is too fast") as info:
        AcceleratorConfig(clock_mhz=clock_mhz, uart_baud=baud)
    assert message in str(info.value)


# Multiplier mapping -------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, dsps", [
    (dict(multiplier="dsp"), 16),
    (dict(multiplier="lut"), 0),
    (dict(multiplier="mixed", dsp_pes=1), 1),
    (dict(multiplier="mixed", dsp_pes=15), 15),
])
def test_dsp_count_follows_the_mapping(changes, dsps):
    assert AcceleratorConfig(rows=4, cols=4, **changes).dsp_count == dsps


@pytest.mark.parametrize("changes, error, message", [
    (dict(multiplier="mixed"), ValueError,
     "AcceleratorConfig.multiplier='mixed' needs dsp_pes, how many of the 16 PEs get a "
     "MULT18X18D (1..15)"),
    (dict(multiplier="mixed", dsp_pes=16), ValueError,
     "AcceleratorConfig.dsp_pes must be in 1..15 for a mixed 4x4 array (0 is multiplier='lut', "
     "16 is 'dsp'), not 16"),
    (dict(multiplier="mixed", dsp_pes=0), ValueError, "must be in 1..15"),
    (dict(multiplier="mixed", dsp_pes=True), TypeError,
     "AcceleratorConfig.dsp_pes must be an integer in 1..15, not True"),
    (dict(multiplier="dsp", dsp_pes=8), ValueError,
     "AcceleratorConfig.dsp_pes is for multiplier='mixed' only; multiplier='dsp' puts every PE "
     "on a MULT18X18D, so leave dsp_pes None, not 8"),
    (dict(multiplier="fabric"), ValueError,
     "AcceleratorConfig.multiplier must be one of ('dsp', 'lut', 'mixed'), not 'fabric'"),
])
def test_bad_multiplier_split_is_named(changes, error, message):
    with pytest.raises(error) as info:
        AcceleratorConfig(rows=4, cols=4, **changes)
    assert message in str(info.value)
