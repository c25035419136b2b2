"""BinaryEngine: bit-exact against sim.reference.binary_dense / threshold_activation.

Every layer is checked on both outputs (int32 dots and threshold bits), with random padding bits
beyond K in the last beat of activations and weights (they must not count), and with random input
gaps and output stalls where the case asks for them.
"""

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module, UnusedElaboratable
from hypothesis import given, settings, strategies as st

from hw.binary import BinaryEngine
from hw.binary.encoding import (activation_beats, decode_results, fold_counts, layer_descriptor,
                                threshold_writes, weight_writes)
from sim import reference
from sim.harness import receive, run, send


def _plus_minus_one(rng, shape, fill=None):
    if fill is not None:
        return np.full(shape, fill, dtype=np.int8)
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)


def _layer(rng, m, k, n, *, activations=None, weights=None, thresholds=None, ascending=None):
    """A layer case: packed inputs, thresholds, and the expected outputs from sim.reference."""
    a_packed = reference.pack_bits(_plus_minus_one(rng, (m, k), activations))
    w_packed = reference.pack_bits(_plus_minus_one(rng, (n, k), weights))
    if thresholds is None:
        thresholds = rng.integers(-k - 2, k + 3, size=n)
    if ascending is None:
        ascending = rng.random(n) < 0.5
    thresholds = np.asarray(thresholds, dtype=np.int64)
    ascending = np.asarray(ascending, dtype=bool)
    dots = reference.binary_dense(a_packed, w_packed, k)
    return {
        "m": m, "k": k, "n": n, "a_packed": a_packed, "w_packed": w_packed,
        "thresholds": thresholds, "ascending": ascending,
        "dots": dots, "signs": reference.threshold_activation(dots, thresholds, ascending),
    }


def _with_padding_garbage(payloads, k, width, rng, *, is_last):
    """Set the bits beyond K in each last beat to random values; the engine must mask them."""
    valid = k % width
    if valid == 0:
        return payloads
    garbage_mask = ((1 << width) - 1) ^ ((1 << valid) - 1)
    return [dict(payload, bits=payload["bits"] | (rng.getrandbits(width) & garbage_mask))
            if is_last(payload) else payload for payload in payloads]


def _loads(dut, layer, rng):
    k, width, lanes = layer["k"], dut.width, dut.lanes
    folds, _ = fold_counts(k, layer["n"], width=width, lanes=lanes)
    weights = _with_padding_garbage(weight_writes(layer["w_packed"], k, width=width, lanes=lanes),
                                    k, width, rng,
                                    is_last=lambda payload: payload["address"] % folds == folds - 1)
    thresholds = threshold_writes(layer["thresholds"], layer["ascending"], k, lanes=lanes)
    beats = _with_padding_garbage(activation_beats(layer["a_packed"], k, width=width),
                                  k, width, rng, is_last=lambda payload: payload["last"])
    return weights, thresholds, beats


def _simulate(dut, layers, *, gap=0.0, stall=0.0, seed=0, name="binary_engine"):
    """Run `layers` one after the other; return [(dots, signs)] per layer and framing_error."""
    rng = random.Random(seed)
    loads = [_loads(dut, layer, rng) for layer in layers]
    counts = [layer["m"] * fold_counts(layer["k"], layer["n"], width=dut.width,
                                       lanes=dut.lanes)[1] for layer in layers]
    received = [None] * len(layers)
    outcome = {}

    async def producer(ctx):
        for index, (layer, (weights, thresholds, beats)) in enumerate(zip(layers, loads)):
            # Weights of the next layer may only be written once the previous one has drained.
            while index and received[index - 1] is None:
                await ctx.tick()
            await send(ctx, dut.weights, weights, gap_probability=gap, rng=rng)
            await send(ctx, dut.thresholds, thresholds, gap_probability=gap, rng=rng)
            await send(ctx, dut.layer, [layer_descriptor(layer["k"], layer["n"], lanes=dut.lanes)])
            await send(ctx, dut.activations, beats, gap_probability=gap, rng=rng)

    async def consumer(ctx):
        for index, count in enumerate(counts):
            received[index] = await receive(ctx, dut.results, count, stall_probability=stall,
                                            rng=random.Random(seed + 1 + index))
        await ctx.tick().repeat(3)
        outcome["idle"] = ctx.get(dut.idle)
        outcome["framing_error"] = ctx.get(dut.framing_error)

    run(dut, producer, consumer, name=name)
    assert outcome == {"idle": 1, "framing_error": 0}
    return [decode_results(results, layer["n"], lanes=dut.lanes)
            for results, layer in zip(received, layers)]


def _check(dut, layers, **kwargs):
    for layer, (dots, signs) in zip(layers, _simulate(dut, layers, **kwargs)):
        np.testing.assert_array_equal(dots, layer["dots"])
        np.testing.assert_array_equal(signs, layer["signs"])


# Random shapes ------------------------------------------------------------------------------------

@settings(max_examples=10, deadline=None)
@given(width=st.sampled_from([4, 8, 16]), lanes=st.integers(1, 4), data=st.data())
def test_random_layers_match_reference(width, lanes, data):
    k = data.draw(st.integers(1, 4 * width + 3), label="k")
    n = data.draw(st.integers(1, 3 * lanes + 1), label="n")
    m = data.draw(st.integers(1, 3), label="m")
    gap = data.draw(st.sampled_from([0.0, 0.4]), label="gap")
    stall = data.draw(st.sampled_from([0.0, 0.5]), label="stall")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    dut = BinaryEngine(width=width, lanes=lanes, max_k=4 * width + 3, max_n=3 * lanes + 1)
    _check(dut, [_layer(np.random.default_rng(seed), m, k, n)], gap=gap, stall=stall, seed=seed)


# Edge cases ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, n, m, activations, weights", [
    (1, 3, 4, None, None),      # K = 1: one bit, mask keeps only bit 0
    (5, 4, 3, None, None),      # K < width
    (8, 5, 2, None, None),      # K = width: no padding, one beat
    (24, 2, 2, None, None),     # K a multiple of width: three full beats
    (29, 7, 3, None, None),     # partial last beat and a partial last neuron fold
    (21, 3, 2, 1, 1),           # all +1 (bits all ones): dot = K
    (21, 3, 2, -1, -1),         # all -1 (bits all zeros): dot = K
    (21, 3, 2, 1, -1),          # opposite: dot = -K
    (21, 3, 2, -1, 1),
])
def test_edge_shapes_and_values(k, n, m, activations, weights):
    dut = BinaryEngine(width=8, lanes=2, max_k=32, max_n=8)
    layer = _layer(np.random.default_rng(k), m, k, n, activations=activations, weights=weights)
    _check(dut, [layer], gap=0.3, stall=0.3, seed=k)


@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_thresholds_at_the_boundary(ascending, offset):
    rng = np.random.default_rng(7)
    k, n, m = 19, 6, 1
    dots = None
    layer = _layer(rng, m, k, n)
    dots = layer["dots"][0]
    boundary = _layer(np.random.default_rng(7), m, k, n, thresholds=dots + offset,
                      ascending=np.full(n, ascending))
    assert np.array_equal(boundary["dots"][0], dots)
    _check(BinaryEngine(width=8, lanes=4, max_k=24, max_n=8), [boundary])


def test_thresholds_beyond_the_dot_range_are_clamped():
    # fold_batchnorm_sign gives INT32_MIN/MAX for gamma == 0 and large bounds for tiny gamma.
    k, n = 13, 8
    gamma = np.array([0.0, 0.0, 1e-9, -1e-9, 2.0, -0.5, 1.0, -1.0])
    beta = np.array([1.0, -1.0, 5.0, 5.0, 0.3, 0.1, -0.25, 0.25])
    mean = np.array([0.0, 0.0, 0.0, 0.0, 1.5, -2.0, 3.0, -1.0])
    var = np.array([1.0, 1.0, 1.0, 1.0, 4.0, 0.25, 1.0, 9.0])
    thresholds, ascending = reference.fold_batchnorm_sign(gamma, beta, mean, var)
    assert thresholds.min() < -k - 1 and thresholds.max() > k + 1
    layer = _layer(np.random.default_rng(3), 4, k, n, thresholds=thresholds, ascending=ascending)
    _check(BinaryEngine(width=4, lanes=3, max_k=16, max_n=9), [layer], stall=0.3)


def test_consecutive_layers_with_different_shapes():
    rng = np.random.default_rng(11)
    layers = [_layer(rng, 3, 30, 7), _layer(rng, 2, 7, 3), _layer(rng, 2, 16, 2)]
    _check(BinaryEngine(width=8, lanes=3, max_k=32, max_n=9), layers, gap=0.2, stall=0.2, seed=4)


# Timing: no bubbles, documented latency -----------------------------------------------------------

@pytest.mark.parametrize("k, n", [(8, 9), (6, 3), (20, 6), (20, 2)])
def test_results_leave_without_bubbles(k, n):
    """With a ready output, fold j of vector v leaves exactly latency + F*(v*NF + j) after start."""
    dut = BinaryEngine(width=8, lanes=3, max_k=24, max_n=9)
    m = 4
    layer = _layer(np.random.default_rng(k), m, k, n)
    weights, thresholds, beats = _loads(dut, layer, random.Random(0))
    folds, neuron_folds = fold_counts(k, n, width=8, lanes=3)
    cycles = []

    async def testbench(ctx):
        await send(ctx, dut.weights, weights)
        await send(ctx, dut.thresholds, thresholds)
        await send(ctx, dut.layer, [layer_descriptor(k, n, lanes=3)])
        ctx.set(dut.results.ready, 1)
        ctx.set(dut.activations.valid, 1)
        cycle = 0
        while len(cycles) < m * neuron_folds:
            ctx.set(dut.activations.payload, beats[0] if beats else {"bits": 0, "last": 0})
            _, _, in_ready, out_valid = await ctx.tick().sample(dut.activations.ready,
                                                                 dut.results.valid)
            if in_ready and beats:
                beats.pop(0)
                ctx.set(dut.activations.valid, bool(beats))
            if out_valid:
                cycles.append(cycle)
            cycle += 1

    run(dut, testbench, name=f"binary_no_bubbles_{k}_{n}")
    # The descriptor is held for a cycle before it applies, so the first beat goes in one
    # cycle after the descriptor's transfer.
    start = cycles[0] - dut.latency - folds + 1
    assert start == 1
    assert cycles == [start + dut.latency + folds * (index + 1) - 1
                      for index in range(m * neuron_folds)]


# Reset, framing, parameters -----------------------------------------------------------------------

def test_reset_mid_layer_then_rerun():
    dut = BinaryEngine(width=8, lanes=2, max_k=24, max_n=6)
    layer = _layer(np.random.default_rng(5), 3, 21, 5)
    weights, thresholds, beats = _loads(dut, layer, random.Random(5))
    top = Module()
    top.domains.sync = domain = ClockDomain()
    top.submodules.engine = dut
    count = layer["m"] * 3
    after_reset = []
    state = {}

    async def producer(ctx):
        await send(ctx, dut.weights, weights)
        await send(ctx, dut.thresholds, thresholds)
        await send(ctx, dut.layer, [layer_descriptor(21, 5, lanes=2)])
        # Part-way into the second vector, with results waiting in the output FIFO.
        await send(ctx, dut.activations, beats[:4])
        await ctx.tick().repeat(2)
        ctx.set(domain.rst, 1)
        await ctx.tick()
        ctx.set(domain.rst, 0)
        state["idle"] = ctx.get(dut.idle)
        state["valid"] = ctx.get(dut.results.valid)
        state["ready"] = ctx.get(dut.activations.ready)
        # Weights and thresholds survive reset (memories); the descriptor does not.
        await send(ctx, dut.layer, [layer_descriptor(21, 5, lanes=2)])
        await send(ctx, dut.activations, beats, gap_probability=0.2)
        state["sent"] = True

    async def consumer(ctx):
        while "sent" not in state and "idle" not in state:
            await ctx.tick()
        after_reset.extend(await receive(ctx, dut.results, count, stall_probability=0.3))
        await ctx.tick().repeat(3)
        state["framing_error"] = ctx.get(dut.framing_error)

    run(top, producer, consumer, name="binary_reset_mid_layer")
    assert (state["idle"], state["valid"], state["ready"]) == (1, 0, 0)
    assert state["framing_error"] == 0
    dots, signs = decode_results(after_reset, 5, lanes=2)
    np.testing.assert_array_equal(dots, layer["dots"])
    np.testing.assert_array_equal(signs, layer["signs"])


def test_last_flag_mismatch_sets_framing_error():
    dut = BinaryEngine(width=8, lanes=1, max_k=16, max_n=1)
    flags = []

    async def testbench(ctx):
        await send(ctx, dut.layer, [{"k": 12, "neuron_folds": 1}])
        ctx.set(dut.results.ready, 1)
        await send(ctx, dut.activations, [{"bits": 0, "last": 0}, {"bits": 0, "last": 1}])
        flags.append(ctx.get(dut.framing_error))
        # K = 12 is two beats; `last` on the first one contradicts it.
        await send(ctx, dut.activations, [{"bits": 0, "last": 1}])
        await ctx.tick()
        flags.append(ctx.get(dut.framing_error))

    run(dut, testbench, name="binary_framing_error")
    assert flags == [0, 1]


def test_packing_order_matches_pack_bits():
    """Value p is bit p % width of beat p // width, for activations and weights alike."""
    k, width, lanes = 21, 8, 2
    for position in range(k):
        values = np.full((1, k), -1, dtype=np.int8)
        values[0, position] = 1
        packed = reference.pack_bits(values)
        expected = [1 << (position % width) if beat == position // width else 0
                    for beat in range(3)]
        assert [p["bits"] for p in activation_beats(packed, k, width=width)] == expected
        neurons = np.repeat(packed, 3, axis=0)
        writes = weight_writes(neurons, k, width=width, lanes=lanes)
        assert [(p["address"], p["lane"], p["bits"]) for p in writes[6:]] == [
            (3 + beat, 0, bits) for beat, bits in enumerate(expected)]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(width=12, lanes=2, max_k=8, max_n=2), ValueError, "width must be a power of two.*not 12"),
    (dict(width=2, lanes=2, max_k=8, max_n=2), ValueError, "width must be in 4..4096, not 2"),
    (dict(width=8, lanes=0, max_k=8, max_n=2), ValueError, "lanes must be in 1..256, not 0"),
    (dict(width=8, lanes=257, max_k=8, max_n=2), ValueError, "lanes must be in 1..256, not 257"),
    (dict(width=8, lanes=2, max_k=0, max_n=2), ValueError, "max_k must be in 1..65536, not 0"),
    (dict(width=8, lanes=2, max_k=8, max_n=0), ValueError, "max_n must be in >= 1, not 0"),
    (dict(width=8.0, lanes=2, max_k=8, max_n=2), TypeError, "width must be an integer, not 8.0"),
    (dict(width=8, lanes=True, max_k=8, max_n=2), TypeError, "lanes must be an integer, not True"),
    (dict(width=8, lanes=2, max_k="8", max_n=2), TypeError, "max_k must be an integer, not '8'"),
])
def test_bad_parameters_are_rejected(kwargs, error, message):
    _assert_rejected(error, message, **kwargs)


def test_parameters_are_keyword_only():
    _assert_rejected(TypeError, "positional", 8, 2, 8, 2)


def _assert_rejected(error, message, *args, **kwargs):
    with warnings.catch_warnings():
        # The half-built component is garbage; only the exception matters.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(error, match=message):
            BinaryEngine(*args, **kwargs)
        gc.collect()
