"""A registered credit count: how many of a fixed number of slots are not yet promised.

A producer that may only start work when a slot downstream is sure to be free (a FIFO entry, a
result slot) usually compares ``used + in_flight < depth`` in front of its accept: an adder and
a comparator on the accept path. `credit_counter` keeps the free-slot count in a register instead
and, beside it, the two flags a producer needs, also registered, so gating an accept on a credit
costs one LUT from flip-flops::

    cycle        t                    t+1
    take/give    (combinational)      credits, has_credit, all_free updated

``take`` uses a slot (only while ``has_credit``), ``give`` frees one; both in the same cycle leave
the count unchanged.
"""

from amaranth.hdl import Mux, Signal

__all__ = ["credit_counter"]


def credit_counter(m, *, slots, take, give, name):
    """Count free slots out of `slots` (an int >= 1), all free after reset.

    Returns ``(has_credit, all_free)``, both registered: at least one slot is free, every slot is
    free. `take` must only be high while `has_credit` is; `give` only while a slot is used.
    """
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise ValueError(f"credit_counter slots must be a positive integer, not {slots!r}")
    credits = Signal(range(slots + 1), init=slots, name=f"{name}_credits")
    has_credit = Signal(init=1, name=f"{name}_has_credit")
    all_free = Signal(init=1, name=f"{name}_all_free")
    taken_only = take & ~give
    given_only = give & ~take
    with m.If(taken_only):
        m.d.sync += credits.eq(credits - 1)
    with m.Elif(given_only):
        m.d.sync += credits.eq(credits + 1)
    # The flags of the next count come from compares of the current one (off the take/give path).
    m.d.sync += [
        has_credit.eq(Mux(taken_only, credits >= 2, has_credit | give)),
        all_free.eq(~take & Mux(give, credits == slots - 1, all_free)),
    ]
    return has_credit, all_free
