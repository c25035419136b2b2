"""Core bench: whole layers on the simulated `hw.core.Core`, utilization from its own counters.

For each layer the bench does what the host does over the link: write activations, weights and
requant parameters (or binary weights/thresholds) into the bus windows, clear the counters, push
the layer's commands (polling ``queue_free``), poll ``completed``, read the counters, and read the
output back to check it bit-exact against `sim.reference`. Reported:

* int8 layers: utilization = macs / (R*C*active_cycles) (``active_cycles``: a command queued or
  executing), and compute-unit utilization = macs / (R*C*compute_busy);
* binary: binary_ops / (2*width*lanes*binary_busy) (ops per cycle vs peak).

Simulation runs on the compiled CXXRTL backend (`sim.cxxrtl`); without it the bench stops with
the reason (a 256^3 GEMM is ~300k cycles, hours in pysim; tests/test_core.py covers pysim).
Memories are sized so each layer is resident at once (``scratchpad_rows=32768``; the 4096-row
default would need the host to stream W in column chunks between commands, which does not change
the per-command utilization).
Weights sit in the scratchpad's upper bank and activations/outputs in the lower one, so the next
tile's weights load while the current tile computes.
"""

import time

import numpy as np

from hw.binary.encoding import threshold_writes, weight_writes
from hw.config import AcceleratorConfig
from hw.core.core import core_from_config
from hw.core.isa import COUNTERS, COUNTERS_BASE, REGISTERS, Opcode, encode
from sw.compiler.layout import (ConvLayer, activation_rows, binary_activation_rows, layer_commands,
                            output_from_rows, parameter_words, rows_to_words, weight_rows,
                            words_to_rows)
from hw.soc.bridge import TARGET_READ_LATENCY
from sim import reference

__all__ = ["DESCRIPTION", "LAYERS", "add_arguments", "bench_config", "bench_core", "run"]

DESCRIPTION = ("Accelerator core: utilization from the hardware counters on GEMM 256^3, "
               "GEMM 64x576x64, 3x3 conv 16x16x32->32, 1x1 conv, binary 256x256 (bit-exact)")

INT8_LAYERS = {
    "gemm_256x256x256": (dict(in_h=256, in_w=1, cin=256, cout=256), True),
    "gemm_64x576x64": (dict(in_h=64, in_w=1, cin=576, cout=64), True),
    "conv3x3_16x16x32_to_32_s1_p1": (dict(in_h=16, in_w=16, cin=32, cout=32, kh=3, kw=3,
                                          padding=(1, 1, 1, 1)), False),
    "conv1x1_16x16x64_to_64": (dict(in_h=16, in_w=16, cin=64, cout=64), False),
}
BINARY_LAYER = (256, 256, 64)       # K, N, vectors
BINARY_LAYER_NAME = f"binary_{BINARY_LAYER[0]}x{BINARY_LAYER[1]}"
LAYERS = (*INT8_LAYERS, BINARY_LAYER_NAME)


def add_arguments(parser):
    parser.add_argument("--arrays", default="8,12",
                        help="comma-separated square array sides (default 8,12)")
    parser.add_argument("--layers", default="all",
                        help="comma-separated layer names or 'all' (" + ", ".join(LAYERS) + ")")


class _CxxrtlHost:
    """Bus reads/writes on a compiled model, one call per word (set, step, get), with the
    target timing of `hw.soc.bridge` (read data `TARGET_READ_LATENCY` cycles after the read)."""

    def __init__(self, simulator, core):
        self.sim, self.core = simulator, core
        for name in core.windows(0):
            self.sim.set(f"{name.name}__write", 0)
            self.sim.set(f"{name.name}__read", 0)

    def write(self, window, address, value):
        self.sim.set(f"{window}__address", address)
        self.sim.set(f"{window}__write_data", value & 0xFFFF_FFFF)
        self.sim.set(f"{window}__write", 1)
        self.sim.step()
        self.sim.set(f"{window}__write", 0)

    def read(self, window, address):
        self.sim.set(f"{window}__address", address)
        self.sim.set(f"{window}__read", 1)
        self.sim.step()
        self.sim.set(f"{window}__read", 0)
        self.sim.step(TARGET_READ_LATENCY - 1)
        return self.sim.get(f"{window}__read_data")

    def idle(self, cycles):
        self.sim.step(cycles)


def _host_ops(host, core):
    stride = core.scratchpad_stride

    def write_rows(base, rows):
        for offset, word in enumerate(rows_to_words(rows, stride=stride)):
            host.write("scratchpad", base * stride + offset, word)

    def read_rows(base, count):
        words = [host.read("scratchpad", base * stride + i) for i in range(count * stride)]
        return words_to_rows(words, row_bytes=core.row_bytes, stride=stride)

    def push(commands):
        for words in commands:
            while host.read("control", REGISTERS["queue_free"]) == 0:
                host.idle(16)
            for index, word in enumerate(words):
                host.write("control", index, word)

    def wait(total):
        while host.read("control", REGISTERS["completed"]) != total:
            host.idle(64)

    def counters():
        values = {}
        for position, name in enumerate(COUNTERS):
            low = host.read("control", COUNTERS_BASE + 2 * position)
            high = host.read("control", COUNTERS_BASE + 2 * position + 1)
            values[name] = low | high << 32
        return values
    return write_rows, read_rows, push, wait, counters


def pixels_out(geometry):
    top, bottom, left, right = geometry.get("padding", (0, 0, 0, 0))
    kh, kw, stride = geometry.get("kh", 1), geometry.get("kw", 1), geometry.get("stride", 1)
    return (reference.conv_output_size(geometry["in_h"], kh, stride, top, bottom)
            * reference.conv_output_size(geometry["in_w"], kw, stride, left, right))


def _scratchpad_use(geometry, rows, cols):
    """``(activation rows, output rows, weight rows, output channel blocks)`` of an int8 layer
    on a `rows` x `cols` array."""
    cin_blocks = -(-geometry["cin"] // rows)
    n_blocks = -(-geometry["cout"] // cols)
    a_rows = geometry["in_h"] * geometry["in_w"] * cin_blocks
    w_rows = n_blocks * geometry.get("kh", 1) * geometry.get("kw", 1) * cin_blocks * rows
    return a_rows, pixels_out(geometry) * n_blocks, w_rows, n_blocks


def _int8_layer(host, core, name, geometry, gemm, rng, state):
    write_rows, read_rows, push, wait, counters = _host_ops(host, core)
    rows, cols = core.rows, core.cols
    kh, kw = geometry.get("kh", 1), geometry.get("kw", 1)
    a_rows, out_rows, w_rows, n_blocks = _scratchpad_use(geometry, rows, cols)
    # Weights in the upper bank, activations and outputs in the lower one: the two read streams
    # never contend for a port.
    layer = ConvLayer(**geometry, zero_point=int(rng.integers(-20, 20)), a_base=0,
                      w_base=core.scratchpad_rows // 2, out_base=a_rows, param_base=0)
    assert a_rows + out_rows <= core.scratchpad_rows // 2
    assert w_rows <= core.scratchpad_rows // 2
    x = rng.integers(-128, 128, (layer.in_h, layer.in_w, layer.cin), dtype=np.int8)
    w = rng.integers(-128, 128, (kh, kw, layer.cin, layer.cout), dtype=np.int8)
    bias = rng.integers(-5000, 5000, layer.cout).astype(np.int32)
    multiplier, shift = zip(*(reference.quantize_multiplier(float(s))
                              for s in rng.uniform(1e-5, 1e-3, layer.cout)))
    multiplier, shift = np.array(multiplier), np.array(shift)
    acc = reference.conv2d(x, w, bias, layer.stride, layer.padding, layer.zero_point)
    expected = reference.requantize(acc, multiplier, shift)

    write_rows(layer.a_base, activation_rows(x, rows=rows, row_bytes=core.row_bytes))
    write_rows(layer.w_base, weight_rows(w, rows=rows, cols=cols, row_bytes=core.row_bytes))
    hardware_bias = reference.fold_zero_point(bias, w.reshape(-1, layer.cout), layer.zero_point)
    for offset, word in enumerate(parameter_words(hardware_bias, multiplier, shift,
                                                  channels=n_blocks * cols)):
        host.write("parameters", offset, word)
    commands, _ = layer_commands(layer, rows=rows, cols=cols,
                                 accumulator_rows=core.accumulator_rows, gemm=gemm)
    host.write("control", REGISTERS["counter_clear"], 1)
    push(commands)
    state["pushed"] += len(commands)
    wait(state["pushed"])
    figures = counters()
    pixels = expected.shape[0] * expected.shape[1]
    got = output_from_rows(read_rows(layer.out_base, pixels * n_blocks), pixels=pixels,
                           channels=layer.cout, cols=cols, stride=n_blocks)
    error = host.read("control", REGISTERS["error_code"])
    bit_exact = error == 0 and np.array_equal(got, expected.reshape(pixels, layer.cout))
    useful = pixels * kh * kw * layer.cin * layer.cout
    peak = rows * cols
    return {
        "layer": name, "array": f"{rows}x{cols}", "commands": len(commands),
        "active_cycles": figures["active_cycles"], "compute_busy": figures["compute_busy"],
        "store_busy": figures["store_busy"], "macs": figures["macs"],
        "macs_match_layer": figures["macs"] == useful,
        "utilization": round(figures["macs"] / (peak * figures["active_cycles"]), 4),
        "compute_utilization": round(figures["macs"] / (peak * figures["compute_busy"]), 4),
        "bit_exact": bool(bit_exact),
    }


def _binary_layer(host, core, rng, state):
    write_rows, _, push, wait, counters = _host_ops(host, core)
    k, n, vectors = BINARY_LAYER
    width, lanes = core.binary_width, core.binary_lanes
    a = rng.choice([-1, 1], (vectors, k)).astype(np.int8)
    w = rng.choice([-1, 1], (n, k)).astype(np.int8)
    a_packed, w_packed = reference.pack_bits(a), reference.pack_bits(w)
    thresholds = rng.integers(-k // 4, k // 4, n)
    ascending = rng.integers(0, 2, n).astype(bool)
    signs = reference.threshold_activation(reference.binary_dense(a_packed, w_packed, k),
                                           thresholds, ascending)
    write_rows(0, binary_activation_rows(a_packed, k, width=width, row_bytes=core.row_bytes))
    words_per_beat = -(-width // 32)
    for item in weight_writes(w_packed, k, width=width, lanes=lanes):
        base = (item["address"] * core.lanes_stride + item["lane"]) * core.weight_word_stride
        for word in range(words_per_beat):
            host.write("binary_weights", base + word, item["bits"] >> (32 * word))
    for item in threshold_writes(thresholds, ascending, k, lanes=lanes):
        host.write("binary_thresholds", item["neuron_fold"] * core.lanes_stride + item["lane"],
                   (item["threshold"] & 0x7FFF_FFFF) | item["ascending"] << 31)
    folds = -(-n // lanes)
    commands = [encode(Opcode.BINARY, a_base=0, vectors=vectors, k=k, neuron_folds=folds,
                       last_lanes=n - (folds - 1) * lanes, w_base=0, t_base=0, result_base=0,
                       out_base=0, out_stride=0, to_results=1, to_scratchpad=0),
                encode(Opcode.FENCE)]
    host.write("control", REGISTERS["counter_clear"], 1)
    push(commands)
    state["pushed"] += len(commands)
    wait(state["pushed"])
    figures = counters()
    bit_word = lanes
    got = np.zeros((vectors, folds * lanes), np.int8)
    for vector in range(vectors):
        for fold in range(folds):
            bits = host.read("binary_results", (vector * folds + fold) * core.result_stride
                             + bit_word)
            for lane in range(lanes):
                got[vector, fold * lanes + lane] = 1 if bits >> lane & 1 else -1
    peak = 2 * width * lanes
    return {
        "layer": BINARY_LAYER_NAME, "array": f"{width}b x {lanes} lanes", "commands": 2,
        "active_cycles": figures["active_cycles"], "binary_busy": figures["binary_busy"],
        "binary_ops": figures["binary_ops"],
        "ops_per_cycle": round(figures["binary_ops"] / figures["binary_busy"], 1),
        "peak_ops_per_cycle": peak,
        "utilization": round(figures["binary_ops"] / (peak * figures["active_cycles"]), 4),
        "bit_exact": bool(host.read("control", REGISTERS["error_code"]) == 0
                          and np.array_equal(got[:, :n], signs)),
    }


def bench_config(config, wanted=None):
    """The config the bench simulates for a built `config`: its array, dataflow, requant lanes and
    binary engine, with LUT multipliers (the simulator has no model of the MULT18X18D primitive)
    and a scratchpad that holds each of the `wanted` layers (None: all) at once, in each half
    (at least 32768 rows)."""
    half = max((max(sum(use[:2]), use[2]) for name, (geometry, _) in INT8_LAYERS.items()
                if wanted is None or name in wanted
                for use in [_scratchpad_use(geometry, config.rows, config.cols)]), default=1)
    return config.replace(multiplier="lut", accumulator_rows=1024,
                          scratchpad_rows=max(32768, 1 << (2 * half - 1).bit_length()))


def bench_core(config, wanted=None, *, notes=None):
    """Run the `wanted` layer names (None: all of `LAYERS`) on the compiled core of `config`;
    returns one row per layer. Timing notes are appended to `notes` when given."""
    from sim import cxxrtl
    if not cxxrtl.available():
        raise SystemExit("the core bench needs the CXXRTL backend (sim.cxxrtl): "
                         f"{cxxrtl.unavailable_reason()}; a 256^3 GEMM is ~300k cycles, hours "
                         "in pysim")
    notes = [] if notes is None else notes
    label = f"{config.rows}x{config.cols}"
    k, n, vectors = BINARY_LAYER
    # One result row per vector and neuron fold (2048 at 8 lanes, twice that at 4).
    result_rows = max(2048, 1 << (vectors * -(-n // config.binary_lanes) - 1).bit_length())
    core = core_from_config(config.replace(binary_max_k=k, binary_max_n=n,
                                           binary_result_rows=result_rows, parameter_rows=1024))
    started = time.time()
    simulator = cxxrtl.CxxrtlSimulator(core, name=f"core_bench_{label}")
    notes.append(f"{label}: CXXRTL build {time.time() - started:.0f} s")
    rows = []
    with simulator:
        simulator.reset()
        host = _CxxrtlHost(simulator, core)
        state = {"pushed": 0}
        rng = np.random.default_rng(config.rows)
        for name, (geometry, gemm) in INT8_LAYERS.items():
            if wanted is None or name in wanted:
                started = time.time()
                rows.append(_int8_layer(host, core, name, geometry, gemm, rng, state))
                notes.append(f"{label} {name}: {time.time() - started:.0f} s wall")
        if wanted is None or BINARY_LAYER_NAME in wanted:
            rows.append(_binary_layer(host, core, rng, state))
    return rows


def run(args):
    wanted = None if args.layers == "all" else set(args.layers.split(","))
    rows_out, notes = [], []
    for side in (int(value) for value in args.arrays.split(",")):
        config = AcceleratorConfig(rows=side, cols=side, dataflow="weight_stationary",
                                   multiplier="lut", binary_width=64, binary_lanes=8)
        rows_out += bench_core(bench_config(config, wanted), wanted, notes=notes)
    notes.append("utilization = useful MACs (or binary ops) / (peak per cycle * active_cycles), "
                 "all from the core's counters; compute_utilization uses compute_busy cycles")
    return {"rows": rows_out, "notes": notes}
