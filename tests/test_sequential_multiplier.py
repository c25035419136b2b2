# amaranth: UnusedElaboratable=no
"""SequentialMultiplier, sequence_products and multiply_by_constant against Python integers."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from hypothesis import given, settings, strategies as st

from hw.memory.sequential_multiplier import (SequentialMultiplier, multiply_by_constant,
                                             sequence_products)
from sim.harness import receive, run, send


def multiply_all(pairs, *, a_width, b_width, product_width, bits_per_cycle, gap=0.0, stall=0.0,
                 seed=0):
    dut = SequentialMultiplier(a_width=a_width, b_width=b_width, product_width=product_width,
                               bits_per_cycle=bits_per_cycle)
    got = []

    async def producer(ctx):
        await send(ctx, dut.request, [{"a": a, "b": b} for a, b in pairs], gap_probability=gap,
                   rng=random.Random(seed))

    async def consumer(ctx):
        got.extend(int(p) for p in await receive(ctx, dut.product, len(pairs),
                                                 stall_probability=stall,
                                                 rng=random.Random(seed + 1)))
    run(dut, producer, consumer, name="sequential_multiplier")
    return got


@settings(max_examples=15, deadline=None)
@given(st.data(), st.integers(1, 20), st.integers(1, 12), st.integers(1, 36), st.integers(1, 4),
       st.floats(0, 0.5), st.floats(0, 0.5))
def test_products_modulo_width(data, a_width, b_width, product_width, bits_per_cycle, gap, stall):
    pairs = data.draw(st.lists(st.tuples(st.integers(0, (1 << a_width) - 1),
                                         st.integers(0, (1 << b_width) - 1)),
                               min_size=1, max_size=6))
    got = multiply_all(pairs, a_width=a_width, b_width=b_width, product_width=product_width,
                       bits_per_cycle=bits_per_cycle, gap=gap, stall=stall)
    assert got == [(a * b) % (1 << product_width) for a, b in pairs]


@pytest.mark.parametrize("a, b", [(0, 0), (0, 65535), (65535, 0), (65535, 65535), (1, 1),
                                  ((1 << 34) - 1, 65535), (12345, 1 << 15)])
def test_edge_operands(a, b):
    assert multiply_all([(a, b)], a_width=34, b_width=16, product_width=50,
                        bits_per_cycle=3) == [a * b]


def test_signed_multiplicand_sign_extended():
    """A negative a, sign-extended to the product width, gives the signed product modulo it."""
    width = 24
    pairs = [((-5) % (1 << width), 7), ((-1) % (1 << width), 1000)]
    assert multiply_all(pairs, a_width=width, b_width=10, product_width=width,
                        bits_per_cycle=1) == [(-35) % (1 << width), (-1000) % (1 << width)]


@pytest.mark.parametrize("b, bits_per_cycle", [(0, 1), (1, 1), (5, 1), (255, 1), (255, 2),
                                               (256, 3)])
def test_latency(b, bits_per_cycle):
    """Product valid 1 + ceil(bit_length(b) / bits_per_cycle) cycles after the request."""
    dut = SequentialMultiplier(a_width=8, b_width=9, product_width=17,
                               bits_per_cycle=bits_per_cycle)
    cycles = []

    async def bench(ctx):
        ctx.set(dut.request.payload, {"a": 200, "b": b})
        ctx.set(dut.request.valid, 1)
        await ctx.tick()
        ctx.set(dut.request.valid, 0)
        count = 1
        while not ctx.get(dut.product.valid):
            await ctx.tick()
            count += 1
        cycles.append(count)
        assert ctx.get(dut.product.payload) == 200 * b
    run(dut, bench, name="sequential_multiplier_latency")
    assert cycles == [1 + -(-b.bit_length() // bits_per_cycle)]


class _Sequence(wiring.Component):
    """x*y, then (x*y)*z, then x*z only when `skip` is low."""
    start: In(1)
    x: In(8)
    y: In(8)
    z: In(8)
    skip: In(1)
    first: Out(16)
    second: Out(24)
    third: Out(16)
    busy: Out(1)
    done: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.multiplier = multiplier = SequentialMultiplier(
            a_width=24, b_width=8, product_width=24, bits_per_cycle=2)
        first, second, third = Signal(16), Signal(24), Signal(16)
        busy, done = sequence_products(m, multiplier, [
            (first, self.x, self.y), (second, first, self.z), (third, self.x, self.z, ~self.skip),
        ], start=self.start)
        m.d.comb += [self.first.eq(first), self.second.eq(second), self.third.eq(third),
                     self.busy.eq(busy), self.done.eq(done)]
        return m


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.booleans())
def test_sequence_products(x, y, z, skip):
    dut = _Sequence()

    async def bench(ctx):
        ctx.set(dut.x, x)
        ctx.set(dut.y, y)
        ctx.set(dut.z, z)
        ctx.set(dut.skip, skip)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert ctx.get(dut.busy)
        await ctx.tick().until(dut.done)
        assert not ctx.get(dut.busy)
        assert ctx.get(dut.first) == x * y
        assert ctx.get(dut.second) == x * y * z
        assert ctx.get(dut.third) == (0 if skip else x * z)
    run(dut, bench, name="sequence_products")


@pytest.mark.parametrize("constant", [0, 1, 2, 3, 12, 31, 32])
def test_multiply_by_constant(constant):
    value = Signal(10)
    product = Signal(16)

    class Dut(wiring.Component):
        out: Out(16)

        def elaborate(self, platform):
            m = Module()
            m.d.comb += [value.eq(1000), product.eq(multiply_by_constant(value, constant))]
            m.d.sync += self.out.eq(product)
            return m
    dut = Dut()

    async def bench(ctx):
        await ctx.tick()
        assert ctx.get(dut.out) == 1000 * constant
    run(dut, bench, name="multiply_by_constant")


@pytest.mark.parametrize("name, kwargs, error", [
    ("a_width", dict(a_width=0), ValueError), ("b_width", dict(b_width=65), ValueError),
    ("bits_per_cycle", dict(bits_per_cycle=9), ValueError),
    ("product_width", dict(product_width=True), TypeError),
])
def test_parameter_checks(name, kwargs, error):
    arguments = dict(a_width=8, b_width=8, product_width=16, bits_per_cycle=1) | kwargs
    with pytest.raises(error, match=name):
        SequentialMultiplier(**arguments)
