"""ConvBeatGenerator: both beat streams against an independent loop-nest model of the documented
order, with gaps on the command and stalls on each output."""

import random

from hypothesis import given, settings, strategies as st

from hw.memory.im2col import ConvBeatGenerator
from sim.harness import receive, run, send


def expected_beats(rows, cols, command):
    c = command
    pixels = c["ho_count"] * c["out_w"]
    weights, beats = [], []
    w_addr = c["w_base"]
    for nb in range(c["n_blocks"]):
        for kh in range(c["kh"]):
            for kw in range(c["kw"]):
                for cb in range(c["cin_blocks"]):
                    for _ in range(rows):
                        weights.append(w_addr)
                        w_addr += 1
                    lanes = c["cin_last"] if cb == c["cin_blocks"] - 1 else rows
                    columns = c["n_last"] if nb == c["n_blocks"] - 1 else cols
                    for p in range(pixels):
                        ho, wo = divmod(p, c["out_w"])
                        h = (c["ho_start"] + ho) * c["stride"] - c["pad_top"] + kh
                        w = wo * c["stride"] - c["pad_left"] + kw
                        pad = not (0 <= h < c["in_h"] and 0 <= w < c["in_w"])
                        beats.append((None if pad else
                                      c["a_base"] + (h * c["in_w"] + w) * c["cin_blocks"] + cb,
                                      c["acc_base"] + nb * pixels + p,
                                      int(c["accumulate"] or (kh, kw, cb) != (0, 0, 0)),
                                      int(p == pixels - 1), lanes * columns))
    # The command's final beat, alone, carries `end`; every beat its command's zero point.
    zero_point = (c["zero_point"] + 128) % 256 - 128
    beats = [beat + (int(index == len(beats) - 1), zero_point) for index, beat in enumerate(beats)]
    return weights, beats


def observed(beat):
    return (None if beat.pad else int(beat.sp_addr), int(beat.acc_addr), int(beat.accumulate),
            int(beat.last), int(beat.macs), int(beat.end), int(beat.zero_point))


def simulate(rows, cols, commands, *, gap=0.0, stall=0.0, seed=0):
    dut = ConvBeatGenerator(rows=rows, cols=cols, accumulator_rows=1024)
    expected = [expected_beats(rows, cols, command) for command in commands]
    expected_weights = [w for weights, _ in expected for w in weights]
    expected_beats_ = [b for _, beats in expected for b in beats]
    got, got_weights = [], []

    async def producer(ctx):
        await send(ctx, dut.command, commands, gap_probability=gap, rng=random.Random(seed))

    async def consumer(ctx):
        got.extend(observed(b) for b in await receive(ctx, dut.activations, len(expected_beats_),
                                                      stall_probability=stall,
                                                      rng=random.Random(seed + 1)))

    async def weight_consumer(ctx):
        got_weights.extend(int(w) for w in await receive(ctx, dut.weights, len(expected_weights),
                                                         stall_probability=stall,
                                                         rng=random.Random(seed + 2)))
    run(dut, producer, consumer, weight_consumer, name="core_im2col")
    assert got == expected_beats_
    assert got_weights == expected_weights


def command(**overrides):
    base = dict(a_base=3, w_base=100, acc_base=5, accumulate=0, in_h=4, in_w=5, cin_blocks=2,
                cin_last=3, kh=3, kw=3, stride=1, pad_top=1, pad_left=1, zero_point=0, out_w=5,
                ho_start=0, ho_count=4, n_blocks=2, n_last=2)
    base.update(overrides)
    return base


def test_conv_3x3_same_and_gemm_back_to_back():
    simulate(4, 3, [command(zero_point=0x85),
                    command(kh=1, kw=1, pad_top=0, pad_left=0, in_w=1, out_w=1, in_h=7,
                            ho_count=7, accumulate=1, cin_blocks=3, n_blocks=1, zero_point=3),
                    command(ho_count=1, n_blocks=1, zero_point=0x7F)],
             gap=0.3, stall=0.3)


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_random_geometry(draw):
    rows, cols = draw.draw(st.integers(1, 4)), draw.draw(st.integers(1, 4))
    kh, kw = draw.draw(st.integers(1, 3)), draw.draw(st.integers(1, 3))
    stride = draw.draw(st.integers(1, 2))
    in_h, in_w = draw.draw(st.integers(1, 5)), draw.draw(st.integers(1, 5))
    pad_top, pad_left = draw.draw(st.integers(0, 2)), draw.draw(st.integers(0, 2))
    out_h = max(1, (in_h + 2 * pad_top - kh) // stride + 1)
    out_w = max(1, (in_w + 2 * pad_left - kw) // stride + 1)
    ho_start = draw.draw(st.integers(0, out_h - 1))
    simulate(rows, cols, [command(kh=kh, kw=kw, stride=stride, in_h=in_h, in_w=in_w,
                                  pad_top=pad_top, pad_left=pad_left, out_w=out_w,
                                  ho_start=ho_start,
                                  ho_count=draw.draw(st.integers(1, out_h - ho_start)),
                                  cin_blocks=draw.draw(st.integers(1, 2)),
                                  cin_last=draw.draw(st.integers(1, rows)),
                                  n_blocks=draw.draw(st.integers(1, 2)),
                                  n_last=draw.draw(st.integers(1, cols)))],
             gap=0.2, stall=0.2, seed=draw.draw(st.integers(0, 99)))


def test_one_beat_per_cycle_without_back_pressure():
    """Always-ready consumers: every weight row of a command and every activation beat of two
    back-to-back commands (across pixel, tile, block and command boundaries: the second's
    set-up runs while the first's beats leave) leave in consecutive cycles."""
    dut = ConvBeatGenerator(rows=3, cols=2, accumulator_rows=1024)
    layers = [command(), command(zero_point=7, ho_count=1)]
    weights = expected_beats(3, 2, layers[0])[0]
    beats = sum((expected_beats(3, 2, layer)[1] for layer in layers), [])
    cycles = {"weights": [], "activations": []}

    async def bench(ctx):
        await send(ctx, dut.command, layers)
        ctx.set(dut.weights.ready, 1)
        ctx.set(dut.activations.ready, 1)
        cycle = 0
        while len(cycles["activations"]) < len(beats):
            _, _, weight_valid, beat_valid = await ctx.tick().sample(dut.weights.valid,
                                                                     dut.activations.valid)
            if weight_valid:
                cycles["weights"].append(cycle)
            if beat_valid:
                cycles["activations"].append(cycle)
            cycle += 1
    run(dut, bench, name="core_im2col_throughput")
    for name, count in (("weights", len(weights)), ("activations", len(beats))):
        first = cycles[name][0]
        assert cycles[name][:count] == list(range(first, first + count)), name
