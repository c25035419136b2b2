"""One point of a sweep, as a worker runs it: `hw.build`'s own flow (resolve, elaborate, yosys,
nextpnr seeds one after another on one core, ecppack, report), the core bench on a layer set when
asked for and the build passed (`sim.bench.core` on the compiled CXXRTL model of the point's
core, LUT multipliers: the cycle counts give inferences/s at the target clock), and a cache of
the result.

`run_point` takes and returns plain data (a dict of strings and numbers), so it runs the same in
this process or on any Dask worker that shares the output and cache folders. The cache key is a
hash of the elaborated build plan (RTLIL netlist, yosys script, constraints, tool commands), the
tools (YoWASP package versions, or an overriding program's path and contents), the seeds, their
time limit and the bench layers: a point whose key is cached is only elaborated, not built.
Results of builds whose kept seed ran out of time are not cached (the outcome depends on the
machine's load).
"""

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from amaranth._toolchain import tool_env_var

import ecpnn.cache
from hw import build

__all__ = ["cache_directory", "cache_key", "run_point", "bench_figures", "ROW_FIELDS"]

# Bump when a row's content changes without any hashed input changing.
_CACHE_VERSION = "1"
_PLAN_FILES = ("top.il", "top.ys", "top.lpf")
# Report utilization names -> table columns.
_RESOURCES = {"LUT4": "LUT4", "FF": "FF", "MULT18X18D": "DSP", "DP16KD": "EBR"}

ROW_FIELDS = ("name", "status", "device", "design", "rows", "cols", "dataflow", "multiplier",
              "requant_lanes", "binary_width", "binary_lanes", "clock_mhz", *_RESOURCES.values(),
              "fmax_mhz", "peak_gops_at_target", "peak_gops_at_fmax", "seed", "build_seconds",
              "cached", "problems")


def cache_directory():
    """`ecpnn.cache.cache_directory` of the dse cache."""
    return ecpnn.cache.cache_directory("dse")


def _tool_identity(name, default):
    """The installed package that provides the YoWASP program `default` (name and version), or
    the path and contents of the program that overrides it."""
    program = os.environ.get(tool_env_var(name), default)
    scripts = importlib.metadata.entry_points(group="console_scripts", name=program)
    if program == default and scripts:
        distribution = next(iter(scripts)).dist
        return f"{distribution.name}=={distribution.version}"
    found = shutil.which(program)
    contents = Path(found).read_bytes() if found else b"not found"
    return f"{program}:{hashlib.sha256(contents).hexdigest()}"


def cache_key(plan, commands, options):
    """Hash of the build plan in folder `plan`, its `commands`, the tools and the flow
    `options`."""
    digest = hashlib.sha256(_CACHE_VERSION.encode())
    for name in _PLAN_FILES:
        digest.update(name.encode() + b"\0" + (plan / name).read_bytes() + b"\0")
    tools = [_tool_identity(name, default) for name, default in build.YOWASP_TOOLS.items()]
    digest.update(json.dumps([commands, tools, options], sort_keys=True).encode())
    return digest.hexdigest()


def _row(name, report, seconds):
    config = report["config"]
    utilization = report["utilization"]
    fmax = report["system_fmax_mhz"]
    return {
        "name": name,
        "status": "pass" if report["passed"] else "fail",
        "device": report["variant"], "design": report["design"],
        **{field: config[field] for field in ("rows", "cols", "dataflow", "multiplier",
                                              "requant_lanes", "binary_width", "binary_lanes",
                                              "clock_mhz")},
        **{column: utilization.get(name, {}).get("used") for name, column in _RESOURCES.items()},
        "fmax_mhz": fmax,
        "peak_gops_at_target": report["peak_int8_gops_at_target"],
        "peak_gops_at_fmax": report["peak_int8_gops_at_fmax"],
        "seed": report["nextpnr_seed"],
        "build_seconds": round(seconds, 1),
        "cached": False,
        "problems": "; ".join(report["problems"]),
    }


def bench_figures(layer_rows, clock_hz):
    """A row's bench columns from the core bench's `layer_rows` (one layer set: one inference
    runs each layer once) at `clock_hz`: each layer's utilization, the set's cycles (the core's
    ``active_cycles``), whether every output was bit-exact, and inferences/s."""
    cycles = sum(layer["active_cycles"] for layer in layer_rows)
    return {**{f"{layer['layer']}_utilization": layer["utilization"] for layer in layer_rows},
            "bench_cycles": cycles,
            "bench_bit_exact": all(layer["bit_exact"] for layer in layer_rows),
            "inferences_per_s": clock_hz / cycles}


def _timed_out(report):
    return report["nextpnr_seeds"].get(report["nextpnr_seed"]) == build.TIMED_OUT


def _plan(task, board, selected, design, config, options):
    """``(commands, key, cached row or None)``: the point elaborated, its plan moved to
    ``out/name`` unless its cache key is already cached."""
    root = Path(task["out"])
    root.mkdir(parents=True, exist_ok=True)
    # The plan is extracted beside the build folder: on a cache hit the previous build of the
    # point (bitstream, logs) stays as it was.
    plan = Path(tempfile.mkdtemp(prefix=f".{task['name']}-", dir=root))
    try:
        commands = build.elaborate(board, selected, design, config, plan)
        key = cache_key(plan, commands, options)
        cached = Path(task["cache"]) / f"{key}.json"
        if cached.exists():
            return commands, key, json.loads(cached.read_text())
        shutil.rmtree(root / task["name"], ignore_errors=True)
        os.replace(plan, root / task["name"])
        return commands, key, None
    finally:
        shutil.rmtree(plan, ignore_errors=True)


def _store(cache, key, row):
    """Write `row` as cache entry `key`, atomically (other workers may read it meanwhile)."""
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".{key}.{os.getpid()}"
    staging.write_text(json.dumps(row, indent=1) + "\n")
    os.replace(staging, cache / f"{key}.json")


def run_point(task):
    """Build one point; `task` is ``{"name", "argv" (hw.build arguments), "out" (the sweep's
    folder: the build goes to ``out/name``), "cache" (folder), "bench" (layer names, may be
    empty)}``. Returns the point's row (`ROW_FIELDS`, plus the bench's figures)."""
    started = time.monotonic()
    args = build.parse_args(task["argv"])
    board, variant_name, selected, design, config, pll, estimate, _ = build.resolve(
        args, say=lambda message: None)
    seeds = tuple(args.seed or build.DEFAULT_SEEDS)
    options = {"seeds": seeds, "seed_minutes": args.seed_minutes, "bench": task["bench"]}
    commands, key, cached = _plan(task, board, selected, design, config, options)
    if cached is not None:
        return {**cached, "name": task["name"], "cached": True}
    out = Path(task["out"]) / task["name"]
    stage_seconds = {"elaborate": round(time.monotonic() - started, 1)}
    with open(out / "flow.log", "w") as log:
        tool_seconds, kept, failed_stage = build.run_tools(
            commands, out, config.clock_mhz, seeds=seeds, seed_parallel=1,
            time_limit=60 * args.seed_minutes if math.isfinite(args.seed_minutes) else None,
            verbose=False, say=lambda message: print(message, file=log, flush=True))
    report = build.build_report(board, variant_name, selected, config, pll, estimate, design,
                                out, {**stage_seconds, **tool_seconds}, failed_stage, kept)
    row = _row(task["name"], report, time.monotonic() - started)
    if task["bench"] and report["passed"]:
        from sim.bench.core import bench_config, bench_core
        bench_started = time.monotonic()
        layers = set(task["bench"])
        report["bench"] = bench_core(bench_config(config), layers)
        row.update(bench_figures(report["bench"], config.clock_hz),
                   bench_seconds=round(time.monotonic() - bench_started, 1))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if _timed_out(report):
        row["status"] = "timed out"
    else:
        _store(Path(task["cache"]), key, row)
    return row
