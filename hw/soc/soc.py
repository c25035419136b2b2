"""The SoC: the host link (UART PHY, frame engine, bus) with its CSRs and a scratchpad window.

::

    rx pin --> UARTPhy --rx bytes--> FrameEngine --bus--> BusDecoder --+--> CsrBlock.identity
    tx pin <--         <--tx bytes--             <--                   +--> CsrBlock.control
                                                                       +--> scratchpad (Memory)

`SoCCore` is everything from the byte streams inward (tests and the byte-level simulation
transport use it directly); `SoC` adds the UART PHY and has the serial pins as ports for the board
top. The scratchpad window is a `MemoryTarget` stand-in sized like the config's scratchpad
(``scratchpad_rows * max(rows, cols)`` bytes); the core's memories and command queue will replace
it as more windows of `memory_map`.

Latency and throughput are those of `hw.soc.framing.FrameEngine` (line rate both ways) plus the
UART PHY's (about 9.5 bit times from a start bit to the received byte).
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.soc import protocol
from hw.soc.bridge import BusDecoder, MemoryMap, MemoryTarget, Window, WindowKind
from hw.soc.csr import CsrBlock
from hw.soc.framing import FrameEngine
from hw.soc.uart import UARTPhy

__all__ = ["SoC", "SoCCore", "memory_map", "scratchpad_bytes", "default_frame_timeout"]


def scratchpad_bytes(config):
    return config.scratchpad_rows * max(config.rows, config.cols)


def default_frame_timeout(config):
    """Inter-byte silence that ends a frame: 10 ms (USB-serial adapters batch bytes) or 64 byte
    times at the config's baud rate, whichever is longer."""
    return max(config.clock_hz // 100, 64 * 10 * config.uart_divisor)


def memory_map(config):
    """The windows of a SoC generated from `config`."""
    size = scratchpad_bytes(config)
    if size > protocol.WINDOW_SLOT_BYTES:
        raise ValueError(f"The scratchpad ({size} bytes) does not fit its "
                         f"{protocol.WINDOW_SLOT_BYTES}-byte address window")
    return MemoryMap([
        Window("identity", protocol.CSR_BASE, protocol.WORD_BYTES * len(protocol.ID_REGISTERS),
               WindowKind.REGISTERS, writable=False),
        Window("control", protocol.CONTROL_BASE,
               protocol.WORD_BYTES * len(protocol.CONTROL_REGISTERS),
               WindowKind.REGISTERS, writable=True),
        Window("scratchpad", protocol.SCRATCHPAD_BASE, size, WindowKind.MEMORY, writable=True),
    ])


def _constant_registers(config, max_payload):
    return {
        "MAGIC": protocol.MAGIC,
        "VERSION": protocol.VERSION,
        "MAX_PAYLOAD": max_payload,
        "SCRATCHPAD_BASE": protocol.SCRATCHPAD_BASE,
        "SCRATCHPAD_BYTES": scratchpad_bytes(config),
        **protocol.encode_config(config),
    }


class SoCCore(wiring.Component):
    """The SoC behind the UART PHY: byte streams in and out.

    Parameters
    ----------
    config : AcceleratorConfig
        The generated accelerator (reported in the CONFIG_* registers; sizes the scratchpad).
    max_payload : int
        Largest frame payload (staging buffer size), a power of two up to `protocol.MAX_PAYLOAD`.
    frame_timeout : int or None
        Inter-byte silence in cycles that truncates a frame; None: `default_frame_timeout`.
    """

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))

    def __init__(self, *, config, max_payload=protocol.MAX_PAYLOAD, frame_timeout=None):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self.memory_map = memory_map(config)
        self.max_payload = max_payload
        self.frame_timeout = default_frame_timeout(config) if frame_timeout is None \
            else frame_timeout
        # Built here so bad parameters raise at construction, not at elaboration.
        self._engine = FrameEngine(memory_map=self.memory_map, max_payload=max_payload,
                                   frame_timeout=self.frame_timeout)
        self._csr = CsrBlock(constants=_constant_registers(config, max_payload))
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self._engine
        m.submodules.decoder = decoder = BusDecoder(memory_map=self.memory_map)
        m.submodules.csr = csr = self._csr
        scratchpad_window = self.memory_map["scratchpad"]
        m.submodules.scratchpad = scratchpad = MemoryTarget(depth=scratchpad_window.words)

        wiring.connect(m, wiring.flipped(self.rx), engine.rx)
        wiring.connect(m, engine.tx, wiring.flipped(self.tx))
        wiring.connect(m, engine.bus, decoder.bus)
        wiring.connect(m, decoder.identity, csr.identity)
        wiring.connect(m, decoder.control, csr.control)
        wiring.connect(m, decoder.scratchpad, scratchpad.bus)
        m.d.comb += [
            csr.frame_done.eq(engine.frame_done),
            csr.frame_status.eq(engine.frame_status),
            csr.byte_discarded.eq(engine.byte_discarded),
        ]
        return m


class SoC(wiring.Component):
    """`SoCCore` behind the UART PHY, with the serial pins as ports.

    Parameters
    ----------
    config : AcceleratorConfig
    divisor : int or None
        Clock cycles per UART bit; None: the config's exact ``uart_divisor``.
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
        wiring.connect(m, phy.rx, core.rx)
        wiring.connect(m, core.tx, phy.tx)
        m.d.comb += [phy.rxd.eq(self.rx), self.tx.eq(phy.txd)]
        return m
