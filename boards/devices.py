"""Lattice ECP5 devices and their resource budgets.

Figures are the datasheet's (FPGA-DS-02012) and agree with what ``nextpnr-ecp5 --report`` lists
as available for the 25k, 45k and 85k dies. The one exception is the LFE5U-12F: it is the 25k die
sold with a smaller licence, and nextpnr (``--12k``) reports the full die (24,288 LUT4, 56
DP16KD). The budget here is the datasheet's 12,096 LUT4 / 32 DP16KD, so a design that fits the
budget is within what Lattice specifies for the part.

``serdes_channels`` is the number of DCU channels (0 on LFE5U, 4 on LFE5UM/LFE5UM5G): the field a
PCIe or other SERDES host link will check when such boards are added.
"""

from dataclasses import dataclass

__all__ = ["Device", "DEVICES", "device"]


@dataclass(frozen=True)
class Device:
    """One ECP5 part: name, nextpnr size option and resource budget."""

    name: str
    nextpnr_size: str       # the nextpnr-ecp5 device option, e.g. "85k"
    luts: int               # LUT4 (TRELLIS_COMB); one flip-flop per LUT4
    dsps: int               # MULT18X18D
    ebrs: int               # DP16KD 18 Kbit block RAMs
    plls: int               # EHXPLLL
    serdes_channels: int = 0

    @property
    def ffs(self):
        return self.luts


DEVICES = {device.name: device for device in (
    Device("LFE5U-12F", "12k", luts=12_096, dsps=28, ebrs=32, plls=2),
    Device("LFE5U-25F", "25k", luts=24_288, dsps=28, ebrs=56, plls=2),
    Device("LFE5U-45F", "45k", luts=43_848, dsps=72, ebrs=108, plls=4),
    Device("LFE5U-85F", "85k", luts=83_640, dsps=156, ebrs=208, plls=4),
    # SERDES parts (Versa ECP5: LFE5UM-45F; ECP5-5G Evaluation Board: LFE5UM5G-85F).
    Device("LFE5UM-45F", "um-45k", luts=43_848, dsps=72, ebrs=108, plls=4, serdes_channels=4),
    Device("LFE5UM5G-85F", "um5g-85k", luts=83_640, dsps=156, ebrs=208, plls=4,
           serdes_channels=4),
)}


def device(name):
    """The `Device` called `name`; `ValueError` lists the known parts."""
    try:
        return DEVICES[name]
    except KeyError:
        raise ValueError(f"Unknown ECP5 device {name!r}; known devices are "
                         f"{', '.join(DEVICES)}") from None
