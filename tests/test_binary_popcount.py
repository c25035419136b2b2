"""PopcountTree: bit-exact counts at the documented latency, a new word every cycle."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from hypothesis import given, settings, strategies as st

from hw.binary import PopcountTree, popcount_latency
from sim.harness import run


def _counts(width, words):
    """Feed one word per cycle; return the count seen `latency` cycles after each word."""
    dut = PopcountTree(width=width)
    seen = []

    async def testbench(ctx):
        for word in words + [0] * dut.latency:
            ctx.set(dut.bits, word)
            await ctx.tick()
            seen.append(ctx.get(dut.count))

    run(dut, testbench, name=f"popcount_{width}")
    # The value after tick i is the count of the word set before tick i - latency + 1.
    return seen[dut.latency - 1:dut.latency - 1 + len(words)]


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([4, 8, 16, 64, 256]), st.data())
def test_counts_match_bin_count(width, data):
    words = data.draw(st.lists(st.integers(0, (1 << width) - 1), min_size=1, max_size=12))
    assert _counts(width, words) == [bin(word).count("1") for word in words]


@pytest.mark.parametrize("width", [4, 8, 32])
def test_edge_words(width):
    rng = random.Random(width)
    ones = (1 << width) - 1
    words = [0, ones, 1, 1 << (width - 1), ones ^ 1, 0x5555_5555_5555 & ones,
             rng.getrandbits(width)]
    assert _counts(width, words) == [bin(word).count("1") for word in words]


@pytest.mark.parametrize("width, latency", [(4, 1), (8, 2), (16, 2), (32, 3), (64, 3), (4096, 6)])
def test_latency_is_leaf_plus_one_per_two_adder_levels(width, latency):
    assert popcount_latency(width) == latency


@pytest.mark.parametrize("width, error, message", [
    (6, ValueError, "power of two in 4..4096, not 6"),
    (2, ValueError, "not 2"),
    (8192, ValueError, "not 8192"),
    (8.0, TypeError, "not 8.0"),
    (True, TypeError, "not True"),
])
def test_bad_width_is_rejected(width, error, message):
    with warnings.catch_warnings():
        # The half-built component is garbage; only the exception matters.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(error, match=message):
            PopcountTree(width=width)
        gc.collect()
