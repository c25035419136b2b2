"""`AcceleratorConfig`'s host-link rule: any clock with at least 4 cycles per UART bit, the bit
time exact (a fraction when the clock is not a multiple of the baud rate); its core sizes'
checks."""

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


@pytest.mark.parametrize("changes, message", [
    ({"queue_depth": 1}, "queue_depth must be in 2..256, not 1"),
    ({"queue_depth": 257}, "queue_depth must be in 2..256, not 257"),
    ({"max_pool_width": 1024}, "max_pool_width must be in 2..1023, not 1024"),
    ({"binary_max_k": 0}, "binary_max_k must be in 1..32768, not 0"),
    ({"binary_max_n": 4097}, "binary_max_n must be in 1..4096, not 4097"),
    ({"binary_result_rows": 1000}, "binary_result_rows must be a power of two in 2..65536"),
    ({"parameter_rows": 96}, "parameter_rows must be a power of two in 8..65536, not 96"),
    # Every output channel of a tile needs its parameter entry: at least cols, a power of two.
    ({"cols": 12, "requant_lanes": 2, "parameter_rows": 8}, "parameter_rows must be a power "
                                                            "of two in 16..65536, not 8"),
])
def test_core_sizes_are_checked_with_the_field_named(changes, message):
    with pytest.raises(ValueError, match=f"AcceleratorConfig.{message}"):
        AcceleratorConfig(**{"cols": 8, **changes})


@pytest.mark.parametrize("name", ["queue_depth", "binary_max_k"])
def test_core_sizes_must_be_integers(name):
    with pytest.raises(TypeError, match=f"AcceleratorConfig.{name} must be an integer"):
        AcceleratorConfig(**{name: 8.0})


def test_core_sizes_default_to_the_sizes_the_85f_soc_was_built_with():
    config = AcceleratorConfig()
    assert (config.binary_max_k, config.binary_max_n, config.parameter_rows,
            config.binary_result_rows, config.queue_depth, config.max_pool_width) == \
        (1024, 256, 1024, 1024, 8, 64)


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
