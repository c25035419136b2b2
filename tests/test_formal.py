"""Formal proofs of the stream blocks (SymbiYosys through `sim.formal`).

Each harness drives a block from unconstrained inputs (`AnySeq`: any valid/ready/payload pattern,
resets at any cycle) and checks it with `sim.formal.check_stream_order`: every accepted token comes
out exactly once, in order, unaltered, within the block's latency, and an offered token is held
until taken. ``prove`` is k-induction (unbounded); the harness adds the invariants, on the block's
internal registers (`sim.formal.probe`), that let the induction close. A ``cover`` run shows the
interesting states are reachable, so no assertion holds vacuously.
"""

import pytest
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Cover, Elaboratable, Fragment, Module

from hw.pipeline import SkidBuffer
from sim.formal import check, check_stream_order, probe


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
