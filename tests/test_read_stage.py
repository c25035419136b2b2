# amaranth: UnusedElaboratable=no
"""ReadStage: responses in request order under random port theft and back-pressure, the
documented latency and one request per cycle, and `idle`."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.core.read_stage import ReadStage
from hw.pipeline import delayed
from sim.harness import receive, run, send

CONTENTS = [(address * 37 + 11) % 256 for address in range(32)]


class _Bench(wiring.Component):
    """A ReadStage on a 32 x 8-bit RAM whose address and enable go through `port_latency` - 1
    registers first (a registered port); `steal` blocks the stage for that cycle."""

    def __init__(self, port_latency):
        self.stage = ReadStage(addr_width=5, data_shape=8, tag_shape=6, port_latency=port_latency)
        super().__init__({
            "request": In(stream.Signature(data.StructLayout({"addr": 5, "read": 1, "tag": 6}))),
            "response": Out(stream.Signature(self.stage.response_layout)),
            "steal": In(1), "idle": Out(1), "port_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.stage = stage = self.stage
        m.submodules.ram = ram = Memory(shape=8, depth=32, init=CONTENTS)
        read = ram.read_port()
        wiring.connect(m, wiring.flipped(self.request), stage.request)
        wiring.connect(m, stage.response, wiring.flipped(self.response))
        m.d.comb += [
            read.addr.eq(delayed(m, stage.port_addr, self.stage.port_latency - 1, name="addr")),
            read.en.eq(delayed(m, stage.port_en, self.stage.port_latency - 1, name="en")),
            stage.port_data.eq(read.data), stage.blocked.eq(self.steal),
            self.idle.eq(stage.idle), self.port_en.eq(stage.port_en),
        ]
        return m


def _requests(rng, count):
    return [{"addr": rng.randrange(32), "read": int(rng.random() < 0.8), "tag": index % 64}
            for index in range(count)]


@pytest.mark.parametrize("port_latency", [1, 3])
@pytest.mark.parametrize("gap, stall, steal", [(0.0, 0.0, 0.0), (0.3, 0.3, 0.3), (0.0, 0.6, 0.2)])
def test_responses_in_order(gap, stall, steal, port_latency):
    dut = _Bench(port_latency)
    rng = random.Random(int(10 * (gap + stall + steal)))
    requests = _requests(rng, 60)
    got = []
    stolen_reads = []

    async def producer(ctx):
        await send(ctx, dut.request, requests, gap_probability=gap, rng=random.Random(1))

    async def consumer(ctx):
        got.extend(await receive(ctx, dut.response, len(requests), stall_probability=stall,
                                 rng=random.Random(2)))

    async def thief(ctx):
        thief_rng = random.Random(3)
        while len(got) < len(requests):
            ctx.set(dut.steal, thief_rng.random() < steal)
            _, _, steal_now, port_en = await ctx.tick().sample(dut.steal, dut.port_en)
            if steal_now and port_en:
                stolen_reads.append(1)
        ctx.set(dut.steal, 0)

    run(dut, producer, consumer, thief, name="read_stage_order")
    assert stolen_reads == []
    for request, response in zip(requests, got):
        assert int(response.tag) == request["tag"]
        if request["read"]:
            assert int(response.data) == CONTENTS[request["addr"]]


@pytest.mark.parametrize("port_latency", [1, 3])
def test_latency_throughput_and_idle(port_latency):
    """Unblocked with a ready consumer: a response port_latency + 2 cycles after each accept, one
    per cycle (the default depth keeps every cycle's request promised an entry)."""
    dut = _Bench(port_latency)
    requests = _requests(random.Random(7), 12)
    accepted, delivered, idle = [], [], []      # idle: per cycle, sampled before its edge

    async def bench(ctx):
        ctx.set(dut.response.ready, 1)
        ctx.set(dut.request.valid, 1)
        pending = list(requests)
        for cycle in range(len(requests) + port_latency + 5):
            if pending:
                ctx.set(dut.request.payload, pending[0])
            else:
                ctx.set(dut.request.valid, 0)
            _, _, ready, valid, stage_idle = await ctx.tick().sample(
                dut.request.ready, dut.response.valid, dut.idle)
            if pending and ready:
                pending.pop(0)
                accepted.append(cycle)
            if valid:
                delivered.append(cycle)
            idle.append(stage_idle)

    run(dut, bench, name="read_stage_latency")
    assert accepted == list(range(len(requests)))
    assert delivered == [cycle + port_latency + 2 for cycle in accepted]
    # Busy from the cycle after the first accept until the cycle after the last response left
    # (its credit returns through a register).
    last = delivered[-1]
    assert idle == [1] + [0] * (last + 1) + [1] * (len(idle) - last - 2)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(port_latency=0), "port_latency must be an integer >= 1, not 0"),
    (dict(port_latency=True), "port_latency must be an integer >= 1, not True"),
    (dict(port_latency=1, depth=2), "depth must be an integer >= 3, not 2"),
])
def test_bad_parameters(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ReadStage(addr_width=5, data_shape=8, tag_shape=6, **kwargs)
