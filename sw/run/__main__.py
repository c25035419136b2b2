"""``python -m sw.run MODEL``: run a quantized TFLite, ONNX or QONNX model on the accelerator.

Loads the model (`sw.importers`), compiles it for the device's configuration (`sw.compiler`),
prints the graph with each node's placement (device or host, and why), runs it on the device
and prints the outputs: shape, dtype, integer and real range, and the argmax per sample of a
classifier's scores. ``--profile`` adds each node's cycles and utilization from the core's
performance counters (`sw.driver.loaded.LoadedProgram.profile`); ``--compare`` runs the model's
own runtime on the same inputs and counts the mismatches per tensor (`sw.run.compare`);
``--json`` prints everything as one JSON document instead.

Inputs: ``--random N`` (default 1) draws N inputs with ``--seed``: floats spread over the range
the input's quantization represents for a model that takes floats, else integers.
``--input FILE.npy`` (or ``.npz``, one array per input) takes floats in the model's own layout
(NCHW for an ONNX image model), quantized as the model does (`sw.run.model_file`), or the
graph's integers (int8 NHWC, +1/-1 for a binary input); one sample or a batch.

Exit status: 0 done (mismatches found by ``--compare`` are reported, not an error: ONNX models
differ from onnxruntime by one step on rare elements by design, see `sw.importers.onnx`);
2 usage errors (arguments, an unreadable, unsupported or float model file, an input that does
not fit the model, a malformed device URL); 1 run failures (the device unreachable or refusing,
the model not fitting the device, the runtime for ``--compare`` missing or failing).
"""

import argparse
import functools
import json
import sys
import time

import numpy as np

from ecpnn.package_data import reports_damaged_install
from sw.compiler import MAX_BATCH, DoesNotFit
from sw.driver import Accelerator, InvalidURL, LinkError
from sw.importers import ModelImportError
from sw.run.compare import RuntimeFailed, compare, runtime_for
from sw.run.model_file import InputError, NotInstalled, open_model, read_input_file
from sw.run.supported import supported_ops_table

__all__ = ["DEFAULT_DEVICE", "SHIPPED_DEVICE", "main", "run"]

# The tiny preset's 4x4 array in Amaranth's Python simulator: it starts in seconds on a fresh
# install (the compiled simulator first builds its model, ~10 minutes for the 85F preset), with
# buffers large enough for the CIFAR-shaped zoo model.
DEFAULT_DEVICE = ("sim://tiny?scratchpad_rows=4096&accumulator_rows=512"
                  "&binary_result_rows=4096")
# The ULX3S-85F preset's SoC (12x12 array), compiled once by CXXRTL and cached.
SHIPPED_DEVICE = "sim://default?backend=cxxrtl"
_SHOWN_SAMPLES = 16         # argmax values printed per output (--json has them all)

_EPILOG = f"""\
devices:
  default              {DEFAULT_DEVICE}
                       (the tiny preset in the Python simulator: starts in seconds)
  shipped preset       {SHIPPED_DEVICE}
                       (the ULX3S-85F SoC, 12x12 array, compiled simulator; the first run
                       compiles its model, about 10 minutes and 13 GB, then it is cached)
  a board              uart:///dev/ttyUSB0?baud=3000000
  sim:// options (buffer sizes, line=uart, backend=cxxrtl): python -m pydoc sw.driver.sim

exit status: 0 done; 2 usage error (arguments, model file, input, URL); 1 run failure
(device, fit, runtime for --compare). --compare mismatches are reported, not an error.
"""


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of samples, not {value}")
    return value


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m sw.run", description=__doc__.split("\n")[0].split(": ", 1)[1],
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="a quantized .tflite or .onnx (ONNX or QONNX) model file")
    parser.add_argument("--device", default=DEFAULT_DEVICE, metavar="URL",
                        help="the device URL (default: the tiny preset in the Python "
                             "simulator; see below for the shipped 85F preset)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE",
                        help=".npy (or .npz, an array per input): floats in the model's layout, "
                             "quantized as the model does, or the graph's integers (int8 NHWC, "
                             "+1/-1 binary); one sample or a batch")
    source.add_argument("--random", metavar="N", type=_positive,
                        help="N random inputs (the default is 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    parser.add_argument("--profile", action="store_true",
                        help="read the core's performance counters per node: cycles, useful "
                             "MACs, utilization, link bytes (each node's commands then run "
                             "alone)")
    parser.add_argument("--compare", action="store_true",
                        help="also run the model's own runtime (LiteRT, onnxruntime or qonnx) "
                             "on the same inputs and report the mismatches per tensor")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (placements, outputs with their values, "
                             "comparison, timings) instead of text")
    parser.add_argument("--list-ops", action="store_true",
                        help="print the supported ops per format and where they run, and exit")
    return parser


@reports_damaged_install
def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list_ops:
        print(supported_ops_table())
        return 0
    if args.model is None:
        parser.error("MODEL is required (a .tflite or .onnx file), unless --list-ops is given")
    say = (lambda text="": None) if args.json else functools.partial(print, flush=True)
    try:
        result = run(args, say)
    except (ModelImportError, InputError, InvalidURL) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DoesNotFit, LinkError, NotInstalled, RuntimeFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(result, sys.stdout, indent=1, default=_json_number)
        print()
    return 0


def run(args, say):
    """Do what the parsed `args` ask, printing progress with `say`; returns the JSON-able
    result."""
    started = time.perf_counter()
    seconds = {}
    model = open_model(args.model)
    runtime = runtime_for(model.format) if args.compare else None
    inputs, source = _inputs(args, model)
    samples = len(next(iter(inputs.values()))[0])
    seconds["load_model"] = time.perf_counter() - started
    say(f"model {model.path} ({model.format}, {len(model.graph.nodes)} nodes)")
    for edge in model.inputs:
        say(f"  {edge.describe()}")
    for name in model.graph.outputs:
        say(f"  output {name!r}: {_spec(model.graph.tensor(name))}")
    say(f"  {samples} sample(s) from {source}")
    config, program, outputs, profile = _run_on_device(
        args, model.graph, {name: graph for name, (graph, _) in inputs.items()}, say, seconds,
        started)
    if profile is not None:
        _say_profile(say, profile, samples)
    result = {"model": {"path": str(model.path), "format": model.format,
                        "nodes": len(model.graph.nodes),
                        "inputs": [edge.describe() for edge in model.inputs]},
              "device": {"url": args.device, "rows": config.rows, "cols": config.cols,
                         "binary_width": config.binary_width,
                         "binary_lanes": config.binary_lanes},
              "program": _program_json(program),
              "inputs": {"source": source, "samples": samples},
              "outputs": {name: _output(model.graph.tensor(name), value, say)
                          for name, value in outputs.items()}}
    if profile is not None:
        result["profile"] = profile
    if runtime is not None:
        compare_started = time.perf_counter()
        comparisons = compare(model, {name: x for name, (_, x) in inputs.items()},
                              {**{name: q for name, (q, _) in inputs.items()}, **outputs})
        seconds["compare"] = time.perf_counter() - compare_started
        _say_comparisons(say, runtime, samples, comparisons)
        result["compare"] = {"runtime": runtime, "tensors": [vars(c) for c in comparisons]}
    seconds["total"] = time.perf_counter() - started
    result["seconds"] = seconds
    return result


def _run_on_device(args, graph, device_inputs, say, seconds, started):
    """Connect, compile, print the table, load and run: (config, program, {output: array},
    profile rows or None)."""
    samples = len(next(iter(device_inputs.values())))
    with Accelerator.open(args.device) as accelerator:
        seconds["connect"] = time.perf_counter() - started - seconds["load_model"]
        config = accelerator.config
        say(f"device {args.device}: {config.rows}x{config.cols} array, binary engine "
            f"{config.binary_width} bits x {config.binary_lanes} lanes (connected in "
            f"{seconds['connect']:.1f} s)")
        program = _compile(accelerator, graph, samples, args.device)
        say(program.table())
        seconds["table"] = time.perf_counter() - started
        say(f"(table {seconds['table']:.1f} s after the start; running {samples} sample(s) in "
            f"rounds of {program.batch})")
        loaded = accelerator.load(program)
        outputs, profile = loaded.profile(device_inputs) if args.profile \
            else (loaded(device_inputs), None)
        seconds["run"] = time.perf_counter() - started - seconds["table"]
    say(f"ran {samples} sample(s) on the device in {seconds['run']:.1f} s")
    outputs = outputs if len(program.outputs) > 1 else (outputs,)
    return config, program, dict(zip(program.outputs, outputs)), profile


def _inputs(args, model):
    """({graph input: (graph integers, model input)}, where they came from)."""
    if args.input is not None:
        arrays = read_input_file(args.input, model.inputs)
        inputs = {edge.tensor.name: edge.prepare(arrays[edge.tensor.name])
                  for edge in model.inputs}
        batches = {name: len(graph) for name, (graph, _) in inputs.items()}
        if len(set(batches.values())) > 1:
            raise InputError(f"the inputs must have one batch size, not {batches}")
        return inputs, f"--input {args.input}"
    count = args.random or 1
    rng = np.random.default_rng(args.seed)
    return ({edge.tensor.name: edge.prepare(edge.random(rng, count)) for edge in model.inputs},
            f"--random {count} --seed {args.seed}")


def _compile(accelerator, graph, samples, url):
    try:
        return accelerator.compile(graph, max_batch=min(samples, MAX_BATCH))
    except DoesNotFit as error:
        hint = ("; a simulated device takes bigger buffers, e.g. sim://tiny?scratchpad_rows="
                "16384&accumulator_rows=1024" if url.startswith("sim://") else "")
        raise DoesNotFit(f"{error}{hint}") from None


def _json_number(value):
    """NumPy scalars (in placements and counters) as JSON numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def _spec(tensor):
    shape = f"{tensor.dtype} [{', '.join(map(str, tensor.shape))}]"
    if isinstance(tensor.scale, float):
        return f"{shape} (scale {tensor.scale:.6g}, zero point {tensor.zero_point})"
    return shape


def _program_json(program):
    link = program.link_bytes()
    return {"batch": program.batch,
            "bytes_at_load": sum(step.bytes_in for step in program.resident),
            "placements": [{**vars(p), "link_in": link[p.node][0], "link_out": link[p.node][1]}
                           for p in program.placements]}


def _output(tensor, value, say):
    """The summary of one output (printed with `say`) and its JSON form."""
    low, high = int(value.min()), int(value.max())
    line = f"output {tensor.name!r}: {tensor.dtype} {list(value.shape)} in [{low}, {high}]"
    summary = {"dtype": tensor.dtype, "shape": list(value.shape), "min": low, "max": high}
    if isinstance(tensor.scale, float):
        real = [(bound - tensor.zero_point) * tensor.scale for bound in (low, high)]
        line += (f", real [{real[0]:.4g}, {real[1]:.4g}] (scale {tensor.scale:.6g}, zero point "
                 f"{tensor.zero_point})")
        summary.update(scale=tensor.scale, zero_point=tensor.zero_point, real_min=real[0],
                       real_max=real[1])
    say(line)
    if len(tensor.shape) == 1 and tensor.shape[0] > 1 and tensor.dtype != "binary":
        argmax = np.argmax(value, axis=1).tolist()
        more = len(argmax) - _SHOWN_SAMPLES
        say(f"  argmax per sample: {' '.join(map(str, argmax[:_SHOWN_SAMPLES]))}"
            + (f" ... ({more} more in --json)" if more > 0 else ""))
        summary["argmax"] = argmax
    summary["values"] = value.tolist()
    return summary


def _say_profile(say, rows, samples):
    say(f"profile ({samples} sample(s); the core's counters per node, each node's commands run "
        f"alone):")
    _say_table(say, ("node", "op", "where", "cycles", "MACs", "utilization", "link in",
                     "link out"),
               [(row["node"], row["op"], row["where"], f"{row['cycles']:,}", f"{row['macs']:,}",
                 "-" if row["utilization"] is None else f"{row['utilization']:.1%}",
                 f"{row['bytes_in']:,}", f"{row['bytes_out']:,}") for row in rows])
    device = [row for row in rows if row["where"] == "device"]
    cycles = sum(row["cycles"] for row in device)
    if cycles:
        useful = sum(row["macs"] / row["peak_macs_per_cycle"] for row in device)
        say(f"  device nodes: {cycles:,} active cycles, utilization {useful / cycles:.1%}")


def _say_comparisons(say, runtime, samples, comparisons):
    say(f"compared with {runtime} on the same {samples} sample(s):")
    _say_table(say, ("tensor", "role", "elements", "mismatches", "max difference"),
               [(c.tensor, c.role, f"{c.elements:,}", f"{c.mismatches:,}",
                 str(c.max_difference)) if c.missing is None
                else (c.tensor, c.role, "-", "-", f"not compared: {c.missing}")
                for c in comparisons])


def _say_table(say, header, rows):
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        say("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
