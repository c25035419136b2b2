"""Network bench: whole networks compiled (`sw.compiler`) and run on the simulated SoC.

``python -m sim.bench network [--networks cifar,digits,binary_mlp,mixed] [--device 85F]
[--batch 8] [--line bytes|uart] [--backend cxxrtl|pysim] [--plot FILE.png]``

Each named network is a `sw.graph.Graph` with seeded random weights, compiled for the device's
geometry (weights and parameters resident where they fit, the most samples per round that fit)
and loaded once through the real driver (`sw.driver.Accelerator`) over the simulated link to the
whole SoC. Then a batch runs twice:

1. `LoadedProgram.profile`: one row per node from the core's counters -- active cycles, useful
   MACs, utilization = MACs / (peak MACs per cycle * cycles) -- and the link bytes of its steps;
2. a plain call, timed in simulated cycles, with the counters cleared before and read after:
   network utilization = useful MACs / (R*C*active cycles) (binary nodes: XNOR-popcount MACs /
   (width*lanes*active cycles)). Both outputs are checked bit-exact against `run_reference`.

Over ``--line uart`` (the config's own divisor, 10 bits a byte) the bench also prints the
inferences/s of the plain call against the bound the line sets: (baud / 10) / the payload bytes
one inference moves (inputs, commands, outputs, as the program moves them; frame headers and
status polls are what the measured figure loses to them), and beside it the bound if only the
packed input and output tensors crossed (no 12-lane row padding, no commands).

Networks (INT8 unless binary; ReLU where a zero point of -128 clamps):

* ``cifar``: 32x32x3 -> conv 3x3 3->36 -> conv 36->60 + 2x2 pool -> conv 60->60 + pool ->
  conv 60->60 + pool -> flatten 4x4x60 -> dense 10: 95.0k parameters, all *resident* on the 85F
  (its weights fill 8,061 of the 8,192 weight rows of 12 lanes; 36 and 60 channels are whole
  12-lane blocks); its activations leave room for one sample per round (conv1's 32x32x36
  output is 3,072 of the 8,192 activation rows);
* ``digits``: 8x8x1 -> conv 3x3 1->12 + pool -> flatten 4x4x12 -> dense 10 (the shape of
  `sw.digits.train_int8_cnn` with 12 channels, so the flatten moves no data);
* ``binary_mlp``: 64 +-1 inputs -> binary dense 128 (thresholds) -> binary dense 10 (int dots);
* ``mixed``: FINN-style, INT8 first layer and binary hidden layers: 8x8x1 -> conv 3x3 1->12 +
  pool -> flatten 192 -> sign (the INT8 -> binary boundary, a host op) -> binary dense 128 ->
  binary dense 64 (thresholds) -> binary dense 10 (int dots); the binary layers hand their bits
  to each other on chip.
"""

import numpy as np

from hw.soc.uart import FRAME_BITS
from sim import reference

from .device import add_device_argument, device_config

__all__ = ["DESCRIPTION", "NETWORKS", "add_arguments", "open_device",
           "bench_network", "run"]

DESCRIPTION = ("Whole networks (CIFAR-shaped CNN, digits CNN, binary MLP, mixed INT8/binary) "
               "compiled and run on the simulated SoC: per-node profile and network utilization "
               "from the counters, bit-exact; with --line uart inferences/s against the line's "
               "bound")


def _requant(rng, channels, fan_in, relu):
    """Requant parameters that keep random int8 layers in range: the accumulator of `fan_in`
    products of int8 values spans ~(70*70*sqrt(fan_in)); scaled to ~40 steps."""
    scales = rng.uniform(0.7, 1.3, channels) * 40 / (4900 * np.sqrt(fan_in))
    multiplier, shift = zip(*(reference.quantize_multiplier(float(s)) for s in scales))
    zero_point = -128 if relu else 0
    return dict(bias=rng.integers(-2000, 2000, channels).astype(np.int32),
                multiplier=np.array(multiplier), shift=np.array(shift),
                output_zero_point=zero_point, act_min=zero_point)


def _conv_features(rng, builder, input_shape, convs):
    """x -> 3x3 convs (padding 1, ReLU; (cout, pool) each) -> flatten, in `builder`: returns
    (the flattened tensor, its length, its zero point)."""
    from sw.ops import Conv2D, Flatten
    tensor = builder.input("x", input_shape, scale=0.02, zero_point=0)
    (height, width, channels), zero_point = input_shape, 0
    for index, (cout, pool) in enumerate(convs, start=1):
        tensor = builder.node(f"conv{index}", Conv2D(
            weights=rng.integers(-128, 128, (3, 3, channels, cout)), padding=(1, 1, 1, 1),
            input_zero_point=zero_point, pool=pool,
            **_requant(rng, cout, 9 * channels, relu=True)), [tensor], scale=0.05)
        zero_point, channels = -128, cout
        if pool:
            height, width = height // 2, width // 2
    return builder.node("flatten", Flatten(), [tensor]), height * width * channels, zero_point


def _int8_cnn(rng, input_shape, convs, classes):
    """x -> 3x3 convs (padding 1, ReLU; (cout, pool) each) -> flatten -> dense `classes`."""
    from sw.graph import GraphBuilder
    from sw.ops import Dense
    builder = GraphBuilder()
    flat, features, zero_point = _conv_features(rng, builder, input_shape, convs)
    scores = builder.node("dense", Dense(
        weights=rng.integers(-128, 128, (features, classes)), input_zero_point=zero_point,
        **_requant(rng, classes, features, relu=False)), [flat], scale=0.1)
    return builder.build([scores])


def cifar(rng):
    return _int8_cnn(rng, (32, 32, 3), [(36, False), (60, True), (60, True), (60, True)], 10)


def digits(rng):
    return _int8_cnn(rng, (8, 8, 1), [(12, True)], 10)


def binary_mlp(rng):
    from sw.graph import GraphBuilder
    from sw.ops import BinaryDense
    builder = GraphBuilder()
    x = builder.input("x", (64,), "binary")
    hidden = builder.node("hidden", BinaryDense(
        weights=rng.choice([-1, 1], (128, 64)), thresholds=rng.integers(-8, 9, 128),
        ascending=rng.integers(0, 2, 128).astype(bool)), [x])
    scores = builder.node("scores", BinaryDense(weights=rng.choice([-1, 1], (10, 128))),
                          [hidden])
    return builder.build([scores])


def mixed(rng):
    from sw.graph import GraphBuilder
    from sw.ops import BinaryDense, Sign
    builder = GraphBuilder()
    flat, features, zero_point = _conv_features(rng, builder, (8, 8, 1), [(12, True)])
    # Thresholds around the middle of the ReLU outputs' range (zero point -128), so both signs
    # occur.
    tensor = builder.node("sign", Sign(thresholds=rng.integers(zero_point + 10, zero_point + 60,
                                                               features)), [flat])
    for index, (k, n) in enumerate(((features, 128), (128, 64))):
        tensor = builder.node(f"hidden{index}", BinaryDense(
            weights=rng.choice([-1, 1], (n, k)), thresholds=rng.integers(-8, 9, n),
            ascending=rng.integers(0, 2, n).astype(bool)), [tensor])
    scores = builder.node("scores", BinaryDense(weights=rng.choice([-1, 1], (10, 64))),
                          [tensor])
    return builder.build([scores])


NETWORKS = {"cifar": cifar, "digits": digits, "binary_mlp": binary_mlp, "mixed": mixed}


def network_inputs(graph, batch, rng):
    """A random batch for `graph`'s one input (int8 values, or +1/-1 for a binary input)."""
    (name,) = graph.inputs
    tensor = graph.tensor(name)
    if tensor.dtype == "binary":
        return rng.choice(np.array([-1, 1], np.int8), (batch, *tensor.shape))
    return rng.integers(-128, 128, (batch, *tensor.shape)).astype(np.int8)


def add_arguments(parser):
    parser.add_argument("--networks", default="cifar,digits,binary_mlp,mixed",
                        help="comma-separated names or 'all' (" + ", ".join(NETWORKS) + ")")
    add_device_argument(parser)
    parser.add_argument("--batch", type=int, default=8, help="inferences per run (default 8)")
    parser.add_argument("--line", choices=("bytes", "uart"), default="bytes",
                        help="the simulated link: bytes (one byte a cycle, default) or uart "
                             "(the config's baud divisor; prints inferences/s vs the bound)")
    parser.add_argument("--backend", choices=("cxxrtl", "pysim"), default="cxxrtl",
                        help="simulator (default cxxrtl; the 12x12 SoC compiles ~10 min once)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="write a per-node utilization chart (needs matplotlib: "
                             "pip install 'ecpnn[plot]')")


def open_device(config, *, line="bytes", backend="cxxrtl"):
    """An `Accelerator` on the whole SoC of `config`, simulated in this process (`line`: "bytes"
    or "uart" at the config's divisor); its transport keeps the simulated time."""
    from sw.driver import Accelerator
    from sw.driver.link import FrameLink
    from sw.driver.sim import SimTransport
    transport = SimTransport(config=config, line=line, divisor=config.uart_divisor,
                             backend=backend)
    try:
        return Accelerator(FrameLink(transport), url=f"sim ({line}, {backend})")
    except BaseException:
        transport.close()
        raise


def _simulated_seconds(accelerator):
    return accelerator.link.transport.now()


def _equal(got, expected):
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    return all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def bench_network(accelerator, name, graph, x):
    """Compile, load and run `graph` on `x` (profiled, then plain and timed) on an
    `open_device` accelerator; returns ``(node rows, summary)``; over a UART line the summary
    has the line's bound."""
    from sw.graph import run_reference
    core = accelerator.core
    program = accelerator.compile(graph, max_batch=len(x))
    loaded = accelerator.load(program)
    expected = run_reference(graph, x)
    profiled, rows = loaded.profile(x)
    accelerator.clear_perf_counters()
    started = _simulated_seconds(accelerator)
    plain = loaded(x)
    seconds = _simulated_seconds(accelerator) - started
    counters = accelerator.perf_counters()
    samples = len(x)
    moved = sum(row["bytes_in"] + row["bytes_out"] for row in rows)
    summary = {
        "network": name, "samples": samples, "batch_per_round": program.batch,
        "parameters": sum(_parameters(node) for node in graph.nodes),
        "on_device": sum(row["where"] == "device" for row in rows), "nodes": len(rows),
        "bit_exact": _equal(profiled, expected) and _equal(plain, expected),
        "active_cycles": counters["active_cycles"], "macs": counters["macs"],
        "binary_ops": counters["binary_ops"],
        "utilization": _ratio(counters["macs"], core.rows * core.cols * counters["active_cycles"]),
        "binary_utilization": _ratio(counters["binary_ops"], 2 * core.binary_width
                                     * core.binary_lanes * counters["active_cycles"]),
        "load_bytes": program.load_bytes(),
        "bytes_per_inference": moved / samples,
        "seconds": seconds, "inferences_per_second": samples / seconds,
        "table": program.table(),
    }
    if accelerator.link.transport.device.line == "uart":
        line_bytes_per_second = accelerator.config.uart_baud / FRAME_BITS
        summary["bound_inferences_per_second"] = line_bytes_per_second * samples / moved
        summary["fraction_of_bound"] = (summary["inferences_per_second"]
                                        / summary["bound_inferences_per_second"])
        summary["tensor_bytes_per_inference"] = _tensor_bytes(graph)
        summary["tensor_bound_inferences_per_second"] = (line_bytes_per_second
                                                         / summary["tensor_bytes_per_inference"])
    return [{"network": name, **row} for row in rows], summary


def _tensor_bytes(graph):
    """Bytes of one sample's graph inputs and outputs, packed (int8: 1 a value, binary: 1 a
    bit, int32: 4): what an ideal link format would move."""
    sizes = {"int8": 8, "binary": 1, "int32": 32}
    bits = [sizes[graph.tensor(name).dtype] * int(np.prod(graph.tensor(name).shape))
            for name in (*graph.inputs, *graph.outputs)]
    return sum(-(-count // 8) for count in bits)


def _parameters(node):
    op = node.op
    return sum(int(np.size(getattr(op, field))) for field in ("weights", "bias", "thresholds")
               if getattr(op, field, None) is not None)


def _ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


_ROW_COLUMNS = ("network", "node", "op", "where", "cycles", "macs", "utilization",
                "compute_busy", "store_busy", "bytes_in", "bytes_out")


def run(args):
    names = list(NETWORKS) if args.networks == "all" else args.networks.split(",")
    unknown = sorted(set(names) - set(NETWORKS))
    if unknown:
        raise SystemExit(f"unknown networks {unknown}; known are {list(NETWORKS)}")
    if args.batch < 1:
        raise SystemExit(f"--batch must be at least 1, not {args.batch}")
    if args.plot:
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:
            raise SystemExit("--plot needs matplotlib: pip install 'ecpnn[plot]'")
    try:
        config = device_config(args.device)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if args.backend == "cxxrtl":
        from sim import cxxrtl
        if not cxxrtl.available():
            raise SystemExit(f"the network bench needs the CXXRTL backend here "
                             f"({cxxrtl.unavailable_reason()}); --backend pysim runs only "
                             f"small devices in reasonable time")
    rows, summaries = [], []
    with open_device(config, line=args.line, backend=args.backend) as accelerator:
        for index, name in enumerate(names):
            graph = NETWORKS[name](np.random.default_rng(index))
            x = network_inputs(graph, args.batch, np.random.default_rng(100 + index))
            node_rows, summary = bench_network(accelerator, name, graph, x)
            rows += [{column: row[column] for column in _ROW_COLUMNS} for row in node_rows]
            binary = summary["utilization"] is None     # a binary network: the engine's figures
            rows.append({"network": name, "node": "(network)", "op": "", "where": "",
                         "cycles": summary["active_cycles"],
                         "macs": summary["binary_ops"] // 2 if binary else summary["macs"],
                         "utilization": summary["binary_utilization" if binary
                                                else "utilization"], "compute_busy": "",
                         "store_busy": "", "bytes_in": "", "bytes_out": ""})
            summaries.append(summary)
    if args.plot:
        _plot(rows, args.plot)
    return {"device": args.device, "config": config.to_dict(), "line": args.line,
            "backend": args.backend, "rows": rows, "networks": summaries,
            "notes": [_note(summary, config) for summary in summaries] + [
                f"device {args.device}: {config.rows}x{config.cols} array, "
                f"{config.clock_mhz:g} MHz, scratchpad {config.scratchpad_rows} rows, "
                f"accumulator {config.accumulator_rows} rows; line {args.line}"
                + (f" at {config.uart_baud} baud" if args.line == "uart" else "") + "; "
                "utilization = useful MACs / (peak MACs per cycle * active cycles) from the "
                "core's counters (per node: profiled, each node alone; (network): the plain run)"]}


def _note(summary, config):
    text = (f"{summary['network']}: {summary['parameters']:,} parameters, "
            f"{summary['on_device']}/{summary['nodes']} nodes on the device, "
            f"bit-exact {'yes' if summary['bit_exact'] else 'NO'}, {summary['samples']} "
            f"inferences in rounds of {summary['batch_per_round']}; ")
    if summary["utilization"] is not None:
        text += f"network utilization {summary['utilization']:.1%}; "
    if summary["binary_utilization"] is not None:
        text += f"binary engine utilization {summary['binary_utilization']:.1%}; "
    text += (f"{summary['bytes_per_inference']:,.0f} payload bytes per inference, "
             f"{summary['load_bytes']:,} at load; {summary['inferences_per_second']:,.1f} "
             f"inferences/s simulated")
    if "bound_inferences_per_second" in summary:
        text += (f" vs the line's bound {summary['bound_inferences_per_second']:,.1f} "
                 f"({config.uart_baud // FRAME_BITS:,} B/s / bytes per inference): "
                 f"{summary['fraction_of_bound']:.1%} of it; the packed input and output "
                 f"tensors alone ({summary['tensor_bytes_per_inference']} B) would allow "
                 f"{summary['tensor_bound_inferences_per_second']:,.1f}")
    return text


def _plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    networks = list(dict.fromkeys(row["network"] for row in rows))
    figure, axes = pyplot.subplots(len(networks), 1, figsize=(8, 2.8 * len(networks)),
                                   squeeze=False)
    for axis, network in zip(axes[:, 0], networks):
        chosen = [row for row in rows if row["network"] == network
                  and row["utilization"] is not None]
        axis.bar([row["node"] for row in chosen], [100 * row["utilization"] for row in chosen])
        axis.set(ylabel="utilization %", ylim=(0, 100), title=network)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
