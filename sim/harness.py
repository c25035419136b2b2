"""Simulation harness shared by tests and benches (Amaranth pysim, async testbenches).

`run(dut, *testbenches, name=...)` builds a `Simulator` with one clock, adds the testbenches and
runs until they all return; a design that stalls (a handshake that never completes) makes it raise
`SimulationStalled` after `max_cycles` clock cycles instead of hanging the test run. When the
environment variable ``ECPNN_VCD`` names a directory, the run writes ``<dir>/<name>.vcd`` (and a
.gtkw) so a failing test can be inspected in a waveform viewer.

`send` / `receive` drive `amaranth.lib.stream` interfaces from a testbench, optionally with random
gaps between transfers (``gap_probability``) to exercise back-pressure and bubbles.
"""

import os
import random
import re
from contextlib import nullcontext

from amaranth.sim import Simulator

__all__ = ["run", "send", "receive", "vcd_path", "SimulationStalled", "MAX_CYCLES"]

CLOCK_PERIOD = 1e-8
# The longest run of the test suite takes 6,375 cycles, of the benches at their defaults 4,430:
# a stall is caught after minutes of simulation, not never.
MAX_CYCLES = 1_000_000


class SimulationStalled(Exception):
    """The testbenches of a `run` were still running after its `max_cycles` clock cycles."""


def vcd_path(name):
    """Where the VCD of run `name` goes, or None when ``ECPNN_VCD`` is not set."""
    folder = os.environ.get("ECPNN_VCD")
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".vcd")


def run(dut, *testbenches, name="sim", processes=(), max_cycles=MAX_CYCLES):
    """Simulate `dut` with a 100 MHz ``sync`` clock until every testbench returns; raises
    `SimulationStalled` when they have not all returned after `max_cycles` clock cycles."""
    sim = Simulator(dut)
    if not isinstance(max_cycles, int) or isinstance(max_cycles, bool) or max_cycles < 1:
        raise ValueError(f"max_cycles must be a positive integer, not {max_cycles!r}")
    sim.add_clock(CLOCK_PERIOD)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)

    async def watchdog(ctx):
        await ctx.delay(max_cycles * CLOCK_PERIOD)
        raise SimulationStalled(f"simulation {name!r}: the testbenches were still running after "
                                f"{max_cycles} clock cycles (a stalled handshake?); pass a "
                                f"larger max_cycles for a longer run")

    sim.add_testbench(watchdog, background=True)
    path = vcd_path(name)
    writer = sim.write_vcd(path, path[:-4] + ".gtkw") if path else nullcontext()
    with writer:
        sim.run()


async def send(ctx, stream, payloads, *, gap_probability=0.0, rng=None):
    """Send each payload on `stream` (a stream signature's interface, source side driven here)."""
    rng = rng or random.Random(0)
    for payload in payloads:
        while gap_probability and rng.random() < gap_probability:
            await ctx.tick()
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
        ctx.set(stream.valid, 0)


async def receive(ctx, stream, count, *, stall_probability=0.0, rng=None):
    """Receive `count` payloads from `stream`, refusing some cycles to apply back-pressure."""
    rng = rng or random.Random(1)
    received = []
    while len(received) < count:
        ready = not (stall_probability and rng.random() < stall_probability)
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            received.append(payload)
    ctx.set(stream.ready, 0)
    return received
