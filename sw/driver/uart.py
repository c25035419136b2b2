"""``uart://`` transport: a serial port through pyserial.

``uart:///dev/ttyUSB0?baud=3000000`` opens a device path; any pyserial URL works after the
scheme (``uart://loop://``, ``uart://socket://host:port``, ``uart://rfc2217://host:port``), with
the options pyserial does not know about (``baud``) taken out of the query and the rest left to
pyserial. The baud rate must match the bitstream's (its CONFIG_UART_BAUD register).
"""

import time

import serial

from sw.driver.errors import InvalidURL, LinkError
from sw.driver.transport import ByteTransport, parse_options, positive_int

__all__ = ["UartTransport", "DEFAULT_BAUD"]

DEFAULT_BAUD = 3_000_000
BITS_PER_BYTE = 10                  # 8N1
_MIN_REPLY_TIMEOUT = 0.1            # USB-serial adapters add milliseconds of latency


class UartTransport(ByteTransport):
    """A serial port (or any pyserial URL) at `baud`."""

    def __init__(self, port, *, baud=DEFAULT_BAUD):
        self.port = port
        self.baud = baud
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, timeout=0)
        except (serial.SerialException, ValueError) as error:
            raise LinkError(f"Cannot open serial port {port!r} at {baud} baud: {error}. Check "
                            f"the device path (ls /dev/ttyUSB* /dev/ttyACM*), that the board is "
                            f"plugged in and that you may open it (group 'dialout').") from error

    @classmethod
    def from_url(cls, url, target, query, link_options):
        options, passthrough = parse_options(
            url, query, {"baud": (positive_int, DEFAULT_BAUD), **link_options}, passthrough=True)
        if "://" in target:
            if passthrough:
                target += "?" + "&".join(f"{key}={value}" for key, value in passthrough)
        elif passthrough:
            raise InvalidURL(f"Unknown option(s) {[key for key, _ in passthrough]} in {url!r}; "
                             f"known options are {sorted(['baud', *link_options])}")
        elif not target:
            raise InvalidURL(f"{url!r} names no serial port: use uart:///dev/ttyUSB0 or a "
                             f"pyserial URL such as uart://loop://")
        baud = options.pop("baud")
        return cls(target, baud=baud), options

    def write(self, data):
        self._check_open(f"write {len(data)} bytes to serial port {self.port!r}")
        try:
            self._serial.write(data)
            self._serial.flush()
        except serial.SerialException as error:
            raise LinkError(f"Writing to {self.port!r} failed: {error}") from error

    def read(self, count, timeout):
        self._check_open(f"read from serial port {self.port!r}")
        deadline = time.monotonic() + timeout
        received = bytearray()
        try:
            while len(received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._serial.timeout = remaining
                received += self._serial.read(count - len(received))
        except serial.SerialException as error:
            raise LinkError(f"Reading from {self.port!r} failed: {error}") from error
        return bytes(received)

    def discard_input(self):
        self._check_open(f"discard the input of serial port {self.port!r}")
        self._serial.reset_input_buffer()

    def reply_timeout(self, byte_count):
        return _MIN_REPLY_TIMEOUT + 2 * byte_count * BITS_PER_BYTE / self.baud

    def now(self):
        return time.monotonic()

    def _release(self):
        self._serial.close()
