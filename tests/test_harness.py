"""The pysim harness: a stalled design fails its test with `SimulationStalled`, never hangs."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from sim.harness import SimulationStalled, run


class _Counter(wiring.Component):
    """A free-running 16-bit counter."""

    count: Out(16)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.count.eq(self.count + 1)
        return m


def test_a_testbench_waiting_forever_raises_after_max_cycles():
    dut = _Counter()
    ready = Signal()        # nothing ever drives it: the handshake never completes

    async def testbench(ctx):
        while not ctx.get(ready):
            await ctx.tick()

    with pytest.raises(SimulationStalled, match=r"'stuck'.* after 300 clock cycles"):
        run(dut, testbench, name="stuck", max_cycles=300)


def test_a_run_that_finishes_in_time_returns_and_the_watchdog_stays_quiet():
    dut = _Counter()
    seen = []

    async def testbench(ctx):
        await ctx.tick().repeat(299)
        seen.append(ctx.get(dut.count))

    run(dut, testbench, name="in-time", max_cycles=300)
    assert seen == [299]


@pytest.mark.parametrize("max_cycles", [0, -5, 1.5, True])
def test_max_cycles_must_be_a_positive_integer(max_cycles):
    with pytest.raises(ValueError, match="max_cycles must be a positive integer"):
        run(_Counter(), name="bad", max_cycles=max_cycles)
