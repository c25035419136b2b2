"""``sim://`` transport: the SoC simulated in this process, at the byte stream, the UART pins or
its word bus.

``sim://tiny?line=uart&divisor=4`` -- the target is a config preset (default ``tiny``); options:

* ``line=bytes`` (default): bytes go straight into `hw.soc.soc.SoCCore`'s streams, one per cycle
  -- the fast way to run the driver against the real gateware.
* ``line=uart``: bytes go through a host-side `UARTPhy` into the `SoC`'s serial pins, bit by bit,
  at ``divisor`` cycles per bit (default 4; a fraction such as ``100/3`` times bits as the
  hardware does when the clock is not a multiple of the baud rate; the config's exact divisor is
  realistic but slow).
* ``line=bus``: no frames -- `SimBusTransport`, a `MappedTransport` whose every 32-bit load or
  store is one access on `hw.soc.soc.BusSoC`'s bus (a few cycles of pysim), the way a PCIe BAR
  reaches the device's bus, so the driver runs its `MappedLink` (the ``pcie://`` code path)
  against the real gateware (`sw.driver.link.open_link` picks it). An access outside every window (or a
  store into a read-only one) raises `DeviceError` (BAD_ADDRESS, READ_ONLY), as the frame engine
  would answer. Takes the size options below; ``backend=pysim`` only.
* ``max_payload`` (default the protocol's), ``frame_timeout`` (cycles, default 64 byte times).
* ``scratchpad_rows``, ``accumulator_rows`` and the core sizes (`hw.soc.protocol.CORE_SIZES`:
  ``binary_result_rows``, ``queue_depth``, ...): fields of the preset's config changed, a bigger
  simulated device without a new preset, e.g. ``sim://tiny?scratchpad_rows=4096&backend=cxxrtl``
  (the array stays the preset's).
* ``backend=pysim`` (default, Amaranth's Python simulator) or ``backend=cxxrtl`` (the same top
  compiled by yosys CXXRTL, `sim.cxxrtl`; the model is cached, so only the first run of a
  design compiles, ~20-60 s). Both implement `SimulationBackend` for a top with ``rx``/``tx``
  byte streams and give identical replies, cycle for cycle.

Time is simulated time at the config's clock: timeouts mean what they would on the line.
"""

import math
from collections import deque
from fractions import Fraction

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.config import preset
from hw.soc.bridge import INITIATOR_READ_LATENCY
from hw.soc.protocol import CORE_SIZES, MAX_PAYLOAD, WORD_BYTES, Status
from hw.soc.soc import BusSoC, SoC, SoCCore
from hw.soc.uart import FRAME_BITS, MIN_DIVISOR, UARTPhy
from sw.driver.errors import DeviceError, InvalidURL, LinkError
from sw.driver.transport import ByteTransport, MappedTransport, parse_options, positive_int

__all__ = ["SimTransport", "SimBusTransport", "requests_bus_line", "SimulationBackend",
           "PysimBackend", "CxxrtlBackend", "SerialLineHarness", "LINES", "BACKENDS",
           "parse_divisor"]

LINES = ("bytes", "uart")           # the lines `SimTransport` carries frames over
_URL_LINES = LINES + ("bus",)       # "bus": `SimBusTransport`, no frames
# Config fields a URL may change in the preset (buffer and core sizes: the array stays the
# preset's).
_SIZE_OPTIONS = ("scratchpad_rows", "accumulator_rows", *CORE_SIZES)
_CHUNK_CYCLES = 16         # stop-condition granularity: small, so measured cycles are tight
_CXXRTL_CHUNK_CYCLES = 256  # a compiled run costs a ctypes call: check `stop` less often


class SerialLineHarness(wiring.Component):
    """A `SoC` seen through a host-side UART PHY wired to its pins: bytes in on `rx` leave the
    host PHY as serial bits into the SoC; the SoC's serial replies come out on `tx`."""

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))

    def __init__(self, *, soc):
        self.soc = soc
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = self.soc
        m.submodules.host_phy = host_phy = UARTPhy(divisor=soc.divisor)
        wiring.connect(m, wiring.flipped(self.rx), host_phy.tx)
        wiring.connect(m, host_phy.rx, wiring.flipped(self.tx))
        m.d.comb += [soc.rx.eq(host_phy.txd), host_phy.rxd.eq(soc.tx)]
        return m


class SimulationBackend:
    """Runs a top with byte streams ``rx`` (to the device) and ``tx`` (from it).

    Subclasses keep the bytes still to offer in ``_to_device`` and the bytes produced in
    ``_from_device`` (a bytearray)."""

    cycles = 0          # simulated so far

    def push(self, data):
        """Queue bytes to offer on ``rx``, one per cycle as it accepts them."""
        self._to_device.extend(data)

    def pending(self):
        """Queued bytes ``rx`` has not accepted yet."""
        return len(self._to_device)

    def received(self):
        """Bytes ``tx`` produced so far (a mutable buffer the caller consumes)."""
        return self._from_device

    def run(self, max_cycles, stop):
        """Simulate until `stop()` is true (checked every few cycles) or `max_cycles` passed."""
        raise NotImplementedError

    def close(self):
        pass


class PysimBackend(SimulationBackend):
    """`SimulationBackend` on Amaranth's Python simulator (about 10k cycles/s for the SoC)."""

    def __init__(self, top, *, clock_hz):
        self._top = top
        self._to_device = deque()
        self._from_device = bytearray()
        self._period_fs = round(1e15 / clock_hz)
        self.cycles = 0
        self._simulator = Simulator(top)
        self._simulator.add_clock(self._period_fs / 1e15)
        self._simulator.add_testbench(self._drive_streams, background=True)

    async def _drive_streams(self, ctx):
        rx, tx = self._top.rx, self._top.tx
        ctx.set(tx.ready, 1)
        offering = False
        async for _, _, rx_ready, tx_valid, tx_payload in ctx.tick().sample(
                rx.ready, tx.valid, tx.payload):
            if tx_valid:
                self._from_device.append(tx_payload)
            if offering and rx_ready:
                self._to_device.popleft()
            offering = bool(self._to_device)
            ctx.set(rx.valid, offering)
            if offering:
                ctx.set(rx.payload, self._to_device[0])

    def run(self, max_cycles, stop):
        end = self.cycles + max_cycles
        while self.cycles < end and not stop():
            self.cycles = min(end, self.cycles + _CHUNK_CYCLES)
            self._simulator.run_until(self.cycles * self._period_fs / 1e15)


class CxxrtlBackend(SimulationBackend):
    """`SimulationBackend` on the compiled CXXRTL model of `top` (`sim.cxxrtl.CxxrtlSimulator`):
    the byte streams are moved inside the C++ harness, `_CXXRTL_CHUNK_CYCLES` at a time."""

    def __init__(self, top, *, clock_hz):
        from sim import cxxrtl
        try:
            self._simulator = cxxrtl.CxxrtlSimulator(top, name="sim_transport")
        except cxxrtl.BackendUnavailable as error:
            raise LinkError(f"backend=cxxrtl is not usable here: {error}; use backend=pysim") \
                from None
        self._simulator.reset()
        self._to_device = []
        self._from_device = bytearray()
        self.cycles = 0

    def run(self, max_cycles, stop):
        end = self.cycles + max_cycles
        while self.cycles < end and not stop():
            chunk = min(end - self.cycles, _CXXRTL_CHUNK_CYCLES)
            result = self._simulator.run_streams({"rx": self._to_device}, {"tx": None},
                                                 max_cycles=chunk, allow_timeout=True)
            del self._to_device[:result.sent["rx"]]
            self._from_device += bytes(result.received["tx"])
            self.cycles += chunk

    def close(self):
        self._simulator.close()


BACKENDS = {"pysim": PysimBackend, "cxxrtl": CxxrtlBackend}


def _line(text):
    if text not in _URL_LINES:
        raise ValueError(f"must be one of {_URL_LINES}")
    return text


def _backend(text):
    if text not in BACKENDS:
        raise ValueError(f"must be one of {sorted(BACKENDS)}")
    return text


def parse_divisor(text):
    """Cycles per bit: a whole number or an exact fraction (``100/3``, the 85F's 100 MHz at
    3 Mbaud)."""
    value = Fraction(text)
    if value < MIN_DIVISOR:
        raise ValueError(f"must be at least {MIN_DIVISOR} cycles per bit")
    return value.numerator if value.denominator == 1 else value


def _max_payload(text):
    value = int(text)
    if value & (value - 1) or not WORD_BYTES <= value <= MAX_PAYLOAD:
        raise ValueError(f"must be a power of two in {WORD_BYTES}..{MAX_PAYLOAD}")
    return value


# URL options that size the simulated device (any line).
_DEVICE_OPTIONS = {name: (positive_int, None) for name in _SIZE_OPTIONS}


def _config(url, target, options):
    """The config of the device a ``sim://`` URL names; pops the size options."""
    sizes = {name: options.pop(name) for name in _SIZE_OPTIONS}
    try:
        return preset(target or "tiny").replace(**{
            name: value for name, value in sizes.items() if value is not None})
    except (ValueError, TypeError) as error:
        raise InvalidURL(f"{url!r}: {error}") from None


class SimTransport(ByteTransport):
    """The simulated SoC as a byte pipe.

    Parameters
    ----------
    config : AcceleratorConfig
    line : str
        ``"bytes"`` (SoCCore streams) or ``"uart"`` (serial pins at `divisor`); ``"bus"`` is
        `SimBusTransport`.
    divisor : int or fractions.Fraction
        Cycles per bit on the simulated serial line (``line="uart"`` only), at least 4.
    max_payload, frame_timeout
        As for `hw.soc.soc.SoCCore`; frame_timeout None means 64 byte times.
    backend : str
        A key of `BACKENDS`.
    """

    def __init__(self, *, config, line="bytes", divisor=MIN_DIVISOR, max_payload=MAX_PAYLOAD,
                 frame_timeout=None, backend="pysim"):
        if line not in LINES:
            raise ValueError(f"line must be one of {LINES} for a byte pipe, not {line!r} "
                             f"(line='bus' is SimBusTransport)")
        _backend(backend)
        self.config = config
        self.line = line
        self.cycles_per_byte = FRAME_BITS * divisor if line == "uart" else 1
        self.clock_hz = config.clock_hz
        self.max_payload = max_payload
        self.frame_timeout = math.ceil(64 * self.cycles_per_byte) if frame_timeout is None \
            else frame_timeout
        if line == "uart":
            top = SerialLineHarness(soc=SoC(config=config, divisor=divisor,
                                            max_payload=max_payload,
                                            frame_timeout=self.frame_timeout))
        else:
            top = SoCCore(config=config, max_payload=max_payload,
                          frame_timeout=self.frame_timeout)
        self.backend = BACKENDS[backend](top, clock_hz=self.clock_hz)

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

    def _cycles(self, seconds):
        return max(1, math.ceil(seconds * self.clock_hz))

    def write(self, data):
        self._check_open(f"write {len(data)} bytes to the simulated SoC")
        # Like a serial port's flush(): return once the bytes are on the line.
        self.backend.push(data)
        budget = math.ceil(2 * (len(data) + 1) * self.cycles_per_byte) + self.max_payload + 64
        self.backend.run(budget, lambda: self.backend.pending() == 0)
        if self.backend.pending():
            raise LinkError(f"The simulated device stopped taking bytes: {self.backend.pending()} "
                            f"of {len(data)} still queued after {budget} cycles")

    def read(self, count, timeout):
        self._check_open("read from the simulated SoC")
        received = self.backend.received()
        self.backend.run(self._cycles(timeout), lambda: len(received) >= count)
        data = bytes(received[:count])
        del received[:count]
        return data

    def discard_input(self):
        self._check_open("discard the input of the simulated SoC")
        self.backend.received().clear()

    def now(self):
        return self.backend.cycles / self.clock_hz

    def _release(self):
        self.backend.close()

    def reply_timeout(self, byte_count):
        # The device may first copy a whole staged payload, and answers a stalled frame only
        # after frame_timeout.
        cycles = (self.frame_timeout + self.max_payload // WORD_BYTES + 64
                  + 2 * (byte_count + 16) * self.cycles_per_byte)
        return cycles / self.clock_hz


class SimBusTransport(MappedTransport):
    """The simulated SoC's word bus as a memory-mapped window (`hw.soc.soc.BusSoC` in pysim).

    Each `read32`/`write32` is one bus access, run to completion before it returns: the strobe
    is driven for one cycle; a load's data is taken `hw.soc.bridge.INITIATOR_READ_LATENCY`
    cycles after it, a store is fire-and-forget (the bus keeps accesses in order). So an access
    takes 1 + INITIATOR_READ_LATENCY simulated cycles for a load, 2 for a store. Simulated time
    runs only during accesses, so a driver polling the core's status registers is what lets the
    core compute.

    Accesses are checked against the SoC's `memory_map` first, as the frame engine checks a
    frame: unaligned or outside every window -> `DeviceError` with status BAD_ADDRESS, a store
    into a read-only window -> READ_ONLY. (The bus itself would drop them silently.)

    Parameters
    ----------
    config : AcceleratorConfig
    """

    size = 1 << 32      # the bus's byte address space; `memory_map` says what answers

    def __init__(self, *, config):
        self.config = config
        self.soc = BusSoC(config=config)
        self.memory_map = self.soc.memory_map
        self.cycles = 0
        self._period_fs = round(1e15 / config.clock_hz)
        self._access = None         # (word address, value to store or None for a load)
        self._loaded = None
        self._simulator = Simulator(self.soc)
        self._simulator.add_clock(self._period_fs / 1e15)
        self._simulator.add_testbench(self._serve, background=True)

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

    async def _serve(self, ctx):
        bus = self.soc.bus
        while True:
            await ctx.tick()
            if self._access is None:
                continue
            word, value = self._access
            ctx.set(bus.address, word)
            if value is None:
                ctx.set(bus.read, 1)
            else:
                ctx.set(bus.write_data, value)
                ctx.set(bus.write, 1)
            await ctx.tick()
            ctx.set(bus.read, 0)
            ctx.set(bus.write, 0)
            if value is None:
                await ctx.tick().repeat(INITIATOR_READ_LATENCY - 1)
                self._loaded = ctx.get(bus.read_data)
            self._access = None

    def _run(self, address, value):
        self._check_open(f"{'load from' if value is None else 'store to'} {address:#x} of the "
                         f"simulated SoC's bus")
        window = next((window for window in self.memory_map.windows
                       if window.base <= address < window.base + window.size), None)
        what = "Load from" if value is None else "Store to"
        if address % WORD_BYTES or window is None:
            windows = ", ".join(f"{w.name} {w.base:#x}+{w.size:#x}"
                                for w in self.memory_map.windows)
            raise DeviceError(f"{what} {address:#x} refused: BAD_ADDRESS (not an aligned word "
                              f"inside a window of the simulated SoC: {windows})",
                              status=Status.BAD_ADDRESS)
        if value is not None and not window.writable:
            raise DeviceError(f"{what} {address:#x} refused: READ_ONLY (the {window.name} "
                              f"window is read-only)", status=Status.READ_ONLY)
        if value is not None and not (isinstance(value, int) and 0 <= value < 1 << 32):
            raise ValueError(f"A stored word must be an integer in 0..2^32-1, not {value!r}")
        self._access = (address // WORD_BYTES, value)
        # The testbench takes the access at the next edge and completes it 1 (store) or
        # INITIATOR_READ_LATENCY (load) edges after that.
        for _ in range(2 + INITIATOR_READ_LATENCY):
            self.cycles += 1
            self._simulator.run_until(self.cycles * self._period_fs / 1e15)
            if self._access is None:
                return self._loaded
        raise LinkError(f"{what} {address:#x}: the simulated bus did not complete the access")

    def read32(self, address):
        return self._run(address, None)

    def write32(self, address, value):
        self._run(address, value)

    def now(self):
        return self.cycles / self.config.clock_hz


def _pysim_only(text):
    if text != "pysim":
        raise ValueError("line=bus runs on pysim only (the CXXRTL harness moves byte streams)")
    return text


def requests_bus_line(url, query):
    """Whether a ``sim://`` URL asks for ``line=bus`` (the memory-mapped link)."""
    options, _ = parse_options(url, query, {"line": (_line, "bytes")}, passthrough=True)
    return options["line"] == "bus"
