"""A simulator-like front end for a compiled CXXRTL model, driven through ctypes.

Cycle model (one ``sync``-style clock domain, rising edge): ``set`` inputs, ``get`` outputs (the
model settles first, so combinational outputs already reflect the inputs), then ``step()``. This is
exactly what an Amaranth async testbench sees doing ``ctx.set``, ``ctx.get``, ``await ctx.tick()``,
so the same stimulus gives the same values cycle by cycle in both simulators.

Per-cycle ``set``/``get``/``step`` from Python costs a few ctypes calls each; for throughput use
`run_streams`, `run_until` and `step(n)`, which run whole transfers inside the C++ harness.
"""

import ctypes
import random

from .. import harness as pysim_harness
from .toolchain import DEFAULT_CXXFLAGS, Model, build

__all__ = ["CxxrtlSimulator", "SimulationTimeout", "StreamRun"]


class SimulationTimeout(TimeoutError):
    """A run did not finish within its cycle limit; `partial` holds what it got so far."""

    def __init__(self, message, partial):
        super().__init__(message)
        self.partial = partial


class _Object(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("width", ctypes.c_size_t),
        ("lsb_at", ctypes.c_size_t),
        ("depth", ctypes.c_size_t),
        ("zero_at", ctypes.c_size_t),
        ("curr", ctypes.POINTER(ctypes.c_uint32)),
        ("next", ctypes.POINTER(ctypes.c_uint32)),
        ("outline", ctypes.c_void_p),
        ("attrs", ctypes.c_void_p),
    ]


class _Source(ctypes.Structure):
    _fields_ = [
        ("valid", ctypes.POINTER(_Object)),
        ("ready", ctypes.POINTER(_Object)),
        ("payload", ctypes.POINTER(_Object)),
        ("items", ctypes.POINTER(ctypes.c_uint32)),
        ("count", ctypes.c_uint64),
        ("gap_probability", ctypes.c_double),
        ("sent", ctypes.c_uint64),
        ("presenting", ctypes.c_int),
    ]


class _Sink(ctypes.Structure):
    _fields_ = [
        ("valid", ctypes.POINTER(_Object)),
        ("ready", ctypes.POINTER(_Object)),
        ("payload", ctypes.POINTER(_Object)),
        ("items", ctypes.POINTER(ctypes.c_uint32)),
        ("capacity", ctypes.c_uint64),
        ("wanted", ctypes.c_uint64),
        ("stall_probability", ctypes.c_double),
        ("received", ctypes.c_uint64),
    ]


def _bind(library):
    lib = ctypes.CDLL(str(library))
    sim_p = ctypes.c_void_p
    signatures = {
        "ecpnn_sim_create": (sim_p, [ctypes.c_char_p]),
        "ecpnn_sim_destroy": (None, [sim_p]),
        "ecpnn_sim_handle": (ctypes.c_void_p, [sim_p]),
        "ecpnn_sim_vcd_open": (ctypes.c_int, [sim_p, ctypes.c_char_p, ctypes.c_uint64]),
        "ecpnn_sim_settle": (None, [sim_p]),
        "ecpnn_sim_cycles": (ctypes.c_uint64, [sim_p]),
        "ecpnn_sim_tick": (None, [sim_p, ctypes.c_uint64]),
        "ecpnn_sim_run_until": (ctypes.c_int64, [sim_p, ctypes.POINTER(_Object),
                                                 ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint64]),
        "ecpnn_sim_run_streams": (ctypes.c_int, [sim_p, ctypes.POINTER(_Source), ctypes.c_size_t,
                                                 ctypes.POINTER(_Sink), ctypes.c_size_t,
                                                 ctypes.c_uint64, ctypes.c_uint64,
                                                 ctypes.POINTER(ctypes.c_uint64)]),
        "cxxrtl_get_parts": (ctypes.POINTER(_Object), [ctypes.c_void_p, ctypes.c_char_p,
                                                      ctypes.POINTER(ctypes.c_size_t)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def _words(width):
    return (width + 31) // 32


class StreamRun:
    """Result of `CxxrtlSimulator.run_streams`: payloads per sink, items sent per source, cycles."""

    def __init__(self, received, sent, cycles, complete):
        self.received = received
        self.sent = sent
        self.cycles = cycles
        self.complete = complete

    def __repr__(self):
        counts = {name: len(items) for name, items in self.received.items()}
        return (f"StreamRun(received={counts}, sent={self.sent}, cycles={self.cycles}, "
                f"complete={self.complete})")


class CxxrtlSimulator:
    """Compiled simulation of `design` (an elaboratable; a `wiring.Component` needs no `ports`).

    `design` may also be a `Model` returned by `sim.cxxrtl.build` (`toolchain.build`), to start several independent
    simulations of one design without converting it again.

    Parameters
    ----------
    domain : str
        The clock domain stepped by `step` (its ``clk``/``rst`` ports); a purely combinational
        design has neither and `step` only advances the cycle count.
    vcd_path : str or None
        Write a VCD of every signal here. When None, ``$ECPNN_VCD/<name>.vcd`` is used if the
        ``ECPNN_VCD`` environment variable is set (as in `sim.harness.run`).
    cache_dir, compiler, cxxflags, yosys
        Passed to `sim.cxxrtl.build` (see `sim.cxxrtl.toolchain`).

    Use as a context manager (or call `close`) so the VCD file is completed.
    """

    def __init__(self, design, *, ports=None, domain="sync", vcd_path=None, name="cxxrtl",
                 cache_dir=None, compiler=None, cxxflags=DEFAULT_CXXFLAGS, yosys=None):
        if not isinstance(domain, str) or not domain:
            raise TypeError(f"domain must be a non-empty string, not {domain!r}")
        if isinstance(design, Model):
            self.model = design
        else:
            self.model = build(design, ports=ports, cache_dir=cache_dir, compiler=compiler,
                               cxxflags=cxxflags, yosys=yosys)
        self.ports = self.model.ports
        prefix = "" if domain == "sync" else f"{domain}_"
        self._clock = prefix + "clk" if prefix + "clk" in self.ports else None
        self._reset = prefix + "rst" if prefix + "rst" in self.ports else None
        self._lib = _bind(self.model.library)
        self._sim = self._lib.ecpnn_sim_create(self._clock.encode() if self._clock else None)
        self._handle = self._lib.ecpnn_sim_handle(self._sim)
        self._objects = {}
        self._unsettled = False
        self._offering = {}                 # stream source prefixes left with valid asserted
        self._rng = random.Random(0)
        path = vcd_path if vcd_path is not None else pysim_harness.vcd_path(name)
        if path is not None:
            half_period_ps = round(pysim_harness.CLOCK_PERIOD * 1e12 / 2)
            if self._lib.ecpnn_sim_vcd_open(self._sim, str(path).encode(), half_period_ps):
                self.close()
                raise OSError(f"Cannot open VCD file {path!r} for writing")
        self.vcd_path = path

    # Lifetime ------------------------------------------------------------------------------------

    def close(self):
        if self._sim:
            self._lib.ecpnn_sim_destroy(self._sim)
            self._sim = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        if getattr(self, "_sim", None):
            self.close()

    # Ports ---------------------------------------------------------------------------------------

    @staticmethod
    def _name(name):
        return "__".join(name) if isinstance(name, tuple) else name

    def _object(self, name):
        name = self._name(name)
        try:
            return self._objects[name]
        except KeyError:
            pass
        parts = ctypes.c_size_t(0)
        pointer = self._lib.cxxrtl_get_parts(self._handle, name.encode(), ctypes.byref(parts))
        if not pointer:
            known = ", ".join(sorted(self.ports))
            raise KeyError(f"No signal {name!r} in the simulated design; its ports are: {known}")
        if parts.value != 1:
            raise ValueError(f"Signal {name!r} is split into {parts.value} parts; only whole "
                             f"signals can be accessed")
        self._objects[name] = pointer
        return pointer

    def _input(self, name):
        port = self.ports.get(self._name(name))
        if port is None or port.direction == "output":
            inputs = ", ".join(sorted(n for n, p in self.ports.items() if p.direction != "output"))
            raise KeyError(f"{self._name(name)!r} is not an input port; inputs are: {inputs}")
        return port, self._object(name)

    def _settle(self):
        if self._unsettled:
            self._lib.ecpnn_sim_settle(self._sim)
            self._unsettled = False

    def set(self, name, value):
        """Drive input port `name` (RTLIL name like ``"i__valid"`` or a path ``("i", "valid")``)."""
        port, pointer = self._input(name)
        if not isinstance(value, int):
            raise TypeError(f"Value for {port.name!r} must be an integer, not {value!r}")
        # Raw bit patterns and two's complement are both accepted, whatever the port's sign.
        low, high = -(1 << (port.width - 1)), (1 << port.width) - 1
        if not low <= value <= high:
            raise ValueError(f"Value {value} does not fit port {port.name!r} of width "
                             f"{port.width} (allowed {low}..{high})")
        value &= (1 << port.width) - 1
        target = pointer.contents.next
        for index in range(_words(port.width)):
            target[index] = (value >> (32 * index)) & 0xFFFF_FFFF
        self._unsettled = True

    def get(self, name):
        """Current value of a port (signed ports read as negative numbers) or any other signal
        by its CXXRTL hierarchical name (``"sub cnt"``, read as unsigned)."""
        name = self._name(name)
        pointer = self._object(name)
        self._settle()
        width = pointer.contents.width
        source = pointer.contents.curr
        value = 0
        for index in range(_words(width)):
            value |= source[index] << (32 * index)
        port = self.ports.get(name)
        if port is not None and port.signed and value >> (width - 1):
            value -= 1 << width
        return value

    # Time ----------------------------------------------------------------------------------------

    @property
    def cycles(self):
        """Clock cycles simulated so far."""
        return self._lib.ecpnn_sim_cycles(self._sim)

    def step(self, cycles=1):
        """Advance `cycles` rising edges of the clock, keeping the inputs as they are."""
        if not isinstance(cycles, int) or cycles < 0:
            raise ValueError(f"cycles must be a non-negative integer, not {cycles!r}")
        self._lib.ecpnn_sim_tick(self._sim, cycles)
        self._unsettled = False

    def reset(self, cycles=1):
        """Assert the domain's synchronous reset for `cycles` clock cycles."""
        if self._reset is None:
            raise ValueError("The design has no reset port for this clock domain")
        self.set(self._reset, 1)
        self.step(cycles)
        self.set(self._reset, 0)

    def run_until(self, name, value=1, *, max_cycles=1_000_000):
        """Step until signal `name` equals `value` (checked before each clock edge).

        Returns the number of cycles stepped; raises `SimulationTimeout` after `max_cycles`.
        """
        pointer = self._object(name)
        width = pointer.contents.width
        value &= (1 << width) - 1
        words = (ctypes.c_uint32 * _words(width))(
            *((value >> (32 * i)) & 0xFFFF_FFFF for i in range(_words(width))))
        taken = self._lib.ecpnn_sim_run_until(self._sim, pointer, words, max_cycles)
        self._unsettled = False
        if taken < 0:
            raise SimulationTimeout(f"{self._name(name)!r} did not become {value} within "
                                    f"{max_cycles} cycles", max_cycles)
        return taken

    # Streams -------------------------------------------------------------------------------------

    def _stream_objects(self, prefix):
        prefix = self._name(prefix)
        try:
            return tuple(self._object(f"{prefix}__{member}") for member in ("valid", "ready", "payload"))
        except KeyError:
            raise KeyError(f"No stream {prefix!r}: expected ports {prefix}__valid, "
                           f"{prefix}__ready and {prefix}__payload") from None

    def run_streams(self, sources=None, sinks=None, *, gap_probability=0.0, stall_probability=0.0,
                    max_cycles=1_000_000, seed=None, allow_timeout=False):
        """Move data through stream ports inside the compiled harness.

        `sources` maps a stream port prefix (``"i"``) to the payloads (integers) to send; `sinks`
        maps a prefix to how many payloads to receive, or None to collect whatever arrives until
        `max_cycles`. A source pauses before each item with `gap_probability`; a sink refuses a
        cycle with `stall_probability` (valid is held while ready is low, as streams require).
        Runs until every source is drained and every counted sink is full. Raises
        `SimulationTimeout` if that does not happen within `max_cycles`, unless `allow_timeout`;
        returns a `StreamRun`.

        An item still on offer when a run stops stays on offer (a stream may not withdraw it):
        continue by passing the unsent rest (``payloads[run.sent[prefix]:]``) to the next call.
        """
        sources = dict(sources or {})
        sinks = dict(sinks or {})
        for name, probability in (("gap_probability", gap_probability),
                                  ("stall_probability", stall_probability)):
            if not 0.0 <= probability < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {probability!r}")
        if not isinstance(max_cycles, int) or max_cycles < 0:
            raise ValueError(f"max_cycles must be a non-negative integer, not {max_cycles!r}")

        source_array = (_Source * max(1, len(sources)))()
        keep_alive = []
        for slot, (prefix, payloads) in zip(source_array, sources.items()):
            valid, ready, payload = self._stream_objects(prefix)
            width = payload.contents.width
            item_bytes = 4 * _words(width)
            mask = (1 << width) - 1
            packed = b"".join((int(item) & mask).to_bytes(item_bytes, "little")
                              for item in payloads)
            buffer = (ctypes.c_uint32 * max(1, len(packed) // 4)).from_buffer_copy(
                packed.ljust(4, b"\0"))
            keep_alive.append(buffer)
            slot.valid, slot.ready, slot.payload = valid, ready, payload
            slot.items = buffer
            slot.count = len(payloads)
            slot.gap_probability = gap_probability
            slot.presenting = self._offering.pop(self._name(prefix), False) and len(payloads) > 0

        sink_array = (_Sink * max(1, len(sinks)))()
        for slot, (prefix, count) in zip(sink_array, sinks.items()):
            valid, ready, payload = self._stream_objects(prefix)
            capacity = max_cycles if count is None else count
            buffer = (ctypes.c_uint32 * max(1, capacity * _words(payload.contents.width)))()
            keep_alive.append(buffer)
            slot.valid, slot.ready, slot.payload = valid, ready, payload
            slot.items = buffer
            slot.capacity = capacity
            slot.wanted = 0 if count is None else count
            slot.stall_probability = stall_probability

        if seed is None:
            seed = self._rng.getrandbits(64)
        cycles = ctypes.c_uint64(0)
        complete = self._lib.ecpnn_sim_run_streams(
            self._sim, source_array, len(sources), sink_array, len(sinks), max_cycles, seed,
            ctypes.byref(cycles))
        self._unsettled = False

        received = {}
        for slot, prefix in zip(sink_array, sinks):
            port = self.ports.get(f"{self._name(prefix)}__payload")
            width = slot.payload.contents.width
            item_bytes = 4 * _words(width)
            raw = ctypes.string_at(slot.items, slot.received * item_bytes)
            items = [int.from_bytes(raw[start:start + item_bytes], "little")
                     for start in range(0, len(raw), item_bytes)]
            if port is not None and port.signed:
                sign = 1 << (width - 1)
                items = [(item ^ sign) - sign for item in items]
            received[prefix] = items
        for slot, prefix in zip(source_array, sources):
            if slot.presenting:
                self._offering[self._name(prefix)] = True
        sent = {prefix: slot.sent for slot, prefix in zip(source_array, sources)}
        result = StreamRun(received, sent, cycles.value, bool(complete))
        unbounded = any(count is None for count in sinks.values())
        drained = all(sent[prefix] == len(payloads) for prefix, payloads in sources.items())
        if not (complete or (unbounded and drained) or allow_timeout):
            raise SimulationTimeout(f"Streams did not finish within {max_cycles} cycles: {result}",
                                    result)
        return result

    def run_stream(self, source=None, payloads=(), sink=None, count=None, **kwargs):
        """One source and/or one sink: send `payloads` into `source`, return the list of payloads
        received on `sink` (`count` of them, or all that arrive when `count` is None)."""
        result = self.run_streams({source: list(payloads)} if source is not None else {},
                                  {sink: count} if sink is not None else {}, **kwargs)
        return result.received.get(sink, [])
