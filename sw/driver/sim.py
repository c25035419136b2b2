"""``sim://`` transports: the SoC simulated in this process (`sim.soc`), at the byte stream, the
UART pins or its word bus.

``sim://tiny?line=uart&divisor=4`` -- the target is a config preset (default ``tiny``); options:

* ``line=bytes`` (default): `SimTransport` over `sim.soc.SimulatedSoC` on the SoC's byte
  streams, one byte per cycle -- the fast way to run the driver against the real gateware.
* ``line=uart``: the same through a host-side UART PHY into the SoC's serial pins, bit by bit,
  at ``divisor`` cycles per bit (default 4; a fraction such as ``100/3`` times bits as the
  hardware does when the clock is not a multiple of the baud rate; the config's exact divisor is
  realistic but slow).
* ``line=bus``: no frames -- `SimBusTransport`, a `MappedTransport` over `sim.soc.SimulatedBus`
  whose every 32-bit load or store is one access on the SoC's bus, the way a PCIe BAR reaches
  the device's bus, so the driver runs its `MappedLink` (the ``pcie://`` code path) against the
  real gateware (`sw.driver.link.open_link` picks it). An access outside every window (or a
  store into a read-only one) raises `DeviceError` (BAD_ADDRESS, READ_ONLY), as the frame engine
  would answer. Takes the size options below; ``backend=pysim`` only.
* ``max_payload`` (default the protocol's), ``frame_timeout`` (cycles, default 64 byte times).
* ``scratchpad_rows``, ``accumulator_rows`` and the core sizes (`hw.soc.protocol.CORE_SIZES`:
  ``binary_result_rows``, ``queue_depth``, ...): fields of the preset's config changed, a bigger
  simulated device without a new preset, e.g. ``sim://tiny?scratchpad_rows=4096&backend=cxxrtl``
  (the array stays the preset's).
* ``backend=pysim`` (default, Amaranth's Python simulator) or ``backend=cxxrtl`` (the same top
  compiled by yosys CXXRTL; the model is cached, so only the first run of a design compiles,
  ~20-60 s); `sim.soc.BACKENDS`.

Time is simulated time at the config's clock: timeouts mean what they would on the line. The
simulated devices raise their own exceptions; these transports turn them into the driver's
(`LinkError`, `DeviceError`).
"""

import math

from hw.config import preset
from hw.soc.protocol import CORE_SIZES, MAX_PAYLOAD, WORD_BYTES
from hw.soc.uart import MIN_DIVISOR
from sim.cxxrtl import BackendUnavailable
from sim.soc import (BACKENDS, LINES, BusAccessRefused, SimulatedBus, SimulatedSoC,
                     SimulationStalled, parse_divisor)
from sw.driver.errors import DeviceError, InvalidURL, LinkError
from sw.driver.transport import ByteTransport, MappedTransport, parse_options, positive_int

__all__ = ["SimTransport", "SimBusTransport", "requests_bus_line"]

_URL_LINES = LINES + ("bus",)       # "bus": `SimBusTransport`, no frames
# Config fields a URL may change in the preset (buffer and core sizes: the array stays the
# preset's).
_SIZE_OPTIONS = ("scratchpad_rows", "accumulator_rows", *CORE_SIZES)
_DEVICE_OPTIONS = {name: (positive_int, None) for name in _SIZE_OPTIONS}


def _line(text):
    if text not in _URL_LINES:
        raise ValueError(f"must be one of {_URL_LINES}")
    return text


def _backend(text):
    if text not in BACKENDS:
        raise ValueError(f"must be one of {sorted(BACKENDS)}")
    return text


def _max_payload(text):
    value = int(text)
    if value & (value - 1) or not WORD_BYTES <= value <= MAX_PAYLOAD:
        raise ValueError(f"must be a power of two in {WORD_BYTES}..{MAX_PAYLOAD}")
    return value


def _config(url, target, options):
    """The config of the device a ``sim://`` URL names; pops the size options."""
    sizes = {name: options.pop(name) for name in _SIZE_OPTIONS}
    try:
        return preset(target or "tiny").replace(**{
            name: value for name, value in sizes.items() if value is not None})
    except (ValueError, TypeError) as error:
        raise InvalidURL(f"{url!r}: {error}") from None


class SimTransport(ByteTransport):
    """The simulated SoC as a byte pipe: `device`, a `sim.soc.SimulatedSoC` built from
    `options` (config, line, divisor, max_payload, frame_timeout, backend)."""

    def __init__(self, **options):
        try:
            self.device = SimulatedSoC(**options)
        except BackendUnavailable as error:
            raise LinkError(f"backend=cxxrtl is not usable here: {error}; use backend=pysim") \
                from None

    @classmethod
    def from_url(cls, url, target, query, link_options):
        options, _ = parse_options(url, query, {
            "line": (_line, "bytes"), "divisor": (parse_divisor, MIN_DIVISOR),
            "max_payload": (_max_payload, MAX_PAYLOAD), "frame_timeout": (positive_int, None),
            "backend": (_backend, "pysim"), **_DEVICE_OPTIONS, **link_options})
        if options["line"] == "bus":
            raise InvalidURL(f"{url!r}: line=bus is a memory-mapped link without frames; open it "
                             f"with sw.driver.link.open_link (MappedLink), not as a byte pipe")
        config = _config(url, target, options)
        try:
            transport = cls(config=config, **{
                name: options.pop(name) for name in ("line", "divisor", "max_payload",
                                                     "frame_timeout", "backend")})
        except (ValueError, TypeError) as error:
            raise InvalidURL(f"{url!r}: {error}") from None
        return transport, options

    def write(self, data):
        self._check_open(f"write {len(data)} bytes to the simulated SoC")
        try:
            self.device.send(data)
        except SimulationStalled as error:
            raise LinkError(str(error)) from None

    def read(self, count, timeout):
        self._check_open("read from the simulated SoC")
        return self.device.receive(count, max(1, math.ceil(timeout * self.device.clock_hz)))

    def discard_input(self):
        self._check_open("discard the input of the simulated SoC")
        self.device.discard_received()

    def now(self):
        return self.device.cycles / self.device.clock_hz

    def _release(self):
        self.device.close()

    def reply_timeout(self, byte_count):
        return self.device.reply_cycles(byte_count) / self.device.clock_hz


class SimBusTransport(MappedTransport):
    """The simulated SoC's word bus as a memory-mapped window: `device`, a
    `sim.soc.SimulatedBus` of `config`, whose refusals become `DeviceError` (with the status
    the frame engine would answer)."""

    size = 1 << 32      # the bus's byte address space; the device's memory map says what answers

    def __init__(self, *, config):
        self.device = SimulatedBus(config=config)

    @classmethod
    def from_url(cls, url, target, query, link_options):
        options, _ = parse_options(url, query, {
            "line": (_line, "bus"), "backend": (_pysim_only, "pysim"), **_DEVICE_OPTIONS,
            **link_options})
        config = _config(url, target, options)
        for name in ("line", "backend"):
            options.pop(name)
        try:
            transport = cls(config=config)
        except (ValueError, TypeError) as error:
            raise InvalidURL(f"{url!r}: {error}") from None
        return transport, options

    def _access(self, action, access, *args):
        self._check_open(f"{action} of the simulated SoC's bus")
        try:
            return access(*args)
        except BusAccessRefused as error:
            raise DeviceError(str(error), status=error.status) from None
        except SimulationStalled as error:
            raise LinkError(str(error)) from None

    def read32(self, address):
        return self._access(f"load from {address:#x}", self.device.read32, address)

    def write32(self, address, value):
        self._access(f"store to {address:#x}", self.device.write32, address, value)

    def now(self):
        return self.device.cycles / self.device.config.clock_hz


def _pysim_only(text):
    if text != "pysim":
        raise ValueError("line=bus runs on pysim only (the CXXRTL harness moves byte streams)")
    return text


def requests_bus_line(url, query):
    """Whether a ``sim://`` URL asks for ``line=bus`` (the memory-mapped link)."""
    options, _ = parse_options(url, query, {"line": (_line, "bytes")}, passthrough=True)
    return options["line"] == "bus"
