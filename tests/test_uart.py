# amaranth: UnusedElaboratable=no
"""UART PHY in pysim, against an independent bit-level model of an 8N1 line."""

import math
import random
from fractions import Fraction

import pytest
from amaranth.hdl import Module
from hypothesis import example, given, settings, strategies as st

from hw.soc.uart import UARTPhy
from sim.harness import receive, run, send

FAST = settings(max_examples=6, deadline=None)


def line_levels(byte, *, stop_bit=1):
    """The 10 line levels of one 8N1 frame: start, data LSB first, stop."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop_bit]


def waveform(frames, bit_cycles, *, idle_before=3):
    """Per-cycle line levels for consecutive frames; `bit_cycles` may be fractional (baud error)."""
    levels = [level for frame in frames for level in frame]
    total = round(len(levels) * bit_cycles)
    return [1] * idle_before + [levels[int(cycle / bit_cycles)] for cycle in range(total)] + [1] * 4


def bit_edge(divisor, bit):
    """Cycle at which bit number `bit` of a run starts: the exact baud rate puts it at
    ``bit * divisor``, rounded down to a whole cycle."""
    return math.floor(bit * divisor)


def decode_line(samples, divisor):
    """Decode a sampled line, insisting on exact bit timing: bit k of the transmitter's output
    since reset (frames counted back to back, idle time not) starts `bit_edge(divisor, k)` cycles
    after its frame's start bit, less that of the frame's first bit. Returns
    [(start_cycle, byte)]."""
    frames, cycle, sent = [], 0, 0
    while True:
        while cycle < len(samples) and samples[cycle]:
            cycle += 1
        edges = [cycle + bit_edge(divisor, sent + index) - bit_edge(divisor, sent)
                 for index in range(11)]
        if edges[10] > len(samples):
            assert all(samples[cycle:]), f"truncated frame at cycle {cycle}"
            return frames
        bits = []
        for index in range(10):
            cell = samples[edges[index]:edges[index + 1]]
            assert len(set(cell)) == 1, f"bit {index} of frame at {cycle} is not {cell}"
            bits.append(cell[0])
        assert bits[0] == 0 and bits[9] == 1, f"bad start/stop in frame at cycle {cycle}: {bits}"
        frames.append((cycle, sum(bit << i for i, bit in enumerate(bits[1:9]))))
        cycle, sent = edges[10], sent + 10


# Clock / baud ratios: whole numbers and fractions (e.g. 100 MHz / 3 Mbaud = 100/3).
def divisors(low, high):
    return st.one_of(st.integers(low, high),
                     st.builds(Fraction, st.integers(low * 7, high * 7), st.integers(2, 7))
                     .filter(lambda d: low <= d <= high and d.denominator > 1))


def loopback(uart):
    m = Module()
    m.submodules.uart = uart
    m.d.comb += uart.rxd.eq(uart.txd)
    return m


async def watch_line(ctx, uart, cycles, samples):
    for _ in range(cycles):
        samples.append(ctx.get(uart.txd))
        await ctx.tick()


@pytest.mark.parametrize("divisor, error", [
    (3, ValueError), (0, ValueError), (-5, ValueError), (Fraction(7, 2), ValueError),
    (4.0, TypeError), (True, TypeError), ("8", TypeError),
])
def test_bad_divisor_is_rejected(divisor, error):
    with pytest.raises(error, match="divisor"):
        UARTPhy(divisor=divisor)


@FAST
@example(divisor=Fraction(100, 3), data=[0x00, 0xFF, 0x55, 0xAA, 0x01])   # 100 MHz, 3 Mbaud
@given(divisor=divisors(4, 9), data=st.lists(st.integers(0, 255), min_size=1, max_size=8))
def test_tx_back_to_back_at_full_line_rate(divisor, data):
    uart = UARTPhy(divisor=divisor)
    samples = []
    handshakes = []

    async def producer(ctx):
        await ctx.tick()
        for byte in data:
            ctx.set(uart.tx.payload, byte)
            ctx.set(uart.tx.valid, 1)
            await ctx.tick().until(uart.tx.ready)
            handshakes.append(len(samples))
        ctx.set(uart.tx.valid, 0)

    async def monitor(ctx):
        await watch_line(ctx, uart, math.ceil(10 * divisor * len(data)) + 12, samples)

    run(uart, producer, monitor, name="uart_tx_back_to_back")
    frames = decode_line(samples, divisor)
    assert [byte for _, byte in frames] == data
    starts = [start for start, _ in frames]
    # No idle cycle between frames: each start bit follows the previous stop bit immediately, so
    # frame n starts where the exact rate puts bit 10n.
    assert [start - starts[0] for start in starts] == [bit_edge(divisor, 10 * n)
                                                       for n in range(len(data))]
    # The first start bit appears one cycle after the first handshake.
    assert starts[0] == handshakes[0]


@FAST
@given(divisor=divisors(4, 8), data=st.lists(st.integers(0, 255), min_size=1, max_size=6),
       seed=st.integers(0, 1000))
def test_tx_with_gaps_keeps_exact_frames(divisor, data, seed):
    uart = UARTPhy(divisor=divisor)
    samples = []

    async def producer(ctx):
        await send(ctx, uart.tx, data, gap_probability=0.3, rng=random.Random(seed))

    async def monitor(ctx):
        await watch_line(ctx, uart, math.ceil(10 * divisor * len(data)) + 60 * len(data) + 20,
                         samples)

    run(uart, producer, monitor, name="uart_tx_gaps")
    assert [byte for _, byte in decode_line(samples, divisor)] == data


def drive_rx(uart, levels):
    async def driver(ctx):
        for level in levels:
            ctx.set(uart.rxd, level)
            await ctx.tick()
    return driver


@FAST
@example(divisor=Fraction(100, 3), data=[0x00, 0xFF, 0x80], drift=1.0, seed=1)
@example(divisor=Fraction(100, 3), data=[0x01, 0x7F], drift=-1.0, seed=2)
@given(divisor=st.one_of(st.integers(4, 12), divisors(6, 12)),
       data=st.lists(st.integers(0, 255), min_size=1, max_size=8),
       drift=st.floats(-1, 1), seed=st.integers(0, 1000))
def test_rx_decodes_model_waveform(divisor, data, drift, seed):
    uart = UARTPhy(divisor=divisor)
    # A sender whose baud rate is off by up to what mid-bit sampling tolerates: by the stop bit's
    # middle (9.5 bits) the edges may have moved half a bit minus the synchronizer's uncertainty
    # and, for a fractional divisor, the cycle the PHY rounds its sampling points to.
    margin = divisor / 2 - (1.5 if isinstance(divisor, int) else 2.5)
    baud_error = drift * margin / (9.5 * divisor)
    levels = waveform([line_levels(byte) for byte in data], float(divisor) * (1 + baud_error))
    received = []
    errors = []

    async def consumer(ctx):
        received.extend(await receive(ctx, uart.rx, len(data), stall_probability=0.5,
                                      rng=random.Random(seed)))

    async def error_monitor(ctx):
        for _ in range(len(levels) + 10):
            _, _, framing, overrun = await ctx.tick().sample(uart.framing_error, uart.overrun)
            errors.append((framing, overrun))

    run(uart, drive_rx(uart, levels), consumer, error_monitor, name="uart_rx_model")
    assert received == data
    assert not any(framing or overrun for framing, overrun in errors)


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_rx_missing_stop_bit_is_a_framing_error(divisor):
    uart = UARTPhy(divisor=divisor)
    frames = [line_levels(0xA5, stop_bit=0), [0] * 25, [1, 1], line_levels(0x3C)]
    levels = waveform(frames, divisor)
    received, framing_pulses = [], []

    async def consumer(ctx):
        ctx.set(uart.rx.ready, 1)
        for _ in range(len(levels) + 10):
            _, _, valid, payload, framing = await ctx.tick().sample(
                uart.rx.valid, uart.rx.payload, uart.framing_error)
            if valid:
                received.append(payload)
            framing_pulses.append(framing)

    run(uart, drive_rx(uart, levels), consumer, name="uart_rx_framing")
    # The bad frame and the 25 low bits of break are one error; the good frame after it arrives.
    assert sum(framing_pulses) == 1
    assert received == [0x3C]


def test_rx_overrun_keeps_the_first_byte():
    divisor = 5
    uart = UARTPhy(divisor=divisor)
    levels = waveform([line_levels(0x11), line_levels(0x22), line_levels(0x33)], divisor)
    overruns = []
    received = []

    async def consumer(ctx):
        for _ in range(len(levels) + 5):
            _, _, overrun = await ctx.tick().sample(uart.overrun)
            overruns.append(overrun)
        received.extend(await receive(ctx, uart.rx, 1))
        assert not ctx.get(uart.rx.valid)

    run(uart, drive_rx(uart, levels), consumer, name="uart_rx_overrun")
    assert received == [0x11]
    assert sum(overruns) == 2


def test_rx_ignores_a_glitch_shorter_than_half_a_bit():
    divisor = 8
    uart = UARTPhy(divisor=divisor)
    levels = [1] * 5 + [0] * 2 + [1] * 30 + waveform([line_levels(0x5A)], divisor)
    received = []

    async def consumer(ctx):
        received.extend(await receive(ctx, uart.rx, 1))
        for _ in range(20):
            await ctx.tick()
            assert not ctx.get(uart.rx.valid)

    run(uart, drive_rx(uart, levels), consumer, name="uart_rx_glitch")
    assert received == [0x5A]


@FAST
@given(divisor=divisors(4, 8), data=st.lists(st.integers(0, 255), min_size=1, max_size=10),
       seed=st.integers(0, 1000))
def test_loopback_with_gaps_and_stalls(divisor, data, seed):
    uart = UARTPhy(divisor=divisor)
    received = []

    async def producer(ctx):
        await send(ctx, uart.tx, data, gap_probability=0.2, rng=random.Random(seed))

    async def consumer(ctx):
        received.extend(await receive(ctx, uart.rx, len(data), stall_probability=0.4,
                                      rng=random.Random(seed + 1)))

    run(loopback(uart), producer, consumer, name="uart_loopback")
    assert received == data
