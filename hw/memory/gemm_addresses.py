"""Scratchpad/accumulator address sequence of a tiled GEMM on an R x C array.

For ``acc[M, N] = A[M, K] @ W[K, N]`` the generator takes one command and emits one beat per
cycle on `beats` (no bubbles across row, tile or block boundaries; back-to-back commands are
seamless too). Scratchpad rows are `row_bytes` = max(R, C) int8 lanes wide; the data layouts are
part of the contract with the load unit, which zero-fills the padding lanes::

    W (both dataflows): row  w_base + nb*Kw + k  = W[k, nb*C : nb*C + C]
                        (Kw = K for output-stationary, KB*R for weight-stationary)
    output-stationary:  row  a_base + mb*K + k   = A[mb*R : mb*R + R, k]   (a column block of A)
                        acc  acc_base + (nb*MB + mb)*R + r = tile (mb, nb) output row r
    weight-stationary:  row  a_base + kb*M + m   = A[m, kb*R : kb*R + R]   (a row chunk of A)
                        acc  acc_base + nb*M + m = acc[m, nb*C : nb*C + C]

Beat order and meaning::

    output-stationary   for nb < NB: for mb < MB: for k < K:
                            feed A column a_addr and W row w_addr (first: k == 0, last: k == K-1;
                            the tile's R output rows go to acc_addr..acc_addr+R-1)
    weight-stationary   for nb < NB: for kb < KB:
                            R beats with load_weight=1: load W row w_addr into the array,
                            then M beats: feed A row a_addr, write-or-accumulate the output row
                            at acc_addr (accumulate = kb > 0)
                            (first: the first weight beat, last: the last A beat of the tile)

`end` marks the last beat of the command. Commands carry tile counts, not element counts, so the
hardware needs no division: MB = ceil(M/R), NB = ceil(N/C), KB = ceil(K/R). A command with a zero
count emits nothing. Latency: the first beat is valid the cycle after the command is accepted;
throughput: one beat per cycle while `beats.ready` is high.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._loops import advance_loop_nest
from ._parameters import check_choice, check_int, check_power_of_two

__all__ = ["GemmAddressGenerator", "DATAFLOWS"]

DATAFLOWS = ("weight_stationary", "output_stationary")


class GemmAddressGenerator(wiring.Component):
    """Tiled-GEMM address generator for one dataflow.

    Parameters (keyword-only)
    -------------------------
    rows : int
        Array rows R, 1..32 (K per weight-stationary tile, output rows per output-stationary tile).
    dataflow : str
        ``"weight_stationary"`` or ``"output_stationary"``.
    scratchpad_rows, accumulator_rows : int
        Depths (powers of two >= 2) that set the address widths; counts are as wide as addresses.

    Members
    -------
    command : In(stream.Signature(command_layout))
        output-stationary: {a_base, w_base, acc_base, m_blocks, k, n_blocks}
        weight-stationary: {a_base, w_base, acc_base, m, k_blocks, n_blocks}
    beats : Out(stream.Signature(beat_layout))
        {a_addr, w_addr, acc_addr, load_weight, accumulate, first, last, end}
    """

    def __init__(self, *, rows, dataflow, scratchpad_rows, accumulator_rows):
        owner = "GemmAddressGenerator"
        self.rows = check_int(owner, "rows", rows, 1, 32)
        self.dataflow = check_choice(owner, "dataflow", dataflow, DATAFLOWS)
        check_power_of_two(owner, "scratchpad_rows", scratchpad_rows, 2)
        check_power_of_two(owner, "accumulator_rows", accumulator_rows, 2)
        self.scratchpad_addr_width = (scratchpad_rows - 1).bit_length()
        self.accumulator_addr_width = (accumulator_rows - 1).bit_length()
        sp, acc = self.scratchpad_addr_width, self.accumulator_addr_width
        # A count can equal the depth, hence one bit more than an address.
        if dataflow == "output_stationary":
            counts = {"m_blocks": acc + 1, "k": sp + 1, "n_blocks": acc + 1}
        else:
            counts = {"m": acc + 1, "k_blocks": sp + 1, "n_blocks": sp + 1}
        self.command_layout = data.StructLayout({
            "a_base": sp, "w_base": sp, "acc_base": acc, **counts})
        self.beat_layout = data.StructLayout({
            "a_addr": sp, "w_addr": sp, "acc_addr": acc,
            "load_weight": 1, "accumulate": 1, "first": 1, "last": 1, "end": 1,
        })
        super().__init__({
            "command": In(stream.Signature(self.command_layout)),
            "beats": Out(stream.Signature(self.beat_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        command = Signal(self.command_layout)
        running = Signal()
        beat = self.beats.payload
        step = self.beats.valid & self.beats.ready

        if self.dataflow == "output_stationary":
            last, counts = self._output_stationary(m, command, beat, step)
        else:
            last, counts = self._weight_stationary(m, command, beat, step)
        finished = step & last

        m.d.comb += [
            self.beats.valid.eq(running),
            beat.end.eq(last),
            self.command.ready.eq(~running | finished),
        ]
        with m.If(finished):
            m.d.sync += running.eq(0)
        with m.If(self.command.valid & self.command.ready):
            payload = self.command.payload
            m.d.sync += [
                command.eq(payload),
                running.eq(~Cat(*(payload[name] == 0 for name in counts)).any()),
            ]
        return m

    def _start(self, m, statements):
        """`statements` run when a command is accepted (they set the nest to its first beat)."""
        with m.If(self.command.valid & self.command.ready):
            m.d.sync += statements

    def _output_stationary(self, m, command, beat, step):
        sp, acc = self.scratchpad_addr_width, self.accumulator_addr_width
        k = Signal(sp + 1)
        mb = Signal(acc + 1)
        nb = Signal(acc + 1)
        a_block = Signal(sp)      # a_base + mb*K
        w_block = Signal(sp)      # w_base + nb*K
        acc_tile = Signal(acc)    # acc_base + (nb*MB + mb)*R
        k_last = k == command.k - 1
        m.d.comb += [
            beat.a_addr.eq(a_block + k),
            beat.w_addr.eq(w_block + k),
            beat.acc_addr.eq(acc_tile),
            beat.first.eq(k == 0),
            beat.last.eq(k_last),
        ]
        last = advance_loop_nest(m, step, [
            (k_last, [k.eq(0)], [k.eq(k + 1)]),
            (mb == command.m_blocks - 1,
             [mb.eq(0), a_block.eq(command.a_base), acc_tile.eq(acc_tile + self.rows)],
             [mb.eq(mb + 1), a_block.eq(a_block + command.k), acc_tile.eq(acc_tile + self.rows)]),
            (nb == command.n_blocks - 1, [], [nb.eq(nb + 1), w_block.eq(w_block + command.k)]),
        ])
        payload = self.command.payload
        self._start(m, [k.eq(0), mb.eq(0), nb.eq(0), a_block.eq(payload.a_base),
                        w_block.eq(payload.w_base), acc_tile.eq(payload.acc_base)])
        return last, ("m_blocks", "k", "n_blocks")

    def _weight_stationary(self, m, command, beat, step):
        sp, acc = self.scratchpad_addr_width, self.accumulator_addr_width
        tile_beat = Signal(max(acc + 1, self.rows.bit_length()) + 1)   # R weight beats, then M activation beats
        kb = Signal(sp + 1)
        nb = Signal(sp + 1)
        w_tile = Signal(sp)       # w_base + (nb*KB + kb)*R
        a_chunk = Signal(sp)      # a_base + kb*M
        acc_block = Signal(acc)   # acc_base + nb*M
        load_weight = tile_beat < self.rows
        row = tile_beat - self.rows
        tile_last = tile_beat == command.m + (self.rows - 1)
        m.d.comb += [
            beat.load_weight.eq(load_weight),
            beat.w_addr.eq(Mux(load_weight, w_tile + tile_beat, 0)),
            beat.a_addr.eq(Mux(load_weight, 0, a_chunk + row)),
            beat.acc_addr.eq(Mux(load_weight, 0, acc_block + row)),
            beat.accumulate.eq(~load_weight & (kb != 0)),
            beat.first.eq(tile_beat == 0),
            beat.last.eq(tile_last),
        ]
        last = advance_loop_nest(m, step, [
            (tile_last, [tile_beat.eq(0), w_tile.eq(w_tile + self.rows)],
             [tile_beat.eq(tile_beat + 1)]),
            (kb == command.k_blocks - 1, [kb.eq(0), a_chunk.eq(command.a_base)],
             [kb.eq(kb + 1), a_chunk.eq(a_chunk + command.m)]),
            (nb == command.n_blocks - 1, [], [nb.eq(nb + 1), acc_block.eq(acc_block + command.m)]),
        ])
        payload = self.command.payload
        self._start(m, [tile_beat.eq(0), kb.eq(0), nb.eq(0), w_tile.eq(payload.w_base),
                        a_chunk.eq(payload.a_base), acc_block.eq(payload.acc_base)])
        return last, ("m", "k_blocks", "n_blocks")
