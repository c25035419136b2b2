"""``pcie://`` transport: the device's registers and memories through a mapped PCIe BAR.

``pcie://0000:01:00.0`` maps ``/sys/bus/pci/devices/0000:01:00.0/resource0`` (``?bar=N`` picks
another BAR); ``pcie://file:/path/to/file`` maps a file of the same layout instead, for tests and
for devices exposed some other way. BAR offsets are the protocol's bus addresses; every access
is one aligned 32-bit load or store, which is what the device's bus supports.
"""

import mmap
import os
import re
import time

from sw.driver.errors import InvalidURL, LinkError
from sw.driver.transport import MappedTransport, non_negative_int, parse_options

__all__ = ["PcieTransport", "sysfs_resource"]

_BDF = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_MAX_BAR = 5


def _bar_number(text):
    value = non_negative_int(text)
    if value > _MAX_BAR:
        raise ValueError(f"a PCI function has BARs 0..{_MAX_BAR}, not {value}")
    return value


def sysfs_resource(bdf, bar):
    return f"/sys/bus/pci/devices/{bdf}/resource{bar}"


class PcieTransport(MappedTransport):
    """A file (sysfs BAR resource or plain file) mapped read-write."""

    def __init__(self, path):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_SYNC)
        except OSError as error:
            raise LinkError(f"Cannot open {path!r}: {error.strerror}. For a PCIe device check "
                            f"`lspci -D` for its address and run as a user allowed to map "
                            f"its BARs (root, or a udev rule).") from error
        try:
            self.size = os.fstat(self._fd).st_size
            if self.size < 4:
                raise LinkError(f"{path!r} is {self.size} bytes: too small to hold registers")
            self._map = mmap.mmap(self._fd, self.size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(self._fd)
            raise
        # Native 32-bit loads and stores (one bus access each); PCIe and the device are
        # little-endian, and so is every host this driver is meant for.
        self._words = memoryview(self._map).cast("I")

    @classmethod
    def from_url(cls, url, target, query, link_options):
        options, _ = parse_options(url, query, {"bar": (_bar_number, None), **link_options})
        bar = options.pop("bar")
        if target.startswith("file:"):
            path = target[len("file:"):]
            if not path:
                raise InvalidURL(f"{url!r} names no file: use pcie://file:/path/to/file")
            if bar is not None:
                raise InvalidURL(f"{url!r}: bar= selects a BAR of a PCI device, not of a file")
        elif _BDF.match(target):
            path = sysfs_resource(target, bar or 0)
        else:
            raise InvalidURL(f"{url!r}: expected a PCI address like pcie://0000:01:00.0 "
                             f"(see `lspci -D`) or pcie://file:/path, not {target!r}")
        return cls(path), options

    def _index(self, address):
        if address % 4 or not 0 <= address <= self.size - 4:
            raise LinkError(f"Address {address:#x} is not an aligned word inside the "
                            f"{self.size:#x}-byte window of {self.path!r}")
        return address // 4

    def read32(self, address):
        self._check_open(f"load from {address:#x} of {self.path!r}")
        return self._words[self._index(address)]

    def write32(self, address, value):
        self._check_open(f"store to {address:#x} of {self.path!r}")
        self._words[self._index(address)] = value

    def now(self):
        return time.monotonic()

    def _release(self):
        self._words.release()
        self._map.close()
        os.close(self._fd)
