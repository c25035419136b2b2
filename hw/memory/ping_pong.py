"""Ping-pong (double-buffer) control with a swap handshake.

A buffer region is split into two halves. The load side fills ``load_half`` while the compute side
consumes ``compute_half`` (always the other one). When the load side has finished its half it
offers a token on `load_done`; when the compute side has finished with its half it offers a token
on `compute_done`. The halves swap in the cycle both tokens are valid: both are accepted together
and from the next cycle on ``load_half`` and ``compute_half`` are exchanged, so the freshly loaded
tile is computed while the next one loads::

    load_done.valid      __/‾‾‾‾‾‾‾‾\\____      (load side waits for the swap)
    compute_done.valid   ________/‾‾\\____
    ready (both)         ________/‾‾\\____
    load_half            0000000000011111

The half bit is the most significant bit of the buffer's address; the user concatenates it
(``Cat(local_addr, half)``). After reset the compute half holds nothing, so the compute side's
first `compute_done` is offered without computing.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PingPong"]


class PingPong(wiring.Component):
    """Swap-on-handshake half selection for double buffering.

    Members
    -------
    load_done : In(stream.Signature(0))      token: the load side's half is full
    compute_done : In(stream.Signature(0))   token: the compute side's half may be overwritten
    load_half : Out(1)
    compute_half : Out(1)
    swaps : Out(16)                          swaps since reset (performance counter, wraps)
    """

    load_done: In(stream.Signature(0))
    compute_done: In(stream.Signature(0))
    load_half: Out(1)
    compute_half: Out(1)
    swaps: Out(16)

    def elaborate(self, platform):
        m = Module()
        swap = Signal()
        m.d.comb += [
            swap.eq(self.load_done.valid & self.compute_done.valid),
            self.load_done.ready.eq(swap),
            self.compute_done.ready.eq(swap),
            self.compute_half.eq(~self.load_half),
        ]
        with m.If(swap):
            m.d.sync += [
                self.load_half.eq(~self.load_half),
                self.swaps.eq(self.swaps + 1),
            ]
        return m
