"""Simulation speed: Amaranth's Python simulator vs the compiled CXXRTL backend, side by side.

Each row runs one design on one workload in both simulators and reports simulated cycles per
wall-clock second of the run phase only; the set-up (pysim elaboration, CXXRTL yosys + g++ build,
or a cache hit) is reported separately. pysim runs the workload once; CXXRTL runs it `--repeat`
times back to back so its timing is long enough to mean something. Both results are checked
bit-exactly (`sim.reference.gemm`, the link protocol's expected replies), so a fast wrong model
cannot pass.

Workloads:

* ``systolic RxC``: output-stationary `SystolicArray`, tiles of K = 2R operand beats streamed in,
  R result rows out per tile, a ready consumer.
* ``soc <preset> uart/<divisor>``: the full `hw.soc.soc.SoC` seen through a host-side UART PHY on
  its serial pins, a BULK_WRITE of random bytes to the scratchpad then a BULK_READ of them back.
"""

import time

import numpy as np

from amaranth.hdl import Value
from amaranth.sim import Simulator

from hw.config import preset
from hw.core.core import scratchpad_stride_words
from hw.soc import protocol
from hw.soc.soc import SoC
from hw.systolic.array import SystolicArray
from sim import reference
from sim.cxxrtl import CxxrtlSimulator, available, build, unavailable_reason
from sim.harness import CLOCK_PERIOD

DESCRIPTION = ("cycles/s of Amaranth pysim vs compiled CXXRTL on the systolic array and the SoC "
               "(same design and workload, compile time reported separately)")


def add_arguments(parser):
    parser.add_argument("--sizes", default="8,12",
                        help="systolic array sides to measure, comma separated (default 8,12)")
    parser.add_argument("--tiles", type=int, default=40,
                        help="output-stationary tiles per systolic workload (default 40)")
    parser.add_argument("--soc-preset", default="tiny",
                        help="config preset of the SoC row, or 'none' to skip it (default tiny)")
    parser.add_argument("--soc-bytes", type=int, default=32,
                        help="bytes written and read back per SoC workload (default 32)")
    parser.add_argument("--repeat", type=int, default=50,
                        help="times CXXRTL repeats each workload (default 50)")
    parser.add_argument("--cxxflags", default="-O2",
                        help="C++ compiler flags for the CXXRTL model (default -O2)")


class Workload:
    """Phases run one after the other; each phase sends payloads into the design's stream sources
    and expects payloads on its sinks (a stop-and-wait link needs one phase per request)."""

    def __init__(self, name, factory, phases):
        self.name = name
        self.factory = factory
        self.phases = phases            # [(sources {prefix: [int]}, expected {prefix: [int]})]


def systolic_workload(side, tiles, rng):
    def factory():
        return SystolicArray(rows=side, cols=side, dataflow="output_stationary", multiplier="dsp")

    array = factory()
    array._MustUse__silence = True      # only its layouts are needed here
    beats, rows = [], []
    for _ in range(tiles):
        k = 2 * side
        a = rng.integers(-128, 128, size=(side, k), dtype=np.int8)
        w = rng.integers(-128, 128, size=(k, side), dtype=np.int8)
        for n in range(k):
            beats.append(array.operand_layout.const({
                "a": [int(v) for v in a[:, n]], "w": [int(v) for v in w[n, :]],
                "last": int(n == k - 1)}).as_value().value)
        product = reference.gemm(a, w)
        for i in range(side):
            rows.append(array.result_layout.const({
                "data": [int(v) for v in product[i]], "last": int(i == side - 1)}).as_value().value)
    return Workload(f"systolic {side}x{side}", factory,
                    [({"operands": beats}, {"results": rows})])


def soc_workload(preset_name, size, rng):
    config = preset(preset_name)
    # The host-side PHY of sim:// line=uart, so the SoC sees a real serial line.
    from sim.soc import SerialLineHarness

    def factory():
        return SerialLineHarness(soc=SoC(config=config))

    # Bytes past a row's lanes in its stride slot of the scratchpad window are not stored.
    slot_bytes = 4 * scratchpad_stride_words(max(config.rows, config.cols))
    lanes = np.arange(size) % slot_bytes < max(config.rows, config.cols)
    payload = np.where(lanes, rng.integers(0, 256, size=size), 0).astype(np.uint8).tobytes()
    write = protocol.Request(1, protocol.Opcode.BULK_WRITE, protocol.SCRATCHPAD_BASE, size,
                             payload)
    read = protocol.Request(2, protocol.Opcode.BULK_READ, protocol.SCRATCHPAD_BASE, size)
    # The link is stop-and-wait: the device drops bytes that arrive while it replies.
    phases = [({"rx": list(write.encode())},
               {"tx": list(protocol.Reply(1, protocol.Status.OK).encode())}),
              ({"rx": list(read.encode())},
               {"tx": list(protocol.Reply(2, protocol.Status.OK, payload).encode())})]
    return Workload(f"soc {preset_name} uart/{config.uart_divisor}", factory, phases)


def run_pysim(workload):
    """Run the workload's phases in pysim; returns (setup s, run s, cycles, outputs per phase)."""
    started = time.perf_counter()
    dut = workload.factory()
    simulator = Simulator(dut)
    simulator.add_clock(CLOCK_PERIOD)
    outputs = []
    cycles = 0

    async def testbench(ctx):
        nonlocal cycles
        for sources, expected in workload.phases:
            pending = {prefix: list(items) for prefix, items in sources.items()}
            received = {prefix: [] for prefix in expected}
            for prefix in expected:
                ctx.set(getattr(dut, prefix).ready, 1)
            while any(pending.values()) or any(len(received[prefix]) < len(items)
                                               for prefix, items in expected.items()):
                for prefix, items in pending.items():
                    port = getattr(dut, prefix)
                    ctx.set(port.valid, bool(items))
                    if items:
                        ctx.set(Value.cast(port.payload), items[0])
                watched = [getattr(dut, prefix).ready for prefix in pending]
                for prefix in expected:
                    watched += [getattr(dut, prefix).valid, Value.cast(getattr(dut, prefix).payload)]
                _, _, *values = await ctx.tick().sample(*watched)
                cycles += 1
                for prefix, ready in zip(pending, values):
                    if ready and pending[prefix]:
                        pending[prefix].pop(0)
                sink_values = values[len(pending):]
                for index, prefix in enumerate(expected):
                    if sink_values[2 * index]:
                        received[prefix].append(sink_values[2 * index + 1])
            for prefix in sources:
                ctx.set(getattr(dut, prefix).valid, 0)
            for prefix in expected:
                ctx.set(getattr(dut, prefix).ready, 0)
            outputs.append(received)

    simulator.add_testbench(testbench)
    set_up = time.perf_counter()
    simulator.run()
    finished = time.perf_counter()
    return set_up - started, finished - set_up, cycles, outputs


def run_cxxrtl(workload, repeat, cxxflags):
    """Build (or reuse) the model and run the phases `repeat` times; (setup s, cached, run s,
    cycles, outputs per phase)."""
    started = time.perf_counter()
    model = build(workload.factory(), cxxflags=cxxflags)
    set_up = time.perf_counter() - started
    if len(workload.phases) == 1:
        # One long call rather than `repeat` short ones: the per-call packing is not simulation.
        (sources, expected), = workload.phases
        phases = [({prefix: items * repeat for prefix, items in sources.items()},
                   {prefix: items * repeat for prefix, items in expected.items()})]
    else:
        phases = workload.phases * repeat
    outputs = []
    cycles = 0
    with CxxrtlSimulator(model) as simulator:
        started = time.perf_counter()
        for sources, expected in phases:
            result = simulator.run_streams(
                sources, {prefix: len(items) for prefix, items in expected.items()},
                max_cycles=1 << 40)
            cycles += result.cycles
            outputs.append(result.received)
        elapsed = time.perf_counter() - started
    return set_up, model.cached, elapsed, cycles, outputs, [expected for _, expected in phases]


def run(args):
    rng = np.random.default_rng(2024)
    workloads = [systolic_workload(int(side), args.tiles, rng)
                 for side in args.sizes.split(",") if side.strip()]
    if args.soc_preset != "none":
        workloads.append(soc_workload(args.soc_preset, args.soc_bytes, rng))
    cxxflags = tuple(args.cxxflags.split())
    notes = []
    if not available():
        notes.append(f"CXXRTL unavailable, pysim only: {unavailable_reason()}")

    rows = []
    for workload in workloads:
        py_setup, py_run, py_cycles, py_out = run_pysim(workload)
        expected = [phase_expected for _, phase_expected in workload.phases]
        if py_out != expected:
            raise AssertionError(f"{workload.name}: pysim results differ from the reference")
        row = {"design": workload.name, "pysim_cycles": py_cycles,
               "pysim_cycles_per_s": py_cycles / py_run, "pysim_setup_s": py_setup}
        if available():
            cx_setup, cached, cx_run, cx_cycles, cx_out, cx_expected = run_cxxrtl(
                workload, args.repeat, cxxflags)
            if cx_out != cx_expected:
                raise AssertionError(f"{workload.name}: CXXRTL results differ from the reference")
            row.update({"cxxrtl_cycles": cx_cycles, "cxxrtl_cycles_per_s": cx_cycles / cx_run,
                        "cxxrtl_build_s": cx_setup, "cached": cached,
                        "speedup": (cx_cycles / cx_run) / (py_cycles / py_run)})
        rows.append(row)
    notes.append(f"CXXRTL built with {' '.join(cxxflags)}; build_s is yosys + g++ (or the cache "
                 f"lookup when cached=True); cycles/s count only the run. Results checked "
                 f"bit-exactly in both simulators.")
    return {"rows": rows, "notes": notes}
