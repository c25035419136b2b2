"""The link's bus: a 32-bit word bus, its address windows and the decoder that routes it.

The frame engine (`hw.soc.framing`) is the only initiator (`hw.soc.soc.BusSoC` exposes the same
bus for a memory-mapped host interface). Every target -- CSR windows, the core's memories and
registers -- is one `Window` of the `MemoryMap` and gets its own `Bus` port from the
`BusDecoder`, with addresses relative to the window. Adding a target is adding a window: the
frame engine checks accesses against the same map, so an access outside every window is refused
before it reaches the bus and never aliases.

Bus timing: fixed latency, one access per cycle, no wait states (a target that needs flow control
exposes it in its registers). Writes are fire-and-forget; accesses take effect in order.

Target side (every window port)::

    clk         _/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_
    address     < A0 >< A1 >
    read        /‾‾‾‾‾‾‾‾‾‾\\_______________
    read_data                                 < D0 >< D1 >   TARGET_READ_LATENCY = 5 cycles after
    write       (write_data is taken in the cycle write is high)

  ``read_data`` is a flip-flop, never a RAM, a mux or deeper logic: a window registers the RAM's
  read data (clock-to-out ~5.6 ns on ECP5) before its word mux and selects the word in two
  registered levels, in each group of 8 words, then the group (`memory_read_data`; a read port
  that already ends in a data register gets only the word muxes and their registers); a register
  window registers the address (a copy per group of 8 registers), then the value selected in
  each group, then the group's (`register_read_data`); both delay the result to the common
  latency.

Initiator side (the decoder's ``bus``)::

    address, write_data ----------reg--> target.address, write_data
    read, write --> window decode --reg--> target.read, write
                                   target.read_data --(5 cycles)--> AND-OR --reg--> read_data
    read_data valid INITIATOR_READ_LATENCY = 7 cycles after the read; a write reaches its
    target one cycle after the initiator drives it.

The decoder registers the initiator's request and the read data, so no initiator logic reaches
a target and no target logic reaches the initiator in one cycle: the strobes are registered per
window, already decoded (the decode -- an equality on the address bits above an aligned window
-- is in the initiator's cycle, so a target's strobes are flip-flops), and ``read_data`` is the
register of the AND-OR of the targets' read data, each gated by its window's read strobe
delayed TARGET_READ_LATENCY cycles. That AND-OR, with the long nets from every target to it,
gets a cycle of its own.
"""

import dataclasses

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from hw.pipeline import delayed
from hw.synthesis import UNMERGED_REGISTER
from hw.soc.protocol import Status, WORD_BYTES

__all__ = ["Bus", "WindowKind", "Window", "MemoryMap", "BusDecoder", "register_read_data",
           "memory_read_data", "ADDRESS_WIDTH", "TARGET_READ_LATENCY", "INITIATOR_READ_LATENCY"]

ADDRESS_WIDTH = 32 - 2      # word addresses of the 32-bit byte address space
TARGET_READ_LATENCY = 5     # a window port's read_data, in cycles after its read
# + the decoder's request register and its read-data register
INITIATOR_READ_LATENCY = 1 + TARGET_READ_LATENCY + 1


class Bus(wiring.Signature):
    """A fixed-latency word bus, seen from the initiator (timing: module docstring)."""

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
        of that kind; comparisons use the full address, so nothing aliases.

        Latency 2, registered in two stages (the range's end and the window bases compared,
        then the window ends compared and the status chosen): the status is valid from the
        second cycle after the inputs settle, for as long as they hold."""
        end = Signal(33)
        candidate = Signal(len(self.windows))   # aligned, right kind, at or above its base
        m.d.sync += [
            end.eq(address + length),
            candidate.eq(Cat((address[:2] == 0) & (kind == window.kind) & (address >= window.base)
                             for window in self.windows)),
        ]
        # Windows do not overlap: at most one is hit, so the status is chosen by two ORs.
        hit = [candidate[index] & (end <= window.base + window.size)
               for index, window in enumerate(self.windows)]
        any_hit = Cat(*hit).any()
        allowed = Cat(hit[index] for index, window in enumerate(self.windows)
                      if window.writable).any() | (any_hit & ~write)
        status = Signal(Status)
        m.d.sync += status.eq(Mux(allowed, Status.OK,
                                  Mux(any_hit, Status.READ_ONLY, Status.BAD_ADDRESS)))
        return status


class BusDecoder(wiring.Component):
    """Routes the initiator's `bus` to one port per window (named after it), relative addresses.

    Latency: the request is registered (decoded: a read and a write strobe per window), so a
    target sees an access one cycle after the initiator drives it; the selected read data is
    registered again, so the initiator sees it `INITIATOR_READ_LATENCY` cycles after its read.
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
        address = Signal(ADDRESS_WIDTH)
        write_data = Signal(32)
        m.d.sync += [address.eq(self.bus.address), write_data.eq(self.bus.write_data)]
        terms = []
        for window in self.memory_map.windows:
            target = getattr(self, window.name)
            write = Signal(name=f"{window.name}_write")
            # Stage 0 is the target's read strobe, the last stage its read_data cycle.
            read = Signal(1 + TARGET_READ_LATENCY, name=f"{window.name}_read")
            selected = _inside(self.bus.address, window)
            m.d.sync += [write.eq(self.bus.write & selected),
                         read.eq(Cat(self.bus.read & selected, read[:-1]))]
            m.d.comb += [
                target.address.eq(_offset(address, window)),
                target.write_data.eq(write_data),
                target.write.eq(write),
                target.read.eq(read[0]),
            ]
            terms.append(target.read_data & read[-1].replicate(32))
        # Windows do not overlap, so at most one term is non-zero: an AND-OR, no priority,
        # written as a balanced tree.
        while len(terms) > 1:
            terms = [terms[i] | terms[i + 1] if i + 1 < len(terms) else terms[i]
                     for i in range(0, len(terms), 2)]
        m.d.sync += self.bus.read_data.eq(terms[0])
        return m


def _aligned(window):
    return (window.base // WORD_BYTES) % (1 << window.address_width) == 0


def _inside(address, window):
    """Whether word `address` lies in `window`: for a window aligned to its address bits (every
    window of the SoC) an equality on the bits above them, no carry chain."""
    first, width = window.base // WORD_BYTES, window.address_width
    if not _aligned(window):
        return (address >= first) & (address < first + window.words)
    inside = address[width:] == first >> width
    return inside if window.words == 1 << width else inside & (address[:width] < window.words)


def _offset(address, window):
    """Word `address` relative to `window` (a bit slice when the window is aligned)."""
    if not _aligned(window):
        return address - window.base // WORD_BYTES
    return address[:window.address_width]


def _deliver(m, bus, value, cycle):
    """``read_data`` is `value`, a register valid `cycle` cycles after the read, delayed to
    `TARGET_READ_LATENCY`."""
    m.d.comb += bus.read_data.eq(delayed(m, value, TARGET_READ_LATENCY - cycle,
                                         name=f"{bus.read_data.name}_delayed", reset_less=True))


_GROUP_BITS = 3     # values per first-level read multiplexer: 8


def _registered_select(m, target, index, values):
    """``target`` <- ``values[index]`` (a dict of values by index; 0 for any other index), in
    ``m.d.sync``. A zero-width `index` selects ``values[0]`` without a Switch (CXXRTL never
    matches the case of a Switch on a zero-width value)."""
    if len(index) == 0:
        m.d.sync += target.eq(values.get(0, 0))
        return
    with m.Switch(index):
        for key, value in values.items():
            with m.Case(key):
                m.d.sync += target.eq(value)
        with m.Default():
            m.d.sync += target.eq(0)


def _select_in_two_levels(m, index, values, *, name):
    """A 32-bit register holding ``values[index]`` (0 for an index without a value) three cycles
    after `index`: each group of 8 values registers its own copy of the offset in the group (so
    no index register drives every group's multiplexer across the die), then the value it selects
    (values sampled one cycle after `index`), then the addressed group's value is registered."""
    groups = {}
    for key, value in values.items():
        group, offset = divmod(key, 1 << _GROUP_BITS)
        groups.setdefault(group, {})[offset] = value
    in_group = index[:_GROUP_BITS]
    group_values = {}
    for group, members in groups.items():
        local_offset = Signal(len(in_group), name=f"{name}_offset_{group}",
                              attrs=UNMERGED_REGISTER)
        m.d.sync += local_offset.eq(in_group)
        group_values[group] = Signal(32, name=f"{name}_group_{group}")
        _registered_select(m, group_values[group], local_offset, members)
    selected = Signal(32, name=f"{name}_selected")
    _registered_select(m, selected, delayed(m, index[_GROUP_BITS:], 2, name=f"{name}_group"),
                       group_values)
    return selected


def register_read_data(m, bus, values):
    """Serve reads of a register window on target port `bus` (the `In(Bus)` of a component):
    `values` maps word addresses to values (any other address reads 0). Each group of 8
    consecutive addresses registers the address with the read and, in the next cycle, the value
    it holds there (so a live value is sampled the cycle after the read); in the one after, the
    addressed group's value is registered, then delayed to `TARGET_READ_LATENCY` (two
    multiplexer levels of at most 8 inputs, each ending at flip-flops, instead of one over every
    register)."""
    selected = _select_in_two_levels(m, bus.address, values, name=bus.read_data.name)
    _deliver(m, bus, selected, 3)


def memory_read_data(m, bus, *, row, word, row_latency=1):
    """Serve reads of a memory window on target port `bus`: the window drives its memory's read
    port from the read (cycle t); `row` is that port's read data, valid at t + `row_latency`;
    `word` is the index of the addressed 32-bit word of the row (at t). The word is selected
    from a registered row in two registered multiplexer levels (groups of 8 words, then the
    group), then delayed to `TARGET_READ_LATENCY`; a word index past the row reads 0.

    `row_latency` 1 -- `row` comes from a RAM (at most a 2:1 mux of ports after it): it is
    registered as it comes out (t+2), and the word selected from that register is registered
    at t+3 (in its group) and t+4.
    `row_latency` 3 -- `row` already comes from the port's data registers (at most a 2:1 mux
    after them): the word selected from it is registered at t+4 and t+5."""
    if row_latency not in (1, 3):
        raise ValueError(f"row_latency must be 1 (a RAM read port) or 3 (a port with address "
                         f"and data registers), not {row_latency!r}")
    if row_latency == 1:
        registered_row = Signal(len(row), name=f"{bus.read_data.name}_row")
        m.d.sync += registered_row.eq(row)
        row, row_latency = registered_row, 2
    word = delayed(m, word, row_latency - 1, name=f"{bus.read_data.name}_word")
    selected = _select_in_two_levels(
        m, word, {index: row[32 * index:32 * index + 32] for index in range(-(-len(row) // 32))},
        name=bus.read_data.name)
    _deliver(m, bus, selected, row_latency + 2)
