"""The accelerator a bench measures: ``--device``, a ULX3S variant's shipped preset (the board's
default variant unless named) or a config preset of `hw.config.PRESETS`."""

from boards.catalog import board, variant
from hw.config import PRESETS

__all__ = ["add_device_argument", "device_config"]


def add_device_argument(parser):
    ulx3s = board("ulx3s")
    shipped = ulx3s.variants[ulx3s.default_variant].preset
    parser.add_argument("--device", default=ulx3s.default_variant,
                        help=f"a ULX3S variant ({', '.join(ulx3s.variants)}; default "
                             f"{ulx3s.default_variant}, the shipped {shipped.rows}x{shipped.cols} "
                             f"config) or a config preset ({', '.join(PRESETS)})")


def device_config(name):
    """The `AcceleratorConfig` of a ULX3S variant (``85F`` ...) or a preset (``tiny`` ...);
    `ValueError` names the known ones."""
    if name in PRESETS:
        return PRESETS[name]
    try:
        return variant("ulx3s", name)[2].preset
    except ValueError:
        raise ValueError(f"unknown device {name!r}: choose a ULX3S variant "
                         f"({', '.join(board('ulx3s').variants)}) or a config preset "
                         f"({', '.join(PRESETS)})") from None
