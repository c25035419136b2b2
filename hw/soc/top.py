"""Board top level: board clock -> PLL -> ``sync`` domain (in reset until locked) -> the design,
with the design's UART line and LEDs wired to the board's pins.

`BoardTop(board=..., config=..., design=...)` is what ``python -m hw.build`` elaborates. The
design is chosen by name from `DESIGNS`: ``"soc"`` is the full SoC (`hw.soc.soc.SoC`: UART link,
CSRs, accelerator core) that the host driver talks to; ``"bringup"`` (`hw.soc.bringup`) is the
self-test design that drives the engines from LFSRs and reports a signature. Each board variant
names its default (`boards.Variant.design`): the SoC wherever it fits. A design is a component
with ``txd: Out(1)``, ``rxd: In(1)`` and ``leds: Out(n)`` built from the accelerator config.
`check_design` says whether a design can be built from a config without building it: the SoC
runs the weight-stationary dataflow only, the self-test either.

::

    clk25 pin --> io.Buffer --> SystemClock (EHXPLLL, config.clock_hz) --> sync, reset until lock
    uart.rx pin --> io.Buffer --> design.rxd      design.txd --> io.Buffer --> uart.tx pin
    design.leds --> io.Buffer (one a LED) --> led pins

The pins are plain (unregistered) buffers; the design registers what needs it (the UART
receiver synchronises ``rxd``). The UART resource's other lines (the FTDI's RTS and DTR) are
not used, so they are not constrained.
"""

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from hw.core import check_core_dataflow

from .bringup import BringUp
from .pll import SystemClock
from .soc import SoC

__all__ = ["BoardTop", "DESIGNS", "check_design", "make_design"]


def _bringup(config, *, led_count):
    return BringUp.from_config(config, led_count=led_count)


class BoardSoC(wiring.Component):
    """The full SoC with the board-top ports: ``txd``/``rxd`` to the host UART and LEDs showing a
    ~1 Hz heartbeat (clock and PLL alive) and the UART line activity (LEDs 1 and 2 light while
    the receive / transmit line is low, i.e. during traffic)."""

    def __init__(self, *, config, led_count):
        self.soc = SoC(config=config)
        self.heartbeat_bits = max(1, (config.clock_hz // 2).bit_length())
        super().__init__({"txd": Out(1, init=1), "rxd": In(1, init=1), "leds": Out(led_count)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = self.soc
        heartbeat = Signal(self.heartbeat_bits)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += [soc.rx.eq(self.rxd), self.txd.eq(soc.tx)]
        indicators = [heartbeat[-1], ~self.rxd, ~soc.tx]
        for led, value in zip(self.leds, indicators):
            m.d.comb += led.eq(value)
        return m


def _soc(config, *, led_count):
    return BoardSoC(config=config, led_count=led_count)


DESIGNS = {"bringup": _bringup, "soc": _soc}


def check_design(name, config):
    """Raise `ValueError` when design `name` cannot be built from `config`, before anything is
    constructed: the SoC's core runs the weight-stationary dataflow only
    (`hw.core.check_core_dataflow`); the self-test drives either dataflow's array."""
    if name == "soc":
        check_core_dataflow(config.dataflow)


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

    def __init__(self, *, board, config, design):
        self.board = board
        self.config = config
        self.clock = SystemClock(input_hz=board.clock_hz, output_hz=config.clock_hz)
        self.design = make_design(design, config, led_count=board.led_count)

    def elaborate(self, platform):
        m = Module()
        board = self.board
        # Defined here, above both the PLL that drives it and the design that uses it.
        m.domains.sync = ClockDomain()
        m.submodules.clock = clock = self.clock
        m.submodules.clock_buffer = clock_buffer = io.Buffer(
            "i", platform.request(board.clock_resource, 0, dir="-"))
        m.d.comb += clock.clk_in.eq(clock_buffer.i)

        m.submodules.design = design = self.design
        link = board.uart
        uart_pins = platform.request(link.resource, link.number, dir="-")
        m.submodules.uart_rx_buffer = rx_buffer = io.Buffer("i", uart_pins.rx)
        m.submodules.uart_tx_buffer = tx_buffer = io.Buffer("o", uart_pins.tx)
        m.d.comb += [design.rxd.eq(rx_buffer.i), tx_buffer.o.eq(design.txd)]
        for index in range(board.led_count):
            led_pin = platform.request(board.led_resource, index, dir="-")
            m.submodules[f"led_buffer_{index}"] = led_buffer = io.Buffer("o", led_pin)
            m.d.comb += led_buffer.o.eq(design.leds[index])
        return m
