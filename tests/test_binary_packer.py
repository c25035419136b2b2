"""BitPacker: threshold bits of neuron folds -> scratchpad rows exactly as
`sw.compiler.layout.binary_activation_rows` lays out the packed vectors (`sim.reference.pack_bits`)
that a BINARY command reads. Garbage in the lanes past the last fold's real ones, random input
gaps and a randomly blocked write port; every written row is checked, and nothing else written.
"""

import random

import numpy as np
from hypothesis import example, given, settings, strategies as st

from hw.binary import BitPacker
from sim import reference
from sim.harness import run, send
from sw.compiler.layout import binary_activation_rows

ROW_BITS = 32


def _folds(signs, lanes, rng):
    """The engine's fold payloads for +1/-1 `signs` [M, N]; lanes past N hold garbage."""
    vectors, n = signs.shape
    folds = -(-n // lanes)
    payloads = []
    for vector in range(vectors):
        for fold in range(folds):
            bits = rng.getrandbits(lanes)
            for lane in range(lanes):
                neuron = fold * lanes + lane
                if neuron < n:
                    bits = bits & ~(1 << lane) | int(signs[vector, neuron] > 0) << lane
            payloads.append({"bits": bits, "last": int(fold == folds - 1)})
    return payloads


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(4, 32), (8, 8), (16, 8), (12, 8), (1, 8), (3, 16)]),
       st.integers(1, 3), st.integers(1, 45), st.integers(0, 2), st.integers(0, 2**32 - 1))
@example((4, 32), 1, 1, 0, 0)           # one neuron: a beat of one bit
@example((4, 32), 2, 32, 0, 1)          # whole beats only
@example((12, 8), 3, 13, 1, 2)          # chunks of gcd(12, 8) = 4 bits, partial last beat
def test_packs_folds_into_the_rows_the_next_layer_reads(shape, vectors, n, extra_stride, seed):
    lanes, width = shape
    rng = random.Random(seed)
    signs = np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), (vectors, n))
    beats = -(-n // width)
    stride = beats + extra_stride
    base = 5
    expected = binary_activation_rows(reference.pack_bits(signs), n, width=width,
                                      row_bytes=ROW_BITS // 8).view(np.uint8)
    expected_rows = {base + vector * stride + beat: int.from_bytes(
        expected[vector * beats + beat].tobytes(), "little")
        for vector in range(vectors) for beat in range(beats)}
    dut = BitPacker(lanes=lanes, width=width, row_bits=ROW_BITS, address_width=8)
    written = {}

    async def producer(ctx):
        folds = -(-n // lanes)
        ctx.set(dut.base, base)
        ctx.set(dut.stride, stride)
        ctx.set(dut.last_lanes, n - (folds - 1) * lanes)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await send(ctx, dut.folds, _folds(signs, lanes, rng), gap_probability=0.3, rng=rng)

    async def writer(ctx):
        blocked = random.Random(seed + 1)
        while len(written) < len(expected_rows):
            ctx.set(dut.sp_blocked, blocked.random() < 0.3)
            _, _, enable, address, row = await ctx.tick().sample(dut.sp_en, dut.sp_addr,
                                                                 dut.sp_data)
            if enable:
                assert address not in written, f"row {address} written twice"
                written[address] = row
        ctx.set(dut.sp_blocked, 0)
        for _ in range(4):
            _, _, enable = await ctx.tick().sample(dut.sp_en)
            assert not enable, "a row written beyond the vectors' rows"
        assert ctx.get(dut.idle)

    run(dut, producer, writer, name="binary_packer")
    assert written == expected_rows
