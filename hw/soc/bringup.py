"""Bring-up self-test SoC: the default ``--design`` of ``python -m hw.build`` until the full SoC
(frame protocol, CSRs, command queue) lands and replaces it as the default.

It proves a board works and times the real engines in a full-device context:

* UART link: every byte received is echoed back, except `REQUEST_BYTE` (``?``), which is answered
  with `REPLY_LENGTH` bytes: a status byte (`STATUS_BITS`) and the 32-bit signature register,
  little-endian. Replies and echoes go out back-to-back at full line rate.
* LEDs: LED 0 blinks (heartbeat, half period `heartbeat_cycles`), LED 1 toggles per received byte,
  LED 2 lights on any UART framing error or overrun, the others show the signature's top bits.
* Engines, with the shapes of the accelerator config: the INT8 `SystolicArray` (either dataflow,
  DSP or LUT multipliers) feeding the `Requantizer` directly (array result rows are requant input
  rows), and the XNOR-popcount `BinaryEngine`. Every input stream is driven every cycle from
  independent 32-bit LFSRs (different seeds, so no two stimulus bits are provably equal and
  nothing is simplified away), every output stream is always ready, and all output payloads are
  folded into the signature register through a pipelined XOR tree, so synthesis keeps all of it.
  The numbers are meaningless; only the logic, its placement and its timing are real. (The
  binary engine's descriptors all have K = max_k and its activations' `last` follows a beat
  count, so the engine runs vectors rather than reporting framing errors.)

::

    LFSRs --> SystolicArray --results--> Requantizer --o--+
    LFSRs --> BinaryEngine --results----------------------+--> XOR tree (registered 4:1 levels)
                                                              --> signature = rotl(signature) ^ fold
    uart.rx --> '?' ? snapshot signature, send status + 4 bytes : echo --> uart.tx

Latency of a request: the reply's first start bit follows the request's stop-bit sample by two
cycles. Throughput: the engines run at one beat per cycle whenever their own flow control allows.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.binary.engine import BinaryEngine
from hw.config import DATAFLOWS
from hw.systolic.array import SystolicArray
from hw.systolic.requant import Requantizer

from .uart import UARTPhy

__all__ = ["BringUp", "REQUEST_BYTE", "REPLY_LENGTH", "STATUS_BITS", "SIGNATURE_BITS",
           "BINARY_MAX_FOLDS", "BINARY_MAX_NEURON_FOLDS"]

REQUEST_BYTE = ord("?")
SIGNATURE_BITS = 32
REPLY_LENGTH = 1 + SIGNATURE_BITS // 8
STATUS_BITS = {"framing_error": 0, "overrun": 1, "binary_framing_error": 2}
# The self-test's binary engine holds BINARY_MAX_FOLDS beats of every neuron of up to
# BINARY_MAX_NEURON_FOLDS neuron folds: K up to 16 * width, N up to 32 * lanes, so its weight
# memory is 512 rows (one DP16KD deep at 36 bits) for any width and lanes. The config's
# binary_max_k/binary_max_n size the SoC's core, whose layers need not fit one block's depth.
BINARY_MAX_FOLDS = 16
BINARY_MAX_NEURON_FOLDS = 32

_LFSR_BITS = 32
_LFSR_TAPS = 0x80200003         # x^32 + x^22 + x^2 + x + 1, maximal length (Galois form)
_FOLD_ARITY = 4                 # words XORed per registered level: one LUT4 per bit


def _lfsr_stimulus(m, width, name):
    """`width` pseudo-random bits, new every cycle, from independent Galois LFSRs."""
    chunks = []
    for index in range(-(-width // _LFSR_BITS)):
        state = Signal(_LFSR_BITS, init=(0x9E3779B9 * (index + 1)) & 0xFFFFFFFF or 1,
                       name=f"{name}_lfsr{index}")
        feedback = Const(_LFSR_TAPS, _LFSR_BITS) & state[0].replicate(_LFSR_BITS)
        m.d.sync += state.eq((state >> 1) ^ feedback)
        chunks.append(state)
    return Cat(*chunks)[:width]


def _xor_fold(m, value, width):
    """`value` folded to `width` bits by XOR, through registered `_FOLD_ARITY`:1 levels."""
    bits = Value.cast(value)
    words = [bits[offset:offset + width] for offset in range(0, len(bits), width)]
    level = 0
    while len(words) > 1:
        folded = []
        for group in range(0, len(words), _FOLD_ARITY):
            register = Signal(width, name=f"fold{level}_{group // _FOLD_ARITY}")
            combined = words[group]
            for word in words[group + 1:group + _FOLD_ARITY]:
                combined = combined ^ word
            m.d.sync += register.eq(combined)
            folded.append(register)
        words = folded
        level += 1
    return words[0]


def _check_int(name, value, low, high=None):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {allowed}, not {value}")


class BringUp(wiring.Component):
    """Bring-up self-test design (see module docstring).

    Parameters (keyword-only)
    -------------------------
    rows, cols, dataflow, multiplier, dsp_pes : INT8 array shape and mapping (`SystolicArray`).
    requant_lanes : int
        `Requantizer` lanes over the ``cols`` channels.
    binary_width, binary_lanes, binary_max_k, binary_max_n : `BinaryEngine` parameters.
    uart_divisor : int
        Clock cycles per UART bit.
    heartbeat_cycles : int
        Half period of the LED 0 blink, in clock cycles.
    led_count : int
        LEDs driven (at least 3).

    Ports: ``txd``/``rxd`` (UART line, idle high), ``leds``.
    """

    def __init__(self, *, rows, cols, dataflow, multiplier, requant_lanes, binary_width,
                 binary_lanes, binary_max_k, binary_max_n, uart_divisor, heartbeat_cycles,
                 led_count, dsp_pes=None):
        if dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {DATAFLOWS}, not {dataflow!r}")
        _check_int("heartbeat_cycles", heartbeat_cycles, 1)
        _check_int("led_count", led_count, 3, 64)
        # The engines and the PHY check their own parameters, with messages naming them.
        self.uart = UARTPhy(divisor=uart_divisor)
        self.array = SystolicArray(rows=rows, cols=cols, dataflow=dataflow, multiplier=multiplier,
                                   dsp_pes=dsp_pes)
        self.requant = Requantizer(channels=cols, lanes=requant_lanes)
        self.binary = BinaryEngine(width=binary_width, lanes=binary_lanes, max_k=binary_max_k,
                                   max_n=binary_max_n)
        self.heartbeat_cycles = heartbeat_cycles
        self.led_count = led_count
        super().__init__({
            "txd": Out(1, init=1),
            "rxd": In(1, init=1),
            "leds": Out(led_count),
        })

    @classmethod
    def from_config(cls, config, *, led_count):
        """The bring-up design for an `hw.config.AcceleratorConfig` (its binary engine sized by
        `BINARY_MAX_FOLDS` and `BINARY_MAX_NEURON_FOLDS`)."""
        return cls(rows=config.rows, cols=config.cols, dataflow=config.dataflow,
                   multiplier=config.multiplier, dsp_pes=config.dsp_pes,
                   requant_lanes=config.requant_lanes,
                   binary_width=config.binary_width, binary_lanes=config.binary_lanes,
                   binary_max_k=BINARY_MAX_FOLDS * config.binary_width,
                   binary_max_n=BINARY_MAX_NEURON_FOLDS * config.binary_lanes,
                   uart_divisor=config.uart_divisor, heartbeat_cycles=config.clock_hz // 2,
                   led_count=led_count)

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = self.uart
        m.submodules.array = array = self.array
        m.submodules.requant = requant = self.requant
        m.submodules.binary = binary = self.binary
        m.d.comb += [uart.rxd.eq(self.rxd), self.txd.eq(uart.txd)]

        self._drive_array(m, array)
        self._drive_requant(m, requant, array)
        self._drive_binary(m, binary)

        folded = _xor_fold(m, Cat(requant.o.payload.as_value(), requant.o.valid,
                                  binary.results.payload.as_value(), binary.results.valid),
                           SIGNATURE_BITS)
        signature = Signal(SIGNATURE_BITS)
        m.d.sync += signature.eq(Cat(signature[-1], signature[:-1]) ^ folded)

        status = Signal(8)
        m.d.sync += [
            status[STATUS_BITS["framing_error"]].eq(status[STATUS_BITS["framing_error"]]
                                                    | uart.framing_error),
            status[STATUS_BITS["overrun"]].eq(status[STATUS_BITS["overrun"]] | uart.overrun),
            status[STATUS_BITS["binary_framing_error"]].eq(binary.framing_error),
        ]
        self._serve_uart(m, uart, signature, status)
        self._drive_leds(m, uart, signature, status)
        return m

    def _drive_array(self, m, array):
        rows, cols = array.rows, array.cols
        # Tiles of 2R beats / 2R rows keep the array streaming (see SystolicArray's docstring).
        tile_beat = Signal(range(2 * rows))
        tile_last = tile_beat == 2 * rows - 1
        if array.dataflow == "output_stationary":
            stimulus = _lfsr_stimulus(m, 8 * (rows + cols), "operands")
            m.d.comb += [
                array.operands.payload.a.as_value().eq(stimulus[:8 * rows]),
                array.operands.payload.w.as_value().eq(stimulus[8 * rows:]),
                array.operands.payload.last.eq(tile_last),
                array.operands.valid.eq(1),
            ]
            beat_taken = array.operands.ready
        else:
            weights = _lfsr_stimulus(m, 8 * cols, "weights")
            activations = _lfsr_stimulus(m, 8 * rows, "activations")
            m.d.comb += [
                array.weights.payload.as_value().eq(weights),
                array.weights.valid.eq(1),
                array.activations.payload.a.as_value().eq(activations),
                array.activations.payload.last.eq(tile_last),
                array.activations.valid.eq(1),
            ]
            beat_taken = array.activations.ready
        with m.If(beat_taken):
            m.d.sync += tile_beat.eq(Mux(tile_last, 0, tile_beat + 1))

    def _drive_requant(self, m, requant, array):
        wiring.connect(m, array.results, requant.i)
        requant_channel_bits = len(requant.params.payload.channel)
        params = _lfsr_stimulus(m, requant_channel_bits + requant.parameter_layout.size,
                                "requant_params")
        settings = _lfsr_stimulus(m, len(requant.settings.as_value()), "requant_settings")
        m.d.comb += [
            requant.params.payload.as_value().eq(params),
            requant.params.valid.eq(1),
            requant.settings.as_value().eq(settings),
            requant.o.ready.eq(1),
        ]

    def _drive_binary(self, m, binary):
        # Every descriptor has K = max_k, so every vector is `beats` activation beats whatever
        # descriptor applies, and the stream's `last` (from a count of the beats taken) always
        # matches the engine's: a framing error in the status is then a fault. The neuron
        # folds are random, in 1..max_neuron_folds.
        fold_bits = (binary.max_neuron_folds - 1).bit_length()
        layer = _lfsr_stimulus(m, fold_bits, "binary_layer")
        folds = Signal.like(binary.layer.payload.neuron_folds)
        beats = -(-binary.max_k // binary.width)
        beat = Signal(range(beats))
        last_beat = beat == beats - 1
        with m.If(binary.activations.valid & binary.activations.ready):
            m.d.sync += beat.eq(Mux(last_beat, 0, beat + 1))
        m.d.comb += [
            folds.eq(Mux(layer >= binary.max_neuron_folds, binary.max_neuron_folds, layer + 1)
                     if fold_bits else 1),
            binary.layer.payload.k.eq(binary.max_k),
            binary.layer.payload.neuron_folds.eq(folds),
            binary.layer.valid.eq(1),
        ]
        for name in ("weights", "thresholds"):
            port = getattr(binary, name)
            stimulus = _lfsr_stimulus(m, len(port.payload.as_value()), f"binary_{name}")
            m.d.comb += [port.payload.as_value().eq(stimulus), port.valid.eq(1)]
        activation_bits = _lfsr_stimulus(m, binary.width, "binary_activations")
        m.d.comb += [
            binary.activations.payload.bits.eq(activation_bits),
            binary.activations.payload.last.eq(last_beat),
            binary.activations.valid.eq(1),
            binary.results.ready.eq(1),
        ]

    def _serve_uart(self, m, uart, signature, status):
        reply = Signal(8 * REPLY_LENGTH)
        reply_index = Signal(range(REPLY_LENGTH))
        with m.FSM():
            with m.State("ECHO"):
                is_request = uart.rx.payload == REQUEST_BYTE
                with m.If(uart.rx.valid & is_request):
                    m.d.comb += uart.rx.ready.eq(1)
                    m.d.sync += [reply.eq(Cat(status, signature)), reply_index.eq(0)]
                    m.next = "REPLY"
                with m.Else():
                    m.d.comb += [
                        uart.tx.payload.eq(uart.rx.payload),
                        uart.tx.valid.eq(uart.rx.valid),
                        uart.rx.ready.eq(uart.tx.ready),
                    ]
            with m.State("REPLY"):
                m.d.comb += [
                    uart.tx.payload.eq(Array(reply.word_select(i, 8)
                                             for i in range(REPLY_LENGTH))[reply_index]),
                    uart.tx.valid.eq(1),
                ]
                with m.If(uart.tx.ready):
                    m.d.sync += reply_index.eq(reply_index + 1)
                    with m.If(reply_index == REPLY_LENGTH - 1):
                        m.next = "ECHO"

    def _drive_leds(self, m, uart, signature, status):
        heartbeat_timer = Signal(range(self.heartbeat_cycles))
        heartbeat = Signal()
        with m.If(heartbeat_timer == self.heartbeat_cycles - 1):
            m.d.sync += [heartbeat_timer.eq(0), heartbeat.eq(~heartbeat)]
        with m.Else():
            m.d.sync += heartbeat_timer.eq(heartbeat_timer + 1)
        activity = Signal()
        with m.If(uart.rx.valid & uart.rx.ready):
            m.d.sync += activity.eq(~activity)
        link_error = status[STATUS_BITS["framing_error"]] | status[STATUS_BITS["overrun"]]
        m.d.comb += self.leds.eq(Cat(heartbeat, activity, link_error,
                                     signature[-(self.led_count - 3):] if self.led_count > 3
                                     else Const(0, 0)))
