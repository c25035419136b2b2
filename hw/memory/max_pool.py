"""2x2 max-pool (stride 2, VALID) applied on store, streaming.

Takes the output rows of a convolution in raster order -- one beat per pixel, `lanes` int8
channels -- and emits one beat per pooled pixel, also in raster order. An odd last row or column
is consumed and dropped (``sim.reference.max_pool2x2``). A line buffer of ``width // 2`` pixels in
block RAM holds the pairwise maxima of each even input row until the odd row below arrives::

    even row:  col 2j: held <- x          col 2j+1: line[j] <- max(held, x)
    odd row:   col 2j: held <- x,         col 2j+1: out <- max(held, x, line[j])
                       read line[j]

Latency: a pooled pixel is valid the cycle after the input beat that completes its 2x2 window.
Throughput: one input beat per cycle while the output is not back-pressured (the output register
is a one-entry buffer: input stalls only while a pooled pixel waits for `output.ready`).
A command with a zero dimension consumes nothing.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ._parameters import check_int

__all__ = ["MaxPool2x2"]


class MaxPool2x2(wiring.Component):
    """Streaming 2x2/2 max-pool over raster-order pixels of `lanes` int8 channels.

    Parameters (keyword-only)
    -------------------------
    lanes : int
        Channels per beat, 1..64 (the array's ``cols``).
    max_dimension : int
        Largest input height and width, 2..65535 (the line buffer holds ``max_dimension // 2``
        pixels).

    Members
    -------
    command : In(stream.Signature({height, width}))
    input : In(stream.Signature(ArrayLayout(signed(8), lanes)))
    output : Out(stream.Signature(ArrayLayout(signed(8), lanes)))
    """

    def __init__(self, *, lanes, max_dimension=1024):
        owner = "MaxPool2x2"
        self.lanes = check_int(owner, "lanes", lanes, 1, 64)
        self.max_dimension = check_int(owner, "max_dimension", max_dimension, 2, 65535)
        self.pixel_layout = data.ArrayLayout(signed(8), lanes)
        dimension_bits = max_dimension.bit_length()
        self.command_layout = data.StructLayout({"height": dimension_bits,
                                                 "width": dimension_bits})
        super().__init__({
            "command": In(stream.Signature(self.command_layout)),
            "input": In(stream.Signature(self.pixel_layout)),
            "output": Out(stream.Signature(self.pixel_layout)),
        })

    def _maximum(self, m, *pixels):
        result = Signal(self.pixel_layout)
        for lane in range(self.lanes):
            best = pixels[0][lane]
            for pixel in pixels[1:]:
                best = Mux(pixel[lane] > best, pixel[lane], best)
            m.d.comb += result[lane].eq(best)
        return result

    def elaborate(self, platform):
        m = Module()
        m.submodules.line = line = memory.Memory(shape=self.pixel_layout,
                                                 depth=self.max_dimension // 2, init=[])
        line_write = line.write_port()
        line_read = line.read_port()

        command = Signal(self.command_layout)
        running = Signal()
        row = Signal.like(command.height)
        col = Signal.like(command.width)
        held = Signal(self.pixel_layout)
        pixel = self.input.payload
        accept = self.input.valid & self.input.ready
        odd_col, odd_row = col[0], row[0]
        pair = col[1:]

        m.d.comb += [
            self.command.ready.eq(~running),
            self.input.ready.eq(running & (~self.output.valid | self.output.ready)),
            line_read.addr.eq(pair),
            line_read.en.eq(accept & ~odd_col & odd_row),
            line_write.addr.eq(pair),
            line_write.data.eq(self._maximum(m, held, pixel)),
            line_write.en.eq(accept & odd_col & ~odd_row),
        ]

        with m.If(self.output.ready):
            m.d.sync += self.output.valid.eq(0)
        with m.If(accept):
            with m.If(~odd_col):
                m.d.sync += held.eq(pixel)
            with m.If(odd_col & odd_row):
                m.d.sync += [
                    self.output.payload.eq(self._maximum(m, held, pixel, line_read.data)),
                    self.output.valid.eq(1),
                ]
            with m.If(col == command.width - 1):
                m.d.sync += [col.eq(0), row.eq(row + 1)]
                with m.If(row == command.height - 1):
                    m.d.sync += running.eq(0)
            with m.Else():
                m.d.sync += col.eq(col + 1)

        with m.If(self.command.valid & self.command.ready):
            payload = self.command.payload
            m.d.sync += [
                command.eq(payload),
                row.eq(0),
                col.eq(0),
                running.eq((payload.height != 0) & (payload.width != 0)),
            ]
        return m
