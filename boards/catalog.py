"""Supported boards: platform, clock, pins, and an accelerator preset per device variant.

A `Board` names the amaranth-boards resources the SoC uses (board clock, host UART, status LEDs)
and lists its `Variant`s: one per ECP5 device the board is sold with, each with the platform class
the `AcceleratorConfig` preset that fills that device and the top-level design it builds by
default (checked against its budget in the tests). ``host_links`` says how the host talks to the
accelerator; a SERDES board (Versa ECP5 with an LFE5UM-45F, ECP5-5G Evaluation Board with an
LFE5UM5G-85F) adds a `SerdesLink` there, e.g. ``SerdesLink("pcie", lanes=1, dcu=0, channel=0)``,
with a device whose ``serdes_channels`` is nonzero.
"""

from dataclasses import dataclass, field

from amaranth_boards.ulx3s import (ULX3S_12F_Platform, ULX3S_25F_Platform, ULX3S_45F_Platform,
                                   ULX3S_85F_Platform)

from hw.config import preset

from .devices import DEVICES, Device

__all__ = ["UartLink", "SerdesLink", "Variant", "Board", "BOARDS", "board", "variant"]


@dataclass(frozen=True)
class UartLink:
    """Host link over a platform UART resource (``resource`` name and number)."""
    resource: str = "uart"
    number: int = 0
    max_baud: int = 3_000_000


@dataclass(frozen=True)
class SerdesLink:
    """Host link over an ECP5 DCU: protocol (e.g. ``"pcie"``), lane count and DCU channel."""
    protocol: str
    lanes: int
    dcu: int
    channel: int


@dataclass(frozen=True)
class Variant:
    device: Device
    platform: type          # an amaranth-boards LatticeECP5Platform subclass
    preset: object          # hw.config.AcceleratorConfig
    design: str = "soc"     # default top-level design (hw.soc.top.DESIGNS)


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    clock_resource: str
    clock_hz: int
    led_resource: str
    led_count: int
    host_links: tuple
    variants: dict = field(repr=False)      # short device name ("85F") -> Variant
    default_variant: str = ""
    openfpgaloader_board: str = ""          # ``openFPGALoader -b`` name

    @property
    def uart(self):
        return next(link for link in self.host_links if isinstance(link, UartLink))


def _ulx3s():
    default = preset("default")
    presets = {
        # 12x12 array on 144 DSPs + 2 requant lanes x 4 = 152 of 156 MULT18X18D, at 100 MHz
        # (3 Mbaud is 100/3 cycles per bit, timed exactly by the UART's fractional divisor).
        # Scratchpad banks of 8,192 rows (96 KB each): a ~100k-parameter CIFAR-10 CNN's weights
        # stay resident (`sim.bench network`).
        "85F": default.replace(scratchpad_rows=16384, accumulator_rows=2048, clock_mhz=100.0),
        # 8x8 + 2 x 4 = 72 of 72.
        "45F": default.replace(rows=8, cols=8, scratchpad_rows=8192, accumulator_rows=1024,
                               binary_width=64, binary_lanes=8),
        # 4x6 + 1 x 4 = 28 of 28 (the 12F and 25F share the die and its 28 DSPs).
        "25F": default.replace(rows=4, cols=6, requant_lanes=1, scratchpad_rows=2048,
                               accumulator_rows=1024, binary_width=32, binary_lanes=8),
        "12F": default.replace(rows=4, cols=6, requant_lanes=1, scratchpad_rows=2048,
                               accumulator_rows=512, binary_width=32, binary_lanes=4),
    }
    # The full SoC (core, link, binary engine) needs about 15.7k LUT4 and 47 DP16KD even around
    # a 4x6 array: more than the 12F's 12,096 LUT4 and 32 DP16KD, so the 12F builds the
    # engines' self-test by default (`--design soc` reports what is over budget).
    designs = {"12F": "bringup"}
    platforms = {"12F": ULX3S_12F_Platform, "25F": ULX3S_25F_Platform,
                 "45F": ULX3S_45F_Platform, "85F": ULX3S_85F_Platform}
    return Board(
        name="ulx3s",
        description="Radiona ULX3S (ECP5 LFE5U, 25 MHz oscillator, FT231X USB UART)",
        clock_resource="clk25",
        clock_hz=25_000_000,
        led_resource="led",
        led_count=8,
        host_links=(UartLink("uart", 0, max_baud=3_000_000),),
        variants={name: Variant(DEVICES[platforms[name].device], platforms[name], presets[name],
                                design=designs.get(name, "soc"))
                  for name in ("12F", "25F", "45F", "85F")},
        default_variant="85F",
        openfpgaloader_board="ulx3s",
    )


BOARDS = {board.name: board for board in (_ulx3s(),)}


def board(name):
    """The `Board` called `name`; `ValueError` lists the supported boards."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"Unknown board {name!r}; supported boards are "
                         f"{', '.join(sorted(BOARDS))}") from None


def variant(board_name, device_name=None):
    """``(board, variant name, Variant)``; `device_name` ``None`` picks the board's default, and
    accepts ``"85F"`` or the full ``"LFE5U-85F"``."""
    selected = board(board_name)
    if device_name is None:
        name = selected.default_variant
    else:
        name = next((key for key, entry in selected.variants.items()
                     if device_name.upper() in (key, entry.device.name)), None)
        if name is None:
            raise ValueError(f"Unknown device {device_name!r} for board {selected.name}; "
                             f"choose one of {', '.join(selected.variants)}")
    return selected, name, selected.variants[name]
