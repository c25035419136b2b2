"""UART PHY: 8N1 byte streams to and from a serial line, at an exact clock divisor.

``divisor`` is the number of ``sync`` cycles per bit (clock / baud, an integer: the system clock
is chosen so that it is exact, see `hw.soc.pll`).

Transmitter: a byte accepted on ``tx`` is sent as start bit, 8 data bits LSB first, stop bit, each
exactly ``divisor`` cycles long. ``txd`` is a flip-flop output (no glitches on the pin). ``tx`` is
ready when idle *and* during the last cycle of a stop bit, so a continuous stream goes out at full
line rate with the next start bit right after the stop bit::

    tx.valid&ready   ^                                    ^
    txd       ‾‾‾‾‾‾‾|_start_|_d0_|..|_d7_|‾stop‾|_start_|_d0_| ...
                      <- 1 cycle after the handshake; 10 * divisor cycles per byte

Receiver: ``rxd`` passes a 2-flip-flop synchronizer; a falling edge starts a frame, every bit is
sampled in its middle (``divisor // 2`` cycles after the edge, then every ``divisor`` cycles). A
start bit that is high again at its middle is a glitch and ignored. A stop bit sampled low drops
the byte, pulses ``framing_error`` and waits for the line to go idle (high) again, so a held-low
break yields one error and no bytes. A received byte waits in a one-entry output register until
``rx`` takes it; a byte completed while the previous one is still waiting is dropped and
``overrun`` pulses. Latency: ``rx.valid`` rises about 9.5 bit times + 3 cycles after the start
edge. Throughput: one byte per 10 bit times in both directions, simultaneously.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTPhy", "MIN_DIVISOR", "FRAME_BITS"]

MIN_DIVISOR = 4     # mid-bit sampling needs a few cycles per bit to locate the middle
FRAME_BITS = 10     # start + 8 data + stop


class UARTPhy(wiring.Component):
    """8N1 UART transmitter and receiver sharing one exact clock divisor.

    Parameters
    ----------
    divisor : int
        ``sync`` clock cycles per bit, at least 4.

    Ports
    -----
    tx : In(stream.Signature(8))
        Bytes to send.
    rx : Out(stream.Signature(8))
        Bytes received.
    txd : Out(1)
        Serial output (idle high).
    rxd : In(1)
        Serial input (asynchronous, idle high).
    framing_error, overrun : Out(1)
        One-cycle pulses: a stop bit was low / a byte was lost because ``rx`` was not read in time.
    """

    def __init__(self, *, divisor):
        if not isinstance(divisor, int) or isinstance(divisor, bool):
            raise TypeError(f"divisor must be an integer number of clock cycles per bit, "
                            f"not {divisor!r}")
        if divisor < MIN_DIVISOR:
            raise ValueError(f"divisor must be at least {MIN_DIVISOR} cycles per bit, "
                             f"not {divisor}")
        self.divisor = divisor
        super().__init__({
            "tx": In(stream.Signature(8)),
            "rx": Out(stream.Signature(8)),
            "txd": Out(1, init=1),
            "rxd": In(1, init=1),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        self._elaborate_transmitter(m)
        self._elaborate_receiver(m)
        return m

    def _elaborate_transmitter(self, m):
        divisor = self.divisor
        # The shift register's bit 0 drives the pin; ones shift in behind the stop bit so the line
        # idles high without a separate multiplexer.
        shift = Signal(FRAME_BITS, init=(1 << FRAME_BITS) - 1)
        bits_left = Signal(range(FRAME_BITS + 1))
        bit_timer = Signal(range(divisor))
        idle = bits_left == 0
        last_cycle_of_frame = (bits_left == 1) & (bit_timer == 0)

        m.d.comb += [
            self.txd.eq(shift[0]),
            self.tx.ready.eq(idle | last_cycle_of_frame),
        ]
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += [
                shift.eq(Cat(Const(0, 1), self.tx.payload, Const(1, 1))),
                bits_left.eq(FRAME_BITS),
                bit_timer.eq(divisor - 1),
            ]
        with m.Elif(~idle):
            with m.If(bit_timer == 0):
                m.d.sync += [
                    shift.eq(Cat(shift[1:], Const(1, 1))),
                    bits_left.eq(bits_left - 1),
                    bit_timer.eq(divisor - 1),
                ]
            with m.Else():
                m.d.sync += bit_timer.eq(bit_timer - 1)

    def _elaborate_receiver(self, m):
        divisor = self.divisor
        line = Signal(init=1)
        m.submodules.rxd_sync = FFSynchronizer(self.rxd, line, init=1)

        bit_timer = Signal(range(divisor))
        data = Signal(8)
        data_bits_left = Signal(range(9))
        mid_bit = bit_timer == 0

        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(self.rx.ready):
            m.d.sync += self.rx.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # The edge was seen up to a cycle late; the middle of the start bit is about
                    # half a bit away.
                    m.d.sync += bit_timer.eq(divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(mid_bit):
                    with m.If(line):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [bit_timer.eq(divisor - 1), data_bits_left.eq(8)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += bit_timer.eq(bit_timer - 1)
            with m.State("DATA"):
                with m.If(mid_bit):
                    m.d.sync += [
                        data.eq(Cat(data[1:], line)),
                        data_bits_left.eq(data_bits_left - 1),
                        bit_timer.eq(divisor - 1),
                    ]
                    with m.If(data_bits_left == 1):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += bit_timer.eq(bit_timer - 1)
            with m.State("STOP"):
                with m.If(mid_bit):
                    with m.If(~line):
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
                    with m.Else():
                        with m.If(self.rx.valid & ~self.rx.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.rx.payload.eq(data), self.rx.valid.eq(1)]
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += bit_timer.eq(bit_timer - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
