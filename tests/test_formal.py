"""Formal proofs of the stream blocks (SymbiYosys through `sim.formal`).

Each harness drives a block from unconstrained inputs (`AnySeq`: any valid/ready/payload pattern,
resets at any cycle) and checks it with `sim.formal.check_stream_order`: every accepted token comes
out exactly once, in order, unaltered, within the block's latency, and an offered token is held
until taken. ``prove`` is k-induction (unbounded); the harness adds the invariants, on the block's
internal registers (`sim.formal.probe`), that let the induction close. A ``cover`` run shows the
interesting states are reachable, so no assertion holds vacuously.
"""

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Cat, Cover, Elaboratable, Fragment, Module, Mux, Signal

from hw.core.read_stage import ReadStage
from hw.credit import credit_counter
from hw.pipeline import SkidBuffer, delayed
from sim.formal import check, check_stream_order, probe, submodule


class SkidBufferHarness(Elaboratable):
    """`SkidBuffer(4)` under any producer and consumer."""

    def elaborate(self, platform):
        m = Module()
        dut = SkidBuffer(4)
        m.submodules.dut = fragment = Fragment.get(dut, platform)
        m.d.comb += [dut.i.valid.eq(AnySeq(1)), dut.i.payload.eq(AnySeq(4)),
                     dut.o.ready.eq(AnySeq(1))]
        scoreboard = check_stream_order(
            m, accepted=dut.i.valid & dut.i.ready, expected=dut.i.payload,
            valid=dut.o.valid, taken=dut.o.valid & dut.o.ready, actual=dut.o.payload,
            capacity=2, latency=1)
        skid_valid, skid = probe(fragment, "skid_valid"), probe(fragment, "skid")
        # Invariants for the induction: the two registers are the tokens inside, oldest first.
        m.d.comb += [
            Assert(scoreboard.count == dut.o.valid + skid_valid),
            Assert(~(scoreboard.tracking & (scoreboard.ahead == 1)) |
                   (skid == scoreboard.tracked)),
            Cover(skid_valid & dut.o.valid & dut.o.ready & ~dut.i.ready),
        ]
        return m


@pytest.mark.parametrize("mode, depth", [("prove", 4), ("cover", 8)])
def test_skid_buffer(mode, depth):
    print(check(SkidBufferHarness(), name=f"skid_buffer_{mode}", mode=mode, depth=depth))


class ReadStageHarness(Elaboratable):
    """`ReadStage` (2-bit addresses, data and tags) on a memory whose word at address a is
    ``a ^ key`` (`key` any constant, so a word read from the wrong address or cycle differs),
    under any requests, port theft (`blocked`) and consumer.

    `through_fifo`: the scoreboard watches the response stream (tokens through the response
    FIFO); otherwise the FIFO's write side (the stage's own fixed-latency path), with the credit
    invariants that let an induction prove the FIFO is never written when full.
    """

    def __init__(self, *, port_latency, through_fifo):
        self.port_latency = port_latency
        self.through_fifo = through_fifo

    def elaborate(self, platform):
        m = Module()
        latency = self.port_latency
        dut = ReadStage(addr_width=2, data_shape=2, tag_shape=2, port_latency=latency)
        m.submodules.dut = fragment = Fragment.get(dut, platform)
        fifo = submodule(fragment, "fifo")
        request = dut.request.payload
        key = AnyConst(2)
        m.d.comb += [
            dut.request.valid.eq(AnySeq(1)), request.eq(AnySeq(len(request.as_value()))),
            dut.blocked.eq(AnySeq(1)), dut.response.ready.eq(AnySeq(1)),
            dut.port_data.eq(Mux(delayed(m, dut.port_en, latency, name="read"),
                                 delayed(m, dut.port_addr ^ key, latency, name="word"),
                                 AnySeq(2))),
        ]
        accepted = dut.request.valid & dut.request.ready
        m.d.comb += [
            Assert(~(dut.port_en & dut.blocked), "the port used while the host has it"),
            Assert(dut.port_en == (accepted & request.read), "a read not of an accepted request"),
            Assert(~fifo.w_en | fifo.w_rdy, "a response written to a full FIFO (lost)"),
        ]
        expected = Cat(request.addr ^ key, request.tag, request.read)

        def matches(tracked, actual):
            tracked_data, tracked_tag, read = tracked[:2], tracked[2:4], tracked[4]
            return (actual[2:4] == tracked_tag) & (~read | (actual[:2] == tracked_data))

        if self.through_fifo:
            scoreboard = check_stream_order(
                m, accepted=accepted, expected=expected, matches=matches,
                valid=dut.response.valid, taken=dut.response.valid & dut.response.ready,
                actual=dut.response.payload, capacity=dut.depth, latency=latency + 2)
            m.d.comb += [
                Assert(~dut.idle | (scoreboard.count == 0), "idle with a read in flight"),
                Cover((scoreboard.count == dut.depth) & dut.response.valid & dut.response.ready),
                Cover(scoreboard.tracking & (scoreboard.ahead == 3) & dut.blocked),
            ]
        else:
            scoreboard = check_stream_order(m, accepted=accepted, expected=expected, matches=matches,
                               valid=fifo.w_en, taken=fifo.w_en, actual=fifo.w_data,
                               capacity=latency, latency=latency)
            # Induction invariants: every promised entry is in the port pipeline, the FIFO or
            # the returned register; the credit flags follow the count.
            credits = probe(fragment, "fifo_credits")
            in_flight = sum(probe(fragment, f"in_flight_d{stage + 1}") for stage in range(latency))
            m.d.comb += [
                Assert(scoreboard.count == in_flight),
                Assert(credits + in_flight + fifo.level + probe(fragment, "returned") ==
                       dut.depth),
                Assert(probe(fragment, "fifo_has_credit") == (credits != 0)),
                Assert(probe(fragment, "fifo_all_free") == (credits == dut.depth)),
            ]
        return m


@pytest.mark.parametrize("port_latency", [1, 3])
@pytest.mark.parametrize("through_fifo, mode, depth", [
    (False, "prove", 8), (True, "bmc", 12), (True, "cover", 12)])
def test_read_stage(port_latency, through_fifo, mode, depth):
    harness = ReadStageHarness(port_latency=port_latency, through_fifo=through_fifo)
    scope = "responses" if through_fifo else "fifo_writes"
    print(check(harness, name=f"read_stage_l{port_latency}_{scope}_{mode}", mode=mode,
                depth=depth))


class _CreditCounter(Elaboratable):
    def __init__(self, slots):
        self.slots = slots
        self.take, self.give, self.has_credit, self.all_free = (Signal(name=name) for name in (
            "take", "give", "has_credit", "all_free"))

    def elaborate(self, platform):
        m = Module()
        has_credit, all_free = credit_counter(m, slots=self.slots, take=self.take, give=self.give,
                                              name="slots")
        m.d.comb += [self.has_credit.eq(has_credit), self.all_free.eq(all_free)]
        return m


class CreditCounterHarness(Elaboratable):
    """`credit_counter` over `slots` slots, taken and given in any pattern its contract allows
    (take only while ``has_credit``, give only while a slot is used)."""

    def __init__(self, slots):
        self.slots = slots

    def elaborate(self, platform):
        m = Module()
        dut = _CreditCounter(self.slots)
        m.submodules.dut = fragment = Fragment.get(dut, platform)
        used = Signal(range(self.slots + 1))
        m.d.sync += used.eq(used + dut.take - dut.give)
        m.d.comb += [
            dut.take.eq(AnySeq(1)), dut.give.eq(AnySeq(1)),
            Assume(~dut.take | dut.has_credit), Assume(~dut.give | (used != 0)),
            Assert(dut.has_credit == (used < self.slots), "has_credit is not 'a slot is free'"),
            Assert(dut.all_free == (used == 0), "all_free is not 'no slot is used'"),
            Assert(probe(fragment, "slots_credits") + used == self.slots),   # for the induction
        ]
        return m


@pytest.mark.parametrize("slots", [1, 2, 7])
def test_credit_counter(slots):
    print(check(CreditCounterHarness(slots), name=f"credit_counter_{slots}", mode="prove",
                depth=3))
