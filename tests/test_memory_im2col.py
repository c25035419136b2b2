"""On-chip im2col address generator: every beat against an independent loop model, and the rows
gathered through the emitted addresses must equal `sim.reference.im2col` bit-exactly."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from hypothesis import given, settings, strategies as st

from hw.memory.im2col import Im2colAddressGenerator
from memory_helpers import assert_rejected
from sim import reference
from sim.harness import receive, run, send

DEPTH = 1024
BEAT_FIELDS = ("addr", "pad", "group_last", "end")


def expected_beats(command, order):
    c = command
    out_h = reference.conv_output_size(c["height"], c["kernel_h"], c["stride_h"], c["pad_top"],
                                       c["pad_bottom"])
    out_w = reference.conv_output_size(c["width"], c["kernel_w"], c["stride_w"], c["pad_left"],
                                       c["pad_right"])
    if out_h < 1 or out_w < 1:
        return [], 0, 0
    pixels = [(ho, wo) for ho in range(out_h) for wo in range(out_w)]
    chunks = [(kh, kw, cb) for kh in range(c["kernel_h"]) for kw in range(c["kernel_w"])
              for cb in range(c["channel_blocks"])]
    if order == "pixel_major":
        pairs = [(p, k, k == chunks[-1]) for p in pixels for k in chunks]
    else:
        pairs = [(p, k, p == pixels[-1]) for k in chunks for p in pixels]
    beats = []
    for (ho, wo), (kh, kw, cb), group_last in pairs:
        h = ho * c["stride_h"] - c["pad_top"] + kh
        w = wo * c["stride_w"] - c["pad_left"] + kw
        pad = not (0 <= h < c["height"] and 0 <= w < c["width"])
        addr = 0 if pad else (c["base"] + (h * c["width"] + w) * c["channel_blocks"] + cb) % DEPTH
        beats.append(dict(addr=addr, pad=int(pad), group_last=int(group_last), end=0))
    beats[-1]["end"] = 1
    return beats, len(pixels), len(chunks)


def run_generator(dut, commands, *, gap_probability=0.0, stall_probability=0.0, seed=0):
    total = sum(len(expected_beats(c, dut.order)[0]) for c in commands)
    received = []
    finished = []

    async def producer(ctx):
        await send(ctx, dut.command, commands, gap_probability=gap_probability,
                   rng=random.Random(seed))

    async def consumer(ctx):
        beats = await receive(ctx, dut.beats, total, stall_probability=stall_probability,
                              rng=random.Random(seed + 1))
        received.extend({name: int(getattr(beat, name)) for name in BEAT_FIELDS}
                        for beat in beats)
        ctx.set(dut.beats.ready, 1)
        for _ in range(60):
            _, _, valid = await ctx.tick().sample(dut.beats.valid)
            assert not valid, "generator emitted more beats than the command asked for"
        finished.append(True)

    async def watchdog(ctx):
        for _ in range(20 * total + 400):
            if finished:
                return
            await ctx.tick()
        raise AssertionError(f"timed out: {len(received)} of {total} beats")

    run(dut, producer, consumer, watchdog, name=f"im2col_{dut.order}")
    return received


def gather_im2col(beats, order, x, row_bytes, command, zero_point, pixels, chunks):
    """Lay `x` out in a NumPy scratchpad (documented layout), gather the rows the beats name and
    rebuild the im2col matrix with the true channel count."""
    height, width, channels = x.shape
    blocks = command["channel_blocks"]
    scratchpad = np.full((DEPTH, row_bytes), 99, np.int64)   # garbage outside the tensor
    padded = np.zeros((height, width, blocks * row_bytes), np.int64)
    padded[..., :channels] = x
    for h in range(height):
        for w in range(width):
            for cb in range(blocks):
                row = (command["base"] + (h * width + w) * blocks + cb) % DEPTH
                scratchpad[row] = padded[h, w, cb * row_bytes:(cb + 1) * row_bytes]
    rows = np.array([np.full(row_bytes, zero_point) if beat["pad"] else scratchpad[beat["addr"]]
                     for beat in beats])
    if order == "pixel_major":
        rows = rows.reshape(pixels, chunks, row_bytes)
    else:
        rows = rows.reshape(chunks, pixels, row_bytes).transpose(1, 0, 2)
    kernel_cells = command["kernel_h"] * command["kernel_w"]
    rows = rows.reshape(pixels, kernel_cells, blocks * row_bytes)[..., :channels]
    return rows.reshape(pixels, kernel_cells * channels)


def check_against_reference(dut, row_bytes, x, kernel, stride, padding, zero_point, *, base=5,
                            pressure=(0.0, 0.0), seed=0):
    height, width, channels = x.shape
    command = dut.make_command(base=base, height=height, width=width,
                               channel_blocks=-(-channels // row_bytes), kernel=kernel,
                               stride=stride, padding=padding)
    beats = run_generator(dut, [command], gap_probability=pressure[0],
                          stall_probability=pressure[1], seed=seed)
    expected, pixels, chunks = expected_beats(command, dut.order)
    assert beats == expected
    gathered = gather_im2col(beats, dut.order, x, row_bytes, command, zero_point, pixels, chunks)
    np.testing.assert_array_equal(
        gathered, reference.im2col(x, *((kernel, kernel) if isinstance(kernel, int) else kernel),
                                   stride=stride, padding=padding, pad_value=zero_point))


COMMON_CNN_LAYERS = [
    # (name, height, width, channels, row_bytes, kernel, stride, padding)
    ("3x3_s1_p1", 6, 5, 5, 4, 3, 1, 1),
    ("3x3_s2_p1", 7, 7, 3, 2, 3, 2, 1),
    ("1x1_s1_p0", 5, 3, 9, 4, 1, 1, 0),
    ("1x1_s2_p0", 7, 5, 4, 4, 1, 2, 0),
    ("5x5_s1_p2", 5, 6, 2, 4, 5, 1, 2),
    ("7x7_s2_p3", 9, 8, 3, 4, 7, 2, 3),
    ("2x2_s2_p0", 7, 6, 6, 4, 2, 2, 0),
    ("same_3x3_s2_even", 8, 6, 3, 2, 3, 2, reference.same_padding(8, 6, 3, 3, 2)),
    ("same_2x2_s1", 5, 5, 5, 4, 2, 1, reference.same_padding(5, 5, 2, 2, 1)),
    ("same_5x5_s2_odd", 7, 9, 1, 1, 5, 2, reference.same_padding(7, 9, 5, 5, 2)),
    ("rect_3x1_s(2,1)", 6, 4, 3, 2, (3, 1), (2, 1), (1, 1, 0, 0)),
    ("kernel_covers_padded_input", 2, 2, 3, 4, 3, 1, 1),
]


@pytest.mark.parametrize("order", ["pixel_major", "chunk_major"])
@pytest.mark.parametrize("name, height, width, channels, row_bytes, kernel, stride, padding",
                         COMMON_CNN_LAYERS, ids=[case[0] for case in COMMON_CNN_LAYERS])
def test_common_cnn_layers(order, name, height, width, channels, row_bytes, kernel, stride,
                           padding):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = rng.integers(-128, 128, (height, width, channels), dtype=np.int8)
    dut = Im2colAddressGenerator(scratchpad_rows=DEPTH, max_dimension=15, max_channel_blocks=7,
                                 max_kernel=7, max_stride=3, max_padding=3, order=order)
    check_against_reference(dut, row_bytes, x, kernel, stride, padding, zero_point=-7,
                            pressure=(0.2, 0.3), seed=len(name))


@settings(max_examples=10, deadline=None)
@given(order=st.sampled_from(["pixel_major", "chunk_major"]), height=st.integers(1, 6),
       width=st.integers(1, 6), channels=st.integers(1, 9), row_bytes=st.integers(1, 4),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(*[st.integers(0, 3)] * 4), base=st.integers(0, DEPTH - 1),
       zero_point=st.integers(-128, 127), seed=st.integers(0, 2**16),
       pressure=st.sampled_from([(0.0, 0.0), (0.3, 0.4)]))
def test_random_convolutions(order, height, width, channels, row_bytes, kernel, stride, padding,
                             base, zero_point, seed, pressure):
    top, bottom, left, right = padding
    if kernel[0] > height + top + bottom or kernel[1] > width + left + right:
        kernel = (min(kernel[0], height + top + bottom), min(kernel[1], width + left + right))
    x = np.random.default_rng(seed).integers(-128, 128, (height, width, channels), dtype=np.int8)
    dut = Im2colAddressGenerator(scratchpad_rows=DEPTH, max_dimension=7, max_channel_blocks=9,
                                 max_kernel=4, max_stride=3, max_padding=3, order=order)
    check_against_reference(dut, row_bytes, x, kernel, stride, padding, zero_point, base=base,
                            pressure=pressure, seed=seed)


def test_back_to_back_commands_skip_invalid_ones():
    dut = Im2colAddressGenerator(scratchpad_rows=DEPTH, max_dimension=15, max_channel_blocks=3,
                                 max_kernel=3, max_stride=2, max_padding=1)
    first = dut.make_command(base=0, height=3, width=4, channel_blocks=2, kernel=3, padding=1)
    second = dut.make_command(base=100, height=5, width=2, channel_blocks=1, kernel=(1, 2),
                              stride=2)
    # Hardware cannot raise: a window that does not fit the input emits nothing.
    too_big = dict(first, height=1, pad_top=0, pad_bottom=0)
    beats = run_generator(dut, [first, too_big, second], gap_probability=0.3,
                          stall_probability=0.3, seed=3)
    assert beats == expected_beats(first, "pixel_major")[0] + expected_beats(second, "pixel_major")[0]


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(scratchpad_rows=1000), ValueError, "scratchpad_rows must be a power of two"),
    (dict(max_kernel=0), ValueError, "max_kernel must be in 1..31, not 0"),
    (dict(max_stride=16), ValueError, "max_stride must be in 1..15, not 16"),
    (dict(max_padding=8), ValueError, "max_padding must be in 0..7, not 8"),
    (dict(order="random"), ValueError, "order must be one of ('pixel_major', 'chunk_major')"),
    (dict(max_dimension=2.5), TypeError, "max_dimension must be an integer, not 2.5"),
])
def test_bad_parameters(kwargs, error, fragment):
    assert_rejected(error, fragment, Im2colAddressGenerator, **(dict(scratchpad_rows=64) | kwargs))


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(height=0), "height must be in 1..15, not 0"),
    (dict(channel_blocks=4), "channel_blocks must be in 1..3, not 4"),
    (dict(kernel=4), "kernel_h must be in 1..3, not 4"),
    (dict(stride=(1, 3)), "stride_w must be in 1..2, not 3"),
    (dict(padding=(0, 2)), "pad_left must be in 0..1, not 2"),
    (dict(height=1, kernel=3, padding=0), "a 3x3 kernel does not fit a 1x4 input"),
    (dict(base=64), "base must be in 0..63, not 64"),
])
def test_bad_commands(kwargs, fragment):
    dut = Im2colAddressGenerator(scratchpad_rows=64, max_dimension=15, max_channel_blocks=3,
                                 max_kernel=3, max_stride=2, max_padding=1)
    arguments = dict(base=0, height=4, width=4, channel_blocks=1, kernel=3, stride=1, padding=1)
    with pytest.raises(ValueError) as info:
        dut.make_command(**(arguments | kwargs))
    assert fragment in str(info.value)
    Fragment.get(dut, None)   # elaborated once, so the otherwise unused component does not warn
