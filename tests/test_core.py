# amaranth: UnusedElaboratable=no
"""Whole layers on `hw.core.Core` in pysim, driven through its bus ports as the host does.

Expected values come from `sim.reference` only. Each test runs several layers in one simulation
(elaboration is the expensive part) on small configs: 4x4 and 3x2 arrays, small memories.
"""

import gc
import random

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from core_host import PysimHost
from hw.core.core import Core, CoreGeometry, geometry_from_config
from hw.core.isa import (COMMAND_WORDS, ErrorCode, Opcode, REGISTERS, decode, encode)
from sw.compiler.layout import (ConvLayer, activation_rows, binary_activation_rows, binary_results,
                                layer_commands, output_from_rows, parameter_words, weight_rows)
from hw.config import preset
from sim import reference
from sim.harness import run


def make_core(rows=4, cols=4, **overrides):
    widest = 1 << (8 * max(rows, cols)).bit_length() - 1     # one scratchpad row per beat
    sizes = dict(dataflow="weight_stationary", multiplier="lut", requant_lanes=2,
                 scratchpad_rows=512, accumulator_rows=64, binary_width=min(32, widest),
                 binary_lanes=4,
                 binary_max_k=128, binary_max_n=16, parameter_rows=64, binary_result_rows=64,
                 queue_depth=4, max_pool_width=16)
    sizes.update(overrides)
    return Core(rows=rows, cols=cols, **sizes)


def random_requant(rng, channels):
    scales = rng.uniform(2e-4, 2e-2, channels)
    multiplier, shift = zip(*(reference.quantize_multiplier(float(s)) for s in scales))
    return (rng.integers(-2000, 2000, channels).astype(np.int32), np.array(multiplier),
            np.array(shift))


class Case:
    """One int8 layer: its tensors, its placement, and the reference output."""

    def __init__(self, rng, core, layer, *, gemm=False):
        self.layer, self.gemm = layer, gemm
        self.x = rng.integers(-128, 128, (layer.in_h, layer.in_w, layer.cin), dtype=np.int8)
        self.w = rng.integers(-128, 128, (layer.kh, layer.kw, layer.cin, layer.cout),
                              dtype=np.int8)
        self.bias, self.multiplier, self.shift = random_requant(rng, layer.cout)
        top, bottom, left, right = layer.padding
        acc = reference.conv2d(self.x, self.w, self.bias, layer.stride, (top, bottom, left, right),
                               layer.zero_point)
        out = reference.requantize(acc, self.multiplier, self.shift, layer.output_zero_point,
                                   layer.act_min, layer.act_max, rounding=layer.rounding)
        self.expected = reference.max_pool2x2(out) if layer.pool else out
        self.hardware_bias = reference.fold_zero_point(
            self.bias, self.w.reshape(-1, layer.cout), layer.zero_point)

    async def run(self, host, core, *, first_half=0):
        layer = self.layer
        await host.write_rows(layer.a_base, activation_rows(self.x, rows=core.rows,
                                                            row_bytes=core.row_bytes))
        await host.write_rows(layer.w_base, weight_rows(self.w, rows=core.rows, cols=core.cols,
                                                        row_bytes=core.row_bytes))
        channels = -(-layer.cout // core.cols) * core.cols
        await host.write_block("parameters", 4 * layer.param_base,
                               parameter_words(self.hardware_bias, self.multiplier, self.shift,
                                               channels=channels))
        commands, half = layer_commands(layer, rows=core.rows, cols=core.cols,
                                        accumulator_rows=core.accumulator_rows,
                                        requant_lanes=core.requant_lanes, gemm=self.gemm,
                                        first_half=first_half)
        await host.push(commands)
        await host.wait_done()
        height, width = self.expected.shape[:2]
        blocks = -(-layer.cout // core.cols)
        rows = await host.read_rows(layer.out_base, height * width * blocks)
        got = output_from_rows(rows, pixels=height * width, channels=layer.cout, cols=core.cols,
                               stride=blocks)
        np.testing.assert_array_equal(got.reshape(self.expected.shape), self.expected)
        return half


def simulate(core, body, name):
    async def testbench(ctx):
        await body(PysimHost(ctx, core))
    run(core, testbench, name=name)


def gemm_layer(m, k, n, **placement):
    return ConvLayer(in_h=m, in_w=1, cin=k, cout=n, **placement)


PLACEMENT = dict(a_base=0, w_base=160, out_base=400, param_base=0)


@settings(max_examples=3, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(4, 4), (3, 2)]))
def test_random_gemm_shapes(seed, shape):
    """Odd sizes, smaller than the array, not multiples of it; both rounding forms."""
    rng = np.random.default_rng(seed)
    # 1024 rows: the largest output (m = 19, ten 2-column blocks) ends at row 400 + 18*10 + 9.
    core = make_core(*shape, scratchpad_rows=1024)
    cases = []
    for rounding in ("double", "single"):
        m, k, n = (int(v) for v in rng.integers(1, 20, 3))
        layer = gemm_layer(m, k, n, rounding=rounding, act_min=int(rng.integers(-128, 0)),
                           output_zero_point=int(rng.integers(-20, 20)), **PLACEMENT)
        cases.append(Case(rng, core, layer, gemm=True))

    async def body(host):
        half = 0
        for case in cases:
            half = await case.run(host, core, first_half=half)
        assert await host.register("error_code") == ErrorCode.NONE.value
    simulate(core, body, "core_gemm")


CONV_CASES = {
    "3x3_s1_p1": dict(in_h=5, in_w=6, cin=5, cout=6, kh=3, kw=3, stride=1, padding=(1, 1, 1, 1)),
    "3x3_s2_p1": dict(in_h=7, in_w=6, cin=3, cout=5, kh=3, kw=3, stride=2, padding=(1, 1, 1, 1)),
    "1x1_s1": dict(in_h=4, in_w=5, cin=6, cout=7, kh=1, kw=1, stride=1),
    "1x1_s2": dict(in_h=5, in_w=5, cin=4, cout=3, kh=1, kw=1, stride=2),
    "5x5_p2": dict(in_h=5, in_w=4, cin=2, cout=4, kh=5, kw=5, stride=1, padding=(2, 2, 2, 2)),
    "3x3_s2_same_asymmetric": dict(in_h=6, in_w=8, cin=3, cout=4, kh=3, kw=3, stride=2,
                                   padding=reference.same_padding(6, 8, 3, 3, 2)),
    "3x3_same_pool": dict(in_h=6, in_w=7, cin=4, cout=5, kh=3, kw=3, stride=1,
                          padding=(1, 1, 1, 1), pool=True),
}


@pytest.mark.parametrize("out_h", [5, 6, 7])
def test_pooled_bands_have_an_even_number_of_rows(out_h):
    """Found by the system test: a 7-pixel-wide pooled conv split into 4-row bands left a
    1-row band, which the store rightly refuses (BAD_SHAPE). Each store band must hold whole
    row pairs and together they cover the rows the pool keeps."""
    layer = ConvLayer(in_h=out_h, in_w=7, cin=4, cout=4, kh=1, kw=3, stride=1,
                      padding=(0, 0, 1, 1), zero_point=0, a_base=0, w_base=256, out_base=300,
                      rounding="double", output_zero_point=0, act_min=-128, act_max=127,
                      pool=True)
    commands, _ = layer_commands(layer, rows=4, cols=4, accumulator_rows=64, requant_lanes=2)
    stores = [args for opcode, args in map(decode, commands) if opcode == Opcode.REQUANT_STORE]
    assert 7 * out_h > 64 // 2                  # more pixels than one accumulator half: bands
    assert all(store["height"] % 2 == 0 for store in stores)
    assert sum(store["height"] for store in stores) == out_h - out_h % 2


@pytest.mark.parametrize("pool", [False, True])
def test_tiles_of_several_column_blocks_with_stores_trailing_them(pool):
    """A 7x6 1x1 conv of 24 -> 18 channels on a 4x4 core (6 input chunks, 5 column blocks, the
    last of 2 channels) with accumulator halves of 256 rows: its array rows outweigh its store
    rows, so the schedule takes several column blocks per tile. Every tile's store is pushed
    after the next tile's compute, the tiles alternate halves and cover every column block once,
    and the result (pooled: the odd last row dropped) is the reference's."""
    rng = np.random.default_rng(11)
    core = make_core(4, 4, accumulator_rows=512, scratchpad_rows=2048)
    layer = ConvLayer(in_h=7, in_w=6, cin=24, cout=18, kh=1, kw=1, stride=1,
                      padding=(0, 0, 0, 0), zero_point=3, a_base=0, w_base=1024, out_base=300,
                      param_base=0, rounding="double", output_zero_point=-2, act_min=-128,
                      act_max=127, pool=pool)
    commands, half = layer_commands(layer, rows=4, cols=4, accumulator_rows=512,
                                    requant_lanes=core.requant_lanes)
    decoded = [decode(words) for words in commands]
    computes = [args for opcode, args in decoded if opcode == Opcode.CONV]
    stores = [args for opcode, args in decoded if opcode == Opcode.REQUANT_STORE]
    tiles = len(computes)
    assert [opcode for opcode, _ in decoded] == (
        [Opcode.CONV] + [Opcode.CONV, Opcode.REQUANT_STORE] * (tiles - 1)
        + [Opcode.REQUANT_STORE, Opcode.FENCE])
    assert max(compute["n_blocks"] for compute in computes) > 1
    assert sum(compute["n_blocks"] for compute in computes) == 5
    assert [store["n_blocks"] for store in stores] == [c["n_blocks"] for c in computes]
    assert [store["acc_base"] for store in stores] == [256 * (i % 2) for i in range(tiles)]
    assert half == tiles % 2
    case = Case(rng, core, layer)

    async def body(host):
        await case.run(host, core)
        assert await host.register("error_code") == ErrorCode.NONE.value
    simulate(core, body, "core_multi_block_tiles")


def test_conv_padding_stride_and_pool():
    """Common CNN geometries with a nonzero input zero point; the last one max-pools on store."""
    rng = np.random.default_rng(7)
    core = make_core(4, 4)
    cases = [Case(rng, core, ConvLayer(**geometry, zero_point=int(rng.integers(-30, 30)),
                                       rounding=("double", "single")[index % 2], **PLACEMENT))
             for index, geometry in enumerate(CONV_CASES.values())]
    top, bottom, left, right = CONV_CASES["3x3_s2_same_asymmetric"]["padding"]
    assert (top, left) != (bottom, right)

    async def body(host):
        half = 0
        for case in cases:
            half = await case.run(host, core, first_half=half)
        assert await host.register("error_code") == ErrorCode.NONE.value
        counters = await host.counters()
        assert counters["macs"] == sum(
            int(np.prod(case.expected.shape[:2] if not case.layer.pool else
                        (case.layer.out_h, case.layer.out_w)))
            * case.layer.kh * case.layer.kw * case.layer.cin * case.layer.cout for case in cases)
    simulate(core, body, "core_conv")


@pytest.mark.parametrize("in_h", [4, 5])
def test_pool_of_the_widest_rows_fills_the_line_exactly(in_h):
    """A pooled store as wide as max_pool_width: each even row pushes max_pool_width / 2 pairs,
    the line FIFO's whole depth, before the odd row pops them (an odd height leaves a last row
    that neither pushes nor emits)."""
    rng = np.random.default_rng(in_h)
    core = make_core(4, 4, max_pool_width=8)
    case = Case(rng, core, ConvLayer(in_h=in_h, in_w=8, cin=3, cout=4, kh=1, kw=1, stride=1,
                                     zero_point=5, rounding="double", pool=True, **PLACEMENT))
    assert case.layer.out_w == core.max_pool_width

    async def body(host):
        await case.run(host, core)
        assert await host.register("error_code") == ErrorCode.NONE.value
    simulate(core, body, "core_pool_widest")


def _binary_layer(rng, k, n, *, hidden=True):
    weights = reference.pack_bits(rng.choice(np.array([-1, 1], np.int8), (n, k)))
    if not hidden:
        return weights, None, None
    return weights, rng.integers(-k - 3, k + 3, n), rng.integers(0, 2, n).astype(bool)


def _binary_command(core, *, k, n, vectors, **fields):
    lanes = core.binary_lanes
    folds = -(-n // lanes)
    fields = {"result_base": 0, "out_base": 0, "out_stride": 0, "to_results": 0,
              "to_scratchpad": 0, **fields}
    return encode(Opcode.BINARY, vectors=vectors, k=k, neuron_folds=folds,
                  last_lanes=n - (folds - 1) * lanes, **fields)


async def _binary_results(host, core, base, vectors, n):
    folds = -(-n // core.binary_lanes)
    words = await host.read_block("binary_results", base * core.result_stride,
                                  vectors * folds * core.result_stride)
    dots, signs = binary_results(words, vectors=vectors, folds=folds, lanes=core.binary_lanes,
                                 result_stride=core.result_stride,
                                 result_bit_words=core.result_bit_words)
    return dots[:, :n], signs[:, :n]


@settings(max_examples=3, deadline=None)
@given(st.just((32, 4)), st.integers(1, 3), st.integers(1, 64), st.integers(1, 40),
       st.integers(1, 40), st.integers(1, 12), st.integers(0, 2**32 - 1))
@example((8, 16), 3, 61, 40, 17, 1, 1)      # a fold is two beats; one output neuron
@example((8, 12), 2, 9, 13, 25, 12, 2)      # lanes neither divide nor are a multiple of width
def test_binary_layers_chain_on_chip(engine, vectors, k, n1, n2, n3, seed):
    """Input -> hidden layer 1 (bits to the scratchpad and the result memory) -> hidden layer 2
    (bits to the scratchpad) -> output layer (dots to the result memory), all three layers'
    weights and thresholds resident at their own bases, no FENCE between the commands, and the
    host writing scratchpad rows while they run. Rows, bits and dots against sim.reference."""
    width, lanes = engine
    rng = np.random.default_rng(seed)
    core = make_core(4, 4, binary_width=width, binary_lanes=lanes, binary_max_n=64)
    a = rng.choice(np.array([-1, 1], np.int8), (vectors, k))
    layers = [_binary_layer(rng, k, n1), _binary_layer(rng, n1, n2),
              _binary_layer(rng, n2, n3, hidden=False)]
    signs, dots = [a], []
    for (weights, thresholds, ascending), size in zip(layers, (k, n1, n2)):
        dots.append(reference.binary_dense(reference.pack_bits(signs[-1]), weights, size))
        if thresholds is not None:
            signs.append(reference.threshold_activation(dots[-1], thresholds, ascending))
    beats = [-(-size // width) for size in (k, n1, n2)]
    folds = [-(-size // lanes) for size in (n1, n2, n3)]
    w_bases = [0, beats[0] * folds[0], beats[0] * folds[0] + beats[1] * folds[1]]
    t_bases = [0, folds[0]]
    a_base, out_bases = 200, (300, 350)
    garbage = np.full((120, core.row_bytes), 0x55, np.int8)

    async def body(host):
        await host.write_rows(290, garbage)
        await host.write_rows(a_base, binary_activation_rows(
            reference.pack_bits(a), k, width=width, row_bytes=core.row_bytes))
        for (weights, thresholds, ascending), size, w_base, t_base in zip(
                layers, (k, n1, n2), w_bases, t_bases + [0]):
            await host.write_binary_layer(weights, size, w_base=w_base, thresholds=thresholds,
                                          ascending=ascending, t_base=t_base)
        await host.push([
            _binary_command(core, k=k, n=n1, vectors=vectors, a_base=a_base, w_base=w_bases[0],
                            t_base=t_bases[0], out_base=out_bases[0], out_stride=beats[1],
                            to_scratchpad=1, to_results=1),
            _binary_command(core, k=n1, n=n2, vectors=vectors, a_base=out_bases[0],
                            w_base=w_bases[1], t_base=t_bases[1], out_base=out_bases[1],
                            out_stride=beats[2], to_scratchpad=1),
            _binary_command(core, k=n2, n=n3, vectors=vectors, a_base=out_bases[1],
                            w_base=w_bases[2], t_base=0, result_base=32, to_results=1),
            encode(Opcode.FENCE)])
        await host.write_rows(450, garbage[:40])       # the host takes the write port meanwhile
        await host.wait_done()
        assert await host.register("error_code") == ErrorCode.NONE.value
        for index, (base, size) in enumerate(zip(out_bases, (n1, n2))):
            rows = await host.read_rows(base, vectors * beats[index + 1] + 1)
            np.testing.assert_array_equal(rows[:-1], binary_activation_rows(
                reference.pack_bits(signs[index + 1]), size, width=width,
                row_bytes=core.row_bytes))
            np.testing.assert_array_equal(rows[-1], garbage[0])    # nothing past the vectors
        got_dots, got_signs = await _binary_results(host, core, 0, vectors, n1)
        np.testing.assert_array_equal(got_dots, dots[0])
        np.testing.assert_array_equal(got_signs, signs[1])
        got_dots, _ = await _binary_results(host, core, 32, vectors, n3)
        np.testing.assert_array_equal(got_dots, dots[2])
        counters = await host.counters()
        assert counters["binary_ops"] == 2 * vectors * (k * n1 + n1 * n2 + n2 * n3)
    simulate(core, body, "core_binary_chain")


def test_scoreboard_orders_store_after_compute_and_compute_after_store():
    """GEMM into half 0, its store, then a second GEMM into the *same* half and its store, pushed
    back to back. Without the RAW guard the first store reads a half still being computed; without
    the WAR guard the second GEMM overwrites it before the first store has read it."""
    rng = np.random.default_rng(11)
    core = make_core(4, 4, queue_depth=8, requant_lanes=1)     # a slow store: 4 cycles a row
    first = Case(rng, core, gemm_layer(30, 13, 4, **PLACEMENT), gemm=True)
    second = Case(rng, core, gemm_layer(30, 13, 4, a_base=180, w_base=300, out_base=320,
                                        param_base=8), gemm=True)

    async def body(host):
        for case in (first, second):
            layer = case.layer
            await host.write_rows(layer.a_base, activation_rows(case.x, rows=4, row_bytes=4))
            await host.write_rows(layer.w_base, weight_rows(case.w, rows=4, cols=4, row_bytes=4))
            await host.write_block("parameters", 4 * layer.param_base,
                                   parameter_words(case.hardware_bias, case.multiplier,
                                                   case.shift, channels=4))
        commands = []
        for case in (first, second):
            pair, _ = layer_commands(case.layer, rows=4, cols=4, accumulator_rows=64,
                                     requant_lanes=core.requant_lanes, gemm=True, first_half=0)
            commands += pair[:-1]           # no FENCE in between: only the scoreboard orders them
        assert [decode(c)[1]["acc_base"] for c in commands] == [0, 0, 0, 0]
        await host.push(commands + [encode(Opcode.FENCE)])
        await host.wait_done()
        for case in (first, second):
            rows = await host.read_rows(case.layer.out_base, 30)
            np.testing.assert_array_equal(output_from_rows(rows, pixels=30, channels=4, cols=4,
                                                           stride=1), case.expected.reshape(30, 4))
        assert (await host.counters())["dispatch_stall"] > 0
    simulate(core, body, "core_scoreboard")


def test_ping_pong_overlaps_store_with_compute_and_queue_back_pressure():
    """A layer split over many command pairs (more than the queue holds) alternates halves; the
    store of one half runs while the other is computed (busy cycles overlap)."""
    rng = np.random.default_rng(5)
    core = make_core(4, 4, queue_depth=2)
    case = Case(rng, core, gemm_layer(60, 9, 14, a_base=0, w_base=200, out_base=260,
                                      param_base=0), gemm=True)
    commands, _ = layer_commands(case.layer, rows=4, cols=4, accumulator_rows=64,
                                 requant_lanes=core.requant_lanes, gemm=True)
    assert len(commands) > 3 * core.queue_depth

    async def body(host):
        await host.write_block("control", REGISTERS["counter_clear"], [1])
        await case.run(host, core)
        counters = await host.counters()
        assert counters["compute_busy"] + counters["store_busy"] > counters["active_cycles"]
        assert counters["commands_retired"] == len(commands)
        assert await host.register("error_code") == ErrorCode.NONE.value
    simulate(core, body, "core_ping_pong")


def _invalid_commands(core):
    ok_gemm = dict(a_base=0, w_base=100, acc_base=0, accumulate=0, m=4, k_blocks=1, k_last=4,
                   n_blocks=1, n_last=4)
    ok_store = dict(acc_base=0, height=4, width=1, n_blocks=1, param_base=0, out_base=300,
                    out_stride=1, rounding=0, zero_point=0, act_min=-128, act_max=127, pool=0)
    ok_binary = dict(a_base=0, vectors=1, k=32, neuron_folds=1, last_lanes=4, w_base=0,
                     t_base=0, result_base=0, out_base=0, out_stride=0, to_results=1,
                     to_scratchpad=0)
    to_scratchpad = {**ok_binary, "to_results": 0, "to_scratchpad": 1, "out_base": 300,
                     "out_stride": 1}
    depth = core.binary_weight_depth
    conv = dict(a_base=0, w_base=100, acc_base=0, accumulate=0, in_h=3, in_w=3, cin_blocks=1,
                cin_last=4, kh=3, kw=3, stride=1, pad_top=1, pad_left=1, zero_point=0, out_w=3,
                ho_start=0, ho_count=3, n_blocks=1, n_last=4)
    return [
        ([9, 0, 0, 0, 0], ErrorCode.UNKNOWN_OPCODE, 9),
        ([0] * COMMAND_WORDS, ErrorCode.UNKNOWN_OPCODE, 0),
        (encode(Opcode.GEMM, **{**ok_gemm, "a_base": 509}), ErrorCode.SCRATCHPAD_RANGE, 1),
        (encode(Opcode.GEMM, **{**ok_gemm, "w_base": 509}), ErrorCode.SCRATCHPAD_RANGE, 1),
        (encode(Opcode.GEMM, **{**ok_gemm, "m": 33}), ErrorCode.ACCUMULATOR_RANGE, 1),
        (encode(Opcode.GEMM, **{**ok_gemm, "acc_base": 64}), ErrorCode.ACCUMULATOR_RANGE, 1),
        (encode(Opcode.GEMM, **{**ok_gemm, "k_last": 5}), ErrorCode.BAD_SHAPE, 1),
        (encode(Opcode.GEMM, **{**ok_gemm, "n_blocks": 0}), ErrorCode.BAD_SHAPE, 1),
        (encode(Opcode.CONV, **{**conv, "in_h": 200}), ErrorCode.SCRATCHPAD_RANGE, 2),
        (encode(Opcode.CONV, **{**conv, "ho_count": 11}), ErrorCode.ACCUMULATOR_RANGE, 2),
        (encode(Opcode.CONV, **{**conv, "stride": 0}), ErrorCode.BAD_SHAPE, 2),
        (encode(Opcode.REQUANT_STORE, **{**ok_store, "acc_base": 30}),
         ErrorCode.ACCUMULATOR_RANGE, 3),
        (encode(Opcode.REQUANT_STORE, **{**ok_store, "param_base": 61}),
         ErrorCode.PARAMETER_RANGE, 3),
        (encode(Opcode.REQUANT_STORE, **{**ok_store, "out_base": 509}),
         ErrorCode.SCRATCHPAD_RANGE, 3),
        (encode(Opcode.REQUANT_STORE, **{**ok_store, "act_min": 5, "act_max": 4}),
         ErrorCode.BAD_SHAPE, 3),
        (encode(Opcode.REQUANT_STORE, **{**ok_store, "pool": 1}), ErrorCode.BAD_SHAPE, 3),
        (encode(Opcode.BINARY, **{**ok_binary, "k": 129}), ErrorCode.BAD_SHAPE, 4),
        (encode(Opcode.BINARY, **{**ok_binary, "last_lanes": 5}), ErrorCode.BAD_SHAPE, 4),
        (encode(Opcode.BINARY, **{**ok_binary, "a_base": 512 - 1, "vectors": 2}),
         ErrorCode.SCRATCHPAD_RANGE, 4),
        (encode(Opcode.BINARY, **{**ok_binary, "result_base": 64}), ErrorCode.RESULT_RANGE, 4),
        (encode(Opcode.BINARY, **{**ok_binary, "to_results": 0}), ErrorCode.BAD_SHAPE, 4),
        (encode(Opcode.BINARY, **{**to_scratchpad, "out_stride": 0}), ErrorCode.BAD_SHAPE, 4),
        (encode(Opcode.BINARY, **{**to_scratchpad, "out_base": 511, "vectors": 2}),
         ErrorCode.SCRATCHPAD_RANGE, 4),
        (encode(Opcode.BINARY, **{**ok_binary, "w_base": depth}),
         ErrorCode.BINARY_WEIGHT_RANGE, 4),
        (encode(Opcode.BINARY, **{**ok_binary, "t_base": depth - 1, "neuron_folds": 2}),
         ErrorCode.BINARY_WEIGHT_RANGE, 4),
    ]


async def _snapshot(host, core):
    return (await host.read_block("scratchpad", 0, core.scratchpad_rows * core.scratchpad_stride),
            await host.read_block("accumulator", 0,
                                  core.accumulator_rows * core.accumulator_stride),
            await host.read_block("binary_results", 0,
                                  core.binary_result_rows * core.result_stride))


def test_invalid_commands_are_skipped_with_error_status_and_touch_nothing():
    rng = np.random.default_rng(2)
    core = make_core(4, 4)
    table = _invalid_commands(core)
    valid = Case(rng, core, gemm_layer(6, 5, 3, **PLACEMENT), gemm=True)

    async def body(host):
        # Fill every buffer with something recognisable first.
        await host.write_rows(0, rng.integers(-128, 128, (core.scratchpad_rows, 4), np.int8))
        await valid.run(host, core)
        before = await _snapshot(host, core)
        for index, (words, code, opcode) in enumerate(table):
            await host.push([words, encode(Opcode.FENCE)])
            await host.wait_done()
            assert await host.register("error_code") == code.value, (index, code)
            assert await host.register("error_index") == host.pushed - 2
            assert await host.register("error_opcode") == opcode
            await host.write("control", REGISTERS["error_code"], 0)
            assert await host.register("error_code") == ErrorCode.NONE.value
        assert await _snapshot(host, core) == before
        await valid.run(host, core)         # the core still works
    simulate(core, body, "core_invalid")


def test_queue_overflow_drops_the_command_and_reports_it():
    core = make_core(4, 4, queue_depth=2)
    gemm = encode(Opcode.GEMM, a_base=0, w_base=100, acc_base=0, accumulate=0, m=30,
                  k_blocks=8, k_last=4, n_blocks=1, n_last=4)

    async def body(host):
        # One running, one held by the dispatcher, two queued, one too many (the first must be
        # running before the others come: validating a command takes tens of cycles).
        await host.push([gemm], poll=False)
        while not (await host.register("busy")) & 1:
            pass
        await host.push([gemm] * 4, poll=False)
        host.pushed -= 1
        assert await host.register("error_code") == ErrorCode.QUEUE_OVERFLOW.value
        assert await host.register("error_index") == 4
        assert await host.register("error_opcode") == Opcode.GEMM.value
        assert await host.register("pushed") == 4          # the dropped command is not counted
        await host.wait_done()
        assert await host.register("queue_free") == 2
        assert await host.register("completed") == await host.register("pushed") == 4
    simulate(core, body, "core_overflow")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("build", [Core, CoreGeometry])
def test_output_stationary_is_refused_naming_what_runs_and_where_it_remains(build):
    parameters = dict(rows=4, cols=4, multiplier="lut", requant_lanes=2, scratchpad_rows=512,
                      accumulator_rows=64, binary_width=32, binary_lanes=4, binary_max_k=128,
                      binary_max_n=16, parameter_rows=64, binary_result_rows=64, queue_depth=4,
                      max_pool_width=16)
    with pytest.raises(ValueError) as error:
        build(**parameters, dataflow="output_stationary")
    message = str(error.value)
    del error
    gc.collect()    # the half-built core warns when collected: do it inside the filter
    assert "runs dataflow 'weight_stationary' only, not 'output_stationary'" in message
    assert "python -m sim.bench systolic --dataflow output_stationary" in message
    assert "python -m hw.build --design bringup" in message


@pytest.mark.parametrize("name, value, error", [
    ("rows", 0, ValueError), ("rows", 2.0, TypeError), ("dataflow", "row", ValueError),
    ("scratchpad_rows", 100, ValueError), ("binary_width", 64, ValueError),
    ("queue_depth", 1, ValueError), ("parameter_rows", 2, ValueError),
])
def test_parameter_errors_name_the_parameter(name, value, error):
    with pytest.raises(error, match=name):
        make_core(4, 4, **{name: value}) if name != "rows" else make_core(value, 4)


def test_geometry_from_config_sizes_memories_from_the_config():
    # The geometry core_from_config builds its Core with (every SoC test elaborates one).
    config = preset("tiny").replace(dataflow="weight_stationary")
    core = geometry_from_config(config.replace(binary_max_k=64, binary_max_n=8))
    assert (core.scratchpad_rows, core.accumulator_rows, core.row_bytes) == (256, 64, 4)
    names = [window.name for window in core.windows(0x1000_0000)]
    assert names[0] == "control" and "scratchpad" in names


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_encode_decode_round_trip(data):
    opcode = data.draw(st.sampled_from([Opcode.GEMM, Opcode.CONV, Opcode.REQUANT_STORE,
                                        Opcode.BINARY]))
    from hw.core.isa import _ARGS_LAYOUT, _ARGUMENTS, _SIGNED_FIELDS
    from amaranth.hdl import Shape
    fields = {}
    for name, field in _ARGS_LAYOUT.members[_ARGUMENTS[opcode]]:
        width = Shape.cast(field.shape).width
        low, high = ((-(1 << (width - 1)), (1 << (width - 1)) - 1) if name in _SIGNED_FIELDS
                     else (0, (1 << width) - 1))
        fields[name] = data.draw(st.integers(low, high))
    words = encode(opcode, **fields)
    assert len(words) == COMMAND_WORDS and all(0 <= word < 2**32 for word in words)
    assert decode(words) == (opcode, fields)


def test_encode_rejects_bad_fields():
    with pytest.raises(ValueError, match="k_last"):
        encode(Opcode.GEMM, a_base=0, w_base=0, acc_base=0, accumulate=0, m=1, k_blocks=1,
               k_last=64, n_blocks=1, n_last=1)
    with pytest.raises(ValueError, match="missing"):
        encode(Opcode.BINARY, a_base=0)
    with pytest.raises(ValueError, match="no fields"):
        encode(Opcode.FENCE, a_base=0)


def test_weights_in_the_other_bank_load_while_the_tile_computes():
    """The same GEMM twice: weights in the activations' bank (the two read streams take turns on
    one port) and in the other bank (the next tile's weights stream in during the current tile):
    both bit-exact, and the second is faster by at least a cycle per tile."""
    rng = np.random.default_rng(9)
    core = make_core(4, 4)
    bank_rows = core.scratchpad_rows // 2
    same = Case(rng, core, gemm_layer(30, 32, 4, a_base=0, w_base=240, out_base=200,
                                      param_base=0), gemm=True)
    other = Case(rng, core, gemm_layer(30, 32, 4, a_base=0, w_base=bank_rows, out_base=200,
                                       param_base=0), gemm=True)
    tiles = 32 // 4

    async def body(host):
        busy = []
        for case in (same, other):
            await host.write("control", REGISTERS["counter_clear"], 1)
            await case.run(host, core)
            busy.append((await host.counters())["compute_busy"])
        assert busy[1] + tiles <= busy[0], busy
    simulate(core, body, "core_banks")


def test_int32_accumulators_readable_and_accumulate_flag_adds_to_them():
    """GEMM into half 1 without a store: the host reads exact int32 sums from the accumulator
    window; a second GEMM with accumulate=1 adds A2 @ W2 onto them in place."""
    rng = np.random.default_rng(13)
    core = make_core(3, 2)
    m, k, n = 7, 5, 3
    a1, a2 = (rng.integers(-128, 128, (m, k), dtype=np.int8) for _ in range(2))
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    half = core.accumulator_rows // 2
    k_blocks, n_blocks = -(-k // 3), -(-n // 2)

    def gemm(a_base, accumulate):
        return encode(Opcode.GEMM, a_base=a_base, w_base=core.scratchpad_rows // 2,
                      acc_base=half, accumulate=accumulate, m=m, k_blocks=k_blocks, k_last=k - 3,
                      n_blocks=n_blocks, n_last=n - 2)

    async def body(host):
        await host.write_rows(0, activation_rows(a1.reshape(m, 1, k), rows=3, row_bytes=3))
        await host.write_rows(50, activation_rows(a2.reshape(m, 1, k), rows=3, row_bytes=3))
        await host.write_rows(core.scratchpad_rows // 2,
                              weight_rows(w.reshape(1, 1, k, n), rows=3, cols=2, row_bytes=3))
        await host.push([gemm(0, 0), encode(Opcode.FENCE)])
        await host.wait_done()
        rows = await host.read_accumulator(half, m * n_blocks)
        first = np.concatenate([rows[block * m:(block + 1) * m] for block in range(n_blocks)],
                               axis=1)[:, :n]
        np.testing.assert_array_equal(first, reference.gemm(a1, w))
        await host.push([gemm(50, 1), encode(Opcode.FENCE)])
        await host.wait_done()
        rows = await host.read_accumulator(half, m * n_blocks)
        both = np.concatenate([rows[block * m:(block + 1) * m] for block in range(n_blocks)],
                              axis=1)[:, :n]
        np.testing.assert_array_equal(both, reference.gemm(a1, w) + reference.gemm(a2, w))
        assert await host.register("error_code") == ErrorCode.NONE.value
    simulate(core, body, "core_accumulators")


def test_next_compute_on_the_other_half_overlaps_the_previous_drain():
    """GEMMs into half 0, half 1, then half 0 again accumulating, pushed back to back: the
    second's set-up runs while the first's rows stream and its rows follow the first's while
    the first drains, so it adds only its own rows, one a cycle (two cycles of slack), to the
    compute unit's busy cycles (alone, it costs about 74 more: set-up, first weights, drain);
    the third waits for the first (same half) and adds onto it. Every sum exact."""
    rng = np.random.default_rng(17)
    core = make_core(4, 4)
    m, k, n = 14, 8, 8                  # two column blocks of 14 rows: 28 of a half's 32
    a = [rng.integers(-128, 128, (m, k), dtype=np.int8) for _ in range(3)]
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    half = core.accumulator_rows // 2
    w_base = core.scratchpad_rows // 2

    def gemm(index, acc_base, accumulate=0):
        return encode(Opcode.GEMM, a_base=index * 40, w_base=w_base, acc_base=acc_base,
                      accumulate=accumulate, m=m, k_blocks=2, k_last=4, n_blocks=2, n_last=4)

    async def accumulator(host, acc_base):
        rows = await host.read_accumulator(acc_base, 2 * m)
        return np.concatenate([rows[:m], rows[m:]], axis=1)[:, :n]

    async def compute_busy(host, commands):
        await host.write("control", REGISTERS["counter_clear"], 1)
        await host.push(commands + [encode(Opcode.FENCE)])
        await host.wait_done()
        return (await host.counters())["compute_busy"]

    async def body(host):
        for index in range(3):
            await host.write_rows(index * 40, activation_rows(a[index].reshape(m, 1, k), rows=4,
                                                              row_bytes=4))
        await host.write_rows(w_base, weight_rows(w.reshape(1, 1, k, n), rows=4, cols=4,
                                                  row_bytes=4))
        alone = [await compute_busy(host, [gemm(0, 0)]), await compute_busy(host, [gemm(1, half)])]
        both = await compute_busy(host, [gemm(0, 0), gemm(1, half), gemm(2, 0, accumulate=1)])
        np.testing.assert_array_equal(await accumulator(host, 0),
                                      reference.gemm(a[0], w) + reference.gemm(a[2], w))
        np.testing.assert_array_equal(await accumulator(host, half), reference.gemm(a[1], w))
        pair = await compute_busy(host, [gemm(0, 0), gemm(1, half)])
        rows_streamed = m * 2 * 2       # m rows for each of 2 K blocks x 2 column blocks
        assert pair <= alone[0] + rows_streamed + 2, (alone, pair, both)
        assert await host.register("error_code") == ErrorCode.NONE.value
    simulate(core, body, "core_overlap")


def test_host_traffic_during_a_layer_steals_ports_without_losing_data():
    """While a conv layer (with pool) runs, the host keeps reading the scratchpad (both banks) and
    the accumulator and writing unused scratchpad rows: every such access wins its port for a
    cycle, so the units' readers and the store's writes see random stalls. Output stays exact."""
    rng = np.random.default_rng(17)
    core = make_core(4, 4)
    case = Case(rng, core, ConvLayer(in_h=6, in_w=6, cin=5, cout=6, kh=3, kw=3,
                                     padding=(1, 1, 1, 1), pool=True, zero_point=3, a_base=0,
                                     w_base=core.scratchpad_rows // 2, out_base=100,
                                     param_base=0))
    traffic = random.Random(4)
    commands, _ = layer_commands(case.layer, rows=4, cols=4, accumulator_rows=64,
                                 requant_lanes=core.requant_lanes)

    async def body(host):
        layer = case.layer
        await host.write_rows(layer.a_base, activation_rows(case.x, rows=4, row_bytes=4))
        await host.write_rows(layer.w_base, weight_rows(case.w, rows=4, cols=4, row_bytes=4))
        await host.write_block("parameters", 0, parameter_words(
            case.hardware_bias, case.multiplier, case.shift, channels=8))
        await host.push(commands)
        while await host.register("completed") != host.pushed:
            for _ in range(traffic.randrange(1, 6)):
                choice = traffic.random()
                if choice < 0.4:
                    await host.read("scratchpad", traffic.randrange(core.scratchpad_rows))
                elif choice < 0.7:
                    await host.read("accumulator", traffic.randrange(core.accumulator_rows * 4))
                else:
                    await host.write("scratchpad", 200 + traffic.randrange(40), 0x5A5A5A5A)
        got = output_from_rows(await host.read_rows(layer.out_base, 9 * 2), pixels=9,
                               channels=6, cols=4, stride=2)
        np.testing.assert_array_equal(got.reshape(case.expected.shape), case.expected)
        assert await host.register("error_code") == ErrorCode.NONE.value
    simulate(core, body, "core_host_traffic")


@settings(max_examples=4, deadline=None)
@given(st.data())
def test_random_conv_geometry(data):
    """Random kernel, stride, (asymmetric) padding, sizes and channel counts, pool when possible."""
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    core = make_core(*draw(st.sampled_from([(4, 4), (3, 2)])))
    kh, kw, stride = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    in_h, in_w = draw(st.integers(kh, 6)), draw(st.integers(kw, 6))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(4))
    layer = ConvLayer(in_h=in_h, in_w=in_w, cin=draw(st.integers(1, 6)),
                      cout=draw(st.integers(1, 5)), kh=kh, kw=kw, stride=stride,
                      padding=padding, zero_point=draw(st.integers(-128, 127)),
                      rounding=draw(st.sampled_from(["double", "single"])), **PLACEMENT)
    if layer.out_h >= 2 and layer.out_w >= 2 and draw(st.booleans()):
        layer = ConvLayer(**{**layer.__dict__, "pool": True})
    case = Case(rng, core, layer)

    async def body(host):
        await case.run(host, core)
        assert await host.register("error_code") == ErrorCode.NONE.value
    simulate(core, body, "core_random_conv")
