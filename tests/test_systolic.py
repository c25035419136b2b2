# amaranth: UnusedElaboratable=no
"""INT8 systolic array in pysim, bit-exact against `sim.reference.gemm`.

Both dataflows, all multiplier mappings (the "dsp" one runs its behavioural model here; the
instance is checked in tests/test_systolic_dsp.py; "mixed" arrays with some PEs of each), random
shapes and values (hypothesis), edge operands, random input gaps and output stalls, reset in the
middle of a tile, the fabric multiplier on every operand pair, and parameter checks.
"""

import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from hypothesis import given, settings, strategies as st

from hw.systolic.array import SystolicArray
from hw.systolic.lut_multiplier import LutMultiplier
from hw.systolic.pe import Multiplier, ProcessingElement, exact_sum_shape
from sim import reference
from sim.bench.systolic import (gemm_tiles, simulate_gemm, simulate_output_stationary,
                                simulate_weight_stationary)
from sim.harness import run

SHAPES = [(1, 1), (2, 3), (3, 2), (4, 4)]
MULTIPLIERS = ["dsp", "lut"]


def _int8(rng, shape):
    return rng.integers(-128, 128, size=shape, dtype=np.int64)


def _check_output_stationary(array, tiles, **kwargs):
    results, cycles = simulate_output_stationary(array, tiles, **kwargs)
    assert len(results) == len(tiles)
    for (a, w), result in zip(tiles, results):
        np.testing.assert_array_equal(result, reference.gemm(a, w))
    return cycles


def _check_weight_stationary(array, problems, **kwargs):
    """Each problem (A [M x K], W [K x C]) goes in as K chunks; check chunks and their sum."""
    tiles, owners = [], []
    for index, (a, w) in enumerate(problems):
        chunks, _ = gemm_tiles(a, w, rows=array.rows, cols=array.cols,
                               dataflow="weight_stationary")
        tiles += chunks
        owners += [index] * len(chunks)
    results, cycles = simulate_weight_stationary(array, tiles, **kwargs)
    totals = [np.zeros((a.shape[0], w.shape[1]), dtype=np.int64) for a, w in problems]
    for (a_chunk, w_chunk), owner, result in zip(tiles, owners, results):
        np.testing.assert_array_equal(result, reference.gemm(a_chunk, w_chunk))
        totals[owner] += result
    for (a, w), total in zip(problems, totals):
        np.testing.assert_array_equal(total, reference.gemm(a, w))
    return cycles


# Random shapes and values ------------------------------------------------------------------------

traffic = st.tuples(st.sampled_from([0.0, 0.3, 0.7]), st.sampled_from([0.0, 0.3, 0.8]))


@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from(SHAPES), multiplier=st.sampled_from(MULTIPLIERS),
       depths=st.lists(st.integers(1, 14), min_size=1, max_size=4),
       traffic=traffic, seed=st.integers(0, 2**32 - 1))
def test_output_stationary_random(shape, multiplier, depths, traffic, seed):
    rows, cols = shape
    rng = np.random.default_rng(seed)
    tiles = [(_int8(rng, (rows, depth)), _int8(rng, (depth, cols))) for depth in depths]
    array = SystolicArray(rows=rows, cols=cols, dataflow="output_stationary",
                          multiplier=multiplier)
    _check_output_stationary(array, tiles, gap_probability=traffic[0],
                             stall_probability=traffic[1], seed=seed)


@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from(SHAPES), multiplier=st.sampled_from(MULTIPLIERS),
       sizes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 10)), min_size=1, max_size=3),
       traffic=traffic, seed=st.integers(0, 2**32 - 1))
def test_weight_stationary_random(shape, multiplier, sizes, traffic, seed):
    rows, cols = shape
    rng = np.random.default_rng(seed)
    problems = [(_int8(rng, (m, k)), _int8(rng, (k, cols))) for m, k in sizes]
    array = SystolicArray(rows=rows, cols=cols, dataflow="weight_stationary",
                          multiplier=multiplier)
    _check_weight_stationary(array, problems, gap_probability=traffic[0],
                             stall_probability=traffic[1], seed=seed)


@settings(max_examples=10, deadline=None)
@given(data=st.data(), shape=st.sampled_from([(2, 3), (3, 4), (4, 3)]),
       dataflow=st.sampled_from(["output_stationary", "weight_stationary"]),
       seed=st.integers(0, 2**32 - 1))
def test_mixed_array_random(data, shape, dataflow, seed):
    """Some PEs on the DSP multiplier (its model), the others on the fabric one: bit-exact."""
    rows, cols = shape
    dsp_pes = data.draw(st.integers(1, rows * cols - 1), label="dsp_pes")
    rng = np.random.default_rng(seed)
    array = SystolicArray(rows=rows, cols=cols, dataflow=dataflow, multiplier="mixed",
                          dsp_pes=dsp_pes)
    if dataflow == "output_stationary":
        depths = data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=3), label="depths")
        tiles = [(_int8(rng, (rows, depth)), _int8(rng, (depth, cols))) for depth in depths]
        _check_output_stationary(array, tiles, stall_probability=0.3, seed=seed)
    else:
        sizes = data.draw(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 2 * rows)),
                                   min_size=1, max_size=2), label="sizes")
        problems = [(_int8(rng, (m, k)), _int8(rng, (k, cols))) for m, k in sizes]
        _check_weight_stationary(array, problems, stall_probability=0.3, seed=seed)


def test_mixed_array_gives_dsps_column_major():
    array = SystolicArray(rows=3, cols=2, dataflow="weight_stationary", multiplier="mixed",
                          dsp_pes=4)
    assert [[array.pe_multiplier(i, j) for j in range(2)] for i in range(3)] == \
        [["dsp", "dsp"], ["dsp", "lut"], ["dsp", "lut"]]
    assert array.dsp_count == 4


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
@pytest.mark.parametrize("m, k, n", [(7, 5, 4), (3, 2, 2), (1, 7, 5)])
def test_whole_gemm_tiled_onto_the_array(dataflow, m, k, n):
    """The bench's `--gemm` path: a GEMM larger than the array in every dimension (or smaller),
    cut into zero-padded tiles and put back together, equals the reference."""
    rng = np.random.default_rng(m * k * n)
    a, w = _int8(rng, (m, k)), _int8(rng, (k, n))
    array = SystolicArray(rows=3, cols=2, dataflow=dataflow, multiplier="dsp")
    product, _ = simulate_gemm(array, a, w)
    np.testing.assert_array_equal(product, reference.gemm(a, w))


# Edge cases --------------------------------------------------------------------------------------

def _constant(value, shape):
    return np.full(shape, value, dtype=np.int64)


EDGE_CASES = [
    # name, rows, cols, [(M, K)]: output-stationary uses M = rows.
    ("k1", 3, 2, [(3, 1), (3, 1), (3, 1)]),
    ("k_not_multiple", 3, 2, [(3, 7), (3, 4)]),
    ("n1", 3, 1, [(3, 5)]),
    ("m1_single_pe", 1, 1, [(1, 1), (1, 3)]),
]


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
@pytest.mark.parametrize("fill", [-128, 127, "mixed"])
def test_extreme_operands(dataflow, fill):
    rows, cols, depth = 3, 2, 11
    if fill == "mixed":
        a, w = _constant(-128, (rows, depth)), _constant(127, (depth, cols))
    else:
        a, w = _constant(fill, (rows, depth)), _constant(fill, (depth, cols))
    array = SystolicArray(rows=rows, cols=cols, dataflow=dataflow, multiplier="lut")
    if dataflow == "output_stationary":
        _check_output_stationary(array, [(a, w), (a, w)], stall_probability=0.5)
    else:
        _check_weight_stationary(array, [(a, w), (a, w)], stall_probability=0.5)


@pytest.mark.parametrize("rows", [4, 12])
@pytest.mark.parametrize("fill", [-128, "mixed"])
def test_weight_stationary_column_extremes(rows, fill):
    """A full column of -128 x -128 (or -128 x 127) products: the largest sums the narrowed
    partial sums must hold (12 rows: 196,608, which needs 19 bits)."""
    a = _constant(-128, (3, rows))
    w = _constant(-128 if fill == -128 else 127, (rows, 1))
    array = SystolicArray(rows=rows, cols=1, dataflow="weight_stationary", multiplier="dsp")
    _check_weight_stationary(array, [(a, w)], stall_probability=0.3)


@pytest.mark.parametrize("products", [1, 2, 3, 4, 12, 32, 1000])
def test_exact_sum_shape_is_the_narrowest_that_holds_every_sum(products):
    largest, smallest = products * (-128) * (-128), products * (-128) * 127
    shape = exact_sum_shape(products)
    assert shape.signed
    assert -2 ** (shape.width - 1) <= smallest and largest < 2 ** (shape.width - 1)
    assert largest >= 2 ** (shape.width - 2)        # one bit fewer would not hold it


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
@pytest.mark.parametrize("name, rows, cols, sizes", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_shapes(dataflow, name, rows, cols, sizes):
    rng = np.random.default_rng(len(name))
    problems = [(_int8(rng, (m, k)), _int8(rng, (k, cols))) for m, k in sizes]
    array = SystolicArray(rows=rows, cols=cols, dataflow=dataflow, multiplier="dsp")
    if dataflow == "output_stationary":
        _check_output_stationary(array, problems, gap_probability=0.3, stall_probability=0.3)
    else:
        # M = 1 rows per tile as well as the listed ones.
        problems.append((_int8(rng, (1, 2)), _int8(rng, (2, cols))))
        _check_weight_stationary(array, problems, gap_probability=0.3, stall_probability=0.3)


def test_long_output_stall_loses_nothing():
    """A consumer that is mostly stalled fills the result FIFO; credits must hold inputs back."""
    rng = np.random.default_rng(7)
    rows, cols = 2, 3
    os_array = SystolicArray(rows=rows, cols=cols, dataflow="output_stationary", multiplier="dsp")
    _check_output_stationary(os_array, [(_int8(rng, (rows, 1)), _int8(rng, (1, cols)))
                                        for _ in range(40)], stall_probability=0.95)
    ws_array = SystolicArray(rows=rows, cols=cols, dataflow="weight_stationary", multiplier="dsp")
    _check_weight_stationary(ws_array, [(_int8(rng, (30, 2)), _int8(rng, (2, cols)))],
                             stall_probability=0.95)


# Timing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (4, 4)])
def test_documented_latency(rows, cols):
    rng = np.random.default_rng(0)
    array = SystolicArray(rows=rows, cols=cols, dataflow="output_stationary", multiplier="dsp")
    # One K=1 tile: its only beat is the last; R result rows follow one per cycle.
    cycles = _check_output_stationary(array, [(_int8(rng, (rows, 1)), _int8(rng, (1, cols)))])
    assert cycles == array.latency + rows - 1
    array = SystolicArray(rows=rows, cols=cols, dataflow="weight_stationary", multiplier="dsp")
    # R weight beats; the last shifts in one cycle after its handshake, and the single
    # activation is taken in the cycle after that.
    cycles = _check_weight_stationary(array, [(_int8(rng, (1, rows)), _int8(rng, (rows, cols)))])
    assert cycles == rows + 1 + array.latency


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
def test_back_to_back_tiles_take_one_cycle_per_beat(dataflow):
    """Reuse 8x the side: every beat enters on consecutive cycles (the bench measures %)."""
    rows, cols, tiles_count = 3, 3, 3
    rng = np.random.default_rng(1)
    array = SystolicArray(rows=rows, cols=cols, dataflow=dataflow, multiplier="dsp")
    depth = 8 * rows
    if dataflow == "output_stationary":
        tiles = [(_int8(rng, (rows, depth)), _int8(rng, (depth, cols))) for _ in range(tiles_count)]
        cycles = _check_output_stationary(array, tiles)
        assert cycles == tiles_count * depth - 1 + array.latency + rows - 1
    else:
        problems = [(_int8(rng, (depth, rows)), _int8(rng, (rows, cols)))
                    for _ in range(tiles_count)]
        cycles = _check_weight_stationary(array, problems)
        assert cycles == rows + 1 + tiles_count * depth - 1 + array.latency


# Reset -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
@pytest.mark.parametrize("reset_at", [0, 3, 12])
def test_reset_in_the_middle_of_a_tile(dataflow, reset_at):
    """Beats (and results) in flight when reset hits vanish; afterwards the array is as new."""
    rows, cols = 3, 2
    rng = np.random.default_rng(reset_at)
    array = SystolicArray(rows=rows, cols=cols, dataflow=dataflow, multiplier="lut")
    if dataflow == "output_stationary":
        prefix = [{"a": [5] * rows, "w": [7] * cols, "last": int(k == 2)} for k in range(5)]
        tiles = [(_int8(rng, (rows, 4)), _int8(rng, (4, cols))) for _ in range(2)]
        _check_output_stationary(array, tiles, prefix=prefix, reset_at=reset_at)
    else:
        # One full weight tile, two rows of it (no `last`), then half of the next weights.
        prefix_weights = [[9] * cols] * (rows + rows // 2 + 1)
        prefix_activations = [{"a": [3] * rows, "last": 0}] * 2
        problems = [(_int8(rng, (4, rows)), _int8(rng, (rows, cols))) for _ in range(2)]
        _check_weight_stationary(array, problems, prefix=(prefix_weights, prefix_activations),
                                 reset_at=reset_at)


# Building blocks and parameters -----------------------------------------------------------------

def test_lut_multiplier_every_product():
    """All 65,536 signed 8-bit operand pairs, one per cycle, against Python's product."""
    pairs = [(a, b) for a in range(-128, 128) for b in range(-128, 128)]
    assert LutMultiplier.LATENCY == Multiplier.LATENCY
    assert _pipelined_products(LutMultiplier(), pairs, name="lut_multiplier") == [
        a * b for a, b in pairs]


def _pipelined_products(dut, pairs, *, name):
    """The products `dut` (a multiplier of latency ``dut.LATENCY``) gives for operand `pairs`
    fed one per cycle, in order."""
    products = []

    async def testbench(ctx):
        for a, b in pairs + [(0, 0)] * dut.LATENCY:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()
            products.append(ctx.get(dut.product))

    run(dut, testbench, name=name)
    # After the edge of input n, the product of input n - LATENCY + 1 is visible.
    return products[dut.LATENCY - 1:][:len(pairs)]


@pytest.mark.parametrize("mapping", MULTIPLIERS)
def test_multiplier_products_and_latency(mapping):
    corners = [-128, -127, -1, 0, 1, 2, 64, 127]
    rng = random.Random(mapping)
    pairs = [(x, y) for x in corners for y in corners]
    pairs += [(rng.randrange(-128, 128), rng.randrange(-128, 128)) for _ in range(300)]
    assert _pipelined_products(Multiplier(mapping=mapping), pairs,
                               name=f"multiplier_{mapping}") == [a * b for a, b in pairs]


BAD_PARAMETERS = [
    (dict(rows=0), ValueError, "rows must be in 1..32, not 0"),
    (dict(rows=33), ValueError, "rows must be in 1..32, not 33"),
    (dict(cols=2.0), TypeError, "cols must be an integer in 1..32, not 2.0"),
    (dict(cols=True), TypeError, "cols must be an integer in 1..32, not True"),
    (dict(dataflow="row_stationary"), ValueError, "dataflow must be one of"),
    (dict(dataflow=None), TypeError, "dataflow must be a string"),
    (dict(multiplier="dsp48"), ValueError,
     "multiplier must be one of ('dsp', 'lut', 'mixed'), not 'dsp48'"),
    (dict(multiplier=None), TypeError, "multiplier must be a string, not None"),
    (dict(multiplier="mixed"), ValueError, "multiplier='mixed' needs dsp_pes, how many of the 4"),
    (dict(multiplier="mixed", dsp_pes=4), ValueError,
     "dsp_pes must be in 1..3 for a mixed 2x2 array (0 is multiplier='lut', 4 is 'dsp'), not 4"),
    (dict(multiplier="mixed", dsp_pes=2.0), TypeError, "dsp_pes must be an integer in 1..3"),
    (dict(multiplier="lut", dsp_pes=2), ValueError, "dsp_pes is for multiplier='mixed' only"),
    (dict(rows=1, cols=1, multiplier="mixed", dsp_pes=1), ValueError,
     "multiplier='mixed' needs at least 2 PEs, not a 1x1 array"),
]


@pytest.mark.parametrize("changes, error, message", BAD_PARAMETERS)
def test_bad_array_parameters(changes, error, message):
    parameters = {**dict(rows=2, cols=2, dataflow="output_stationary", multiplier="dsp"),
                  **changes}
    with pytest.raises(error) as info:
        SystolicArray(**parameters)
    assert message in str(info.value)


def test_bad_building_block_parameters():
    with pytest.raises(ValueError, match="mapping must be one of .* not 'fabric'"):
        Multiplier(mapping="fabric")
    with pytest.raises(ValueError, match="mixed"):
        Multiplier(mapping="mixed")
    with pytest.raises(ValueError, match=r"mapping 'lut' takes signed\(8\) operands only"):
        Multiplier(mapping="lut", a_shape=signed(9))
    with pytest.raises(ValueError, match="dataflow must be one of .* not 'systolic'"):
        ProcessingElement(dataflow="systolic", multiplier="dsp")
    with pytest.raises(ValueError, match="psum_shape must be signed and at least 16 bits"):
        ProcessingElement(dataflow="weight_stationary", multiplier="dsp", psum_shape=unsigned(20))
    with pytest.raises(ValueError, match="exact_sum_shape needs a number of products >= 1"):
        exact_sum_shape(0)
    with pytest.raises(TypeError):
        SystolicArray(2, 2, "output_stationary", "dsp")
