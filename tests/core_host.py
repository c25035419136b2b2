"""Drive a simulated `hw.core.Core` through its bus ports exactly as the host link does (pysim):
the target side of `hw.soc.bridge` (writes take effect at once, read data
`TARGET_READ_LATENCY` cycles after the read, one access per cycle)."""

import numpy as np

from hw.core.isa import COUNTERS, COUNTERS_BASE, REGISTERS
from sw.compiler.layout import (binary_threshold_words, binary_weight_words, rows_to_words,
                                words_to_rows)
from hw.soc.bridge import TARGET_READ_LATENCY


class PysimHost:
    """Bus reads/writes from an async testbench (`ctx`); window names are the Core's ports."""

    def __init__(self, ctx, core):
        self.ctx, self.core = ctx, core
        self.pushed = 0

    async def write(self, window, address, value):
        bus = getattr(self.core, window)
        self.ctx.set(bus.address, address)
        self.ctx.set(bus.write_data, int(value) & 0xFFFF_FFFF)
        self.ctx.set(bus.write, 1)
        await self.ctx.tick()
        self.ctx.set(bus.write, 0)

    async def write_block(self, window, base, words):
        for offset, word in enumerate(words):
            await self.write(window, base + offset, word)

    async def read(self, window, address):
        return (await self.read_block(window, address, 1))[0]

    async def read_block(self, window, base, count):
        """Pipelined: a read every cycle, each word taken `TARGET_READ_LATENCY` cycles later."""
        bus = getattr(self.core, window)
        words = []
        for cycle in range(count + TARGET_READ_LATENCY - 1):
            self.ctx.set(bus.read, cycle < count)
            self.ctx.set(bus.address, base + min(cycle, count - 1))
            await self.ctx.tick()
            if cycle >= TARGET_READ_LATENCY - 1:
                words.append(self.ctx.get(bus.read_data))
        self.ctx.set(bus.read, 0)
        return words

    async def write_rows(self, base_row, rows_int8):
        stride = self.core.scratchpad_stride
        await self.write_block("scratchpad", base_row * stride, rows_to_words(rows_int8,
                                                                               stride=stride))

    async def read_rows(self, base_row, count):
        stride = self.core.scratchpad_stride
        words = await self.read_block("scratchpad", base_row * stride, count * stride)
        return words_to_rows(words, row_bytes=self.core.row_bytes, stride=stride)

    async def write_binary_layer(self, w_packed, k, *, w_base, thresholds=None, ascending=None,
                                 t_base=0):
        """A binary layer's weights (packed rows, one per neuron) from engine weight row
        `w_base` and, for a hidden layer, its thresholds from threshold row `t_base`."""
        core = self.core
        await self.write_block(
            "binary_weights", w_base * core.lanes_stride * core.weight_word_stride,
            binary_weight_words(w_packed, k, width=core.binary_width, lanes=core.binary_lanes,
                                lanes_stride=core.lanes_stride,
                                weight_word_stride=core.weight_word_stride))
        if thresholds is not None:
            await self.write_block(
                "binary_thresholds", t_base * core.lanes_stride,
                binary_threshold_words(thresholds, ascending, k, lanes=core.binary_lanes,
                                       lanes_stride=core.lanes_stride))

    async def push(self, commands, *, poll=True):
        for words in commands:
            while poll and await self.read("control", REGISTERS["queue_free"]) == 0:
                pass
            await self.write_block("control", 0, words)
            self.pushed += 1

    async def register(self, name):
        return await self.read("control", REGISTERS[name])

    async def wait_done(self, limit=200_000):
        for _ in range(limit):
            if await self.register("completed") == self.pushed:
                return
            await self.ctx.tick().repeat(8)
        raise TimeoutError(f"core did not complete {self.pushed} commands")

    async def counters(self):
        values = {}
        for position, name in enumerate(COUNTERS):
            low = await self.read("control", COUNTERS_BASE + 2 * position)
            high = await self.read("control", COUNTERS_BASE + 2 * position + 1)
            values[name] = low | high << 32
        return values

    async def read_accumulator(self, row, count):
        stride, cols = self.core.accumulator_stride, self.core.cols
        words = await self.read_block("accumulator", row * stride, count * stride)
        return np.asarray(words, np.uint32).view(np.int32).reshape(count, stride)[:, :cols]
