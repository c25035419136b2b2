"""The link's bus: a 32-bit word bus, its address windows, a decoder and a memory-backed target.

The frame engine (`hw.soc.framing`) is the only initiator. Every target -- CSR windows, the
scratchpad stand-in today, the core's memories and command queue later -- is one `Window` of the
`MemoryMap` and gets its own `Bus` port from the `BusDecoder`, with addresses relative to the
window. Adding a target is adding a window: the frame engine checks accesses against the same
map, so an access outside every window is refused before it reaches the bus and never aliases.

Bus timing (fixed latency, no wait states; a target that needs flow control exposes it in its
registers)::

    clk         _/‾\\_/‾\\_/‾\\_/‾\\_
    address     < A0 >< A1 >
    read        /‾‾‾‾‾‾‾‾‾‾\\_____
    read_data         < D0 >< D1 >     one cycle after the read, like a synchronous RAM port
    write       (write_data is taken in the cycle write is high)

The decoder adds no latency: it routes the strobes combinationally and selects ``read_data`` by
the window registered with the read.
"""

import dataclasses

from amaranth.hdl import Module, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.soc.protocol import Status, WORD_BYTES

__all__ = ["Bus", "WindowKind", "Window", "MemoryMap", "BusDecoder", "MemoryTarget",
           "ADDRESS_WIDTH"]

ADDRESS_WIDTH = 32 - 2      # word addresses of the 32-bit byte address space


class Bus(wiring.Signature):
    """A fixed-latency word bus, seen from the initiator."""

    def __init__(self, *, address_width):
        if not isinstance(address_width, int) or not 0 <= address_width <= ADDRESS_WIDTH:
            raise ValueError(f"address_width must be an integer in 0..{ADDRESS_WIDTH}, "
                             f"not {address_width!r}")
        self.address_width = address_width
        super().__init__({
            "address": Out(address_width),
            "read": Out(1),
            "read_data": In(32),
            "write": Out(1),
            "write_data": Out(32),
        })

    def __eq__(self, other):
        return isinstance(other, Bus) and other.address_width == self.address_width

    def __repr__(self):
        return f"Bus(address_width={self.address_width})"


class WindowKind(enum.Enum, shape=1):
    REGISTERS = 0       # reached by READ_REGISTERS / WRITE_REGISTERS
    MEMORY = 1          # reached by BULK_READ / BULK_WRITE


@dataclasses.dataclass(frozen=True)
class Window:
    """A byte range of the address space served by one bus target."""
    name: str
    base: int
    size: int
    kind: WindowKind
    writable: bool

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Window name must be a Python identifier, not {self.name!r}")
        for field in ("base", "size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value % WORD_BYTES:
                raise ValueError(f"Window {self.name!r} {field} must be an integer multiple of "
                                 f"{WORD_BYTES}, not {value!r}")
        if self.size <= 0 or not 0 <= self.base <= self.base + self.size <= 1 << 32:
            raise ValueError(f"Window {self.name!r} must be a non-empty range inside the 32-bit "
                             f"address space, not base={self.base:#x} size={self.size:#x}")
        if not isinstance(self.kind, WindowKind):
            raise TypeError(f"Window {self.name!r} kind must be a WindowKind, not {self.kind!r}")

    @property
    def words(self):
        return self.size // WORD_BYTES

    @property
    def address_width(self):
        return max(1, (self.words - 1).bit_length())


class MemoryMap:
    """Non-overlapping windows, in address order."""

    def __init__(self, windows):
        windows = tuple(windows)
        if not windows or not all(isinstance(window, Window) for window in windows):
            raise TypeError(f"windows must be a non-empty sequence of Window, not {windows!r}")
        names = [window.name for window in windows]
        if len(set(names)) != len(names):
            raise ValueError(f"Window names must be unique, not {names}")
        self.windows = tuple(sorted(windows, key=lambda window: window.base))
        for low, high in zip(self.windows, self.windows[1:]):
            if low.base + low.size > high.base:
                raise ValueError(f"Windows {low.name!r} ({low.base:#x}+{low.size:#x}) and "
                                 f"{high.name!r} ({high.base:#x}) overlap")

    def __getitem__(self, name):
        for window in self.windows:
            if window.name == name:
                return window
        raise KeyError(f"No window {name!r}; windows are {[w.name for w in self.windows]}")

    def access_status(self, m, *, address, length, write, kind):
        """Logic giving the `Status` of an access: OK, BAD_ADDRESS or READ_ONLY.

        `address` is a 32-bit byte address, `length` a byte count (already checked non-zero),
        `write` a 1-bit value, `kind` a `WindowKind` value. The whole range must lie in one window
        of that kind; comparisons use the full address, so nothing aliases."""
        status = Signal(Status)
        end = Signal(33)
        m.d.comb += [end.eq(address + length), status.eq(Status.BAD_ADDRESS)]
        with m.If(address[:2] == 0):
            for window in self.windows:
                inside = (address >= window.base) & (end <= window.base + window.size)
                with m.If(inside & (kind == window.kind)):
                    if window.writable:
                        m.d.comb += status.eq(Status.OK)
                    else:
                        m.d.comb += status.eq(Status.READ_ONLY)
                        with m.If(~write):
                            m.d.comb += status.eq(Status.OK)
        return status


class BusDecoder(wiring.Component):
    """Routes the initiator's `bus` to one port per window (named after it), relative addresses.

    An address outside every window selects nothing: writes are dropped, reads return 0."""

    def __init__(self, *, memory_map):
        if not isinstance(memory_map, MemoryMap):
            raise TypeError(f"memory_map must be a MemoryMap, not {memory_map!r}")
        self.memory_map = memory_map
        super().__init__({
            "bus": In(Bus(address_width=ADDRESS_WIDTH)),
            **{window.name: Out(Bus(address_width=window.address_width))
               for window in memory_map.windows},
        })

    def elaborate(self, platform):
        m = Module()
        selected_for_read = Signal(len(self.memory_map.windows))
        for index, window in enumerate(self.memory_map.windows):
            target = getattr(self, window.name)
            first = window.base // WORD_BYTES
            selected = (self.bus.address >= first) & (self.bus.address < first + window.words)
            m.d.comb += [
                target.address.eq(self.bus.address - first),
                target.write_data.eq(self.bus.write_data),
                target.write.eq(self.bus.write & selected),
                target.read.eq(self.bus.read & selected),
            ]
            m.d.sync += selected_for_read[index].eq(self.bus.read & selected)
            with m.If(selected_for_read[index]):
                m.d.comb += self.bus.read_data.eq(target.read_data)
        return m


class MemoryTarget(wiring.Component):
    """A bus target backed by `amaranth.lib.memory.Memory` (32-bit words, `depth` of them)."""

    def __init__(self, *, depth):
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a positive number of words, not {depth!r}")
        self.depth = depth
        super().__init__({"bus": In(Bus(address_width=max(1, (depth - 1).bit_length())))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = Memory(shape=32, depth=self.depth, init=[])
        read_port = memory.read_port()
        write_port = memory.write_port()
        m.d.comb += [
            read_port.addr.eq(self.bus.address),
            read_port.en.eq(self.bus.read),
            self.bus.read_data.eq(read_port.data),
            write_port.addr.eq(self.bus.address),
            write_port.data.eq(self.bus.write_data),
            write_port.en.eq(self.bus.write),
        ]
        return m
