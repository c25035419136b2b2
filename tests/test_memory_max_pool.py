"""Streaming 2x2 max-pool on store, bit-exact against `sim.reference.max_pool2x2`."""

import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hw.memory.max_pool import MaxPool2x2
from memory_helpers import assert_rejected
from sim import reference
from sim.harness import receive, run, send


def pool_through_hardware(images, lanes, *, gap_probability=0.0, stall_probability=0.0, seed=0):
    """Feed each HWC image (one command each) and return the pooled pixels as one flat list."""
    dut = MaxPool2x2(lanes=lanes, max_dimension=16)
    expected_count = sum((h // 2) * (w // 2) for h, w, _ in (image.shape for image in images))
    received = []
    finished = []

    async def commands(ctx):
        await send(ctx, dut.command, [{"height": image.shape[0], "width": image.shape[1]}
                                      for image in images])

    async def pixels(ctx):
        await send(ctx, dut.input, [list(pixel) for image in images
                                    for pixel in image.reshape(-1, lanes)],
                   gap_probability=gap_probability, rng=random.Random(seed))

    async def consumer(ctx):
        beats = await receive(ctx, dut.output, expected_count,
                              stall_probability=stall_probability, rng=random.Random(seed + 1))
        received.extend(list(beat) for beat in beats)
        ctx.set(dut.output.ready, 1)
        for _ in range(8):
            _, _, valid = await ctx.tick().sample(dut.output.valid)
            assert not valid, "more pooled pixels than the images have"
        finished.append(True)

    async def watchdog(ctx):
        for _ in range(20 * sum(image.size for image in images) + 200):
            if finished:
                return
            await ctx.tick()
        raise AssertionError(f"timed out after {len(received)} of {expected_count} pixels")

    run(dut, commands, pixels, consumer, watchdog, name="max_pool")
    return received


def expected_pixels(images, lanes):
    return [list(pixel) for image in images if min(image.shape[:2]) >= 2
            for pixel in reference.max_pool2x2(image).reshape(-1, lanes)]


@settings(max_examples=10, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 7)), min_size=1, max_size=3),
       lanes=st.integers(1, 4), seed=st.integers(0, 2**16),
       pressure=st.sampled_from([(0.0, 0.0), (0.3, 0.5), (0.0, 0.7)]))
def test_matches_reference(shapes, lanes, seed, pressure):
    rng = np.random.default_rng(seed)
    images = [rng.integers(-128, 128, (h, w, lanes), dtype=np.int8) for h, w in shapes]
    got = pool_through_hardware(images, lanes, gap_probability=pressure[0],
                                stall_probability=pressure[1], seed=seed)
    assert got == expected_pixels(images, lanes)


@pytest.mark.parametrize("name, height, width", [
    ("two_columns", 4, 2),      # line buffer read right after it was written
    ("odd_height", 5, 4),       # last row dropped
    ("odd_width", 4, 5),        # last column dropped
    ("both_odd", 3, 3),
    ("single_row", 1, 6),       # nothing to pool
    ("single_column", 6, 1),
    ("full_width", 4, 16),      # line buffer at max_dimension // 2 entries
])
def test_edge_shapes(name, height, width):
    rng = np.random.default_rng(height * 31 + width)
    image = rng.integers(-128, 128, (height, width, 2), dtype=np.int8)
    # Extremes, so the signed comparison is exercised at both ends.
    image.reshape(-1)[:4] = [-128, 127, -1, 0]
    assert pool_through_hardware([image], 2, stall_probability=0.3) == \
        expected_pixels([image], 2)


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(lanes=0), ValueError, "lanes must be in 1..64, not 0"),
    (dict(max_dimension=1), ValueError, "max_dimension must be in 2..65535, not 1"),
    (dict(lanes="4"), TypeError, "lanes must be an integer, not '4'"),
])
def test_bad_parameters(kwargs, error, fragment):
    assert_rejected(error, fragment, MaxPool2x2, **(dict(lanes=4) | kwargs))
