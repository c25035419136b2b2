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
