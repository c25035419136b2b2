"""Utilization of the INT8 systolic array on streams of back-to-back tiles, both dataflows.

For each point the array (pysim) gets ``--tiles`` full tiles whose reuse dimension is a multiple of
the array side (K for output-stationary, M rows per loaded weight tile for weight-stationary),
while the result consumer is always ready. ``cycles`` runs from the first input handshake to the
last result handshake, so pipeline fill and drain are included; ``utilization`` is useful MACs /
(R*C*cycles). Results are checked against `sim.reference.gemm` on the way.

With ``--gemm MxKxN`` (repeatable) the points are whole GEMMs instead, each run through both
dataflows side by side: `gemm_tiles` cuts ``A [M x K] @ W [K x N]`` into the array's tiles
(output-stationary: one tile per R x C block of the result, all of K; weight-stationary: one tile
per R x C block of W, all M rows, the K blocks summed afterwards as the accumulator memory does),
partial tiles zero-padded, all sent back to back; ``macs`` counts only the GEMM's own M*K*N, so
padding shows as lost utilization. This is the array alone, fed one beat per cycle: what feeding
it from memory costs is the core bench's (`sim.bench.core`).

The drivers `simulate_output_stationary` / `simulate_weight_stationary` and `gemm_tiles` are
shared with ``tests/test_systolic.py``.
"""

import argparse
import random
from functools import partial

import numpy as np
from amaranth.hdl import ResetInserter, Signal

from hw.config import DATAFLOWS
from hw.systolic.array import SystolicArray
from sim import reference
from sim import harness
from sim.harness import receive, send

DESCRIPTION = "INT8 systolic array: cycles, MACs and utilization on back-to-back tiles"

DEFAULT_SHAPES = ((4, 4), (8, 8), (12, 12))
DEFAULT_REUSE = (1, 2, 8)


def _rows_of(payloads, cols):
    return np.array([[payload.data[j] for j in range(cols)] for payload in payloads],
                    dtype=np.int64).reshape(len(payloads), cols)


class _Clock:
    """Counts clock edges; testbenches read it to time handshakes."""

    def __init__(self):
        self.cycle = 0

    async def process(self, ctx):
        async for _ in ctx.tick():
            self.cycle += 1


def simulate_output_stationary(array, tiles, *, gap_probability=0.0, stall_probability=0.0,
                               seed=0, prefix=(), reset_at=None, name="systolic_os"):
    """Run `tiles` ([(A [R x K], W [K x C]), ...]) through an output-stationary `array`.

    `prefix` beats (operand payload dicts) are sent first and their results are not collected:
    with `reset_at`, a one-cycle reset hits `reset_at` cycles after the last prefix beat was
    accepted (results of the prefix may still be in flight), and `tiles` are sent after it, so
    they must come out exactly as from a new array. Returns (list of int64 [R x C] results,
    cycles from the first handshake of `tiles` to their last result handshake).
    """
    rows, cols = array.rows, array.cols
    beats = []
    for a, w in tiles:
        depth = a.shape[1]
        beats += [{"a": [int(x) for x in a[:, k]], "w": [int(x) for x in w[k]],
                   "last": int(k == depth - 1)} for k in range(depth)]
    count = rows * len(tiles)
    received, times = _simulate(array, {"operands": (list(prefix), beats)}, count,
                                gap_probability, stall_probability, seed, reset_at, name)
    results = _rows_of(received, cols)
    _check_last_flags(received, rows)
    return [results[n * rows:(n + 1) * rows] for n in range(len(tiles))], times


def simulate_weight_stationary(array, tiles, *, gap_probability=0.0, stall_probability=0.0,
                               seed=0, prefix=(), reset_at=None, name="systolic_ws"):
    """Run `tiles` ([(A [M x R], W [R x C]), ...]) through a weight-stationary `array`.

    `prefix` is a pair (weight beats, activation beats) sent first and not collected (see
    `simulate_output_stationary`). Returns (list of int64 [M x C] results, cycles).
    """
    rows, cols = array.rows, array.cols
    weight_beats, activation_beats = [], []
    for a, w in tiles:
        weight_beats += [[int(x) for x in w[k]] for k in range(rows)]
        activation_beats += [{"a": [int(x) for x in a[n]], "last": int(n == a.shape[0] - 1)}
                             for n in range(a.shape[0])]
    prefix_weights, prefix_activations = prefix if prefix else ((), ())
    count = sum(a.shape[0] for a, _ in tiles)
    received, times = _simulate(array, {"weights": (list(prefix_weights), weight_beats),
                                        "activations": (list(prefix_activations),
                                                        activation_beats)},
                                count, gap_probability, stall_probability, seed, reset_at, name)
    results = _rows_of(received, cols)
    ends = np.cumsum([a.shape[0] for a, _ in tiles])
    expected_last = np.zeros(count, dtype=bool)
    expected_last[ends - 1] = True
    if [bool(p.last) for p in received] != list(expected_last):
        raise AssertionError("results `last` flags do not mark the last row of each tile")
    return np.split(results, ends[:-1]), times


def _check_last_flags(received, rows):
    flags = [bool(p.last) for p in received]
    expected = [(n % rows) == rows - 1 for n in range(len(received))]
    if flags != expected:
        raise AssertionError(f"results `last` flags {flags} should mark every {rows}th row")


def _simulate(array, inputs, count, gap_probability, stall_probability, seed, reset_at, name):
    """Drive each input stream with (prefix, beats), collect `count` results after the prefix."""
    clock = _Clock()
    reset = Signal()
    dut = ResetInserter({"sync": reset})(array)
    rng = random.Random(seed)
    start, end = [], []
    prefix_done = {stream_name: False for stream_name in inputs}
    reset_done = [reset_at is None]

    async def wait_for_reset(ctx):
        while not reset_done[0]:
            await ctx.tick()

    async def reset_testbench(ctx):
        while not all(prefix_done.values()):
            await ctx.tick()
        for _ in range(reset_at):
            await ctx.tick()
        ctx.set(reset, 1)
        await ctx.tick()
        ctx.set(reset, 0)
        reset_done[0] = True

    def sender(stream_name, prefix, beats, stream_rng):
        port = getattr(array, stream_name)

        async def testbench(ctx):
            await send(ctx, port, prefix, gap_probability=gap_probability, rng=stream_rng)
            prefix_done[stream_name] = True
            await wait_for_reset(ctx)
            await send(ctx, port, beats[:1], gap_probability=gap_probability, rng=stream_rng)
            start.append(clock.cycle)
            await send(ctx, port, beats[1:], gap_probability=gap_probability, rng=stream_rng)
        return testbench

    received = []

    async def receiver(ctx):
        await wait_for_reset(ctx)
        received.extend(await receive(ctx, array.results, count,
                                      stall_probability=stall_probability,
                                      rng=random.Random(rng.random())))
        end.append(clock.cycle)

    testbenches = [sender(stream_name, prefix, beats, random.Random(rng.random()))
                   for stream_name, (prefix, beats) in inputs.items()]
    testbenches.append(receiver)
    if reset_at is not None:
        testbenches.append(reset_testbench)
    harness.run(dut, *testbenches, name=name, processes=[clock.process])
    return received, end[0] - min(start)


def _padded(matrix, rows, cols):
    """`matrix` zero-padded at the bottom and right to `rows` x `cols`."""
    padded = np.zeros((rows, cols), dtype=np.int64)
    padded[:matrix.shape[0], :matrix.shape[1]] = matrix
    return padded


def _round_up(value, step):
    return -(-value // step) * step


def gemm_tiles(a, w, *, rows, cols, dataflow):
    """The tiles of ``A [M x K] @ W [K x N]`` on an R x C array of `dataflow` (see the module
    docstring), partial tiles zero-padded. Returns (tiles, blocks): ``blocks[i]`` is the
    (row slice, column slice) of the product that tile i's result adds to."""
    (m, k), n = a.shape, w.shape[1]
    width = _round_up(n, cols)
    if dataflow == "output_stationary":
        a, w = _padded(a, _round_up(m, rows), k), _padded(w, k, width)
        pairs = [((a[i:i + rows], w[:, j:j + cols]), (slice(i, i + rows), slice(j, j + cols)))
                 for i in range(0, a.shape[0], rows) for j in range(0, width, cols)]
    else:
        depth = _round_up(k, rows)
        a, w = _padded(a, m, depth), _padded(w, depth, width)
        pairs = [((a[:, d:d + rows], w[d:d + rows, j:j + cols]), (slice(0, m), slice(j, j + cols)))
                 for j in range(0, width, cols) for d in range(0, depth, rows)]
    tiles, blocks = zip(*pairs)
    return list(tiles), list(blocks)


def simulate_gemm(array, a, w):
    """``A @ W`` through `array` as `gemm_tiles`, back to back. Returns (int64 product [M x N],
    cycles from the first input handshake to the last result handshake)."""
    rows, cols = array.rows, array.cols
    tiles, blocks = gemm_tiles(a, w, rows=rows, cols=cols, dataflow=array.dataflow)
    simulate = (simulate_output_stationary if array.dataflow == "output_stationary"
                else simulate_weight_stationary)
    results, cycles = simulate(array, tiles, name=f"systolic_gemm_{array.dataflow}")
    product = np.zeros((_round_up(a.shape[0], rows), _round_up(w.shape[1], cols)),
                       dtype=np.int64)
    for (row_block, column_block), result in zip(blocks, results):
        product[row_block, column_block] += result
    return product[:a.shape[0], :w.shape[1]], cycles


def _gemm_shape(text):
    """``MxKxN`` -> (M, K, N), for argparse."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"a GEMM shape is MxKxN with positive integers, "
                                         f"e.g. 256x64x64, not {text!r}")
    return tuple(int(part) for part in parts)


def _random_int8(rng, shape):
    return rng.integers(-128, 128, size=shape, dtype=np.int64)


def add_arguments(parser):
    parser.add_argument("--rows", type=int, help="array rows (default: 4, 8, 12 square arrays)")
    parser.add_argument("--cols", type=int, help="array columns (default: same as --rows)")
    parser.add_argument("--dataflow", choices=DATAFLOWS, action="append",
                        help="dataflow to measure (repeatable; default: both)")
    parser.add_argument("--reuse", type=int, action="append",
                        help="reuse dimension as a multiple of the array side (repeatable; "
                             f"default: {' '.join(map(str, DEFAULT_REUSE))})")
    parser.add_argument("--tiles", type=int, default=6,
                        help="back-to-back tiles per point (default: 6)")
    parser.add_argument("--gemm", type=_gemm_shape, action="append", metavar="MxKxN",
                        help="measure whole GEMMs of these shapes instead of reuse points "
                             "(repeatable), e.g. the core bench's layers as GEMMs: 256x256x256, "
                             "64x576x64, 256x288x32 (3x3 conv), 256x64x64 (1x1 conv)")
    parser.add_argument("--multiplier", choices=("dsp", "lut"), default="dsp",
                        help="multiplier mapping (pysim uses the behavioural DSP model)")


def _reuse_point(array, reuse, tile_count, rng):
    """(row fields, tiles, results, cycles) of `tile_count` tiles with reuse `reuse`."""
    rows, cols = array.rows, array.cols
    depth = reuse * rows
    if array.dataflow == "output_stationary":
        tiles = [(_random_int8(rng, (rows, depth)), _random_int8(rng, (depth, cols)))
                 for _ in range(tile_count)]
        results, cycles = simulate_output_stationary(array, tiles)
    else:
        tiles = [(_random_int8(rng, (depth, rows)), _random_int8(rng, (rows, cols)))
                 for _ in range(tile_count)]
        results, cycles = simulate_weight_stationary(array, tiles)
    return {"reuse": f"{reuse}x", "tiles": tile_count}, tiles, results, cycles


def _gemm_point(array, shape, rng):
    """(row fields, [(A, W)], [product], cycles) of one GEMM of `shape` (M, K, N)."""
    m, k, n = shape
    a, w = _random_int8(rng, (m, k)), _random_int8(rng, (k, n))
    product, cycles = simulate_gemm(array, a, w)
    tiles, _ = gemm_tiles(a, w, rows=array.rows, cols=array.cols, dataflow=array.dataflow)
    return {"gemm": "x".join(map(str, shape)), "tiles": len(tiles)}, [(a, w)], [product], cycles


def run(args):
    if args.rows is not None:
        shapes = [(args.rows, args.cols if args.cols is not None else args.rows)]
    else:
        shapes = list(DEFAULT_SHAPES)
    dataflows = args.dataflow or list(DATAFLOWS)
    reuses = args.reuse or list(DEFAULT_REUSE)
    if args.tiles < 1 or any(reuse < 1 for reuse in reuses):
        raise ValueError("--tiles and --reuse must be positive")
    rng = np.random.default_rng(0)
    if args.gemm:
        points = [partial(_gemm_point, shape=shape, rng=rng) for shape in args.gemm]
    else:
        points = [partial(_reuse_point, reuse=reuse, tile_count=args.tiles, rng=rng)
                  for reuse in reuses]
    rows_out = []
    for rows, cols in shapes:
        arrays = [SystolicArray(rows=rows, cols=cols, dataflow=dataflow,
                                multiplier=args.multiplier) for dataflow in dataflows]
        # Both dataflows of a point side by side.
        for point in points:
            for array in arrays:
                fields, problems, results, cycles = point(array)
                for (a, w), result in zip(problems, results):
                    if not np.array_equal(result, reference.gemm(a, w)):
                        raise AssertionError(f"{array.dataflow} {rows}x{cols}: result differs "
                                             f"from reference.gemm")
                macs = sum(a.shape[0] * a.shape[1] * w.shape[1] for a, w in problems)
                rows_out.append({
                    "dataflow": array.dataflow, "array": f"{rows}x{cols}", **fields,
                    "cycles": cycles, "macs": macs,
                    "utilization": macs / (rows * cols * cycles),
                    "latency": array.latency,
                })
    notes = ["reuse = K per output-stationary tile / A rows per weight-stationary tile, "
             "in multiples of the array side; cycles include pipeline fill and drain.",
             "Target: utilization >= 0.90 at reuse 8x for both dataflows."]
    if args.gemm:
        notes = ["gemm = M x K x N, tiled onto the array per dataflow (partial tiles "
                 "zero-padded), all tiles back to back; macs = M*K*N; cycles include pipeline "
                 "fill and drain. The array alone, fed one beat per cycle."]
    return {"rows": rows_out, "notes": notes}
