"""Scratchpad, accumulator memory and ping-pong control against cycle-level Python models."""

import random

import pytest
from amaranth.hdl import Cat, Module, Signal
from hypothesis import given, settings, strategies as st

from hw.memory.accumulator import AccumulatorMemory
from hw.memory.ping_pong import PingPong
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

    async def testbench(ctx):
        held = [None] * banks          # what each read port's data must show (it holds when en=0)
        for _ in range(60):
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
                    # Not transparent: a read sees the contents before this cycle's write.
                    held[bank] = contents.get(bank * bank_depth + local, [0] * row_bytes)
            await ctx.tick()
            if write:
                contents[addr] = row
            for bank in range(banks):
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
    of cycle t+1, so a drain read issued in cycle d sees requests accepted up to cycle d-2.
    """
    dut = AccumulatorMemory(cols=cols, depth=depth)
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
        while index < len(requests):
            offer = rng.random() >= gap_probability
            drain = rng.random() < drain_probability
            drain_addr = rng.randrange(depth)
            addr, row, accumulate = requests[index]
            ctx.set(dut.write.valid, offer)
            ctx.set(dut.write.payload, {"addr": addr, "data": row, "accumulate": accumulate})
            ctx.set(dut.drain.en, drain)
            ctx.set(dut.drain.addr, drain_addr)
            _, _, ready = await ctx.tick().sample(dut.write.ready)
            if offer and ready:
                accepted.append((cycle, requests[index]))
                index += 1
            if drain:
                observations.append((list(ctx.get(dut.drain.data)),
                                     model_after(cycle - 2)[drain_addr]))
            cycle += 1
        ctx.set(dut.write.valid, 0)
        ctx.set(dut.drain.en, 0)
        await ctx.tick().repeat(2)
        for addr in range(depth):
            ctx.set(dut.drain.en, 1)
            ctx.set(dut.drain.addr, addr)
            await ctx.tick()
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


# Ping-pong double buffering ----------------------------------------------------------------------

@settings(max_examples=6, deadline=None)
@given(tiles=st.integers(1, 6), tile_rows=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_ping_pong_overlaps_load_and_compute(tiles, tile_rows, seed):
    """A loader fills one half of a scratchpad while a consumer reads the other; every tile is
    read back exactly once, in order, and loads overlap computes."""

    rng = random.Random(seed)
    local_width = 2
    scratchpad = Scratchpad(row_bytes=2, depth=2 << local_width)
    control = PingPong()
    top = Module()
    top.submodules.scratchpad = scratchpad
    top.submodules.control = control
    load_local = Signal(local_width)
    read_local = Signal(local_width)
    top.d.comb += [
        scratchpad.write.addr.eq(Cat(load_local, control.load_half)),
        scratchpad.read[0].addr.eq(Cat(read_local, control.compute_half)),
    ]
    data = [[_random_row(rng, 2, 8) for _ in range(tile_rows)] for _ in range(tiles)]
    computed = []
    overlap_cycles = []
    loading = [False]

    async def loader(ctx):
        for tile in data:
            loading[0] = True
            for index, row in enumerate(tile):
                for _ in range(rng.randrange(3)):
                    await ctx.tick()
                ctx.set(load_local, index)
                ctx.set(scratchpad.write.data, row)
                ctx.set(scratchpad.write.en, 1)
                await ctx.tick()
                ctx.set(scratchpad.write.en, 0)
            loading[0] = False
            ctx.set(control.load_done.valid, 1)
            await ctx.tick().until(control.load_done.ready)
            ctx.set(control.load_done.valid, 0)

    async def consumer(ctx):
        # The first token releases the empty half the compute side starts with.
        for tile_index in range(tiles + 1):
            if tile_index:
                tile = []
                for index in range(tile_rows):
                    ctx.set(read_local, index)
                    ctx.set(scratchpad.read[0].en, 1)
                    await ctx.tick()
                    if loading[0]:
                        overlap_cycles.append(tile_index)
                    tile.append(list(ctx.get(scratchpad.read[0].data)))
                    for _ in range(rng.randrange(3)):
                        await ctx.tick()
                computed.append(tile)
            if tile_index == tiles:
                break
            ctx.set(control.compute_done.valid, 1)
            await ctx.tick().until(control.compute_done.ready)
            ctx.set(control.compute_done.valid, 0)

    run(top, loader, consumer, name="ping_pong")
    assert computed == data
    if tiles >= 3:
        assert overlap_cycles, "loads never overlapped computes"


def test_ping_pong_swaps_only_on_both_tokens():
    dut = PingPong()

    async def testbench(ctx):
        assert ctx.get(dut.load_half) == 0 and ctx.get(dut.compute_half) == 1
        ctx.set(dut.load_done.valid, 1)
        for _ in range(3):
            _, _, ready = await ctx.tick().sample(dut.load_done.ready)
            assert not ready and ctx.get(dut.load_half) == 0
        ctx.set(dut.compute_done.valid, 1)
        _, _, load_ready, compute_ready = await ctx.tick().sample(dut.load_done.ready,
                                                                  dut.compute_done.ready)
        assert load_ready and compute_ready
        assert ctx.get(dut.load_half) == 1 and ctx.get(dut.compute_half) == 0
        assert ctx.get(dut.swaps) == 1
        ctx.set(dut.load_done.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.load_half) == 1 and ctx.get(dut.swaps) == 1

    run(dut, testbench, name="ping_pong_handshake")


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
