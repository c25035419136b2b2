"""UART PHY: 8N1 byte streams to and from a serial line, at an exact, possibly fractional, clock
divisor.

``divisor`` is the number of ``sync`` cycles per bit: clock / baud as an exact fraction (e.g.
100/3 for 3 Mbaud from 100 MHz), so the system clock need not be a multiple of the baud rate. A
bit lasts ``floor(divisor)`` or one cycle more: a phase accumulator (Bresenham) adds the extra
cycle whenever the fractional parts add up to a whole one, so bits 0..k-1 of a run last exactly
``floor(k * divisor)`` cycles -- no drift, and every bit edge within one cycle of where the exact
baud rate puts it (under 1/``floor(divisor)`` of a bit: 3% at 100 MHz / 3 Mbaud). An integer
divisor gives equal bits and no accumulator.

Transmitter: a byte accepted on ``tx`` is sent as start bit, 8 data bits LSB first, stop bit; the
accumulator runs on across frames, so a continuous stream keeps the exact average rate. ``txd`` is
a flip-flop output (no glitches on the pin). ``tx`` is ready when idle *and* during the last cycle
of a stop bit, so a continuous stream goes out at full line rate with the next start bit right
after the stop bit::

    tx.valid&ready   ^                                    ^
    txd       ‾‾‾‾‾‾‾|_start_|_d0_|..|_d7_|‾stop‾|_start_|_d0_| ...
                      <- 1 cycle after the handshake; 10 * divisor cycles per byte

Receiver: ``rxd`` passes a 2-flip-flop synchronizer; a falling edge starts a frame, every bit is
sampled in its middle (``floor(divisor / 2)`` cycles after the edge, then one bit length later
each, the accumulator restarting at every start edge). A start bit that is high again at its
middle is a glitch and ignored. A stop bit sampled low drops the byte, pulses ``framing_error``
and waits for the line to go idle (high) again, so a held-low break yields one error and no
bytes. A received byte waits in a one-entry output register until ``rx`` takes it; a byte
completed while the previous one is still waiting is dropped and ``overrun`` pulses. Latency:
``rx.valid`` rises about 9.5 bit times + 3 cycles after the start edge. Throughput: one byte per
10 bit times in both directions, simultaneously.
"""

import math
from fractions import Fraction

from amaranth.hdl import Cat, Const, Module, Mux, Signal
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
    divisor : int or fractions.Fraction
        ``sync`` clock cycles per bit (clock / baud, exact), at least 4.

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
        if not isinstance(divisor, (int, Fraction)) or isinstance(divisor, bool):
            raise TypeError(f"divisor must be an exact number of clock cycles per bit (an int or "
                            f"a fractions.Fraction), not {divisor!r}")
        if divisor < MIN_DIVISOR:
            raise ValueError(f"divisor must be at least {MIN_DIVISOR} cycles per bit, "
                             f"not {divisor}")
        self.divisor = divisor
        self._whole = math.floor(divisor)
        self._fraction = Fraction(divisor) - self._whole
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

    def _phase(self, name):
        """The accumulated fraction of a cycle, in units of 1/denominator; None for an integer
        divisor."""
        if not self._fraction:
            return None
        return Signal(range(self._fraction.denominator), name=name)

    def _start_bit_time(self, timer, phase):
        """Statements that load `timer` (counting down to 0) with the next bit's length:
        ``floor(divisor)`` cycles, one more when `phase` passes a whole cycle."""
        if phase is None:
            return [timer.eq(self._whole - 1)]
        numerator, denominator = self._fraction.numerator, self._fraction.denominator
        overflow = phase >= denominator - numerator
        return [
            timer.eq(self._whole - 1 + overflow),
            phase.eq(Mux(overflow, phase + numerator - denominator, phase + numerator)),
        ]

    def _elaborate_transmitter(self, m):
        # The shift register's bit 0 drives the pin; ones shift in behind the stop bit so the line
        # idles high without a separate multiplexer.
        shift = Signal(FRAME_BITS, init=(1 << FRAME_BITS) - 1)
        bits_left = Signal(range(FRAME_BITS + 1))
        bit_timer = Signal(range(self._whole + 1))
        phase = self._phase("tx_phase")
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
                *self._start_bit_time(bit_timer, phase),
            ]
        with m.Elif(~idle):
            with m.If(bit_timer == 0):
                m.d.sync += [
                    shift.eq(Cat(shift[1:], Const(1, 1))),
                    bits_left.eq(bits_left - 1),
                ]
                with m.If(bits_left != 1):
                    m.d.sync += self._start_bit_time(bit_timer, phase)
            with m.Else():
                m.d.sync += bit_timer.eq(bit_timer - 1)

    def _elaborate_receiver(self, m):
        line = Signal(init=1)
        m.submodules.rxd_sync = FFSynchronizer(self.rxd, line, init=1)

        bit_timer = Signal(range(self._whole + 1))
        phase = self._phase("rx_phase")
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
                    m.d.sync += bit_timer.eq(math.floor(self.divisor / 2) - 1)
                    if phase is not None:
                        m.d.sync += phase.eq(0)
                    m.next = "START"
            with m.State("START"):
                with m.If(mid_bit):
                    with m.If(line):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [*self._start_bit_time(bit_timer, phase),
                                     data_bits_left.eq(8)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += bit_timer.eq(bit_timer - 1)
            with m.State("DATA"):
                with m.If(mid_bit):
                    m.d.sync += [
                        data.eq(Cat(data[1:], line)),
                        data_bits_left.eq(data_bits_left - 1),
                        *self._start_bit_time(bit_timer, phase),
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
