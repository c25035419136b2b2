"""Formal proofs (SymbiYosys, `sim.formal`): stream blocks, the accumulator memory, the
dispatcher, the frame engine.

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
    AccumulatorMemory  a drain shows every row accepted up to 3   bmc        12
                       cycles before it (forwarding of rows 1, 2,
                       3 cycles apart), write.ready, idle
    SystolicArray      its registered readies equal the ready     prove      3
    (weight-stat.)     conditions on the current state
    dispatcher         RAW/WAR scoreboard, compute/binary apart,  prove      6
                       FENCE, one outcome per command (a refused
                       one reaches no unit), overflow reported
                       even when the host clears the error then
    frame engine       a write applied only when both CRCs of     prove      4
                       its frame passed, with its frame's address
                       and data, in a writable window; a seq
                       applied again only 255 requests later
                       after any bytes and a rest of 40 cycles:   prove      42
                       hunting for a frame start, nothing held
"""

import operator
from dataclasses import dataclass
from functools import partial, reduce

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import (Assert, Assume, Cat, Const, Cover, Elaboratable, Fragment, Module,
                          Mux, ResetSignal, Signal, Value, signed)

from hw.core.core import Core
from hw.core.isa import COMMAND_LAYOUT, ErrorCode, Opcode
from hw.core.read_stage import ReadStage
from hw.credit import credit_counter
from hw.memory.accumulator import AccumulatorMemory
from hw.pipeline import SkidBuffer, delayed
from hw.soc import protocol
from hw.soc.bridge import MemoryMap, Window, WindowKind
from hw.soc.framing import HEADER_BYTES, FrameEngine
from hw.soc.protocol import CRC, CRC_INIT, RequestHeader, Status
from hw.soc.protocol import Opcode as ProtocolOpcode
from hw.systolic.array import SystolicArray
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


class AccumulatorHarness(Elaboratable):
    """`AccumulatorMemory` (one lane, four rows) under any writes, accumulations and drains,
    against its timing contract: a drain of row `tracked` (any constant) issued in cycle t shows,
    DRAIN_LATENCY cycles later, the row after every write accepted up to t-3 (undefined when a
    row accepted in t-2 went to `tracked`: it is written as the RAM reads); ``write.ready`` is
    low exactly in the cycle after a drain; ``idle`` is low exactly while an accepted row is not
    written (up to three cycles after its accept). Rows take values in -8..7, so a row taken from
    the wrong cycle still differs while the solver needs no adder identities (with any 32-bit
    values a 14-cycle run had not finished after 5 minutes); the int32 wrap-around is simulated
    in `tests/test_memory_buffers.py`. Reset is held low: it keeps the memory's rows and drops
    those in flight.
    """

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = AccumulatorMemory(cols=1, depth=4)
        write, drain = dut.write.payload, dut.drain
        tracked = AnyConst(2)
        m.d.comb += [
            dut.write.valid.eq(AnySeq(1)), write.addr.eq(AnySeq(2)),
            write.accumulate.eq(AnySeq(1)), write.data[0].eq(AnySeq(signed(4))),
            drain.en.eq(AnySeq(1)), drain.addr.eq(AnySeq(2)),
            Assume(~ResetSignal()),
        ]
        accepted = dut.write.valid & dut.write.ready
        hit = accepted & (write.addr == tracked)
        value = Signal(signed(32))      # row `tracked` after the rows accepted before this cycle
        with m.If(hit):
            m.d.sync += value.eq(Mux(write.accumulate, value + write.data[0], write.data[0]))
        # A drain issued now shows `value` of two cycles ago, unless a row accepted then hit.
        checked = drain.en & (drain.addr == tracked) & ~delayed(m, hit, 2, name="hit")
        latency = AccumulatorMemory.DRAIN_LATENCY
        expected = delayed(m, delayed(m, value, 2, name="visible"), latency, name="expected")
        shown = delayed(m, checked, latency, name="checked")
        written_later = [delayed(m, accepted, cycles, name=f"accepted_{cycles}")
                         for cycles in (1, 2, 3)]
        m.d.comb += [
            Assert(~shown | (drain.data[0] == expected), "a drain shows the wrong row"),
            Assert(dut.write.ready == ~delayed(m, drain.en, 1, name="drained"),
                   "write.ready is not low exactly after a drain"),
            Assert(dut.idle == ~Cat(*written_later).any(), "idle with a row not written"),
            # Four accumulations into `tracked` back to back, shown by a drain.
            Cover(shown & Cat(*(delayed(m, hit & write.accumulate, cycles, name=f"chain_{cycles}")
                                for cycles in range(6, 10))).all()),
            Cover(shown & (expected != 0)),
        ]
        return m


@pytest.mark.parametrize("mode, depth", [("bmc", 12), ("cover", 12)])
def test_accumulator(mode, depth, tmp_path):
    print(check(AccumulatorHarness(), name=f"accumulator_{mode}", mode=mode, depth=depth,
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


# The systolic array's input control (hw/systolic/array.py) ------------------------------------

class ArrayReadyHarness(Elaboratable):
    """A weight-stationary `SystolicArray` (3 x 2) with its PEs and result FIFO taken out, under
    any weight, activation and result traffic: its readies, registered from the next cycle's
    state, are at every cycle the conditions on the current state, so registering them added
    no latency and changed no handshake. Rows leave the result FIFO whenever one is reserved
    (its contract: the array writes only rows it reserved)."""

    rows, cols = 3, 2

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        dut = SystolicArray(rows=rows, cols=cols, dataflow="weight_stationary",
                            multiplier="lut")
        m.submodules.dut = fragment = Fragment.get(dut, platform)
        fifo = remove_submodules(fragment, "result_fifo", *(
            f"pe_{i}_{j}" for i in range(rows) for j in range(cols)))["result_fifo"]
        depth = dut.result_fifo_depth
        reserved = Signal(range(depth + 1))     # result rows promised and not yet taken
        accepted = dut.activations.valid & dut.activations.ready
        m.d.sync += reserved.eq(reserved + accepted - (dut.results.valid & dut.results.ready))
        taken, swap_guard, expect_first, shift = (
            probe(fragment, name) for name in ("taken", "swap_guard", "expect_first", "shift"))
        loaded = (taken == rows) & ~shift
        activations = dut.activations.payload
        m.d.comb += [
            dut.weights.valid.eq(AnySeq(1)),
            dut.weights.payload.eq(AnySeq(len(dut.weights.payload.as_value()))),
            dut.activations.valid.eq(AnySeq(1)),
            activations.eq(AnySeq(len(activations.as_value()))),
            dut.results.ready.eq(AnySeq(1)),
            fifo.r_rdy.eq(AnySeq(1)), Assume(~fifo.r_rdy | (reserved != 0)),
            Assert(dut.weights.ready == ((taken < rows) & (swap_guard == 0)),
                   "weights.ready is not 'a weight row is missing and no swap is in flight'"),
            Assert(dut.activations.ready == ((reserved < depth) & (~expect_first | loaded)),
                   "activations.ready is not 'a result row is free and the tile's weights "
                   "are loaded (or the row is not its first)'"),
            # Invariants for the induction: each registered flag of the AND is its own part.
            Assert(probe(fragment, "result_rows_credits") + reserved == depth),
            Assert(probe(fragment, "result_rows_has_credit") == (reserved < depth)),
            Assert(probe(fragment, "tile_ready") == (~expect_first | loaded)),
            Cover((reserved == depth) & dut.results.valid & ~dut.results.ready),
            Cover(accepted & expect_first & (reserved != 0)),   # a tile after a tile
        ]
        return m


@pytest.mark.parametrize("mode, depth", [("prove", 3), ("cover", 24)])
def test_array_readies(mode, depth, tmp_path):
    print(check(ArrayReadyHarness(), name=f"array_readies_{mode}", mode=mode, depth=depth,
                directory=tmp_path))


# The dispatcher (hw/core/core.py) --------------------------------------------------------------

@dataclass(frozen=True)
class _UnitRecord:
    """The harness's view of a unit: a command `offered` now (for accumulator half
    `offered_half`), `unfinished` ones (bit h: one for half h; a unit without halves uses bit
    0), and `waiting` (ready last cycle without a transfer, so ready now)."""
    offered: Value
    offered_half: Value
    unfinished: Signal
    waiting: Signal

    def unfinished_on(self, half):
        return self.unfinished.bit_select(half, 1)


class DispatcherHarness(Elaboratable):
    """The `Core`'s command queue and dispatcher, with its units, memories and the products'
    multiplier taken out: their outputs are free (`AnySeq`), within the unit contract of
    `hw.core.units` (a unit's ``command.ready`` falls only by a transfer; for the store and
    binary units ``busy`` is high the cycle after one and the command is finished the first
    cycle after that with ``busy`` low; a GEMM/CONV is finished when a row marked ``end`` for its
    half has been taken from the accumulator write buffer and that half is then idle, the half
    busy the cycle after it takes a row). So any command sequence, any check outcome and any unit
    timing is covered. The control bus is written and read at will (the error register cleared
    in any cycle, that of a push included)."""

    def elaborate(self, platform):
        m = Module()
        core = Core(rows=1, cols=1, dataflow="weight_stationary", multiplier="lut",
                    requant_lanes=1, scratchpad_rows=16, accumulator_rows=16, binary_width=8,
                    binary_lanes=1, binary_max_k=8, binary_max_n=1, parameter_rows=1,
                    binary_result_rows=2, queue_depth=2, max_pool_width=2)
        m.submodules.core = fragment = Fragment.get(core, platform)
        blocks = remove_submodules(fragment, "scratchpad", "accumulator_0", "accumulator_1",
                                   "accumulator_write", "parameters", "binary_results", "compute",
                                   "store", "binary", "multiplier")
        bus = core.control
        multiplier = blocks["multiplier"]
        written = blocks["accumulator_write"].o
        m.d.comb += [
            bus.address.eq(AnySeq(len(bus.address))), bus.read.eq(AnySeq(1)),
            bus.write.eq(AnySeq(1)), bus.write_data.eq(AnySeq(32)),
            multiplier.request.ready.eq(AnySeq(1)), multiplier.product.valid.eq(AnySeq(1)),
            multiplier.product.payload.eq(AnySeq(len(multiplier.product.payload))),
            written.valid.eq(AnySeq(1)), written.payload.eq(AnySeq(written.payload.shape().size)),
            *(blocks[f"accumulator_{half}"].write.ready.eq(AnySeq(1)) for half in range(2)),
            *(blocks[f"accumulator_{half}"].idle.eq(AnySeq(1)) for half in range(2)),
        ]
        half_bit = (core.accumulator_rows // 2 - 1).bit_length()
        compute_ended = Signal(2, name="compute_ended")     # bit h: its `end` row is in half h
        units = {
            "compute": self._compute_unit(m, blocks, half_bit, compute_ended),
            "store": self._unit(m, "store", blocks["store"], half_bit),
            "binary": self._unit(m, "binary", blocks["binary"], None),
        }
        self._check_scoreboard(m, fragment, units)
        skip, decided = self._check_outcomes(m, fragment, units)
        overflowed = self._check_overflow(m, fragment, bus)
        self._invariants(m, fragment, units, decided, compute_ended)
        compute, store, binary = units["compute"], units["store"], units["binary"]
        m.d.comb += [
            Cover(compute.offered & store.unfinished.any()),    # ping-pong: the other half
            Cover(store.offered & compute.unfinished.any()),
            Cover(binary.offered & store.unfinished.any()),
            Cover(compute.offered & compute.unfinished.any()),  # overlapped GEMM/CONVs
            Cover(probe(fragment, "offer_fence")),
            Cover(skip),
            Cover(overflowed),
        ]
        return m

    @staticmethod
    def _offers(m, name, unit, half_bit):
        """Drive `unit`'s ready within its contract and assert that it is offered a command
        only when ready. Returns (transfer, offered half, waiting)."""
        command = unit.command
        m.d.comb += command.ready.eq(AnySeq(1))
        transfer = command.valid & command.ready
        waiting = Signal(name=f"{name}_waiting")
        m.d.sync += waiting.eq(command.ready & ~command.valid)
        m.d.comb += [
            Assume(~waiting | command.ready),
            Assert(~command.valid | command.ready, f"a command offered to the {name} unit "
                                                   f"while it is not ready"),
        ]
        offered_half = command.payload.acc_base[half_bit] if half_bit is not None else Const(0)
        return transfer, offered_half, waiting

    def _unit(self, m, name, unit, half_bit):
        """A store or binary unit (its command's accumulator half is bit `half_bit` of
        ``acc_base``, or None): driven within its contract; asserted to be offered one command
        at a time."""
        transfer, offered_half, waiting = self._offers(m, name, unit, half_bit)
        m.d.comb += unit.busy.eq(AnySeq(1))
        transferred = Signal(name=f"{name}_transferred")
        m.d.sync += transferred.eq(transfer)
        m.d.comb += Assume(~transferred | unit.busy)
        unfinished = Signal(2, name=f"{name}_unfinished")
        with m.If(transfer):
            m.d.sync += unfinished.eq(0)
            m.d.sync += unfinished.bit_select(offered_half, 1).eq(1)
        with m.Elif(~unit.busy):
            m.d.sync += unfinished.eq(0)
        m.d.comb += Assert(~(unit.command.valid & unfinished.any()),
                           f"a second command to the busy {name} unit")
        return _UnitRecord(unit.command.valid, offered_half, unfinished, waiting)

    def _compute_unit(self, m, blocks, half_bit, ended):
        """The compute unit, which takes a command while others run: one GEMM/CONV per half
        at most (asserted), each finished by an ``end`` row taken into its half (assumed only for
        an unfinished command that has not had it: `ended`) and then that half idle."""
        transfer, offered_half, waiting = self._offers(m, "compute", blocks["compute"], half_bit)
        written = blocks["accumulator_write"].o
        unfinished = Signal(2, name="compute_unfinished")
        for half in range(2):
            accumulator = blocks[f"accumulator_{half}"]
            taken = written.valid & accumulator.write.valid & accumulator.write.ready
            end_taken = taken & written.payload.end
            took = Signal(name=f"half_{half}_took")
            m.d.sync += took.eq(taken)
            m.d.comb += [Assume(~end_taken | (unfinished[half] & ~ended[half])),
                         Assume(~took | ~accumulator.idle)]
            with m.If(transfer & (offered_half == half)):
                m.d.sync += unfinished[half].eq(1)
            with m.If(end_taken):
                m.d.sync += ended[half].eq(1)
            with m.If(ended[half] & accumulator.idle):
                m.d.sync += [unfinished[half].eq(0), ended[half].eq(0)]
        m.d.comb += Assert(~(transfer & unfinished.bit_select(offered_half, 1)),
                           "a second GEMM/CONV issued on a half one still writes")
        return _UnitRecord(blocks["compute"].command.valid, offered_half, unfinished, waiting)

    @staticmethod
    def _check_scoreboard(m, fragment, units):
        compute, store, binary = units["compute"], units["store"], units["binary"]
        m.d.comb += [
            Assert(~(store.offered & compute.unfinished_on(store.offered_half)),
                   "a store issued on the half an unfinished GEMM/CONV writes (RAW)"),
            Assert(~(compute.offered & store.unfinished_on(compute.offered_half)),
                   "a GEMM/CONV issued on the half an unfinished store reads (WAR)"),
            Assert(~(compute.offered & binary.unfinished.any()) &
                   ~(binary.offered & compute.unfinished.any()),
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
    def _invariants(m, fragment, units, decided, compute_ended):
        """For the induction: the dispatcher's scoreboard is the harness's record of unfinished
        commands, its registered readies are the units' (no transfer since), its opcode flags
        decode its command, an offer is made only in DISPATCH, and after an outcome it waits in
        FETCH."""
        for name, unit in units.items():
            m.d.comb += Assert(probe(fragment, f"{name}_ready") == unit.waiting)
        store, binary = units["store"], units["binary"]
        m.d.comb += [
            Assert(probe(fragment, "computing") == units["compute"].unfinished),
            Assert(probe(fragment, "finishing") == compute_ended),
            Assert(probe(fragment, "store_active") == store.unfinished.any()),
            Assert(~store.unfinished.any() |
                   (store.unfinished == Cat(~probe(fragment, "store_half"),
                                            probe(fragment, "store_half")))),
            Assert(probe(fragment, "storing") == store.unfinished),
            Assert(binary.unfinished == probe(fragment, "binary_active")),
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


@pytest.mark.parametrize("mode, depth", [("prove", 6), ("cover", 51)])
def test_dispatcher(mode, depth, tmp_path):
    print(check(DispatcherHarness(), name=f"dispatcher_{mode}", mode=mode, depth=depth,
                directory=tmp_path))


# The frame engine (hw/soc/framing.py) ----------------------------------------------------------
#
# The engine with a 4-byte staging buffer (one word: a write frame is 16 symbols) and a frame
# timeout of 2 cycles, on a memory map of three small windows (a writable register window, a
# read-only one, a writable memory window); every other size of the engine is the SoC's.

FORMAL_PAYLOAD = 4
FORMAL_FRAME_TIMEOUT = 2
FORMAL_MAP = MemoryMap([
    Window("registers", 0x000, 8, WindowKind.REGISTERS, writable=True),
    Window("identity", 0x040, 4, WindowKind.REGISTERS, writable=False),
    Window("memory", 0x100, 8, WindowKind.MEMORY, writable=True),
])
HEADER_SYMBOLS = HEADER_BYTES + CRC.size            # header and its CRC
FRAME_ENGINE_STATES = ("HUNT", "HEADER", "CHECK_HEADER", "PAYLOAD", "CHECK_PAYLOAD", "COMMIT",
                       "REPLY", "SEND_DATA", "SEND_CRC", "FINISH")
FRAME_SYMBOLS = HEADER_SYMBOLS + FORMAL_PAYLOAD + CRC.size


def crc_step(crc, byte):
    """The CRC register after `byte`, as logic built from the host's `protocol.crc16` (the
    CRC is linear in the register and the byte, so each output bit is the XOR of the input bits
    whose unit vectors set it): independent of the engine's `crc16_next`."""
    inputs = ([(crc[bit], protocol.crc16(b"\0", 1 << bit)) for bit in range(16)] +
              [(byte[bit], protocol.crc16(bytes([1 << bit]), 0)) for bit in range(8)])
    return Cat(*(reduce(operator.xor, [value for value, image in inputs if image >> out & 1])
                 for out in range(16)))


def writable(address, length, opcode):
    """Whether `length` bytes at byte `address` lie in one writable window of the kind the
    write `opcode` targets (from the memory map, not the engine's decoder)."""
    inside = []
    for window in FORMAL_MAP.windows:
        if window.writable:
            opcodes = (ProtocolOpcode.BULK_WRITE if window.kind == WindowKind.MEMORY
                       else ProtocolOpcode.WRITE_REGISTERS)
            inside.append((opcode == opcodes.value) & (address >= window.base) &
                          (address + length <= window.base + window.size))
    return (address[:2] == 0) & Cat(*inside).any()


@dataclass(frozen=True)
class _Frame:
    """The harness's record of the frame the engine is receiving: the data symbols it took since
    the last start symbol (`count`, saturating above a whole frame; the first `FRAME_SYMBOLS`
    kept in `symbols`), whether the header's CRC checked out (`header_good`, once the header
    and its CRC are in) and the CRC over the symbols after the header's CRC (over the header's
    before that)."""
    count: Signal
    symbols: list
    header_good: Signal
    crc: Signal

    @property
    def seq(self):
        return self.symbols[0]

    @property
    def opcode(self):
        return self.symbols[1]

    @property
    def address(self):
        return Cat(*self.symbols[2:6])

    @property
    def length(self):
        return Cat(*self.symbols[6:8])

    @property
    def payload(self):
        return Cat(*self.symbols[HEADER_SYMBOLS:HEADER_SYMBOLS + FORMAL_PAYLOAD])


def record_frame(m, symbols):
    """A `_Frame` following the symbol stream `symbols` (the engine's side of its unstuffer)."""
    count = Signal(range(FRAME_SYMBOLS + 2), name="frame_count")
    kept = [Signal(8, name=f"frame_symbol_{index}") for index in range(FRAME_SYMBOLS)]
    header_good = Signal(name="frame_header_good")
    crc = Signal(16, init=CRC_INIT, name="frame_crc")
    data = symbols.payload.data
    with m.If(symbols.valid & symbols.ready):
        with m.If(symbols.payload.start):
            m.d.sync += [count.eq(0), header_good.eq(0), crc.eq(CRC_INIT)]
        with m.Else():
            m.d.sync += count.eq(Mux(count == FRAME_SYMBOLS + 1, count, count + 1))
            for index, symbol in enumerate(kept):
                with m.If(count == index):
                    m.d.sync += symbol.eq(data)
            with m.If(count == HEADER_SYMBOLS - 1):
                m.d.sync += [header_good.eq(crc_step(crc, data) == 0), crc.eq(CRC_INIT)]
            with m.Else():
                m.d.sync += crc.eq(crc_step(crc, data))
    return _Frame(count, kept, header_good, crc)


def formal_frame_engine(m, platform):
    """The engine under test as submodule ``engine``: (engine, its elaborated fragment)."""
    engine = FrameEngine(memory_map=FORMAL_MAP, max_payload=FORMAL_PAYLOAD,
                         frame_timeout=FORMAL_FRAME_TIMEOUT)
    m.submodules.engine = fragment = Fragment.get(engine, platform)
    return engine, fragment


class FrameEngineHarness(Elaboratable):
    """The frame engine under any line bytes (any values and gaps, resets at any cycle), any
    reply consumer and any bus read data, with its one-word staging memory replaced by a
    register model of it (so the invariants can name the word). Asserted, for every write the
    engine puts on the bus:

    * its frame's header CRC and payload CRC checked out (computed by the harness, `crc_step`)
      over the symbols received since the frame's start, the payload is all there, and the word
      is the frame's address and payload, in a writable window of the opcode's kind;
    * its seq is applied at most once: after a write with seq ``s`` is applied, another write
      with seq ``s`` is applied only after at least 255 requests were answered in between (the
      8-bit seq wraps after 256), for the ``s`` the solver picks (so for every seq).
    """

    def elaborate(self, platform):
        m = Module()
        engine, fragment = formal_frame_engine(m, platform)
        staging = remove_submodules(fragment, "staging")["staging"]
        staged = Signal(32)             # the staging memory's one word
        read, write = staging.read_ports[0], staging.write_ports[0]
        with m.If(write.en):
            m.d.sync += staged.eq(write.data)
        with m.If(read.en):
            m.d.sync += read.data.eq(staged)
        bus = engine.bus
        m.d.comb += [engine.rx.valid.eq(AnySeq(1)), engine.rx.payload.eq(AnySeq(8)),
                     engine.tx.ready.eq(AnySeq(1)), bus.read_data.eq(AnySeq(32))]
        frame = record_frame(m, submodule(fragment, "unstuffer").o)
        m.d.comb += [
            Assert(~bus.write | frame.header_good, "a write applied whose header CRC failed"),
            Assert(~bus.write | ((frame.count == HEADER_SYMBOLS + frame.length + CRC.size) &
                                 (frame.crc == 0)),
                   "a write applied whose payload CRC failed or that was cut short"),
            Assert(~bus.write | ((bus.address == frame.address[2:]) &
                                 (bus.write_data == frame.payload)),
                   "a write applied with another address or data than its frame's"),
            Assert(~bus.write | writable(frame.address, frame.length, frame.opcode),
                   "a write applied outside a writable window of its kind"),
        ]
        seq, applying, tracking, answered = self._check_seq_once(m, engine, frame)
        self._invariants(m, engine, fragment, frame, staged, read, seq, applying, tracking,
                         answered)
        m.d.comb += [
            Cover(bus.write),
            Cover(engine.frame_done & tracking),       # a request after an applied write
            Cover(in_state(fragment, "CHECK_HEADER") & frame.header_good &
                  (probe(fragment, "header")[:8] == engine.last_seq) &
                  (frame.opcode == ProtocolOpcode.BULK_WRITE.value)),     # a retry, not applied
        ]
        return m

    @staticmethod
    def _check_seq_once(m, engine, frame):
        seq = AnyConst(8)
        applying = Signal()     # a write with `seq` was applied, its reply is not finished
        tracking = Signal()     # since that reply, `answered` counts replies (up to 255)
        answered = Signal(8)
        applied_now = engine.bus.write & (frame.seq == seq)
        m.d.comb += Assert(~applied_now | (~applying & (~tracking | (answered == 255))),
                           "a write applied with the seq of a write applied fewer than 255 "
                           "requests before")
        with m.If(applied_now):
            m.d.sync += applying.eq(1)
        with m.If(engine.frame_done):
            with m.If(applying):
                m.d.sync += [applying.eq(0), tracking.eq(1), answered.eq(0)]
            with m.Elif(tracking & (answered != 255)):
                m.d.sync += answered.eq(answered + 1)
        return seq, applying, tracking, answered

    @staticmethod
    def _invariants(m, engine, fragment, frame, staged, read, seq, applying, tracking,
                    answered):
        """For the induction: the engine's header, CRC and counters agree with the harness's
        record of the frame in every state of a frame's reception, the staged word is its
        payload once received, a frame goes on to be applied only in sequence, and the
        device's LAST_SEQ has moved on from a tracked seq by at most the replies counted."""
        state = partial(in_state, fragment)

        header = RequestHeader(probe(fragment, "header"))
        header_index, rx_crc = probe(fragment, "header_index"), probe(fragment, "rx_crc")
        byte_count, word_shift = probe(fragment, "byte_count"), probe(fragment, "word_shift")
        word_count, read_pending = probe(fragment, "word_count"), probe(fragment, "read_pending")
        record, next_seq = probe(fragment, "record"), probe(fragment, "next_seq")
        last_seq = engine.last_seq
        header_bytes = header.as_value()
        same_header = Cat(*(header_bytes.word_select(index, 8) == frame.symbols[index]
                            for index in range(HEADER_BYTES))).all()
        writes = ((header.opcode == ProtocolOpcode.WRITE_REGISTERS.value) |
                  (header.opcode == ProtocolOpcode.BULK_WRITE.value))
        in_header = state("HEADER")
        m.d.comb += [
            Assert(next_seq == (last_seq + 1)[:8]),
            Assert(~read_pending | state("COMMIT")),
            Assert(~in_header | ((frame.count == header_index) & (frame.crc == rx_crc) &
                                 (header_index < HEADER_SYMBOLS) & ~record)),
            *(Assert(~(in_header & (header_index > index)) |
                     (header_bytes.word_select(index, 8) == frame.symbols[index]))
              for index in range(HEADER_BYTES)),
            Assert(~state("CHECK_HEADER") | ((frame.count == HEADER_SYMBOLS) & same_header &
                                             (frame.header_good == (rx_crc == 0)) &
                                             (frame.crc == CRC_INIT) & ~record)),
        ]
        receiving = state("PAYLOAD", "CHECK_PAYLOAD", "COMMIT")
        payload_symbols = frame.count - HEADER_SYMBOLS
        m.d.comb += [
            Assert(~receiving | (same_header & frame.header_good & writes &
                                 (header.length == FORMAL_PAYLOAD) &
                                 writable(header.address, header.length, header.opcode) &
                                 (header.seq == next_seq) &
                                 (probe(fragment, "bus_word") == header.address[2:]) &
                                 (probe(fragment, "last_word") == header.address[2:]))),
            Assert(~state("PAYLOAD") | ((payload_symbols == byte_count) &
                                        (byte_count <= FORMAL_PAYLOAD + 1) &
                                        (frame.crc == rx_crc) & ~record)),
            Assert(~(state("PAYLOAD") & (byte_count >= FORMAL_PAYLOAD)) |
                   (staged == frame.payload)),
            *(Assert(~(state("PAYLOAD") & (byte_count == received)) |
                     (word_shift[32 - 8 * received:] ==
                      Cat(*frame.symbols[HEADER_SYMBOLS:HEADER_SYMBOLS + received])))
              for received in range(1, FORMAL_PAYLOAD)),
            Assert(~state("CHECK_PAYLOAD") | ((frame.count == FRAME_SYMBOLS) &
                                              (frame.crc == rx_crc) & (staged == frame.payload) &
                                              ~record)),
            Assert(~state("COMMIT") | ((frame.count == FRAME_SYMBOLS) & (frame.crc == 0) &
                                       (staged == frame.payload) & record &
                                       (word_count == read_pending))),
            Assert(~read_pending | (read.data == staged)),
            Assert(~(record & state("COMMIT", "REPLY", "SEND_DATA", "SEND_CRC", "FINISH")) |
                   (header.seq == next_seq)),
            Assert(~applying | (state("REPLY", "SEND_CRC", "FINISH") & record & writes &
                                (header.seq == seq))),
            Assert(~tracking | ((last_seq - seq)[:8] <= answered)),
        ]


@pytest.mark.parametrize("mode, depth", [("prove", 4), ("cover", 50)])
def test_frame_engine(mode, depth, tmp_path):
    print(check(FrameEngineHarness(), name=f"frame_engine_{mode}", mode=mode, depth=depth,
                directory=tmp_path))


class FrameEngineSettleHarness(Elaboratable):
    """The frame engine after any line bytes (any values, gaps, reply stalls, bus data, resets)
    for as long as the solver likes, then a host that lets the line rest `quiet` cycles, taking
    any reply. Asserted: the engine is then settled -- hunting for a frame start, with no
    symbol buffered -- so the next frame's sync byte starts a frame; with the invariants that
    let an induction prove it after *any* input."""

    def __init__(self, *, quiet):
        self.quiet = quiet

    def elaborate(self, platform):
        m = Module()
        engine, fragment = formal_frame_engine(m, platform)
        rx, tx = engine.rx, engine.tx
        resting = Signal()
        rest = Signal(range(self.quiet + 1))
        with m.If(~resting):
            m.d.comb += [rx.valid.eq(AnySeq(1)), rx.payload.eq(AnySeq(8)),
                         tx.ready.eq(AnySeq(1)), engine.bus.read_data.eq(AnySeq(32))]
            with m.If(AnySeq(1)):
                m.d.sync += [resting.eq(1), rest.eq(0)]
        with m.Else():
            m.d.comb += [tx.ready.eq(1), engine.bus.read_data.eq(AnySeq(32))]
            with m.If(rest != self.quiet):
                m.d.sync += rest.eq(rest + 1)
        rested = resting & (rest == self.quiet)
        settled = in_state(fragment, "HUNT") & ~submodule(fragment, "unstuffer").o.valid
        m.d.comb += [
            Assert(~rested | settled,
                   "the engine is not hunting for a frame start after the line rested"),
            Cover(rested & (probe(fragment, "rx_crc") != CRC_INIT)),
        ]
        self._invariants(m, engine, fragment)
        return m

    @staticmethod
    def _invariants(m, engine, fragment):
        """For the induction: the counters that end a reply or a write's commit are in step
        (a read reply streams one word: fetched = in flight + in the prefetch FIFO + being
        sent; a commit copies one word to the address its last word register holds), so
        every state leads back to HUNT on a quiet line."""
        state = partial(in_state, fragment)

        header = RequestHeader(probe(fragment, "header"))
        in_flight, pending = probe(fragment, "in_flight"), probe(fragment, "pending")
        word_valid, sent = probe(fragment, "word_valid"), probe(fragment, "byte_count")
        fetched, read_pending = probe(fragment, "word_count"), probe(fragment, "read_pending")
        bus_word, last_word = probe(fragment, "bus_word"), probe(fragment, "last_word")
        level = submodule(fragment, "prefetch").level
        reads_waiting = sum(in_flight[bit] for bit in range(len(in_flight))) + level
        returns_data = ((engine.frame_status == Status.OK) &
                        ((header.opcode == ProtocolOpcode.READ_REGISTERS.value) |
                         (header.opcode == ProtocolOpcode.BULK_READ.value)))
        one_word = header.length == FORMAL_PAYLOAD
        m.d.comb += [
            Assert(state(*FRAME_ENGINE_STATES)),        # no unused encoding of the state
            Assert(~(state("REPLY") & returns_data) | one_word),
            Assert(state("SEND_DATA") | ((in_flight == 0) & (level == 0) & ~word_valid)),
            Assert(pending == reads_waiting),
            Assert(~state("SEND_DATA") | (one_word & (fetched == pending + word_valid) &
                                          (sent < FORMAL_PAYLOAD) & (word_valid | (sent == 0)))),
            Assert(~state("PAYLOAD", "CHECK_PAYLOAD", "COMMIT") |
                   (one_word & (bus_word == header.address[2:]) &
                    (last_word == header.address[2:]))),
            Assert(~state("COMMIT") | (fetched == read_pending)),
            Assert(~read_pending | state("COMMIT")),
        ]


# The line rests SETTLE_QUIET cycles: longer than the engine takes to time out a frame and send
# its longest reply (a read of 4 bytes, every reply byte escaped).
SETTLE_QUIET = 40


@pytest.mark.parametrize("mode, depth", [("prove", SETTLE_QUIET + 2), ("cover", SETTLE_QUIET + 12)])
def test_frame_engine_settles(mode, depth, tmp_path):
    print(check(FrameEngineSettleHarness(quiet=SETTLE_QUIET), name=f"frame_engine_settles_{mode}",
                mode=mode, depth=depth, directory=tmp_path))
