"""Driver exceptions. Every one is a `LinkError`, so callers can catch the family at once."""

__all__ = ["LinkError", "LinkTimeout", "LinkClosed", "ProtocolError", "DeviceError",
           "DeviceMismatch", "InvalidURL", "CommandError", "CoreTimeout"]


class LinkError(Exception):
    """Something went wrong talking to the device."""


class LinkTimeout(LinkError, TimeoutError):
    """The device did not answer in time, even after the retries."""


class LinkClosed(LinkError):
    """A transport, link or accelerator used after its `close()`."""


class ProtocolError(LinkError):
    """The device's answers do not follow the protocol (corrupt even after the retries,
    or not a reply at all)."""


class DeviceError(ProtocolError):
    """The device refused a request; `status` is the `protocol.Status` it answered with."""

    def __init__(self, message, *, status):
        super().__init__(message)
        self.status = status


class DeviceMismatch(LinkError):
    """The device is not an ecpnn accelerator this driver understands (magic or version)."""


class InvalidURL(LinkError, ValueError):
    """A device URL that names no known transport or has bad options."""


class CoreTimeout(LinkTimeout):
    """The core did not finish its commands (or free a queue slot) in time; `state` is the
    last status read (pushed, completed, queue_free, busy, ...; a wait for commands the driver
    counted polls completed and error_code only, beside the pushed count it knows)."""

    def __init__(self, message, *, state):
        super().__init__(message)
        self.state = state


class CommandError(LinkError):
    """The core refused a command (its error status): `command` is the opcode's name, `code`
    the `hw.core.isa.ErrorCode`, `index` the command's number since the core's reset."""

    def __init__(self, message, *, command, code, index):
        super().__init__(message)
        self.command, self.code, self.index = command, code, index
