"""Tiled-GEMM address generator: exact beat sequence vs an independent loop model, and a GEMM
computed by following the emitted addresses must equal `sim.reference.gemm`."""

import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hw.memory.gemm_addresses import GemmAddressGenerator
from sim import reference
from memory_helpers import assert_rejected
from sim.harness import receive, run, send

BEAT_FIELDS = ("a_addr", "w_addr", "acc_addr", "load_weight", "accumulate", "first", "last", "end")


def _ceil_div(a, b):
    return -(-a // b)


def expected_beats(dataflow, rows, command):
    """The beat sequence written straight from the documented loop nest (multiplications and all);
    a command with a zero count emits nothing."""
    beats = []
    counts = [value for name, value in command.items() if not name.endswith("_base")]
    if 0 in counts:
        return beats
    if dataflow == "output_stationary":
        mbs, k_count, nbs = command["m_blocks"], command["k"], command["n_blocks"]
        for nb in range(nbs):
            for mb in range(mbs):
                for k in range(k_count):
                    beats.append(dict(
                        a_addr=command["a_base"] + mb * k_count + k,
                        w_addr=command["w_base"] + nb * k_count + k,
                        acc_addr=command["acc_base"] + (nb * mbs + mb) * rows,
                        load_weight=0, accumulate=0, first=int(k == 0),
                        last=int(k == k_count - 1), end=0))
    else:
        m_count, kbs, nbs = command["m"], command["k_blocks"], command["n_blocks"]
        for nb in range(nbs):
            for kb in range(kbs):
                for r in range(rows):
                    beats.append(dict(a_addr=0, w_addr=command["w_base"] + (nb * kbs + kb) * rows + r,
                                      acc_addr=0, load_weight=1, accumulate=0, first=int(r == 0),
                                      last=0, end=0))
                for row in range(m_count):
                    beats.append(dict(a_addr=command["a_base"] + kb * m_count + row, w_addr=0,
                                      acc_addr=command["acc_base"] + nb * m_count + row,
                                      load_weight=0, accumulate=int(kb > 0), first=0,
                                      last=int(row == m_count - 1), end=0))
    if beats:
        beats[-1]["end"] = 1
    return beats


def run_generator(dut, commands, *, gap_probability=0.0, stall_probability=0.0, seed=0):
    total = sum(len(expected_beats(dut.dataflow, dut.rows, c)) for c in commands)
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
        # Nothing more may come out after the last expected beat.
        ctx.set(dut.beats.ready, 1)
        for _ in range(4):
            _, _, valid = await ctx.tick().sample(dut.beats.valid)
            assert not valid, "generator emitted more beats than the command asked for"
        finished.append(True)

    async def watchdog(ctx):
        for _ in range(20 * total + 200):
            if finished:
                return
            await ctx.tick()
        raise AssertionError(f"timed out: {len(received)} of {total} beats")

    run(dut, producer, consumer, watchdog, name=f"gemm_addresses_{dut.dataflow}")
    return received


def _layout_and_compute(dataflow, rows, cols, a, w, beats, command):
    """Build the scratchpad the load unit would (documented layout), then follow the beats like
    the array would and return the int32 result [M, N]."""
    m_size, k_size = a.shape
    n_size = w.shape[1]
    row_bytes = max(rows, cols)
    mbs, nbs, kbs = _ceil_div(m_size, rows), _ceil_div(n_size, cols), _ceil_div(k_size, rows)
    k_rows = k_size if dataflow == "output_stationary" else kbs * rows
    scratchpad = np.zeros((command["w_base"] + nbs * k_rows + 8, row_bytes), np.int64)
    a_padded = np.zeros((mbs * rows, kbs * rows), np.int64)
    a_padded[:m_size, :k_size] = a
    w_padded = np.zeros((k_rows, nbs * cols), np.int64)
    w_padded[:k_size, :n_size] = w
    for nb in range(nbs):
        for k in range(k_rows):
            scratchpad[command["w_base"] + nb * k_rows + k, :cols] = \
                w_padded[k, nb * cols:(nb + 1) * cols]
    if dataflow == "output_stationary":
        for mb in range(mbs):
            for k in range(k_size):
                scratchpad[command["a_base"] + mb * k_size + k, :rows] = \
                    a_padded[mb * rows:(mb + 1) * rows, k]
    else:
        for kb in range(kbs):
            for row in range(m_size):
                scratchpad[command["a_base"] + kb * m_size + row, :rows] = \
                    a_padded[row, kb * rows:(kb + 1) * rows]

    accumulator = {}
    if dataflow == "output_stationary":
        tile = np.zeros((rows, cols), np.int64)
        for beat in beats:
            if beat["first"]:
                tile[:] = 0
            tile += np.outer(scratchpad[beat["a_addr"], :rows], scratchpad[beat["w_addr"], :cols])
            if beat["last"]:
                for r in range(rows):
                    accumulator[beat["acc_addr"] + r] = tile[r].copy()
        result = np.zeros((mbs * rows, nbs * cols), np.int64)
        for nb in range(nbs):
            for mb in range(mbs):
                base = command["acc_base"] + (nb * mbs + mb) * rows
                for r in range(rows):
                    result[mb * rows + r, nb * cols:(nb + 1) * cols] = accumulator[base + r]
    else:
        weights = []
        for beat in beats:
            if beat["first"]:
                weights = []
            if beat["load_weight"]:
                weights.append(scratchpad[beat["w_addr"], :cols])
                continue
            partial = scratchpad[beat["a_addr"], :rows] @ np.array(weights)
            previous = accumulator.get(beat["acc_addr"], 0) if beat["accumulate"] else 0
            accumulator[beat["acc_addr"]] = previous + partial
        result = np.zeros((m_size, nbs * cols), np.int64)
        for nb in range(nbs):
            for row in range(m_size):
                result[row, nb * cols:(nb + 1) * cols] = \
                    accumulator[command["acc_base"] + nb * m_size + row]
    return result[:m_size, :n_size]


def _command_for(dataflow, rows, cols, m_size, k_size, n_size, bases):
    a_base, w_base, acc_base = bases
    nbs = _ceil_div(n_size, cols)
    if dataflow == "output_stationary":
        return dict(a_base=a_base, w_base=w_base, acc_base=acc_base,
                    m_blocks=_ceil_div(m_size, rows), k=k_size, n_blocks=nbs)
    return dict(a_base=a_base, w_base=w_base, acc_base=acc_base, m=m_size,
                k_blocks=_ceil_div(k_size, rows), n_blocks=nbs)


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 5), m_size=st.integers(1, 9),
       k_size=st.integers(1, 9), n_size=st.integers(1, 9), seed=st.integers(0, 2**16),
       pressure=st.sampled_from([(0.0, 0.0), (0.4, 0.4)]))
def test_gemm_through_generated_addresses_matches_reference(dataflow, rows, cols, m_size, k_size,
                                                            n_size, seed, pressure):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m_size, k_size), dtype=np.int8)
    w = rng.integers(-128, 128, (k_size, n_size), dtype=np.int8)
    bases = (3, 200, 5)
    command = _command_for(dataflow, rows, cols, m_size, k_size, n_size, bases)
    dut = GemmAddressGenerator(rows=rows, dataflow=dataflow, scratchpad_rows=512,
                               accumulator_rows=256)
    beats = run_generator(dut, [command], gap_probability=pressure[0],
                          stall_probability=pressure[1], seed=seed)
    assert beats == expected_beats(dataflow, rows, command)
    result = _layout_and_compute(dataflow, rows, cols, a, w, beats, command)
    np.testing.assert_array_equal(result, reference.gemm(a, w))


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
def test_back_to_back_commands_and_zero_counts(dataflow):
    dut = GemmAddressGenerator(rows=3, dataflow=dataflow, scratchpad_rows=64, accumulator_rows=64)
    shapes = [(4, 5, 7), (1, 1, 1), (7, 2, 3)]
    commands = [_command_for(dataflow, 3, 2, *shape, (1, 30, 2)) for shape in shapes]
    empty = dict(commands[0], **({"k": 0} if dataflow == "output_stationary" else {"m": 0}))
    commands.insert(1, empty)
    beats = run_generator(dut, commands, gap_probability=0.2, stall_probability=0.3, seed=7)
    assert beats == [beat for command in commands for beat in expected_beats(dataflow, 3, command)]


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
def test_addresses_wrap_at_scratchpad_depth(dataflow):
    """Addresses are taken modulo the depth (a ring buffer), as the documented widths imply."""
    dut = GemmAddressGenerator(rows=2, dataflow=dataflow, scratchpad_rows=16, accumulator_rows=16)
    command = _command_for(dataflow, 2, 2, 4, 6, 4, (13, 11, 14))
    beats = run_generator(dut, [command])
    expected = expected_beats(dataflow, 2, command)
    for beat in expected:
        for name in ("a_addr", "w_addr", "acc_addr"):
            beat[name] %= 16
    assert beats == expected


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(rows=0), ValueError, "rows must be in 1..32, not 0"),
    (dict(dataflow="row_stationary"), ValueError, "dataflow must be one of"),
    (dict(scratchpad_rows=100), ValueError, "scratchpad_rows must be a power of two"),
    (dict(accumulator_rows="64"), TypeError, "accumulator_rows must be an integer, not '64'"),
])
def test_bad_parameters(kwargs, error, fragment):
    arguments = dict(rows=4, dataflow="weight_stationary", scratchpad_rows=64, accumulator_rows=64)
    assert_rejected(error, fragment, GemmAddressGenerator, **(arguments | kwargs))
