"""`Accelerator`: a connected ecpnn device, its generated config and its registers and memories.

::

    with Accelerator.open("uart:///dev/ttyUSB0?baud=3000000") as accelerator:
        print(accelerator.config)                   # read from the device's CONFIG_* registers
        accelerator.bulk_write(accelerator.scratchpad_base, data)

On connect the driver reads the identification registers and refuses (`DeviceMismatch`) a device
whose magic or protocol major version it does not know, so it never carries constants that can
disagree with the bitstream: the config, the max payload and the scratchpad window all come from
the device.
"""

from hw.soc import protocol
from sw.driver.errors import DeviceMismatch
from sw.driver.link import open_link

__all__ = ["Accelerator"]


class Accelerator:
    """A connected device. Use `Accelerator.open(url)` (also a context manager)."""

    def __init__(self, link, *, url="<link>"):
        self.link = link
        self.url = url
        identity = dict(zip(protocol.ID_REGISTERS, link.read_registers(
            protocol.CSR_BASE, len(protocol.ID_REGISTERS))))
        if identity["MAGIC"] != protocol.MAGIC:
            raise DeviceMismatch(
                f"{url} is not an ecpnn accelerator: MAGIC reads {identity['MAGIC']:#010x}, "
                f"expected {protocol.MAGIC:#010x}. Is the right bitstream loaded and the right "
                f"port selected?")
        major, minor = identity["VERSION"] >> 16, identity["VERSION"] & 0xFFFF
        if major != protocol.VERSION_MAJOR:
            raise DeviceMismatch(
                f"{url} speaks protocol {major}.{minor}, this driver {protocol.VERSION_MAJOR}."
                f"{protocol.VERSION_MINOR}: use the driver that matches the bitstream, or "
                f"rebuild the bitstream from this checkout (python -m hw.build)")
        self.version = (major, minor)
        try:
            self.config = protocol.decode_config(identity)
        except (ValueError, TypeError) as error:
            raise DeviceMismatch(f"{url} reports a config this driver cannot read: {error}") \
                from None
        self.max_payload = identity["MAX_PAYLOAD"]
        self.scratchpad_base = identity["SCRATCHPAD_BASE"]
        self.scratchpad_bytes = identity["SCRATCHPAD_BYTES"]

    @classmethod
    def open(cls, url):
        link = open_link(url)
        try:
            return cls(link, url=url)
        except BaseException:
            link.close()
            raise

    def close(self):
        self.link.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def read_register(self, name):
        return self.link.read_registers(protocol.register_address(name), 1)[0]

    def write_register(self, name, value):
        self.link.write_registers(protocol.register_address(name), [value])

    def read_registers(self, address, count):
        return self.link.read_registers(address, count)

    def write_registers(self, address, values):
        self.link.write_registers(address, values)

    def bulk_read(self, address, length):
        return self.link.bulk_read(address, length)

    def bulk_write(self, address, data):
        self.link.bulk_write(address, data)

    def link_status(self):
        """The live link registers (STATUS, LAST_ERROR as a `Status`, frame and byte counters)."""
        names = protocol.ID_REGISTERS[protocol.ID_REGISTERS.index("STATUS"):]
        values = dict(zip(names, self.read_registers(protocol.register_address("STATUS"),
                                                     len(names))))
        values["LAST_ERROR"] = protocol.Status(values["LAST_ERROR"])
        return values

    def clear_errors(self):
        self.write_register("CONTROL", protocol.CONTROL_CLEAR_ERRORS)
