"""Formal proofs (SymbiYosys, `sim.formal`): stream blocks, the dispatcher, the frame engine.

Each harness drives a block from unconstrained inputs (`AnySeq`: any valid/ready/payload pattern,
any port theft, resets at any cycle), constrained only by the contract of what it is connected
to, and asserts its properties; a stream block is checked with `sim.formal.check_stream_order`
(every accepted token comes out exactly once, in order, unaltered, within the block's latency,
and an offered token is held until taken). ``prove`` is k-induction (unbounded): the harness adds
the invariants, on the block's internal registers (`sim.formal.probe`), that let it close.
``bmc`` is bounded (stated depth), where an induction would need invariants over a FIFO's memory.
A ``cover`` run shows that the states the assertions are about are reached, so none holds
vacuously.

    block              property                                   engine     depth
    SkidBuffer         order, no loss/duplicate, latency 1, hold  prove      4
    ReadStage          its path to the response FIFO, credits,    prove      8
                       the FIFO never written when full
                       the whole stage through the FIFO           bmc        12
    Requantizer        its path to the output FIFO (rows by their prove      18
                       ``last`` flag), FIFO never written when full
                       the whole unit through the FIFO            bmc        24
    credit_counter     flags = "a slot is free"/"all free"        prove      3
    dispatcher         RAW/WAR scoreboard, compute/binary apart,  prove      6
                       FENCE, one outcome per command (a refused
                       one reaches no unit), overflow reported
                       even when the host clears the error then
    frame engine       (its proof goes in the last section)
"""

from dataclasses import dataclass

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import (Assert, Assume, Cat, Const, Cover, Elaboratable, Fragment, Module, Mux,
                          Signal, Value)

from hw.core.core import Core
from hw.core.isa import COMMAND_LAYOUT, ErrorCode, Opcode
from hw.core.read_stage import ReadStage
from hw.credit import credit_counter
from hw.pipeline import SkidBuffer, delayed
from hw.systolic.requant import PIPELINE_STAGES, Requantizer
from sim.formal import (check, check_stream_order, in_state, probe, remove_submodules,
                        submodule)


# Stream blocks ---------------------------------------------------------------------------------

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
def test_skid_buffer(mode, depth, tmp_path):
    print(check(SkidBufferHarness(), name=f"skid_buffer_{mode}", mode=mode, depth=depth,
                directory=tmp_path))


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
            scoreboard = check_stream_order(
                m, accepted=accepted, expected=expected, matches=matches, valid=fifo.w_en,
                taken=fifo.w_en, actual=fifo.w_data, capacity=latency, latency=latency)
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
def test_read_stage(port_latency, through_fifo, mode, depth, tmp_path):
    harness = ReadStageHarness(port_latency=port_latency, through_fifo=through_fifo)
    scope = "responses" if through_fifo else "fifo_writes"
    print(check(harness, name=f"read_stage_l{port_latency}_{scope}_{mode}", mode=mode,
                depth=depth, directory=tmp_path))


class RequantizerHarness(Elaboratable):
    """`Requantizer(channels=1, lanes=1)` (its behavioural multipliers) under any rows,
    parameters, settings and consumer: rows (followed by their ``last`` flag) come out once, in
    order. `through_fifo` as for `ReadStageHarness`; the write side carries the invariants that
    let an induction prove the output FIFO is never written when full (a row is started only
    when its FIFO entry is free)."""

    def __init__(self, *, through_fifo):
        self.through_fifo = through_fifo

    def elaborate(self, platform):
        m = Module()
        dut = Requantizer(channels=1, lanes=1)
        # Without a platform: the multipliers' behavioural models, not MULT18X18D instances.
        m.submodules.dut = fragment = Fragment.get(dut, None)
        fifo = submodule(fragment, "output_fifo")
        for port in (dut.i.payload, dut.params.payload, dut.settings):
            m.d.comb += port.eq(AnySeq(len(port.as_value())))
        m.d.comb += [dut.i.valid.eq(AnySeq(1)), dut.params.valid.eq(AnySeq(1)),
                     dut.o.ready.eq(AnySeq(1))]
        accepted = dut.i.valid & dut.i.ready
        m.d.comb += Assert(~fifo.w_en | fifo.w_rdy, "a row written to a full FIFO (lost)")
        if self.through_fifo:
            scoreboard = check_stream_order(
                m, accepted=accepted, expected=dut.i.payload.last, valid=dut.o.valid,
                taken=dut.o.valid & dut.o.ready, actual=dut.o.payload.last,
                capacity=dut.fifo_depth + 1, latency=dut.latency)
            m.d.comb += Cover(scoreboard.tracking & (scoreboard.ahead == 2) & ~dut.i.ready)
        else:
            scoreboard = check_stream_order(
                m, accepted=accepted, expected=dut.i.payload.last, valid=fifo.w_en,
                taken=fifo.w_en, actual=fifo.w_data[-1], capacity=PIPELINE_STAGES + 1,
                latency=None)
            # Induction invariants: the rows counted in the unit are in the pipeline or the
            # FIFO, the rows inside also in the input register (the newest, which may wait
            # there for a FIFO entry as long as the consumer stalls); the FIFO's level is in
            # range.
            rows_in_unit = probe(fragment, "rows_in_unit")
            in_pipeline = sum(probe(fragment, f"control_{stage}")[0]      # the valid bit
                              for stage in range(PIPELINE_STAGES))
            held_last = probe(fragment, "held")[-1]
            m.d.comb += [
                Assert(rows_in_unit == in_pipeline + fifo.level),
                Assert(scoreboard.count == in_pipeline + probe(fragment, "held_valid")),
                Assert(~(scoreboard.tracking & (scoreboard.ahead == in_pipeline)) |
                       (held_last == scoreboard.tracked)),
                Assert(probe(fragment, "output_fifo/inner_level") <= fifo.depth - 1),
            ]
        return m


@pytest.mark.parametrize("through_fifo, mode, depth", [
    (False, "prove", 18), (True, "bmc", 24), (True, "cover", 24)])
def test_requantizer(through_fifo, mode, depth, tmp_path):
    scope = "rows" if through_fifo else "fifo_writes"
    print(check(RequantizerHarness(through_fifo=through_fifo), name=f"requantizer_{scope}_{mode}",
                mode=mode, depth=depth, directory=tmp_path))


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
def test_credit_counter(slots, tmp_path):
    print(check(CreditCounterHarness(slots), name=f"credit_counter_{slots}", mode="prove",
                depth=3, directory=tmp_path))


# The dispatcher (hw/core/core.py) --------------------------------------------------------------

@dataclass(frozen=True)
class _UnitRecord:
    """The harness's view of a unit: a command `offered` now (for accumulator half
    `offered_half`), one still `unfinished` (for `half`), and `waiting` (ready last cycle
    without a transfer, so ready now)."""
    offered: Value
    offered_half: Value
    unfinished: Signal
    half: Signal
    waiting: Signal


class DispatcherHarness(Elaboratable):
    """The `Core`'s command queue and dispatcher, with its units, memories and the products'
    multiplier taken out: their outputs are free (`AnySeq`), within the unit contract of
    `hw.core.units` (a unit's ``command.ready`` falls only by a transfer; ``busy`` is high the
    cycle after one; the command is finished the first cycle after that with ``busy`` low). So
    any command sequence, any check outcome and any unit timing is covered. The control bus is
    written and read at will (the error register cleared in any cycle, that of a push included).
    """

    def elaborate(self, platform):
        m = Module()
        core = Core(rows=1, cols=1, dataflow="weight_stationary", multiplier="lut",
                    requant_lanes=1, scratchpad_rows=16, accumulator_rows=16, binary_width=8,
                    binary_lanes=1, binary_max_k=8, binary_max_n=1, parameter_rows=1,
                    binary_result_rows=2, queue_depth=2, max_pool_width=2)
        m.submodules.core = fragment = Fragment.get(core, platform)
        blocks = remove_submodules(fragment, "scratchpad", "accumulator_0", "accumulator_1",
                                   "parameters", "binary_results", "compute", "store", "binary",
                                   "multiplier")
        bus = core.control
        multiplier = blocks["multiplier"]
        m.d.comb += [
            bus.address.eq(AnySeq(len(bus.address))), bus.read.eq(AnySeq(1)),
            bus.write.eq(AnySeq(1)), bus.write_data.eq(AnySeq(32)),
            multiplier.request.ready.eq(AnySeq(1)), multiplier.product.valid.eq(AnySeq(1)),
            multiplier.product.payload.eq(AnySeq(len(multiplier.product.payload))),
            blocks["accumulator_0"].idle.eq(AnySeq(1)), blocks["accumulator_1"].idle.eq(AnySeq(1)),
        ]
        half_bit = (core.accumulator_rows // 2 - 1).bit_length()
        compute_busy = (blocks["compute"].busy | ~blocks["accumulator_0"].idle |
                        ~blocks["accumulator_1"].idle)
        units = {
            "compute": self._unit(m, "compute", blocks["compute"], compute_busy, half_bit),
            "store": self._unit(m, "store", blocks["store"], blocks["store"].busy, half_bit),
            "binary": self._unit(m, "binary", blocks["binary"], blocks["binary"].busy, None),
        }
        self._check_scoreboard(m, fragment, units)
        skip, decided = self._check_outcomes(m, fragment, units)
        overflowed = self._check_overflow(m, fragment, bus)
        self._invariants(m, fragment, units, decided)
        compute, store, binary = units["compute"], units["store"], units["binary"]
        m.d.comb += [
            Cover(compute.offered & store.unfinished),      # ping-pong: the other half
            Cover(store.offered & compute.unfinished),
            Cover(binary.offered & store.unfinished),
            Cover(probe(fragment, "offer_fence")),
            Cover(skip),
            Cover(overflowed),
        ]
        return m

    @staticmethod
    def _unit(m, name, unit, busy, half_bit):
        """Drive `unit`'s outputs within its contract (its command's accumulator half is bit
        `half_bit` of ``acc_base``, or None) and assert that it is offered one command at a
        time, only when ready."""
        command = unit.command
        m.d.comb += [command.ready.eq(AnySeq(1)), unit.busy.eq(AnySeq(1))]
        transfer = command.valid & command.ready
        waiting, transferred = Signal(name=f"{name}_waiting"), Signal(name=f"{name}_transferred")
        m.d.sync += [waiting.eq(command.ready & ~command.valid), transferred.eq(transfer)]
        m.d.comb += [Assume(~waiting | command.ready), Assume(~transferred | busy)]
        unfinished, half = Signal(name=f"{name}_unfinished"), Signal(name=f"{name}_half")
        offered_half = command.payload.acc_base[half_bit] if half_bit is not None else Const(0)
        with m.If(transfer):
            m.d.sync += [unfinished.eq(1), half.eq(offered_half)]
        with m.Elif(unfinished & ~busy):
            m.d.sync += unfinished.eq(0)
        m.d.comb += [
            Assert(~command.valid | command.ready, f"a command offered to the {name} unit "
                                                   f"while it is not ready"),
            Assert(~(command.valid & unfinished), f"a second command to the busy {name} unit"),
        ]
        return _UnitRecord(command.valid, offered_half, unfinished, half, waiting)

    @staticmethod
    def _check_scoreboard(m, fragment, units):
        compute, store, binary = units["compute"], units["store"], units["binary"]
        m.d.comb += [
            Assert(~(store.offered & compute.unfinished & (compute.half == store.offered_half)),
                   "a store issued on the half an unfinished GEMM/CONV writes (RAW)"),
            Assert(~(compute.offered & store.unfinished & (store.half == compute.offered_half)),
                   "a GEMM/CONV issued on the half an unfinished store reads (WAR)"),
            Assert(~(compute.offered & binary.unfinished) & ~(binary.offered & compute.unfinished),
                   "compute and binary issued together (they share a scratchpad read port)"),
            Assert(~(probe(fragment, "offer_fence") &
                     Cat(*(unit.unfinished for unit in units.values())).any()),
                   "a FENCE completed while a command was unfinished"),
        ]

    @staticmethod
    def _check_outcomes(m, fragment, units):
        """Each fetched command has one outcome: refused (skipped: no unit sees it), issued to
        one unit, or a completed FENCE. Returns the refusal and 'this command has had it'."""
        queue = submodule(fragment, "queue")
        skip = probe(fragment, "skip")
        outcomes = Cat(skip, probe(fragment, "offer_fence"),
                       *(unit.offered for unit in units.values()))
        decided = Signal()
        with m.If(queue.r_en & queue.r_rdy):
            m.d.sync += decided.eq(0)
        with m.Elif(outcomes.any()):
            m.d.sync += decided.eq(1)
        m.d.comb += [
            Assert(~(outcomes & (outcomes - 1)).any(), "a command with two outcomes"),
            Assert(~(decided & outcomes.any()), "a command acted on twice"),
        ]
        return skip, decided

    def _check_overflow(self, m, fragment, bus):
        """A command pushed into a full queue is dropped, never silently: the error is set. The
        push is registered after the command's last word; a host write that clears the error
        in the push's cycle does not hide the overflow: the clear keeps it as the new error."""
        queue = submodule(fragment, "queue")
        overflowed = Signal()
        m.d.sync += overflowed.eq(queue.w_en & ~queue.w_rdy)
        m.d.comb += Assert(~overflowed | (probe(fragment, "error_code") != ErrorCode.NONE),
                           "a command dropped by a full queue without an error")
        return overflowed

    @staticmethod
    def _invariants(m, fragment, units, decided):
        """For the induction: the dispatcher's scoreboard is the harness's record of unfinished
        commands, its registered readies are the units' (no transfer since), its opcode flags
        decode its command, an offer is made only in DISPATCH, and after an outcome it waits in
        FETCH."""
        for name, unit in units.items():
            m.d.comb += [
                Assert(probe(fragment, f"{name}_active") == unit.unfinished),
                Assert(probe(fragment, f"{name}_ready") == unit.waiting),
            ]
        for name, scoreboard in (("compute", "computing"), ("store", "storing")):
            unit = units[name]
            m.d.comb += [
                Assert(~unit.unfinished | (probe(fragment, f"{name}_half") == unit.half)),
                Assert(probe(fragment, scoreboard) ==
                       Cat(unit.unfinished & ~unit.half, unit.unfinished & unit.half)),
            ]
        opcode = COMMAND_LAYOUT(probe(fragment, "command")).opcode
        for flag, code in (("gemm", Opcode.GEMM), ("conv", Opcode.CONV),
                           ("store", Opcode.REQUANT_STORE), ("binary", Opcode.BINARY),
                           ("fence", Opcode.FENCE)):
            m.d.comb += Assert(probe(fragment, f"is_{flag}") == (opcode == code))
        offer_registers = Cat(*(probe(fragment, f"offer_{name}")
                                for name in ("compute", "store", "binary", "fence")))
        m.d.comb += [
            Assert(~offer_registers.any() | in_state(fragment, "DISPATCH")),
            Assert(~(offer_registers & (offer_registers - 1)).any()),
            Assert(~decided | in_state(fragment, "FETCH")),
        ]


@pytest.mark.parametrize("mode, depth", [("prove", 6), ("cover", 47)])
def test_dispatcher(mode, depth, tmp_path):
    print(check(DispatcherHarness(), name=f"dispatcher_{mode}", mode=mode, depth=depth,
                directory=tmp_path))


# The frame engine (hw/soc/framing.py) ----------------------------------------------------------
#
# Its proof goes here, once the framing and sequence rewrite has landed: a FrameEngineHarness
# feeding the engine any byte sequence (AnySeq bytes, any gaps) with the bus side taken out by
# `remove_submodules` or driven within the bridge contract, asserting
#   - a write reaches the bus only when both CRCs of its frame passed;
#   - a sequence number is applied at most once (a harness record of the last applied one);
#   - after any bytes, a valid frame that follows is taken (a bounded "recovers within the
#     longest frame" check, or an invariant that the decoder is back in its idle state after a
#     frame delimiter),
# as ``prove`` where the decoder's state lets the induction close, ``bmc`` with a stated depth
# otherwise, and a ``cover`` run that reaches an applied write.
