"""Threshold bits of a binary layer -> scratchpad rows, in the layout the next binary layer reads.

The engine (`hw.binary.engine`) delivers a vector's outputs one neuron fold at a time: `lanes`
threshold bits per fold, the last fold with ``last_lanes`` real ones. The next layer reads a
vector as beats of `width` bits, beat j of vector v from scratchpad row ``base + v*stride + j``
(bit i of the vector is bit ``i % width`` of beat ``i // width``; `hw.core.isa` BINARY). This
packer collects the folds' bits into that beat and writes a row when the beat is full or the
vector ends (a partial last beat, zero above the vector's last bit; bits of the row above `width`
are zero too)::

    folds -> SkidBuffer -> fold register --chunk--> beat register -> write register -> scratchpad
             (ready is      (lanes bits,     (g bits   (width bits,    (row, address;
              a flip-flop)   g at a time)    a cycle)   slot `fill`)    waits while blocked)

The bits move in chunks of ``g = gcd(lanes, width)`` bits, one chunk per cycle, into slot `fill`
of the beat (a decoder on the slot's register enables, no shifter). With `lanes` dividing
`width` (every power-of-two preset) a fold is one chunk: one fold per cycle, a row every
``width / lanes`` folds; with `width` dividing `lanes` a fold is ``lanes / width`` beats, one row
per cycle. Otherwise the packer takes ``g`` bits per cycle and holds the engine back.

The scratchpad's write port is shared (`hw.core.core`: the host's row commits, then the store
unit, then this packer): a row waits in the write register while `sp_blocked`, and the chunks
behind it wait only when the next one would complete a beat. Latency: a row is written two
cycles after the fold that completes it is offered (skid buffer, then fold register -> write
register), plus the cycles it is blocked. `idle` is high when nothing is held anywhere.

`start` (one cycle, while no fold is held) loads `base`, `stride` and `last_lanes` for the folds
that follow: the first vector's first row, the rows from one vector to the next, and the real
lanes of each vector's last fold.
"""

import math

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.pipeline import SkidBuffer

__all__ = ["BitPacker"]


class BitPacker(wiring.Component):
    """Neuron folds of threshold bits -> `width`-bit beats in scratchpad rows (module docstring).

    Parameters (keyword-only): lanes (bits per fold, 1..256), width (bits per beat, a power of
    two), row_bits (bits of a scratchpad row, >= width), address_width (row address bits).
    """

    def __init__(self, *, lanes, width, row_bits, address_width):
        if width & (width - 1) or not 1 <= lanes <= 256 or not width <= row_bits:
            raise ValueError(f"BitPacker needs lanes in 1..256 and a power-of-two width <= "
                             f"row_bits, not lanes={lanes}, width={width}, row_bits={row_bits}")
        self.lanes, self.width, self.row_bits = lanes, width, row_bits
        self.chunk = math.gcd(lanes, width)         # a power of two, as width is
        super().__init__({
            "folds": In(stream.Signature(data.StructLayout({"bits": lanes, "last": 1}))),
            "start": In(1),
            "base": In(address_width),
            "stride": In(address_width),
            "last_lanes": In(range(lanes + 1)),
            "sp_addr": Out(address_width), "sp_data": Out(row_bits), "sp_en": Out(1),
            "sp_blocked": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        chunk, lanes = self.chunk, self.lanes
        slots, fold_chunks = self.width // chunk, lanes // chunk
        chunk_log2 = chunk.bit_length() - 1

        m.submodules.fold_slice = fold_slice = SkidBuffer(self.folds.payload.shape())
        wiring.connect(m, wiring.flipped(self.folds), fold_slice.i)
        offered = fold_slice.o

        # Per command: the real lanes of a vector's last fold, as a mask and a chunk count.
        last_mask = Signal(lanes)
        last_chunks = Signal(range(fold_chunks + 1))
        beat_addr = Signal.like(self.base)          # the row of the beat being filled
        vector_next = Signal.like(self.base)        # the first row of the next vector
        with m.If(self.start):
            m.d.sync += [
                last_mask.eq(Cat(self.last_lanes > lane for lane in range(lanes))),
                last_chunks.eq((self.last_lanes + (chunk - 1)) >> chunk_log2),
                beat_addr.eq(self.base),
                vector_next.eq(self.base + self.stride),
            ]

        # The fold being placed, a chunk at a time (`chunks_left` of it, the low one next).
        fold_bits = Signal(lanes, reset_less=True)
        chunks_left = Signal(range(fold_chunks + 1))
        holding = Signal()              # chunks_left != 0, and == 1, kept as flags (timing)
        at_last_chunk = Signal()
        ends_vector = Signal()
        # The beat being filled: slots of `chunk` bits, `fill` of them filled.
        beat = Signal(data.ArrayLayout(chunk, slots))
        fill = Signal(range(slots))
        write_valid = Signal()
        write_row = Signal(self.row_bits, reset_less=True)
        write_addr = Signal.like(self.base, reset_less=True)

        write_free = ~write_valid | ~self.sp_blocked
        completes = (fill == slots - 1) | (at_last_chunk & ends_vector)
        move = holding & (~completes | write_free)
        load = offered.valid & offered.ready
        placed = Signal(self.width)
        m.d.comb += [
            placed.eq(Cat(Mux(fill == slot, fold_bits[:chunk], beat[slot])
                          for slot in range(slots))),
            offered.ready.eq(~holding | (at_last_chunk & move)),
            self.sp_addr.eq(write_addr),
            self.sp_data.eq(write_row),
            self.sp_en.eq(write_valid & ~self.sp_blocked),
            self.idle.eq(~offered.valid & fold_slice.i.ready & ~holding & ~write_valid),
        ]

        with m.If(self.sp_en):
            m.d.sync += write_valid.eq(0)
        with m.If(move):
            m.d.sync += [fold_bits.eq(fold_bits >> chunk), chunks_left.eq(chunks_left - 1),
                         holding.eq(~at_last_chunk), at_last_chunk.eq(chunks_left == 2)]
            with m.If(completes):
                m.d.sync += [write_valid.eq(1), write_row.eq(placed), write_addr.eq(beat_addr),
                             beat.eq(0), fill.eq(0)]
                with m.If(at_last_chunk & ends_vector):
                    m.d.sync += [beat_addr.eq(vector_next),
                                 vector_next.eq(vector_next + self.stride)]
                with m.Else():
                    m.d.sync += beat_addr.eq(beat_addr + 1)
            with m.Else():
                m.d.sync += [beat.eq(placed), fill.eq(fill + 1)]
        # A fold taken in the cycle its predecessor's last chunk moves replaces it (later
        # assignments win), so folds of one chunk flow one per cycle.
        with m.If(load):
            count = Mux(offered.payload.last, last_chunks, fold_chunks)
            m.d.sync += [
                fold_bits.eq(Mux(offered.payload.last, offered.payload.bits & last_mask,
                                 offered.payload.bits)),
                chunks_left.eq(count), holding.eq(1), at_last_chunk.eq(count == 1),
                ends_vector.eq(offered.payload.last),
            ]
        with m.If(self.start):
            m.d.sync += [beat.eq(0), fill.eq(0)]
        return m
