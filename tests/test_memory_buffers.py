"""Scratchpad, accumulator memory and ping-pong control against cycle-level Python models."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from hw.memory.accumulator import AccumulatorMemory
from hw.memory.scratchpad import Scratchpad
from memory_helpers import assert_rejected
from sim.harness import run


def _random_row(rng, lanes, bits):
    return [rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)) for _ in range(lanes)]


def _wrap32(value):
    return (value + (1 << 31)) % (1 << 32) - (1 << 31)


# Scratchpad --------------------------------------------------------------------------------------

@settings(max_examples=8, deadline=None)
@given(row_bytes=st.integers(1, 12), depth_log2=st.integers(2, 5), banks_log2=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_scratchpad_matches_model(row_bytes, depth_log2, banks_log2, seed):
    depth = 1 << depth_log2
    banks = 1 << min(banks_log2, depth_log2 - 1)
    dut = Scratchpad(row_bytes=row_bytes, depth=depth, banks=banks)
    bank_depth = depth // banks
    rng = random.Random(seed)
    contents = {}                      # global address -> row, the model
    checked = []

    latency = Scratchpad.READ_LATENCY

    async def testbench(ctx):
        issued = [[] for _ in range(banks)]    # per bank: (cycle, expected row) of enabled reads
        held = [None] * banks          # what each read port's data must show (it holds when en=0)
        for cycle in range(60):
            write = rng.random() < 0.6
            addr = rng.randrange(depth)
            row = _random_row(rng, row_bytes, 8)
            ctx.set(dut.write.en, write)
            ctx.set(dut.write.addr, addr)
            ctx.set(dut.write.data, row)
            for bank in range(banks):
                enable = rng.random() < 0.7
                local = rng.randrange(bank_depth)
                ctx.set(dut.read[bank].en, enable)
                ctx.set(dut.read[bank].addr, local)
                if enable:
                    # A read sees the writes issued before its cycle; one of the same row in its
                    # cycle collides in the block RAM (an undefined row: not checked).
                    collides = write and addr == bank * bank_depth + local
                    issued[bank].append((cycle, None if collides else
                                         contents.get(bank * bank_depth + local,
                                                      [0] * row_bytes)))
            if write:
                contents[addr] = row
            await ctx.tick()
            # Now in cycle + 1: the data shows the last read issued `latency` cycles ago or before.
            for bank in range(banks):
                while issued[bank] and issued[bank][0][0] <= cycle + 1 - latency:
                    held[bank] = issued[bank].pop(0)[1]
                if held[bank] is not None:
                    checked.append((list(ctx.get(dut.read[bank].data)), held[bank]))

    run(dut, testbench, name="scratchpad")
    assert checked, "no read was checked"
    for got, expected in checked:
        assert got == expected


# Accumulator -------------------------------------------------------------------------------------

WRITE_LATENCY = 3     # a row accepted in cycle t is written at the end of cycle t+3
UNDEFINED = None      # a drain of a row written in the cycle the RAM reads it


def _apply(rows, request):
    addr, row, accumulate = request
    rows[addr] = [_wrap32(a + b) for a, b in zip(rows[addr], row)] if accumulate else list(row)


def _run_accumulator(cols, depth, plan):
    """Drive `plan`, one step per cycle: (request or None, drain address or None), a request
    being (addr, row, accumulate). A request the memory refuses (``write.ready`` is low the
    cycle after a drain) is offered again in the next cycle, before the rest of the plan.

    Checks ``idle`` in every cycle and returns the drain observations [(got, expected or
    UNDEFINED)], the final contents read back through `drain` once ``idle`` is high, and the
    model's final contents. The model is the module's contract: a row accepted in cycle t is
    written at the end of cycle t + WRITE_LATENCY, the RAM reads a drain's address in the cycle
    after ``drain.en`` (so a drain issued in cycle d shows the rows accepted up to d - 3 and is
    undefined for a row accepted in d - 2), its data shows DRAIN_LATENCY cycles after
    ``drain.en``, and ``idle`` is low exactly while an accepted row is not yet written.
    """
    dut = AccumulatorMemory(cols=cols, depth=depth)
    latency = AccumulatorMemory.DRAIN_LATENCY
    accepted = []                       # (cycle, request)
    observations = []
    final = []

    def expected_drain(issued, addr):
        read_cycle = issued + 1
        if any(cycle + WRITE_LATENCY == read_cycle and request[0] == addr
               for cycle, request in accepted):
            return UNDEFINED
        rows = [[0] * cols for _ in range(depth)]
        for cycle, request in accepted:
            if cycle + WRITE_LATENCY < read_cycle:
                _apply(rows, request)
        return rows[addr]

    def expected_idle(now):
        return not any(cycle < now <= cycle + WRITE_LATENCY for cycle, _ in accepted)

    async def testbench(ctx):
        cycle = 0
        steps = list(plan)
        drains = []                     # (cycle issued, address)
        while steps or drains or not expected_idle(cycle):
            request, drain_addr = steps.pop(0) if steps else (None, None)
            assert ctx.get(dut.idle) == expected_idle(cycle), f"idle in cycle {cycle}"
            if request is not None:
                addr, row, accumulate = request
                ctx.set(dut.write.payload, {"addr": addr, "data": row, "accumulate": accumulate})
            ctx.set(dut.write.valid, request is not None)
            ctx.set(dut.drain.en, drain_addr is not None)
            ctx.set(dut.drain.addr, drain_addr or 0)
            if drain_addr is not None:
                drains.append((cycle, drain_addr))
            _, _, ready = await ctx.tick().sample(dut.write.ready)
            if request is not None:
                if ready:
                    accepted.append((cycle, request))
                else:
                    steps.insert(0, (request, None))
            cycle += 1
            if drains and drains[0][0] == cycle - latency:
                issued, drained = drains.pop(0)
                observations.append((list(ctx.get(dut.drain.data)),
                                     expected_drain(issued, drained)))
        ctx.set(dut.write.valid, 0)
        ctx.set(dut.drain.en, 0)
        assert ctx.get(dut.idle)
        for addr in range(depth + latency - 1):
            ctx.set(dut.drain.en, addr < depth)
            ctx.set(dut.drain.addr, addr % depth)
            await ctx.tick()
            if addr >= latency - 1:
                final.append(list(ctx.get(dut.drain.data)))
        ctx.set(dut.drain.en, 0)

    run(dut, testbench, name="accumulator")
    model = [[0] * cols for _ in range(depth)]
    for _, request in accepted:
        _apply(model, request)
    return observations, final, model


def _assert_drains(observations):
    for got, expected in observations:
        if expected is not UNDEFINED:
            assert got == expected


def _random_plan(rng, requests, depth, gap_probability, drain_probability):
    """Each request after a random number of idle cycles; a drain of a random row in any step."""
    def drain():
        return rng.randrange(depth) if rng.random() < drain_probability else None
    plan = []
    for request in requests:
        while rng.random() < gap_probability:
            plan.append((None, drain()))
        plan.append((request, drain()))
    return plan


@settings(max_examples=10, deadline=None)
@given(cols=st.integers(1, 6), depth_log2=st.integers(1, 4), count=st.integers(1, 40),
       gap_probability=st.sampled_from([0.0, 0.3, 0.6]),
       drain_probability=st.sampled_from([0.0, 0.2, 0.5]), hot_rows=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_accumulator_matches_model(cols, depth_log2, count, gap_probability, drain_probability,
                                   hot_rows, seed):
    depth = 1 << depth_log2
    rng = random.Random(seed)
    # Few distinct addresses, so accumulations into one row 0..3 cycles apart are common.
    hot = [rng.randrange(depth) for _ in range(hot_rows)]
    requests = [(rng.choice(hot), _random_row(rng, cols, 32), rng.random() < 0.8)
                for _ in range(count)]
    plan = _random_plan(rng, requests, depth, gap_probability, drain_probability)
    observations, final, model = _run_accumulator(cols, depth, plan)
    assert final == model
    _assert_drains(observations)


@pytest.mark.parametrize("apart", [1, 2, 3, 4])
@pytest.mark.parametrize("name, requests, expected_row0", [
    # Accumulations into one address 1, 2, 3 or 4 cycles apart: each reaches the adder before
    # the previous ones are in the memory, so it takes them from a different forwarding register.
    ("same_address_chain", [(0, [1, -2], 0), (0, [10, 20], 1), (0, [100, 200], 1),
                            (0, [1000, 2000], 1)], [1111, 2218]),
    # A plain write discards what was there, even right after an accumulate.
    ("overwrite_after_accumulate", [(0, [5, 5], 1), (0, [7, 8], 0), (0, [1, 1], 1)], [8, 9]),
    # An interleaved other address must not be forwarded into row 0.
    ("interleaved", [(0, [1, 1], 0), (1, [50, 50], 0), (0, [2, 3], 1), (1, [1, 1], 1),
                     (0, [4, 4], 1)], [7, 8]),
    # int32 wrap-around, as two's complement hardware does.
    ("wraps", [(0, [2**31 - 1, -2**31], 0), (0, [1, -1], 1)], [-2**31, 2**31 - 1]),
])
def test_accumulator_edge_cases(name, requests, expected_row0, apart):
    plan = []
    for request in requests:
        plan += [(request, None)] + [(None, None)] * (apart - 1)
    _, final, model = _run_accumulator(2, 4, plan)
    assert final[0] == expected_row0
    assert final == model


@pytest.mark.parametrize("apart", [1, 2, 3])
def test_accumulator_drains_right_after_writes(apart):
    """Drains of row 0 in each of the 6 cycles after accumulations into it: those issued
    WRITE_LATENCY or more cycles after the last accept show the whole sum."""
    requests = [(0, [3, -4], 0), (0, [10, 20], 1), (0, [100, 200], 1)]
    plan = []
    for request in requests:
        plan += [(request, None)] + [(None, None)] * (apart - 1)
    # A drain lowers write.ready for a cycle, so the drains start after the last request.
    plan += [(None, 0)] * 6
    observations, final, _ = _run_accumulator(2, 2, plan)
    assert final[0] == [113, 216]
    assert len(observations) == 6
    assert [got for got, _ in observations[WRITE_LATENCY - 1:]] == [[113, 216]] * 4
    _assert_drains(observations)


# Parameter checks --------------------------------------------------------------------------------

@pytest.mark.parametrize("factory, kwargs, error, fragment", [
    (Scratchpad, dict(row_bytes=0, depth=16), ValueError, "row_bytes must be in 1..64, not 0"),
    (Scratchpad, dict(row_bytes=8, depth=48), ValueError, "depth must be a power of two"),
    (Scratchpad, dict(row_bytes=8, depth=16, banks=16), ValueError, "banks must be in 1..8"),
    (Scratchpad, dict(row_bytes=8, depth=16, banks=3), ValueError, "banks must be a power of two"),
    (Scratchpad, dict(row_bytes=8.0, depth=16), TypeError, "row_bytes must be an integer, not 8.0"),
    (AccumulatorMemory, dict(cols=65, depth=16), ValueError, "cols must be in 1..64, not 65"),
    (AccumulatorMemory, dict(cols=4, depth=True), TypeError, "depth must be an integer, not True"),
])
def test_bad_parameters(factory, kwargs, error, fragment):
    assert_rejected(error, fragment, factory, **kwargs)
