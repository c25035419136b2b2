"""Pipeline registers: a value delayed by a fixed number of clock cycles.

`delayed` is how a block keeps side information (a tag, a bank select, a valid flag) in step with
data that goes through a fixed-latency stage such as a registered memory port. Latency: `cycles`;
throughput: a new value every cycle.
"""

from amaranth.hdl import Signal

__all__ = ["delayed"]


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
