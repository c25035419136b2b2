"""The SoC: the host link (UART PHY, frame engine, bus) with its CSRs and the accelerator core.

::

    rx pin --> UARTPhy --rx bytes--> FrameEngine --bus--> BusDecoder --+--> CsrBlock.identity
    tx pin <--         <--tx bytes--             <--                   +--> CsrBlock.control
                                                                       +--> Core.control
                                                                       |    (core_control)
                                                                       +--> Core.scratchpad,
                                                                            accumulator, ...

Memory map (`memory_map`): the CSR windows and the core's register window (command register,
queue/error status, performance counters; `hw.core.isa`) in the first slot, then one 16 MiB slot
per core memory window (`protocol.CORE_MEMORY_WINDOWS`, from `protocol.SCRATCHPAD_BASE` on).
The identity registers report every window's base and the core's sizes, so the driver reads them
instead of assuming them. An access outside every window is answered BAD_ADDRESS by the frame
engine before it reaches the bus.

The core is built from the config (`hw.core.core_from_config`), so every constructor here
refuses a config whose dataflow the core cannot run -- anything but weight-stationary -- with a
`ValueError` naming what is supported and where output-stationary remains
(`hw.core.core.check_core_dataflow`).

`SoCCore` is everything from the byte streams inward (tests and the byte-level simulation
transport use it directly); `SoC` adds the UART PHY, joined to the frame engine through a
`hw.pipeline.SkidBuffer` each way, and has the serial pins as ports for the board top. Latency
and throughput are those of `hw.soc.framing.FrameEngine` (line rate both ways) plus the UART
PHY's (about 9.5 bit times from a start bit to the received byte) and a cycle per skid buffer;
every window follows the target contract of `hw.soc.bridge` (no wait states, read data
`bridge.TARGET_READ_LATENCY` cycles after the read) and the decoder registers the frame engine's
requests and the read data.

`BusSoC` is the same decoder, CSRs and core with the word bus as its port instead of the frame
engine -- what a memory-mapped host interface (a PCIe BAR) would drive. It has no frames, so it
does not check accesses: one outside every window is dropped (reads 0), as `BusDecoder` does, and
the initiator checks `memory_map` itself. Bus timing is the initiator side of `hw.soc.bridge`:
one access per cycle, read data `bridge.INITIATOR_READ_LATENCY` (7) cycles after the read,
writes fire-and-forget; the link counters stay 0.
"""

import math

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.core import core_from_config
from hw.pipeline import SkidBuffer
from hw.soc import protocol
from hw.soc.bridge import ADDRESS_WIDTH, Bus, BusDecoder, MemoryMap, Window, WindowKind
from hw.soc.csr import CsrBlock
from hw.soc.framing import FrameEngine
from hw.soc.uart import FRAME_BITS, UARTPhy

__all__ = ["SoC", "SoCCore", "BusSoC", "memory_map", "default_frame_timeout"]

_CORE_CONTROL = "core_control"      # the core's "control" port: the CSR block has a "control"


def default_frame_timeout(config):
    """Inter-byte silence that ends a frame: 10 ms (USB-serial adapters batch bytes) or 64 byte
    times at the config's baud rate, whichever is longer."""
    return max(config.clock_hz // 100, math.ceil(64 * FRAME_BITS * config.uart_divisor))


def _core_window_name(port):
    return _CORE_CONTROL if port == "control" else port


def memory_map(core):
    """The windows of a SoC around `core` (a `hw.core.Core`)."""
    windows = [
        Window("identity", protocol.CSR_BASE, protocol.WORD_BYTES * len(protocol.ID_REGISTERS),
               WindowKind.REGISTERS, writable=False),
        Window("control", protocol.CONTROL_BASE,
               protocol.WORD_BYTES * len(protocol.CONTROL_REGISTERS),
               WindowKind.REGISTERS, writable=True),
    ]
    for window in core.windows(0):
        if window.name == "control":
            base = protocol.CORE_CONTROL_BASE
            limit = protocol.CONTROL_BASE - protocol.CORE_CONTROL_BASE
        else:
            base = protocol.core_memory_base(window.name)
            limit = protocol.WINDOW_SLOT_BYTES
        if window.size > limit:
            raise ValueError(f"The core's {window.name} window ({window.size} bytes) does not fit "
                             f"its {limit}-byte address slot")
        windows.append(Window(_core_window_name(window.name), base, window.size, window.kind,
                              window.writable))
    return MemoryMap(windows)


def _constant_registers(config, max_payload, memory_map):
    return {
        "MAGIC": protocol.MAGIC,
        "VERSION": protocol.VERSION,
        "MAX_PAYLOAD": max_payload,
        "SCRATCHPAD_BASE": memory_map["scratchpad"].base,
        "SCRATCHPAD_BYTES": memory_map["scratchpad"].size,
        **protocol.encode_config(config),
        "CORE_CONTROL_BASE": memory_map[_CORE_CONTROL].base,
        **{f"{name.upper()}_BASE": memory_map[name].base
           for name in protocol.CORE_MEMORY_WINDOWS[1:]},
    }


def _build_targets(soc, *, config, max_payload):
    """Check the parameters and build `soc`'s core, memory map and CSR block (at construction,
    so bad parameters raise there, not at elaboration)."""
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
    soc.config = config
    soc.accelerator = core_from_config(config)
    soc.memory_map = memory_map(soc.accelerator)
    soc.max_payload = max_payload
    soc._csr = CsrBlock(constants=_constant_registers(config, max_payload, soc.memory_map))


def _add_targets(m, soc):
    """The decoder, CSR block and core of `soc` as submodules of `m`, every window wired;
    returns (decoder, csr) for the caller to drive the bus and the link events."""
    m.submodules.decoder = decoder = BusDecoder(memory_map=soc.memory_map)
    m.submodules.csr = csr = soc._csr
    m.submodules.accelerator = accelerator = soc.accelerator
    wiring.connect(m, decoder.identity, csr.identity)
    wiring.connect(m, decoder.control, csr.control)
    for port in accelerator.signature.members:
        wiring.connect(m, getattr(decoder, _core_window_name(port)), getattr(accelerator, port))
    return decoder, csr


class SoCCore(wiring.Component):
    """The SoC behind the UART PHY: byte streams in and out.

    Parameters
    ----------
    config : AcceleratorConfig
        The generated accelerator (reported in the CONFIG_* and CORE_* registers; builds the
        core).
    max_payload : int
        Largest frame payload (staging buffer size), a power of two up to `protocol.MAX_PAYLOAD`.
    frame_timeout : int or None
        Inter-byte silence in cycles that truncates a frame; None: `default_frame_timeout`.
    """

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))

    def __init__(self, *, config, max_payload=protocol.MAX_PAYLOAD, frame_timeout=None):
        _build_targets(self, config=config, max_payload=max_payload)
        self.frame_timeout = default_frame_timeout(config) if frame_timeout is None \
            else frame_timeout
        self._engine = FrameEngine(memory_map=self.memory_map, max_payload=max_payload,
                                   frame_timeout=self.frame_timeout)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self._engine
        decoder, csr = _add_targets(m, self)
        wiring.connect(m, wiring.flipped(self.rx), engine.rx)
        wiring.connect(m, engine.tx, wiring.flipped(self.tx))
        wiring.connect(m, engine.bus, decoder.bus)
        m.d.comb += [
            csr.frame_done.eq(engine.frame_done),
            csr.frame_status.eq(engine.frame_status),
            csr.byte_discarded.eq(engine.byte_discarded),
            csr.last_seq.eq(engine.last_seq),
        ]
        return m


class BusSoC(wiring.Component):
    """The SoC's targets (decoder, CSRs, core) with the word bus as the port: no frame engine.

    Parameters
    ----------
    config
        As for `SoCCore`.
    max_payload : int
        Reported in the MAX_PAYLOAD register. A mapped link has no frames; the default (the
        protocol's limit) does not throttle a driver that sizes its transfers by it.

    Ports
    -----
    bus : In(Bus(address_width=ADDRESS_WIDTH))
        Word addresses of the 32-bit byte address space (byte address // 4); timing: the
        initiator side of `hw.soc.bridge` (read data `INITIATOR_READ_LATENCY` cycles after the
        read). Accesses outside every window are dropped: check `memory_map`.
    """

    bus: In(Bus(address_width=ADDRESS_WIDTH))

    def __init__(self, *, config, max_payload=protocol.MAX_PAYLOAD):
        _build_targets(self, config=config, max_payload=max_payload)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        decoder, _ = _add_targets(m, self)
        wiring.connect(m, wiring.flipped(self.bus), decoder.bus)
        return m


class SoC(wiring.Component):
    """`SoCCore` behind the UART PHY, with the serial pins as ports.

    Parameters
    ----------
    config : AcceleratorConfig
    divisor : int, fractions.Fraction or None
        Clock cycles per UART bit; None: the config's exact ``uart_divisor`` (clock / baud).
    max_payload, frame_timeout
        As for `SoCCore`.

    Ports
    -----
    rx : In(1)
        Serial input from the host (idle high; asynchronous, synchronized in the PHY).
    tx : Out(1)
        Serial output to the host (idle high).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, *, config, divisor=None, max_payload=protocol.MAX_PAYLOAD,
                 frame_timeout=None):
        self.core = SoCCore(config=config, max_payload=max_payload, frame_timeout=frame_timeout)
        self.divisor = config.uart_divisor if divisor is None else divisor
        self._phy = UARTPhy(divisor=self.divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.phy = phy = self._phy
        m.submodules.core = core = self.core
        # Each byte stream crosses a skid buffer, so neither side's handshake logic reaches the
        # other (the PHY sits by the pins, the frame engine by the bus); a cycle each way.
        m.submodules.rx_slice = rx_slice = SkidBuffer(8)
        m.submodules.tx_slice = tx_slice = SkidBuffer(8)
        wiring.connect(m, phy.rx, rx_slice.i)
        wiring.connect(m, rx_slice.o, core.rx)
        wiring.connect(m, core.tx, tx_slice.i)
        wiring.connect(m, tx_slice.o, phy.tx)
        m.d.comb += [phy.rxd.eq(self.rx), self.tx.eq(phy.txd)]
        return m
