"""The SoC simulated in this process, seen from the host: a byte pipe or a word bus.

* `SimulatedSoC`: the SoC as a byte pipe, on one of `LINES`:

  * ``"bytes"``: bytes go straight into `hw.soc.soc.SoCCore`'s streams, one per cycle -- the
    fast way to run a host against the real gateware;
  * ``"uart"``: bytes go through a host-side `UARTPhy` into the `SoC`'s serial pins, bit by bit,
    at ``divisor`` cycles per bit (`SerialLineHarness`; a fraction such as ``100/3`` times bits
    as the hardware does when the clock is not a multiple of the baud rate; the config's exact
    divisor is realistic but slow).

  on one of `BACKENDS`: ``"pysim"`` (Amaranth's Python simulator) or ``"cxxrtl"`` (the same top
  compiled by yosys CXXRTL, `sim.cxxrtl`; the model is cached, so only the first run of a
  design compiles). Both implement `SimulationBackend` for a top with ``rx``/``tx`` byte
  streams and give identical replies, cycle for cycle.
* `SimulatedBus`: no frames -- every 32-bit load or store is one access on
  `hw.soc.soc.BusSoC`'s bus (a few cycles of pysim), the way a PCIe BAR reaches the device's
  bus.

Time is simulated cycles at the config's clock. Nothing here knows the host driver:
`sw.driver.sim` wraps these as its ``sim://`` transports (URL options, seconds, the driver's
exceptions), `sim.serve` relays a `SimulatedSoC` to a pty. Failures raise `SimulationStalled`
(the device did not take the bytes or complete the access in the cycles allowed),
`BusAccessRefused` (an access the frame engine would refuse, with its `Status`),
`sim.cxxrtl.BackendUnavailable` (``backend="cxxrtl"`` without its tools) or `ValueError` for a
bad parameter.
"""

import math
from collections import deque
from fractions import Fraction

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.soc.bridge import INITIATOR_READ_LATENCY
from hw.soc.protocol import MAX_PAYLOAD, WORD_BYTES, Status
from hw.soc.soc import BusSoC, SoC, SoCCore
from hw.soc.uart import FRAME_BITS, MIN_DIVISOR, UARTPhy

__all__ = ["SimulatedSoC", "SimulatedBus", "SimulationStalled", "BusAccessRefused",
           "SerialLineHarness", "SimulationBackend", "PysimBackend", "CxxrtlBackend", "LINES",
           "BACKENDS", "parse_divisor"]

LINES = ("bytes", "uart")           # the lines `SimulatedSoC` carries bytes over
_CHUNK_CYCLES = 16         # stop-condition granularity: small, so measured cycles are tight
_CXXRTL_CHUNK_CYCLES = 256  # a compiled run costs a ctypes call: check `stop` less often


class SimulationStalled(RuntimeError):
    """The simulated device did not take the bytes, or complete the access, in the cycles
    allowed."""


class BusAccessRefused(Exception):
    """A bus access the frame engine would refuse; `status` is the `Status` it would answer."""

    def __init__(self, message, *, status):
        super().__init__(message)
        self.status = status


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
    the byte streams are moved inside the C++ harness, `_CXXRTL_CHUNK_CYCLES` at a time.
    Raises `sim.cxxrtl.BackendUnavailable` when the C++ compiler or yosys is missing."""

    def __init__(self, top, *, clock_hz):
        from sim import cxxrtl
        self._simulator = cxxrtl.CxxrtlSimulator(top, name="sim_transport")
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


def parse_divisor(text):
    """Cycles per bit: a whole number or an exact fraction (``100/3``, the 85F's 100 MHz at
    3 Mbaud)."""
    value = Fraction(text)
    if value < MIN_DIVISOR:
        raise ValueError(f"must be at least {MIN_DIVISOR} cycles per bit")
    return value.numerator if value.denominator == 1 else value


class SimulatedSoC:
    """The simulated SoC as a byte pipe (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
    line : str
        ``"bytes"`` (SoCCore streams) or ``"uart"`` (serial pins at `divisor`).
    divisor : int or fractions.Fraction
        Cycles per bit on the simulated serial line (``line="uart"`` only), at least 4.
    max_payload, frame_timeout
        As for `hw.soc.soc.SoCCore`; frame_timeout None means 64 byte times.
    backend : str
        A key of `BACKENDS`.

    Attributes: `backend` (the `SimulationBackend`, whose ``cycles`` is the simulated time),
    `cycles_per_byte` on the line, `clock_hz`, `line`, `max_payload`, `frame_timeout`.
    """

    def __init__(self, *, config, line="bytes", divisor=MIN_DIVISOR, max_payload=MAX_PAYLOAD,
                 frame_timeout=None, backend="pysim"):
        if line not in LINES:
            raise ValueError(f"line must be one of {LINES}, not {line!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {sorted(BACKENDS)}, not {backend!r}")
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

    @property
    def cycles(self):
        """Cycles simulated so far."""
        return self.backend.cycles

    def send(self, data):
        """Put `data` on the line and return once the device has taken every byte (as a serial
        port's flush() does); `SimulationStalled` if it has not within twice the line time."""
        self.backend.push(data)
        budget = math.ceil(2 * (len(data) + 1) * self.cycles_per_byte) + self.max_payload + 64
        self.backend.run(budget, lambda: self.backend.pending() == 0)
        if self.backend.pending():
            raise SimulationStalled(f"The simulated device stopped taking bytes: "
                                    f"{self.backend.pending()} of {len(data)} still queued after "
                                    f"{budget} cycles")

    def receive(self, count, max_cycles):
        """Up to `count` bytes from the device, simulating at most `max_cycles` for them."""
        received = self.backend.received()
        self.backend.run(max_cycles, lambda: len(received) >= count)
        data = bytes(received[:count])
        del received[:count]
        return data

    def discard_received(self):
        """Drop the bytes the device sent and `receive` has not returned."""
        self.backend.received().clear()

    def reply_cycles(self, byte_count):
        """Cycles a reply of `byte_count` bytes may take: the device may first copy a whole
        staged payload, and answers a stalled frame only after `frame_timeout`."""
        return (self.frame_timeout + self.max_payload // WORD_BYTES + 64
                + 2 * (byte_count + 16) * self.cycles_per_byte)

    def close(self):
        self.backend.close()


class SimulatedBus:
    """The simulated SoC's word bus (`hw.soc.soc.BusSoC` in pysim), one access at a time.

    Each `read32`/`write32` is one bus access, run to completion before it returns: the strobe
    is driven for one cycle; a load's data is taken `hw.soc.bridge.INITIATOR_READ_LATENCY`
    cycles after it, a store is fire-and-forget (the bus keeps accesses in order). So an access
    takes 1 + INITIATOR_READ_LATENCY simulated cycles for a load, 2 for a store. Simulated time
    runs only during accesses, so a host polling the core's status registers is what lets the
    core compute.

    Accesses are checked against the SoC's `memory_map` first, as the frame engine checks a
    frame: unaligned or outside every window -> `BusAccessRefused` with status BAD_ADDRESS, a
    store into a read-only window -> READ_ONLY. (The bus itself would drop them silently.)

    Parameters
    ----------
    config : AcceleratorConfig
    """

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

    def _check(self, address, value):
        window = next((window for window in self.memory_map.windows
                       if window.base <= address < window.base + window.size), None)
        what = "Load from" if value is None else "Store to"
        if address % WORD_BYTES or window is None:
            windows = ", ".join(f"{w.name} {w.base:#x}+{w.size:#x}"
                                for w in self.memory_map.windows)
            raise BusAccessRefused(f"{what} {address:#x} refused: BAD_ADDRESS (not an aligned "
                                   f"word inside a window of the simulated SoC: {windows})",
                                   status=Status.BAD_ADDRESS)
        if value is not None and not window.writable:
            raise BusAccessRefused(f"{what} {address:#x} refused: READ_ONLY (the {window.name} "
                                   f"window is read-only)", status=Status.READ_ONLY)
        if value is not None and not (isinstance(value, int) and 0 <= value < 1 << 32):
            raise ValueError(f"A stored word must be an integer in 0..2^32-1, not {value!r}")

    def _run(self, address, value):
        self._check(address, value)
        self._access = (address // WORD_BYTES, value)
        # The testbench takes the access at the next edge and completes it 1 (store) or
        # INITIATOR_READ_LATENCY (load) edges after that.
        for _ in range(2 + INITIATOR_READ_LATENCY):
            self.cycles += 1
            self._simulator.run_until(self.cycles * self._period_fs / 1e15)
            if self._access is None:
                return self._loaded
        raise SimulationStalled(f"{'Load from' if value is None else 'Store to'} {address:#x}: "
                                f"the simulated bus did not complete the access")

    def read32(self, address):
        """The word at byte `address`."""
        return self._run(address, None)

    def write32(self, address, value):
        """Store the 32-bit `value` at byte `address`."""
        self._run(address, value)
