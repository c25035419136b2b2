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
            if write:
                contents[addr] = row   # a read issued in this cycle sees this cycle's write
            for bank in range(banks):
                enable = rng.random() < 0.7
                local = rng.randrange(bank_depth)
                ctx.set(dut.read[bank].en, enable)
                ctx.set(dut.read[bank].addr, local)
                if enable:
                    issued[bank].append((cycle, contents.get(bank * bank_depth + local,
                                                             [0] * row_bytes)))
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

def _run_accumulator(cols, depth, requests, *, gap_probability, drain_probability, seed):
    """Drive `requests` ((addr, row, accumulate) tuples) with random gaps and random drain reads.

    Returns (drain observations [(got, expected)], final contents read back through `drain`) and
    the model's final contents. Model timing: a request accepted in cycle t is written at the end
    of cycle t+2, so a drain read issued in cycle d sees requests accepted up to cycle d-2; its
    data shows DRAIN_LATENCY cycles later.
    """
    dut = AccumulatorMemory(cols=cols, depth=depth)
    latency = AccumulatorMemory.DRAIN_LATENCY
    rng = random.Random(seed)
    model = [[0] * cols for _ in range(depth)]
    accepted = []                       # (cycle, request)
    observations = []
    final = []

    def model_after(cycle):
        rows = [[0] * cols for _ in range(depth)]
        for accept_cycle, (addr, row, accumulate) in accepted:
            if accept_cycle <= cycle:
                rows[addr] = [_wrap32(a + b) for a, b in zip(rows[addr], row)] if accumulate \
                    else list(row)
        return rows

    async def testbench(ctx):
        cycle = 0
        index = 0
        drains = []                     # (cycle issued, address)
        while index < len(requests) or drains:
            offer = index < len(requests) and rng.random() >= gap_probability
            drain = index < len(requests) and rng.random() < drain_probability
            drain_addr = rng.randrange(depth)
            if offer:
                addr, row, accumulate = requests[index]
                ctx.set(dut.write.payload, {"addr": addr, "data": row, "accumulate": accumulate})
            ctx.set(dut.write.valid, offer)
            ctx.set(dut.drain.en, drain)
            ctx.set(dut.drain.addr, drain_addr)
            if drain:
                drains.append((cycle, drain_addr))
            _, _, ready = await ctx.tick().sample(dut.write.ready)
            if offer and ready:
                accepted.append((cycle, requests[index]))
                index += 1
            cycle += 1
            if drains and drains[0][0] == cycle - latency:
                issued, drained = drains.pop(0)
                observations.append((list(ctx.get(dut.drain.data)),
                                     model_after(issued - 2)[drained]))
        ctx.set(dut.write.valid, 0)
        ctx.set(dut.drain.en, 0)
        # `idle` rises 3 cycles after the last accept.
        last_accept = accepted[-1][0]
        while cycle < last_accept + 3:
            assert not ctx.get(dut.idle)
            await ctx.tick()
            cycle += 1
        assert ctx.get(dut.idle)
        for addr in range(depth + latency - 1):
            ctx.set(dut.drain.en, addr < depth)
            ctx.set(dut.drain.addr, addr % depth)
            await ctx.tick()
            if addr >= latency - 1:
                final.append(list(ctx.get(dut.drain.data)))
        ctx.set(dut.drain.en, 0)

    run(dut, testbench, name="accumulator")
    for _, (addr, row, accumulate) in accepted:
        model[addr] = [_wrap32(a + b) for a, b in zip(model[addr], row)] if accumulate else list(row)
    return observations, final, model


@settings(max_examples=10, deadline=None)
@given(cols=st.integers(1, 6), depth_log2=st.integers(1, 4), count=st.integers(1, 40),
       gap_probability=st.sampled_from([0.0, 0.3]), drain_probability=st.sampled_from([0.0, 0.2]),
       seed=st.integers(0, 2**16))
def test_accumulator_matches_model(cols, depth_log2, count, gap_probability, drain_probability,
                                   seed):
    depth = 1 << depth_log2
    rng = random.Random(seed)
    # Few distinct addresses, so back-to-back accumulations into one row are common.
    hot = [rng.randrange(depth) for _ in range(2)]
    requests = [(rng.choice(hot), _random_row(rng, cols, 32), rng.random() < 0.8)
                for _ in range(count)]
    observations, final, model = _run_accumulator(cols, depth, requests,
                                                  gap_probability=gap_probability,
                                                  drain_probability=drain_probability, seed=seed)
    assert final == model
    for got, expected in observations:
        assert got == expected


@pytest.mark.parametrize("name, requests, expected_row0", [
    # Back-to-back accumulation into one address needs the forwarding path every cycle.
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
def test_accumulator_edge_cases(name, requests, expected_row0):
    _, final, model = _run_accumulator(2, 4, requests, gap_probability=0.0,
                                       drain_probability=0.0, seed=0)
    assert final[0] == expected_row0
    assert final == model


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
