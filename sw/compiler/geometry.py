"""`DeviceGeometry`: the device a program is compiled for -- its config and core sizes.

It is what the driver reads from a connected device (`Accelerator.geometry`) and what a
`Program` records, so loading a program on a device built differently is refused before
anything is written. `core` is the buffer geometry `hw.core.geometry_from_config` derives.
"""

from dataclasses import dataclass

from hw.config import AcceleratorConfig
from hw.core import geometry_from_config
from hw.soc.protocol import CORE_SIZES

__all__ = ["DeviceGeometry"]


@dataclass(frozen=True)
class DeviceGeometry:
    """config : `hw.config.AcceleratorConfig`; core_sizes : ((name, value), ...) for every
    `hw.soc.protocol.CORE_SIZES` entry (`of` fills the defaults)."""

    config: AcceleratorConfig
    core_sizes: tuple

    @classmethod
    def of(cls, config, **core_sizes):
        """The geometry of `config` with these core sizes (the rest: the core's defaults)."""
        core = geometry_from_config(config, **core_sizes)
        return cls(config, tuple((name, getattr(core, name)) for name in CORE_SIZES))

    @property
    def core(self):
        """The `hw.core.CoreGeometry` (row strides, lanes, memory sizes)."""
        return geometry_from_config(self.config, **dict(self.core_sizes))

    def describe(self):
        """A JSON-able dict (`from_description` inverts it)."""
        return {"config": self.config.to_dict(), "core_sizes": dict(self.core_sizes)}

    @classmethod
    def from_description(cls, description):
        return cls.of(AcceleratorConfig.from_dict(description["config"]),
                      **description["core_sizes"])

    def differences(self, other):
        """'name: mine != theirs' for every config field or core size that differs."""
        mine, theirs = self.describe(), other.describe()
        return [f"{name}: {mine[part][name]!r} != {theirs[part].get(name)!r}"
                for part in ("config", "core_sizes") for name in mine[part]
                if mine[part][name] != theirs[part].get(name)]
