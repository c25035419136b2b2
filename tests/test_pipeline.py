# amaranth: UnusedElaboratable=no
"""hw.pipeline: `delayed` and `SkidBuffer` (order, no loss under back-pressure, registered ready)."""

import random

import pytest
from amaranth.hdl import Module, Signal
from hypothesis import given, settings, strategies as st

from hw.pipeline import SkidBuffer, delayed
from sim.harness import receive, run, send


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=40), st.floats(0, 0.7),
       st.floats(0, 0.7), st.integers(0, 1 << 30))
def test_skid_buffer_passes_every_payload_in_order(payloads, gap, stall, seed):
    dut = SkidBuffer(8)
    results = []

    async def producer(ctx):
        await send(ctx, dut.i, payloads, gap_probability=gap, rng=random.Random(seed))

    async def consumer(ctx):
        results.extend(await receive(ctx, dut.o, len(payloads), stall_probability=stall,
                                     rng=random.Random(seed + 1)))

    run(dut, producer, consumer, name="skid_buffer")
    assert results == payloads


def test_skid_buffer_full_rate_and_registered_ready():
    """One transfer per cycle with ``o.ready`` high; ``i.ready`` never follows ``o.ready`` in
    the same cycle (it is a flip-flop); the stalled row and the next one are both kept."""
    dut = SkidBuffer(8)

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        seen = []
        for value in range(6):
            ctx.set(dut.i.payload, value)
            assert ctx.get(dut.i.ready)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                seen.append(ctx.get(dut.o.payload))
        assert seen == [0, 1, 2, 3, 4, 5]
        # Stall: i.ready does not drop in the cycle o.ready drops, the row then offered is kept.
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.payload, 6)
        assert ctx.get(dut.i.ready)
        await ctx.tick()
        ctx.set(dut.i.payload, 7)
        assert not ctx.get(dut.i.ready)
        ctx.set(dut.o.ready, 1)
        assert not ctx.get(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        drained = []
        for _ in range(3):
            if ctx.get(dut.o.valid):
                drained.append(ctx.get(dut.o.payload))
            await ctx.tick()
        assert drained == [5, 6]

    run(dut, bench, name="skid_buffer_rate")


@pytest.mark.parametrize("cycles", [0, 1, 3])
def test_delayed(cycles):
    m = Module()
    value = Signal(8)
    out = delayed(m, value, cycles, name="value")
    m.d.sync += value.eq(value + 1)

    async def bench(ctx):
        for _ in range(5):
            await ctx.tick()
        assert ctx.get(out) == (ctx.get(value) - cycles) % 256

    run(m, bench, name="delayed")


def test_delayed_rejects_bad_cycles():
    with pytest.raises(ValueError, match="non-negative integer, not -1"):
        delayed(Module(), Signal(), -1, name="x")
