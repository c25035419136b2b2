"""A loop nest of counters that advances by one iteration per transfer, without bubbles."""

from amaranth.hdl import Value

__all__ = ["advance_loop_nest"]


def advance_loop_nest(m, step, levels):
    """Advance a loop nest by one iteration when `step` is high.

    `levels` lists the loops innermost first as ``(at_end, restart, advance)``: ``at_end`` is high
    on the loop's last iteration, ``restart`` and ``advance`` are the `sync` statements that wrap
    it to its first iteration or move it to the next one. A loop wraps when it and every loop
    inside it are at their end. Returns "this is the last iteration of the whole nest" (every
    loop at its end), which does not depend on `step`, so it may drive a stream payload.
    """
    carry = Value.cast(step)
    last = Value.cast(1)
    for at_end, restart, advance in levels:
        with m.If(carry):
            with m.If(at_end):
                m.d.sync += restart
            with m.Else():
                m.d.sync += advance
        carry = carry & at_end
        last = last & at_end
    return last
