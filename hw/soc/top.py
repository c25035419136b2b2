"""Board top level: board clock -> PLL -> ``sync`` domain (in reset until locked) -> the design,
with the design's UART line and LEDs wired to the board's pins.

`BoardTop(board=..., config=..., design=...)` is what ``python -m hw.build`` elaborates. The
design is chosen by name from `DESIGNS`; today that is only ``"bringup"`` (`hw.soc.bringup`), the
self-test SoC, which the full SoC replaces as the default when it lands. A design is a component
with ``txd: Out(1)``, ``rxd: In(1)`` and ``leds: Out(n)`` built from the accelerator config.

::

    clk25 pin --> io.Buffer --> SystemClock (EHXPLLL, config.clock_hz) --> sync, reset until lock
    uart.rx pin --> design.rxd          design.txd --> uart.tx pin
    design.leds --> led pins
"""

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from boards.budget import BINARY_MAX_FOLDS, BINARY_MAX_NEURON_FOLDS

from .bringup import BringUp
from .pll import SystemClock

__all__ = ["BoardTop", "DESIGNS", "DEFAULT_DESIGN", "make_design"]


def _bringup(config, *, led_count):
    return BringUp.from_config(config,
                               binary_max_k=BINARY_MAX_FOLDS * config.binary_width,
                               binary_max_n=BINARY_MAX_NEURON_FOLDS * config.binary_lanes,
                               led_count=led_count)


DESIGNS = {"bringup": _bringup}
DEFAULT_DESIGN = "bringup"


def make_design(name, config, *, led_count):
    """The design called `name` for `config`; `ValueError` lists the known designs."""
    try:
        factory = DESIGNS[name]
    except KeyError:
        raise ValueError(f"Unknown design {name!r}; known designs are "
                         f"{', '.join(sorted(DESIGNS))}") from None
    return factory(config, led_count=led_count)


class BoardTop(Elaboratable):
    """PLL, reset and `design` on `board` (a `boards.Board`), at ``config.clock_hz``.

    The PLL parameters are computed (and an unreachable clock rejected) at construction.
    """

    def __init__(self, *, board, config, design=DEFAULT_DESIGN):
        self.board = board
        self.config = config
        self.clock = SystemClock(input_hz=board.clock_hz, output_hz=config.clock_hz)
        self.design = make_design(design, config, led_count=board.led_count)

    def elaborate(self, platform):
        m = Module()
        board = self.board
        m.submodules.clock = clock = self.clock
        m.submodules.clock_buffer = clock_buffer = io.Buffer(
            "i", platform.request(board.clock_resource, 0, dir="-"))
        m.d.comb += clock.clk_in.eq(clock_buffer.i)

        m.submodules.design = design = self.design
        link = board.uart
        uart_pins = platform.request(link.resource, link.number)
        m.d.comb += [design.rxd.eq(uart_pins.rx.i), uart_pins.tx.o.eq(design.txd)]
        for index in range(board.led_count):
            m.d.comb += platform.request(board.led_resource, index).o.eq(design.leds[index])
        return m
