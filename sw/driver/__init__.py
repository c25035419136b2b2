"""Host driver: `Accelerator.open(url)` over ``sim://``, ``uart://`` or ``pcie://`` transports."""

from sw.driver.device import Accelerator
from sw.driver.errors import (CommandError, CoreTimeout, DeviceError, DeviceMismatch,
                              InvalidURL, LinkClosed, LinkError, LinkTimeout, ProtocolError)
from sw.driver.link import FrameLink, Link, MappedLink, open_link

__all__ = ["Accelerator", "open_link", "Link", "FrameLink", "MappedLink", "LinkError",
           "LinkTimeout", "LinkClosed", "ProtocolError", "DeviceError", "CommandError",
           "CoreTimeout", "DeviceMismatch", "InvalidURL"]
