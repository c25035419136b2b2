"""`hw.systolic.requant.Requantizer` against `sim.reference.requantize`, bit-exact.

Expected rows are ``requantize(wrap_int32(acc + bias), M0, -shift, ...)``: the unit's bias add is
a documented 32-bit wrapping add, and its ``shift`` is a right shift (TFLite's is negative).
"""

import gc
import json
import random
import re
import warnings

import numpy as np
import pytest
from amaranth.hdl import Module, ResetInserter, Signal, UnusedElaboratable
from hypothesis import given, settings, strategies as st

from hw.systolic.requant import Requantizer, Rounding
from sim.harness import receive, run, send
from sim.synth import synthesize
from sim.reference import ROUNDING_MODES, requantize, saturating_rounding_doubling_high_mul

FAST = settings(max_examples=12, deadline=None)

M0_EDGES = (1 << 30, (1 << 31) - 1)
SHIFT_EDGES = (0, 31)


def wrap_int32(values):
    return ((np.asarray(values, dtype=np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


class Layer:
    """Per-channel parameters and per-layer settings of one requantization."""

    def __init__(self, bias, multiplier, shift, zero_point=0, act_min=-128, act_max=127,
                 rounding="double"):
        self.bias = [int(v) for v in bias]
        self.multiplier = [int(v) for v in multiplier]
        self.shift = [int(v) for v in shift]
        self.zero_point, self.act_min, self.act_max = zero_point, act_min, act_max
        self.rounding = rounding

    def expected(self, acc):
        biased = wrap_int32(np.asarray(acc, dtype=np.int64) + self.bias)
        return requantize(biased, self.multiplier, [-s for s in self.shift], self.zero_point,
                          self.act_min, self.act_max, self.rounding)

    def settings(self):
        return {"rounding": Rounding[self.rounding.upper()], "zero_point": self.zero_point,
                "act_min": self.act_min, "act_max": self.act_max}


async def load(ctx, dut, layer, order=None):
    ctx.set(dut.settings, layer.settings())
    for channel in order or range(len(layer.bias)):
        ctx.set(dut.params.payload, {"channel": channel, "bias": layer.bias[channel],
                                     "multiplier": layer.multiplier[channel],
                                     "shift": layer.shift[channel]})
        ctx.set(dut.params.valid, 1)
        await ctx.tick()
        assert ctx.get(dut.params.ready)
    ctx.set(dut.params.valid, 0)


def run_bounded(dut, *testbenches, cycles, name):
    """`run`, but fail instead of hanging when a testbench waits for a row that never comes."""
    unfinished = [len(testbenches)]

    def counted(testbench):
        async def wrapper(ctx):
            await testbench(ctx)
            unfinished[0] -= 1
        return wrapper

    async def watchdog(ctx):
        for _ in range(cycles):
            if not unfinished[0]:
                return
            await ctx.tick()
        raise AssertionError(f"simulation still running after {cycles} cycles (lost a row?)")

    run(dut, *map(counted, testbenches), watchdog, name=name)


def as_payloads(acc, lasts):
    return [{"data": [int(v) for v in row], "last": last} for row, last in zip(acc, lasts)]


def simulate(dut, layer, acc, lasts=None, *, gap_probability=0.0, stall_probability=0.0,
             seed=0, name="requant"):
    """Load `layer`, stream the rows `acc` through, return (int8 rows, last flags)."""
    lasts = lasts if lasts is not None else [False] * len(acc)
    received = []

    async def producer(ctx):
        await load(ctx, dut, layer, order=random.Random(seed).sample(range(dut.channels),
                                                                    dut.channels))
        await send(ctx, dut.i, as_payloads(acc, lasts), gap_probability=gap_probability,
                   rng=random.Random(seed + 1))

    async def consumer(ctx):
        received.extend(await receive(ctx, dut.o, len(acc), stall_probability=stall_probability,
                                      rng=random.Random(seed + 2)))
        # Nothing more may come out: no duplicated rows, and the unit goes idle.
        for _ in range(dut.latency + 2):
            ctx.set(dut.o.ready, 1)
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "an extra row came out"
        assert not ctx.get(dut.busy)

    stalls = 1 / (1 - max(gap_probability, stall_probability))
    run_bounded(dut, producer, consumer, name=name,
                cycles=200 + int(4 * stalls * (len(acc) * dut.steps + dut.latency)))
    rows = np.array([[int(v) for v in payload.data] for payload in received], dtype=np.int64)
    return rows.reshape(len(acc), dut.channels), [bool(payload.last) for payload in received]


def check(dut, layer, acc, **kwargs):
    acc = np.asarray(acc, dtype=np.int64).reshape(-1, dut.channels)
    lasts = [index % 3 == 2 for index in range(len(acc))]
    rows, received_lasts = simulate(dut, layer, acc, lasts, **kwargs)
    np.testing.assert_array_equal(rows, layer.expected(acc))
    assert received_lasts == lasts


# Random layers -----------------------------------------------------------------------------------

int32s = st.integers(-2**31, 2**31 - 1)
small_ints = st.integers(-3000, 3000)
multipliers = st.one_of(st.sampled_from(M0_EDGES), st.integers(1 << 30, (1 << 31) - 1))
shifts = st.one_of(st.sampled_from(SHIFT_EDGES), st.integers(0, 31))


@st.composite
def layers(draw, channels):
    zero_point = draw(st.integers(-128, 127))
    act_min = draw(st.integers(-128, 127))
    act_max = draw(st.integers(act_min, 127))
    return Layer(bias=draw(st.lists(st.one_of(small_ints, st.integers(-2**24, 2**24)),
                                    min_size=channels, max_size=channels)),
                 multiplier=draw(st.lists(multipliers, min_size=channels, max_size=channels)),
                 shift=draw(st.lists(shifts, min_size=channels, max_size=channels)),
                 zero_point=zero_point, act_min=act_min, act_max=act_max,
                 rounding=draw(st.sampled_from(ROUNDING_MODES)))


@FAST
@given(st.data())
def test_random_layers_match_reference(data):
    channels = data.draw(st.integers(1, 9), label="channels")
    lanes = data.draw(st.integers(1, channels), label="lanes")
    layer = data.draw(layers(channels))
    rows = data.draw(st.integers(1, 6), label="rows")
    values = data.draw(st.lists(st.one_of(int32s, small_ints), min_size=rows * channels,
                                max_size=rows * channels))
    # Every draw before the unit is built: a draw that ends the example would otherwise leave
    # it unelaborated (UnusedElaboratable when it is collected, in whichever test runs then).
    timing = dict(gap_probability=data.draw(st.sampled_from([0.0, 0.3])),
                  stall_probability=data.draw(st.sampled_from([0.0, 0.4])),
                  seed=data.draw(st.integers(0, 1000)))
    check(Requantizer(channels=channels, lanes=lanes), layer, values, **timing)


@pytest.mark.parametrize("channels, lanes", [
    (1, 1),         # a single channel
    (6, 1),         # one lane for every channel
    (6, 6),         # one row per cycle
    (7, 3),         # lanes do not divide channels: the last step has an idle lane
    (8, 3),
])
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_lane_counts(channels, lanes, rounding):
    rng = np.random.default_rng(channels * 10 + lanes)
    layer = Layer(bias=rng.integers(-2**20, 2**20, channels),
                  multiplier=rng.integers(1 << 30, 1 << 31, channels),
                  shift=rng.integers(0, 32, channels), zero_point=-5, rounding=rounding)
    # Full int32 range and values that land in the int8 range for the drawn shifts.
    acc = np.concatenate([rng.integers(-2**31, 2**31, (6, channels)),
                          rng.integers(-2**12, 2**12, (6, channels)) << layer.shift])
    check(Requantizer(channels=channels, lanes=lanes), layer, wrap_int32(acc),
          gap_probability=0.2, stall_probability=0.3, seed=lanes)


# Edge cases ------------------------------------------------------------------------------------

def _is_tie(product, bits):
    """`product / 2^bits` lies exactly halfway between two integers."""
    return bits > 0 and product % (1 << bits) == 1 << (bits - 1)


def tie_accumulators(multiplier, shift):
    """int32 values that put ``acc * M0`` on a rounding boundary of either mode, both signs."""
    found = set()
    for magnitude_bits in range(0, 32):
        for odd in range(1, 24, 2):
            for sign in (1, -1):
                acc = sign * odd << magnitude_bits
                if not -2**31 <= acc < 2**31:
                    continue
                product = acc * multiplier
                high = int(saturating_rounding_doubling_high_mul(acc, multiplier))
                if (_is_tie(product, 31 + shift) or _is_tie(product, 31)
                        or _is_tie(high, shift)):
                    found.add(acc)
    return sorted(found)


TIE_CHANNELS = [((1 << 30), 0), ((1 << 30), 1), ((1 << 30), 2), (3 << 29, 1), (5 << 28, 3),
                (15 << 27, 4), ((1 << 30), 31), (3 << 29, 30), ((1 << 31) - (1 << 16), 13)]


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_exact_ties(rounding):
    columns = [tie_accumulators(multiplier, shift) for multiplier, shift in TIE_CHANNELS]
    depth = max(len(column) for column in columns)
    acc = np.array([[column[row % len(column)] for column in columns] for row in range(depth)])
    layer = Layer(bias=[0] * len(TIE_CHANNELS), multiplier=[m for m, _ in TIE_CHANNELS],
                  shift=[s for _, s in TIE_CHANNELS], rounding=rounding)
    # The table is only useful if the two modes disagree on it, for both signs.
    other = Layer(layer.bias, layer.multiplier, layer.shift,
                  rounding=next(mode for mode in ROUNDING_MODES if mode != rounding))
    differs = layer.expected(acc) != other.expected(acc)
    assert (differs & (acc > 0)).any() and (differs & (acc < 0)).any()
    check(Requantizer(channels=len(TIE_CHANNELS), lanes=4), layer, acc, stall_probability=0.2)


NEAR_TIE_SHIFTS = (1, 2, 5, 8, 9, 16, 17, 23, 24, 25, 30)


def near_tie_accumulators(shift):
    """With M0 = 2^30 the first rounding of ``2x`` is exactly ``x``; put ``x`` on, just above and
    just below the halfway point of the shift, one differing bit at every position below it."""
    offsets = {0} | {sign << bit for bit in range(shift - 1) for sign in (1, -1)}
    found = []
    for quotient in (0, 1, 5, -1, -2, -6):        # results stay inside int8: no clamping
        for offset in sorted(offsets):
            x = (quotient << shift) + (1 << (shift - 1)) + offset
            if -2**30 <= x < 2**30:
                found.append(2 * x)
    return found


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_near_ties_at_every_bit_below_the_cut(rounding):
    columns = [near_tie_accumulators(shift) for shift in NEAR_TIE_SHIFTS]
    depth = max(len(column) for column in columns)
    acc = np.array([[column[row % len(column)] for column in columns] for row in range(depth)])
    channels = len(NEAR_TIE_SHIFTS)
    layer = Layer(bias=[0] * channels, multiplier=[1 << 30] * channels, shift=NEAR_TIE_SHIFTS,
                  rounding=rounding)
    check(Requantizer(channels=channels, lanes=3), layer, acc)


@pytest.mark.parametrize("zero_point, act_min, act_max", [
    (0, -128, 127),         # no activation
    (-128, -128, 127),      # ReLU with the zero point at the bottom
    (-20, -20, 127),        # ReLU
    (-128, -128, -32),      # ReLU6-like: [0, 6] in output scale
    (10, 10, 70),
    (127, -128, 127),       # the zero point at both extremes
    (-128, -128, -128),     # act_min == act_max
    (5, 5, 5),
])
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_saturation_and_activation_bounds(zero_point, act_min, act_max, rounding):
    rng = np.random.default_rng(abs(zero_point) + act_max)
    channels = 4
    layer = Layer(bias=[0, 1000, -1000, 7], multiplier=[1 << 30, (1 << 31) - 1, 3 << 29, 1 << 30],
                  shift=[0, 4, 9, 31], zero_point=zero_point, act_min=act_min, act_max=act_max,
                  rounding=rounding)
    extremes = np.array([[-2**31] * channels, [2**31 - 1] * channels, [0] * channels,
                         [-2**31 + 1000] * channels])
    acc = np.concatenate([extremes, rng.integers(-2**13, 2**13, (4, channels)),
                          rng.integers(-2**31, 2**31, (4, channels))])
    check(Requantizer(channels=channels, lanes=2), layer, wrap_int32(acc))


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_zero_multiplier_and_bias_wraparound(rounding):
    # M0 = 0 is what QuantizeMultiplier gives a zero scale; the bias add wraps at 32 bits.
    layer = Layer(bias=[2**31 - 1, -2**31, 5], multiplier=[1 << 30, (1 << 31) - 1, 0],
                  shift=[0, 0, 3], zero_point=3, rounding=rounding)
    acc = [[2**31 - 1, -2**31, 2**31 - 1], [1, -1, -2**31], [-2**31, 2**31 - 1, 17]]
    check(Requantizer(channels=3, lanes=1), layer, acc)


def test_heavy_back_pressure():
    rng = np.random.default_rng(7)
    channels = 5
    layer = Layer(bias=rng.integers(-1000, 1000, channels),
                  multiplier=rng.integers(1 << 30, 1 << 31, channels), shift=[0, 3, 8, 17, 31],
                  rounding="single")
    acc = rng.integers(-2**31, 2**31, (24, channels))
    for lanes, gap, stall in ((5, 0.7, 0.0), (5, 0.0, 0.8), (2, 0.5, 0.7), (1, 0.6, 0.6)):
        check(Requantizer(channels=channels, lanes=lanes), layer, acc, gap_probability=gap,
              stall_probability=stall, seed=lanes)


# Timing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels, lanes", [(1, 1), (4, 4), (5, 2), (7, 3), (8, 1)])
def test_full_rate_and_documented_latency(channels, lanes):
    """With no gaps and no stalls a row leaves every `steps` cycles, the first `steps + 16`
    cycles after it was presented to the idle unit (the documented latency)."""
    dut = Requantizer(channels=channels, lanes=lanes)
    assert dut.steps == -(-channels // lanes)
    assert dut.latency == dut.steps + 16
    layer = Layer([0] * channels, [1 << 30] * channels, [0] * channels)
    count = 3 * dut.fifo_depth + 4
    output_cycles = []
    busy_cycles = []

    async def testbench(ctx):
        await load(ctx, dut, layer)
        assert ctx.get(dut.i.ready), "an idle unit takes a row at once"
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, {"data": [0] * channels, "last": 0})
        ctx.set(dut.i.valid, 1)
        cycle = 0
        while len(output_cycles) < count:
            _, _, valid, busy = await ctx.tick().sample(dut.o.valid, dut.busy)
            if valid:
                output_cycles.append(cycle)
            if busy:
                busy_cycles.append(cycle)
            cycle += 1

    run_bounded(dut, testbench, cycles=2000, name=f"requant_rate_{channels}_{lanes}")
    assert output_cycles[0] == dut.latency
    assert np.diff(output_cycles).tolist() == [dut.steps] * (count - 1)
    # Busy from the cycle after the first transfer on, also while that row is only held.
    assert busy_cycles == list(range(1, output_cycles[-1] + 1))


# Reset -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels, lanes", [(5, 2), (4, 4)])
def test_reset_mid_row_leaves_it_clean(channels, lanes):
    rng = np.random.default_rng(channels + lanes)
    layer = Layer(bias=rng.integers(-1000, 1000, channels),
                  multiplier=rng.integers(1 << 30, 1 << 31, channels),
                  shift=rng.integers(0, 32, channels))
    stale = rng.integers(-2**31, 2**31, (4, channels))
    fresh = rng.integers(-2**31, 2**31, (5, channels))
    reset = Signal()
    dut = Requantizer(channels=channels, lanes=lanes)
    top = Module()
    top.submodules.dut = ResetInserter(reset)(dut)
    received = []

    async def testbench(ctx):
        await load(ctx, dut, layer)
        # Rows in the pipeline and the FIFO, with the output stalled, and one half issued (a
        # cycle into the input register, then about half its steps).
        for row in stale:
            ctx.set(dut.i.payload, {"data": [int(v) for v in row], "last": 1})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        await ctx.tick().repeat(dut.latency // 2)
        ctx.set(dut.i.payload, {"data": [int(v) for v in stale[0]], "last": 1})
        await ctx.tick().repeat(1 + max(dut.steps // 2, 1))
        assert ctx.get(dut.busy)
        ctx.set(dut.i.valid, 0)
        ctx.set(reset, 1)
        await ctx.tick()
        ctx.set(reset, 0)
        assert not ctx.get(dut.busy) and not ctx.get(dut.o.valid)
        # Parameters survive the reset; only the fresh rows come out.
        await send(ctx, dut.i, as_payloads(fresh, [False] * len(fresh)))

    async def consumer(ctx):
        await ctx.tick().until(reset)
        await ctx.tick()
        received.extend(await receive(ctx, dut.o, len(fresh), stall_probability=0.3))
        for _ in range(dut.latency + 2):
            ctx.set(dut.o.ready, 1)
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid

    run_bounded(top, testbench, consumer, cycles=2000, name=f"requant_reset_{channels}_{lanes}")
    rows = np.array([[int(v) for v in payload.data] for payload in received])
    np.testing.assert_array_equal(rows, layer.expected(fresh))


# Parameters ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"channels": 0, "lanes": 1}, ValueError, "channels must be in 1..1024, not 0"),
    ({"channels": 1025, "lanes": 1}, ValueError, "channels must be in 1..1024, not 1025"),
    ({"channels": 4.0, "lanes": 1}, TypeError, "channels must be an integer, not 4.0"),
    ({"channels": True, "lanes": 1}, TypeError, "channels must be an integer, not True"),
    ({"channels": 4, "lanes": 0}, ValueError, "lanes must be in 1..channels=4, not 0"),
    ({"channels": 4, "lanes": -1}, ValueError, "lanes must be in 1..channels=4, not -1"),
    ({"channels": 4, "lanes": 5}, ValueError, "lanes must be in 1..channels=4, not 5"),
    ({"channels": 4, "lanes": "2"}, TypeError, "lanes must be an integer, not '2'"),
    ({"channels": 4, "lanes": None}, TypeError, "lanes must be an integer, not None"),
])
def test_bad_parameters_raise(kwargs, error, message):
    with warnings.catch_warnings():
        # The half-constructed component is never elaborated, by design.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(error, match=re.escape(message)):
            Requantizer(**kwargs)
        gc.collect()


def test_parameters_are_keyword_only():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError):
            Requantizer(4, 2)
        gc.collect()


# Synthesis ---------------------------------------------------------------------------------------

def test_synth_ecp5_dsps_and_flip_flop_only_input_row(tmp_path):
    """Four DSPs per lane; and every bit of ``i.payload`` drives nothing but flip-flop data
    inputs, so a block RAM read port feeding ``i`` never sees logic (module docstring)."""
    lanes = 2
    cells = synthesize(Requantizer(channels=3, lanes=lanes), "top",
                       json_path=tmp_path / "requant.json", timeout=600)
    assert cells["MULT18X18D"] == 4 * lanes, cells

    netlist = json.loads((tmp_path / "requant.json").read_text())["modules"]["top"]
    payload_bits = netlist["ports"]["i__payload"]["bits"]
    assert len(payload_bits) == 3 * 32 + 1
    loads = {bit: [] for bit in payload_bits}
    for cell in netlist["cells"].values():
        for port, bits in cell["connections"].items():
            if cell["port_directions"][port] == "input":
                for bit in bits:
                    if bit in loads:
                        loads[bit].append((cell["type"], port))
    assert all(loads.values()), loads
    assert {load for bit_loads in loads.values() for load in bit_loads} == {("TRELLIS_FF", "DI")}
