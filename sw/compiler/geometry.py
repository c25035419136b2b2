"""`DeviceGeometry`: the device a program is compiled for -- its config, core sizes included.

It is what the driver reads from a connected device (`Accelerator.geometry`) and what a
`Program` records, so loading a program on a device built differently is refused before
anything is written. `core` is the buffer geometry `hw.core.geometry_from_config` derives.
"""

from dataclasses import dataclass

from hw.config import AcceleratorConfig
from hw.core import geometry_from_config

__all__ = ["DeviceGeometry"]


@dataclass(frozen=True)
class DeviceGeometry:
    """config : `hw.config.AcceleratorConfig` (with the core's sizes,
    `hw.soc.protocol.CORE_SIZES`)."""

    config: AcceleratorConfig

    @property
    def core(self):
        """The `hw.core.CoreGeometry` (row strides, lanes, memory sizes)."""
        return geometry_from_config(self.config)

    def describe(self):
        """A JSON-able dict (`from_description` inverts it)."""
        return {"config": self.config.to_dict()}

    @classmethod
    def from_description(cls, description):
        return cls(AcceleratorConfig.from_dict(description["config"]))

    def differences(self, other):
        """'name: mine != theirs' for every config field (core sizes included) that differs."""
        mine, theirs = self.describe()["config"], other.describe()["config"]
        return [f"{name}: {mine[name]!r} != {theirs.get(name)!r}" for name in mine
                if mine[name] != theirs.get(name)]
