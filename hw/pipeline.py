"""Pipeline registers: a value delayed by a fixed number of clock cycles, and a stream slice.

`delayed` is how a block keeps side information (a tag, a bank select, a valid flag) in step with
data that goes through a fixed-latency stage such as a registered memory port. Latency: `cycles`;
throughput: a new value every cycle.

`SkidBuffer` registers a stream in both directions (valid/payload forward, ready backward), for a
handshake between blocks placed far apart. Latency: one cycle; throughput: one transfer per cycle.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["delayed", "SkidBuffer"]


def delayed(m, value, cycles, *, name, shape=None, reset_less=False):
    """`value` after `cycles` registers in ``m.d.sync`` (`value` itself when `cycles` is 0).

    The registers are named ``{name}_d1`` ... and have `shape` (default: the shape of `value`);
    `reset_less` registers are for data that a valid flag qualifies.
    """
    if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 0:
        raise ValueError(f"delayed cycles must be a non-negative integer, not {cycles!r}")
    if shape is None:
        shape = value.shape()
    for stage in range(cycles):
        register = Signal(shape, name=f"{name}_d{stage + 1}", reset_less=reset_less)
        m.d.sync += register.eq(value)
        value = register
    return value


class SkidBuffer(wiring.Component):
    """A stream register slice whose ``i.ready`` and ``o.valid``/``o.payload`` are flip-flops.

    It cuts a handshake chain in two: the consumer's ``o.ready`` reaches only this buffer's
    register enables, and the producer sees a ready that is one flip-flop. An output register
    holds the row offered on ``o``; a second (skid) register takes the row that arrives in the
    cycle the consumer stalls, and ``i.ready`` is low while it is full. Latency: one cycle from a
    transfer on ``i`` to ``o.valid``. Throughput: one transfer per cycle both ways.

    Parameters: `shape`, the payload shape.
    """

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal.like(self.i.payload, name="skid", reset_less=True)
        m.d.comb += self.i.ready.eq(~skid_valid)
        # The skid register follows the input while it is empty (`skid_valid` qualifies it), so
        # its enable is its own flag and the consumer's ready reaches only the output register.
        with m.If(~skid_valid):
            m.d.sync += skid.eq(self.i.payload)
        with m.If(self.o.ready | ~self.o.valid):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += skid_valid.eq(1)
        return m
