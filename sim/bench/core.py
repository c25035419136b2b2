"""Core bench: whole layers on the simulated `hw.core.Core`, utilization from its own counters.

``python -m sim.bench core [--device 85F] [--arrays 8,12] [--layers all]``

Which core: by default the shipped preset of the ULX3S's default variant (`boards.catalog`; the
85F's 12x12 config), ``--device`` another variant or a config preset (`sim.bench.device`, as
``sim.bench network``). ``--arrays`` sweeps square arrays instead: each is the device's preset
with that many rows and columns, every other field (memories, clock, engines) the preset's. The
core is simulated with LUT multipliers (the simulator has no model of the MULT18X18D primitive;
a PE's latency is the same either way).

Memories: every layer runs on the config's own scratchpad, accumulator, requant parameter and
binary memories, never enlarged for the bench. Weights sit in the scratchpad's upper bank and
activations and outputs in the lower one (as `sw.compiler` places them), so the next tile's
weights load while the current tile computes. A layer that does not fit at once is streamed
through them, as the compiler streams weights: cut into pieces (`layer_pieces`: the fewest groups
of output-channel blocks whose weights fit a bank and whose requant parameters fit the parameter
memory, each cut into the fewest bands of output rows whose input rows, halo included, and
outputs fit the other bank); the binary layer runs its vectors in rounds that fit the result
memory. The counters are cleared once per layer, so a streamed layer's figures are those of all
its pieces' commands; the host's writes and reads between pieces fall outside ``active_cycles``
(over the real link they are link-bound: ``sim.bench network`` measures that). Every table row
names the config it ran on (array, clock, scratchpad rows) and the pieces it took, and a note per
streamed layer says why; a layer of which one piece still does not fit (one output block's
weights larger than a bank, one output row's inputs and outputs larger than the other) stops the
bench with the reason before anything is compiled.

For each piece the bench does what the host does over the link: write activations, weights and
requant parameters (or binary weights/thresholds) into the bus windows, push the piece's commands
(polling ``queue_free``), poll ``completed``, and read the output back; the whole layer's output
is checked bit-exact against `sim.reference`. Reported:

* int8 layers: utilization = macs / (R*C*active_cycles) (``active_cycles``: a command queued or
  executing), and compute-unit utilization = macs / (R*C*compute_busy);
* binary: binary_ops / (2*width*lanes*active_cycles) (ops per cycle vs peak).

Layers: GEMM 256^3, GEMM 64x576x64, 3x3 convs (padding 1) of 16x16x32 -> 32 and 16x16x64 -> 64,
1x1 convs of 16x16x64 -> 64 and 16x16x128 -> 128 (MobileNet-style pointwise, no depthwise), and
a binary 256x256 layer over 64 vectors.

Simulation runs on the compiled CXXRTL backend (`sim.cxxrtl`); without it the bench stops with
the reason (a 256^3 GEMM is ~300k cycles, hours in pysim; tests/test_core.py covers pysim).
"""

import time
from dataclasses import dataclass

import numpy as np

from hw.binary.encoding import threshold_writes, weight_writes
from hw.core.core import core_from_config, geometry_from_config
from hw.core.isa import COUNTERS, COUNTERS_BASE, REGISTERS, Opcode, encode
from sw.compiler.layout import (ConvLayer, activation_rows, binary_activation_rows, layer_commands,
                                output_from_rows, parameter_words, rows_to_words, weight_rows,
                                words_to_rows)
from sw.compiler.plan import DoesNotFit
from hw.soc.bridge import TARGET_READ_LATENCY
from sim import reference

from .device import add_device_argument, device_config

__all__ = ["DESCRIPTION", "LAYERS", "Piece", "add_arguments", "bench_config",
           "bench_core", "config_label", "layer_pieces", "binary_rounds", "plan_layers", "run"]

DESCRIPTION = ("Accelerator core, the shipped preset by default: utilization from the hardware "
               "counters on GEMM 256^3, GEMM 64x576x64, 3x3 convs 16x16x32->32 and "
               "16x16x64->64, 1x1 convs 64->64 and 128->128, binary 256x256 (bit-exact), on the "
               "config's own memories (streamed where a layer does not fit)")

INT8_LAYERS = {
    "gemm_256x256x256": (dict(in_h=256, in_w=1, cin=256, cout=256), True),
    "gemm_64x576x64": (dict(in_h=64, in_w=1, cin=576, cout=64), True),
    "conv3x3_16x16x32_to_32_s1_p1": (dict(in_h=16, in_w=16, cin=32, cout=32, kh=3, kw=3,
                                          padding=(1, 1, 1, 1)), False),
    "conv3x3_16x16x64_to_64_s1_p1": (dict(in_h=16, in_w=16, cin=64, cout=64, kh=3, kw=3,
                                          padding=(1, 1, 1, 1)), False),
    "conv1x1_16x16x64_to_64": (dict(in_h=16, in_w=16, cin=64, cout=64), False),
    "conv1x1_16x16x128_to_128": (dict(in_h=16, in_w=16, cin=128, cout=128), False),
}
BINARY_LAYER = (256, 256, 64)       # K, N, vectors
BINARY_LAYER_NAME = f"binary_{BINARY_LAYER[0]}x{BINARY_LAYER[1]}"
LAYERS = (*INT8_LAYERS, BINARY_LAYER_NAME)


def add_arguments(parser):
    add_device_argument(parser)
    parser.add_argument("--arrays", metavar="SIDES",
                        help="comma-separated square array sides to sweep instead of the "
                             "device's own array (each: the device's preset with that array)")
    parser.add_argument("--layers", default="all",
                        help="comma-separated layer names or 'all' (" + ", ".join(LAYERS) + ")")


@dataclass(frozen=True)
class Piece:
    """Output rows `out_rows` x output channels `channels` of an int8 layer, resident at once:
    it reads input rows `in_rows` with `padding` (top, bottom, left, right) around them."""
    out_rows: range
    channels: range
    in_rows: range
    padding: tuple


def _layer_shape(geometry):
    """``(kh, kw, stride, padding, out_h, out_w)`` of an int8 layer's geometry."""
    kh, kw, stride = geometry.get("kh", 1), geometry.get("kw", 1), geometry.get("stride", 1)
    padding = geometry.get("padding", (0, 0, 0, 0))
    top, bottom, left, right = padding
    return (kh, kw, stride, padding,
            reference.conv_output_size(geometry["in_h"], kh, stride, top, bottom),
            reference.conv_output_size(geometry["in_w"], kw, stride, left, right))


def _bank_use(geometry, core, blocks, band):
    """``(weight rows, input and output rows)`` in the scratchpad of `blocks` output-channel
    blocks x `band` output rows of an int8 layer on `core` (the input rows: as many as a band of
    that many output rows reads at most, halo included)."""
    kh, kw, stride, _, _, out_w = _layer_shape(geometry)
    cin_blocks = -(-geometry["cin"] // core.rows)
    return (blocks * kh * kw * cin_blocks * core.rows,
            min(geometry["in_h"], (band - 1) * stride + kh) * geometry["in_w"] * cin_blocks
            + band * out_w * blocks)


def layer_pieces(geometry, core):
    """The `Piece`s an int8 layer runs in on `core` (a `CoreGeometry`): one when its weights fit
    one scratchpad bank, its requant parameters the parameter memory, and its activations and
    outputs the other bank; else the fewest groups of output-channel blocks whose weights and
    parameters fit, each cut into the fewest bands of output rows whose input rows (halo
    included) and outputs fit (groups and bands of equal size but the last). `DoesNotFit` names
    what is too large."""
    kh, _, stride, (top, _, left, right), out_h, _ = _layer_shape(geometry)
    in_h = geometry["in_h"]
    bank_rows = core.scratchpad_rows // 2
    n_blocks = -(-geometry["cout"] // core.cols)
    block_weight_rows = _bank_use(geometry, core, 1, 1)[0]
    most = min(n_blocks, bank_rows // block_weight_rows, core.parameter_rows // core.cols)
    if most == 0:
        raise DoesNotFit(f"one output block's weights take {block_weight_rows} scratchpad rows, "
                         f"a bank holds {bank_rows}")
    # The most output blocks a piece holds that leave room for one output row's inputs and
    # outputs; then the most output rows.
    group = next((blocks for blocks in range(most, 0, -1)
                  if _bank_use(geometry, core, blocks, 1)[1] <= bank_rows), 0)
    if group == 0:
        raise DoesNotFit(f"one output row's inputs and outputs take "
                         f"{_bank_use(geometry, core, 1, 1)[1]} scratchpad rows, a bank holds "
                         f"{bank_rows}")
    group = -(-n_blocks // -(-n_blocks // group))
    band = max(rows for rows in range(1, out_h + 1)
               if _bank_use(geometry, core, group, rows)[1] <= bank_rows)
    band = -(-out_h // -(-out_h // band))
    pieces = []
    for first_block in range(0, n_blocks, group):
        channels = range(first_block * core.cols,
                         min(geometry["cout"], (first_block + group) * core.cols))
        for first_row in range(0, out_h, band):
            out_rows = range(first_row, min(out_h, first_row + band))
            start = out_rows.start * stride - top           # padded input rows it reads
            stop = (out_rows.stop - 1) * stride - top + kh
            in_rows = range(max(0, start), min(in_h, stop))
            pieces.append(Piece(out_rows, channels, in_rows,
                                (in_rows.start - start, stop - in_rows.stop, left, right)))
    return pieces


def binary_rounds(core):
    """Vectors of the binary layer per round on `core` (a `CoreGeometry`): all of them when
    their result rows fit the result memory and their activation rows a scratchpad bank.
    `DoesNotFit` when the layer's K or N exceed the engine's memories."""
    k, n, vectors = BINARY_LAYER
    if k > core.binary_max_k or n > core.binary_max_n:
        raise DoesNotFit(f"the engine holds K <= {core.binary_max_k} and N <= "
                         f"{core.binary_max_n}, the layer is K={k}, N={n}")
    folds = -(-n // core.binary_lanes)
    beats = -(-k // core.binary_width)
    per_round = min(vectors, core.binary_result_rows // folds, core.scratchpad_rows // 2 // beats)
    if per_round == 0:
        raise DoesNotFit(f"one vector's {folds} result rows exceed the result memory's "
                         f"{core.binary_result_rows}")
    return -(-vectors // -(-vectors // per_round))


def config_label(config):
    """The config a figure came from: array, clock and scratchpad rows."""
    return (f"{config.rows}x{config.cols} {config.clock_mhz:g} MHz "
            f"sp{config.scratchpad_rows}")


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


def _host_ops(host, core, state):
    stride = core.scratchpad_stride

    def write_rows(base, rows):
        for offset, word in enumerate(rows_to_words(rows, stride=stride)):
            host.write("scratchpad", base * stride + offset, word)

    def read_rows(base, count):
        words = [host.read("scratchpad", base * stride + i) for i in range(count * stride)]
        return words_to_rows(words, row_bytes=core.row_bytes, stride=stride)

    def run_commands(commands):
        """Push `commands` (waiting for room in the queue) and wait until they completed."""
        for words in commands:
            while host.read("control", REGISTERS["queue_free"]) == 0:
                host.idle(16)
            for index, word in enumerate(words):
                host.write("control", index, word)
        state["pushed"] += len(commands)
        while host.read("control", REGISTERS["completed"]) != state["pushed"]:
            host.idle(64)

    def counters():
        values = {}
        for position, name in enumerate(COUNTERS):
            low = host.read("control", COUNTERS_BASE + 2 * position)
            high = host.read("control", COUNTERS_BASE + 2 * position + 1)
            values[name] = low | high << 32
        return values
    return write_rows, read_rows, run_commands, counters


def _int8_data(geometry, rng):
    """Random inputs, weights and requant parameters of a layer, and its expected output."""
    kh, kw, stride, padding, _, _ = _layer_shape(geometry)
    zero_point = int(rng.integers(-20, 20))
    x = rng.integers(-128, 128, (geometry["in_h"], geometry["in_w"], geometry["cin"]),
                     dtype=np.int8)
    w = rng.integers(-128, 128, (kh, kw, geometry["cin"], geometry["cout"]), dtype=np.int8)
    bias = rng.integers(-5000, 5000, geometry["cout"]).astype(np.int32)
    multiplier, shift = zip(*(reference.quantize_multiplier(float(s))
                              for s in rng.uniform(1e-5, 1e-3, geometry["cout"])))
    multiplier, shift = np.array(multiplier), np.array(shift)
    expected = reference.requantize(reference.conv2d(x, w, bias, stride, padding, zero_point),
                                    multiplier, shift)
    hardware_bias = reference.fold_zero_point(bias, w.reshape(-1, geometry["cout"]), zero_point)
    return zero_point, x, w, (hardware_bias, multiplier, shift), expected


def _int8_layer(host, core, label, name, geometry, gemm, pieces, rng, state):
    write_rows, read_rows, run_commands, counters = _host_ops(host, core, state)
    rows, cols, bank_rows = core.rows, core.cols, core.scratchpad_rows // 2
    zero_point, x, w, parameters, expected = _int8_data(geometry, rng)
    got = np.zeros_like(expected)
    commands, channels, in_rows = 0, None, None
    host.write("control", REGISTERS["counter_clear"], 1)
    for piece in pieces:
        # Weights in the upper bank, activations and outputs in the lower one: the two read
        # streams never contend for a port. A piece rewrites only what changed.
        a_rows = len(piece.in_rows) * geometry["in_w"] * -(-geometry["cin"] // rows)
        layer = ConvLayer(**{**geometry, "in_h": len(piece.in_rows),
                             "cout": len(piece.channels), "padding": piece.padding},
                          zero_point=zero_point, a_base=0, w_base=bank_rows, out_base=a_rows,
                          param_base=0)
        n_blocks = -(-layer.cout // cols)
        if piece.channels != channels:
            channels = piece.channels
            write_rows(layer.w_base, weight_rows(w[..., channels.start:channels.stop], rows=rows,
                                                 cols=cols, row_bytes=core.row_bytes))
            for offset, word in enumerate(parameter_words(
                    *(values[channels.start:channels.stop] for values in parameters),
                    channels=n_blocks * cols)):
                host.write("parameters", offset, word)
        if piece.in_rows != in_rows:
            in_rows = piece.in_rows
            write_rows(layer.a_base, activation_rows(x[in_rows.start:in_rows.stop], rows=rows,
                                                     row_bytes=core.row_bytes))
        piece_commands, _ = layer_commands(layer, rows=rows, cols=cols,
                                           accumulator_rows=core.accumulator_rows,
                                           requant_lanes=core.requant_lanes, gemm=gemm)
        run_commands(piece_commands)
        commands += len(piece_commands)
        pixels = len(piece.out_rows) * layer.out_w
        got[piece.out_rows.start:piece.out_rows.stop, :, channels.start:channels.stop] = \
            output_from_rows(read_rows(layer.out_base, pixels * n_blocks), pixels=pixels,
                             channels=layer.cout, cols=cols,
                             stride=n_blocks).reshape(len(piece.out_rows), layer.out_w, -1)
    figures = counters()
    error = host.read("control", REGISTERS["error_code"])
    useful = expected.shape[0] * expected.shape[1] * int(np.prod(w.shape))
    peak = rows * cols
    return {
        "layer": name, "config": label, "pieces": len(pieces), "commands": commands,
        "active_cycles": figures["active_cycles"], "compute_busy": figures["compute_busy"],
        "store_busy": figures["store_busy"], "macs": figures["macs"],
        "macs_match_layer": figures["macs"] == useful,
        "utilization": round(figures["macs"] / (peak * figures["active_cycles"]), 4),
        "compute_utilization": round(figures["macs"] / (peak * figures["compute_busy"]), 4),
        "bit_exact": bool(error == 0 and np.array_equal(got, expected)),
    }


def _binary_layer(host, core, label, per_round, rng, state):
    write_rows, _, run_commands, counters = _host_ops(host, core, state)
    k, n, vectors = BINARY_LAYER
    width, lanes = core.binary_width, core.binary_lanes
    a = rng.choice([-1, 1], (vectors, k)).astype(np.int8)
    w = rng.choice([-1, 1], (n, k)).astype(np.int8)
    a_packed, w_packed = reference.pack_bits(a), reference.pack_bits(w)
    thresholds = rng.integers(-k // 4, k // 4, n)
    ascending = rng.integers(0, 2, n).astype(bool)
    signs = reference.threshold_activation(reference.binary_dense(a_packed, w_packed, k),
                                           thresholds, ascending)
    words_per_beat = -(-width // 32)
    for item in weight_writes(w_packed, k, width=width, lanes=lanes):
        base = (item["address"] * core.lanes_stride + item["lane"]) * core.weight_word_stride
        for word in range(words_per_beat):
            host.write("binary_weights", base + word, item["bits"] >> (32 * word))
    for item in threshold_writes(thresholds, ascending, k, lanes=lanes):
        host.write("binary_thresholds", item["neuron_fold"] * core.lanes_stride + item["lane"],
                   (item["threshold"] & 0x7FFF_FFFF) | item["ascending"] << 31)
    folds = -(-n // lanes)
    got = np.zeros((vectors, folds * lanes), np.int8)
    rounds = range(0, vectors, per_round)
    host.write("control", REGISTERS["counter_clear"], 1)
    for first in rounds:
        count = min(per_round, vectors - first)
        write_rows(0, binary_activation_rows(a_packed[first:first + count], k, width=width,
                                             row_bytes=core.row_bytes))
        run_commands([encode(Opcode.BINARY, a_base=0, vectors=count, k=k, neuron_folds=folds,
                             last_lanes=n - (folds - 1) * lanes, w_base=0, t_base=0,
                             result_base=0, out_base=0, out_stride=0, to_results=1,
                             to_scratchpad=0),
                      encode(Opcode.FENCE)])
        for vector in range(count):
            for fold in range(folds):
                bits = host.read("binary_results",
                                 (vector * folds + fold) * core.result_stride + lanes)
                for lane in range(lanes):
                    got[first + vector, fold * lanes + lane] = 1 if bits >> lane & 1 else -1
    figures = counters()
    peak = 2 * width * lanes
    return {
        "layer": BINARY_LAYER_NAME, "config": label, "pieces": len(rounds),
        "commands": 2 * len(rounds), "active_cycles": figures["active_cycles"],
        "binary_busy": figures["binary_busy"], "binary_ops": figures["binary_ops"],
        "ops_per_cycle": round(figures["binary_ops"] / figures["binary_busy"], 1),
        "peak_ops_per_cycle": peak,
        "utilization": round(figures["binary_ops"] / (peak * figures["active_cycles"]), 4),
        "bit_exact": bool(host.read("control", REGISTERS["error_code"]) == 0
                          and np.array_equal(got[:, :n], signs)),
    }


def bench_config(config):
    """The config the bench simulates for a built `config`: the same core with LUT multipliers
    (the simulator has no model of the MULT18X18D primitive)."""
    return config.replace(multiplier="lut", dsp_pes=None)


def plan_layers(config, wanted=None):
    """``{layer: its int8 `Piece`s, or the binary layer's vectors per round}`` for the `wanted`
    layer names (None: all of `LAYERS`) on `config`; `DoesNotFit` names the first layer too large
    for the config's memories, `ValueError` a config the core cannot be built with."""
    core = geometry_from_config(config)
    plans = {}
    for name in LAYERS:
        if wanted is None or name in wanted:
            try:
                plans[name] = (binary_rounds(core) if name == BINARY_LAYER_NAME
                               else layer_pieces(INT8_LAYERS[name][0], core))
            except DoesNotFit as error:
                raise DoesNotFit(f"{name} does not fit {config_label(config)}: {error}") from None
    return plans


def _streaming_note(label, name, plan, core):
    """Why the layer `name` ran in pieces (int8) or rounds (binary) on `core`."""
    bank_rows = core.scratchpad_rows // 2
    if name == BINARY_LAYER_NAME:
        k, n, vectors = BINARY_LAYER
        return (f"{label} {name}: {-(-vectors // plan)} rounds of {plan} vectors: all {vectors} "
                f"at once need {vectors * -(-n // core.binary_lanes)} result rows (the memory "
                f"has {core.binary_result_rows}) and {vectors * -(-k // core.binary_width)} "
                f"activation rows (a bank holds {bank_rows})")
    geometry, _ = INT8_LAYERS[name]
    groups = len({piece.channels for piece in plan})
    weights, activations = _bank_use(geometry, core, -(-geometry["cout"] // core.cols),
                                     _layer_shape(geometry)[4])
    return (f"{label} {name}: streamed in {len(plan)} pieces, {groups} output-channel "
            f"group(s) x {len(plan) // groups} band(s) of output rows: the whole layer's "
            f"weights take {weights} scratchpad rows and its inputs and outputs {activations}, "
            f"a bank holds {bank_rows}")


def bench_core(config, wanted=None, *, notes=None):
    """Run the `wanted` layer names (None: all of `LAYERS`) on the compiled core of `config`
    (`plan_layers` first: a layer that does not fit raises before the compile); returns one row
    per layer. Timing notes and how each streamed layer was cut are appended to `notes`."""
    from sim import cxxrtl
    if not cxxrtl.available():
        raise SystemExit("the core bench needs the CXXRTL backend (sim.cxxrtl): "
                         f"{cxxrtl.unavailable_reason()}; a 256^3 GEMM is ~300k cycles, hours "
                         "in pysim")
    plans = plan_layers(config, wanted)
    notes = [] if notes is None else notes
    label = config_label(config)
    core = core_from_config(config)
    started = time.time()
    simulator = cxxrtl.CxxrtlSimulator(core, name=f"core_bench_{config.rows}x{config.cols}")
    notes.append(f"{label}: CXXRTL build {time.time() - started:.0f} s")
    rows = []
    with simulator:
        simulator.reset()
        host = _CxxrtlHost(simulator, core)
        state = {"pushed": 0}
        rng = np.random.default_rng(config.rows)
        for name, plan in plans.items():
            started = time.time()
            if name == BINARY_LAYER_NAME:
                rows.append(_binary_layer(host, core, label, plan, rng, state))
            else:
                geometry, gemm = INT8_LAYERS[name]
                rows.append(_int8_layer(host, core, label, name, geometry, gemm, plan, rng,
                                        state))
            if rows[-1]["pieces"] > 1:
                notes.append(_streaming_note(label, name, plan, core))
            notes.append(f"{label} {name}: {time.time() - started:.0f} s wall")
    return rows


def _configs(args):
    """The bench configs `args` ask for: the device's preset, or one per ``--arrays`` side."""
    device = device_config(args.device)
    if args.arrays is None:
        return [bench_config(device)]
    try:
        sides = [int(value) for value in args.arrays.split(",")]
    except ValueError:
        raise ValueError(f"--arrays takes comma-separated integers, not {args.arrays!r}") from None
    return [bench_config(device.replace(rows=side, cols=side)) for side in sides]


def run(args):
    wanted = None if args.layers == "all" else set(args.layers.split(","))
    unknown = sorted(set(wanted or ()) - set(LAYERS))
    if unknown:
        raise SystemExit(f"unknown layers {unknown}; known are {list(LAYERS)}")
    try:
        configs = _configs(args)
        for config in configs:          # every config checked before the first compile
            plan_layers(config, wanted)
    except ValueError as error:
        raise SystemExit(f"--device {args.device}"
                         + (f" --arrays {args.arrays}" if args.arrays else "") + f": {error}")
    rows_out, notes = [], []
    for config in configs:
        notes.append(f"{config_label(config)}: --device {args.device}"
                     + (" with this array" if args.arrays else "") + f", {config.rows}x"
                     f"{config.cols} array, {config.clock_mhz:g} MHz, scratchpad "
                     f"{config.scratchpad_rows} rows, accumulator {config.accumulator_rows}, "
                     f"parameters {config.parameter_rows}, binary {config.binary_width}b x "
                     f"{config.binary_lanes} lanes (results {config.binary_result_rows} rows), "
                     f"LUT multipliers in simulation")
        rows_out += bench_core(config, wanted, notes=notes)
    notes.append("utilization = useful MACs (or binary ops) / (peak per cycle * active_cycles), "
                 "all from the core's counters; compute_utilization uses compute_busy cycles")
    return {"device": args.device, "configs": [config.to_dict() for config in configs],
            "rows": rows_out, "notes": notes}
