"""R x C INT8 systolic array with int32 accumulation, output- or weight-stationary.

`SystolicArray(rows=R, cols=C, dataflow=..., multiplier="dsp" | "lut" | "mixed")` is a grid of
`hw.systolic.pe.ProcessingElement`. Operand skew and result de-skew are inside: callers send and
receive plain, unskewed vectors. Every stream is `amaranth.lib.stream` (valid/ready/payload).

A mixed array (``multiplier="mixed", dsp_pes=D``) gives the first D PEs in column-major order a
MULT18X18D -- whole columns from column 0, then the top of the next -- and the others the fabric
multiplier of the same latency. Column-major, because the widest, most frequent hop of the array
is a partial sum (or, output-stationary, the drain chain) going down a column: at most one column
mixes DSP and fabric PEs, every other column is all on the DSP sites (placed there as a column,
`hw.systolic.floorplan`) or all in the fabric. Rows split the other way would make every column
cross from the DSP row to the fabric.

Output-stationary (``dataflow="output_stationary"``)
    ``operands``: ``{"a": ArrayLayout(signed(8), R), "w": ArrayLayout(signed(8), C), "last": 1}``.
    Beat k of a tile carries column k of A (``A[:, k]``) and row k of W (``W[k, :]``); ``last``
    ends the tile, whose result is ``C_tile = A[R x K] @ W[K x C]`` for any K >= 1.
    ``results``: ``{"data": ArrayLayout(signed(32), C), "last": 1}``: R beats per tile, row 0 of
    ``C_tile`` first, ``last`` on row R-1.

    Row i of A is delayed i cycles and column j of W j cycles, so PE(i, j) meets A[i, k] and
    W[k, j] together; the flags ride with A. Each PE copies its finished sum into a result register
    when the tile's ``last`` beat passes, and keeps accumulating the next tile at once. When
    PE(R-1, j) finishes, column j loads all R result registers in parallel into a shift chain that
    moves up one row per cycle; the top of each chain leaves through a de-skew delay of C-1-j
    cycles, so one whole row of C results comes out per cycle::

        operand beat   k0 k1 .. k(K-1)=last | next tile k0 k1 ...      (one beat per cycle)
        PE(i,j)        sees beat k at +i+j, result register holds the sum at +i+j+3
        column j       chain loaded at +R+j+2, row d leaves the top at +R+j+3+d
        results        row d of the tile at +R+C+2+d, then the output FIFO

    The drain of one tile overlaps the accumulation of the next. A column chain needs R cycles to
    drain, so a tile's ``last`` beat enters the array at least R cycles after the previous one
    (tiles shorter than R beats are throttled; output bandwidth is R rows per tile anyway). With
    K >= R the array accepts one beat per cycle indefinitely.

Weight-stationary (``dataflow="weight_stationary"``)
    ``weights``: ``ArrayLayout(signed(8), C)``: exactly R beats per tile, rows W[0, :] ..
    W[R-1, :] of the tile's ``W[Kt x C]`` (Kt <= R; the caller zero-pads to R rows).
    ``activations``: ``{"a": ArrayLayout(signed(8), R), "last": 1}``: one row of A per beat
    (zero-padded to R), ``last`` on the tile's final row.
    ``results``: ``{"data": ArrayLayout(signed(32), C), "last": 1}``: one row ``A_row @ W`` per
    activation beat, ``last`` copied from it. Summing across K chunks is the accumulator
    memory's job. A column's sum of R products needs only ``exact_sum_shape(R)`` (19 bits for
    R = 12), so partial sums, de-skew and output FIFO are that wide; `results` sign-extends.

    PE(i, j) holds W[i, j]; partial sums flow down, A flows right, each PE adds 1 cycle, so the
    bottom of column j emits the sum for an A row R+j+3 cycles after it was accepted (one launch
    register, so the handshake never reaches a PE), and the de-skew aligns the columns (row out
    at +R+C+2). Weights are double-buffered: ``weights`` beats shift into a shadow register
    chain (upward, so W[0] ends in row 0) while the active weights compute. The first activation
    of a tile (after the previous ``last``) waits until R weight rows are loaded and carries a
    swap flag through the skew, so PE(i, j) switches to the new weight exactly between the two
    tiles' rows. New weight beats are refused until that swap has crossed the whole array
    (R+C-1 cycles from the accept), then the next tile's weights load while this one computes.
    With M >= R + (R+C-1) rows per tile, loading is hidden entirely. An accepted weight beat is
    registered and shifts into the chain one cycle later, so the shift enable that reaches all
    R*C PEs comes straight from a flip-flop (the stream handshake never drives that fanout).

Back-pressure (both dataflows): a credit scheme, not a clock enable. The array itself never stalls
-- valid bits travel with the data through the skew, so input bubbles are harmless, and there is
no enable net fanning out to every DSP (better timing than a global clock enable). Every result
row lands in an output FIFO (`ResultFIFO`, ``result_fifo_depth`` rows, kept in distributed RAM at
every size: a block RAM's unregistered read data was the 16x16 SoC's critical path) that is deep
enough for all rows in flight; a counter reserves FIFO rows when their input is accepted (R rows per
output-stationary tile at its ``last`` beat, 1 per weight-stationary activation) and frees them as
``results`` beats are taken, and inputs are refused while the reservation would not fit. So no
result is lost or duplicated however long ``results`` stalls.

Weight-stationary ``weights.ready`` is a flip-flop and ``activations.ready`` the AND of two (the
registered credit of `hw.credit` and a registered "this row may enter" flag): each is registered
from the next cycle's state, so it is the same condition, in the same cycle, as one computed
from the current state -- no latency added -- but no compare sits in front of the skid buffers
the readies steer.

Output-stationary inputs pass through one register (``operands.ready`` depends only on internal
state, never on the payload); a registered ``last`` beat waits there for the throttle and the
credits.

Latency (cycles from the handshake of a tile's ``last`` operand beat / an activation beat to its
first result beat on ``results`` with an empty pipeline and a ready consumer): ``latency``
= R + C + 5 (output-stationary), R + C + 4 (weight-stationary). Throughput: one operand or
activation beat per cycle (R*C MACs per cycle) when tiles are long enough (see above).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.config import DATAFLOWS, dsp_pe_count
from hw.credit import credit_counter
from hw.pipeline import delayed
from hw.systolic.floorplan import dsp_sites
from hw.systolic.pe import (ACCUMULATOR_SHAPE, OPERAND_SHAPE, ProcessingElement, TileControl,
                            check_choice, exact_sum_shape)

__all__ = ["SystolicArray", "MAX_SIDE", "ResultFIFO"]

MAX_SIDE = 32


class ResultFIFO(SyncFIFOBuffered):
    """`SyncFIFOBuffered` whose memory yosys keeps in distributed RAM (``ram_style``): its read
    data comes from the FIFO's read register next to the LUT RAM, not from a DP16KD's output
    (5.6-5.8 ns clock-to-out on the 85F, then across the die). 40 rows of 321 bits (16x16):
    243 TRELLIS_DPR16X4 + 687 LUT4 + 340 FF against 9 DP16KD + 366 LUT4 + 669 FF (synth_ecp5)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.submodules.storage.attrs["ram_style"] = "distributed"
        return m


def result_fifo_geometry(*, rows, cols, dataflow):
    """``(depth, layout)`` of the array's result FIFO: deep enough for every row in flight, a row
    holding each column's sum (as wide as it can grow: ``exact_sum_shape(rows)`` weight-stationary,
    int32 output-stationary, where K is unbounded) and the row's `last` flag."""
    if dataflow == "output_stationary":
        # Room for every row in flight while tiles of K = R beats arrive back to back.
        depth, column_shape = 3 * rows + cols + 8, ACCUMULATOR_SHAPE
    else:
        depth, column_shape = rows + cols + 9, exact_sum_shape(rows)
    return depth, data.StructLayout({"data": data.ArrayLayout(column_shape, cols), "last": 1})


class SystolicArray(wiring.Component):
    """R x C INT8 systolic array (see module docstring for stream layouts, latency, throughput).

    Parameters (keyword-only)
    ----------
    rows, cols : int
        Array shape, 1..32 each.
    dataflow : str
        ``"output_stationary"`` or ``"weight_stationary"``.
    multiplier : str
        ``"dsp"`` (one MULT18X18D per PE), ``"lut"`` (product in fabric) or ``"mixed"``.
    dsp_pes : int or None
        With ``"mixed"``, the PEs on a MULT18X18D, 1..R*C-1 (see module docstring).
    """

    def __init__(self, *, rows, cols, dataflow, multiplier, dsp_pes=None):
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer in 1..{MAX_SIDE}, not {value!r}")
            if not 1 <= value <= MAX_SIDE:
                raise ValueError(f"{name} must be in 1..{MAX_SIDE}, not {value}")
        check_choice("dataflow", dataflow, DATAFLOWS)
        if not isinstance(multiplier, str):
            raise TypeError(f"multiplier must be a string, not {multiplier!r}")
        self.rows = rows
        self.cols = cols
        self.dataflow = dataflow
        self.multiplier = multiplier
        self.dsp_pes = dsp_pes
        self.dsp_count = dsp_pe_count(multiplier, dsp_pes, rows, cols)

        self.result_layout = data.StructLayout({
            "data": data.ArrayLayout(ACCUMULATOR_SHAPE, cols),
            "last": 1,
        })
        members = {"results": Out(stream.Signature(self.result_layout))}
        if dataflow == "output_stationary":
            self.operand_layout = data.StructLayout({
                "a": data.ArrayLayout(OPERAND_SHAPE, rows),
                "w": data.ArrayLayout(OPERAND_SHAPE, cols),
                "last": 1,
            })
            members["operands"] = In(stream.Signature(self.operand_layout))
            self._launch_delay = 0          # the operands' input register is the launch
            self.latency = rows + cols + 5
        else:
            self.weight_layout = data.ArrayLayout(OPERAND_SHAPE, cols)
            self.activation_layout = data.StructLayout({
                "a": data.ArrayLayout(OPERAND_SHAPE, rows),
                "last": 1,
            })
            members["weights"] = In(stream.Signature(self.weight_layout))
            members["activations"] = In(stream.Signature(self.activation_layout))
            # An accepted activation is registered before it enters the skew, so the stream
            # handshake never reaches the first PE's weight select or operand.
            self._launch_delay = 1
            self.latency = rows + cols + 4
        # Weight-stationary, a column sums at most R products: its partial sums, the de-skew and
        # the output FIFO are only as wide as that needs, and widened to int32 on `results`.
        self.result_fifo_depth, self._result_fifo_layout = result_fifo_geometry(
            rows=rows, cols=cols, dataflow=dataflow)
        self._column_shape = self._result_fifo_layout["data"].shape.elem_shape
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        # On a device with a DSP floorplan, neighbouring PEs sit on neighbouring DSP sites.
        on_dsp = {(i, j) for i in range(rows) for j in range(cols)
                  if self.pe_multiplier(i, j) == "dsp"}
        sites = (dsp_sites(getattr(platform, "device", None), rows, cols, on_dsp)
                 if platform is not None and on_dsp else None)
        # A weight-stationary PE in row i adds the (i + 1)-th product of its column.
        psum_shapes = [exact_sum_shape(i + 1) if self.dataflow == "weight_stationary"
                       else ACCUMULATOR_SHAPE for i in range(rows)]

        def processing_element(i, j):
            multiplier = self.pe_multiplier(i, j)
            site = sites.get((i, j)) if sites else None        # fabric PEs have none
            return ProcessingElement(dataflow=self.dataflow, multiplier=multiplier, dsp_site=site,
                                     psum_shape=psum_shapes[i])

        pes = [[processing_element(i, j) for j in range(cols)] for i in range(rows)]
        for i in range(rows):
            for j in range(cols):
                m.submodules[f"pe_{i}_{j}"] = pes[i][j]

        stored_layout = self._result_fifo_layout
        m.submodules.result_fifo = fifo = ResultFIFO(width=stored_layout.size,
                                                     depth=self.result_fifo_depth)
        stored = data.View(stored_layout, fifo.r_data)
        popped = Signal()
        m.d.comb += [
            self.results.payload.last.eq(stored.last),
            self.results.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.results.ready),
            popped.eq(self.results.valid & self.results.ready),
        ]

        launch = Signal(TileControl)
        if self.dataflow == "output_stationary":
            launch_a = self._elaborate_output_stationary_input(m, pes, launch, popped)
            column_values, out_control = self._elaborate_output_stationary_drain(m, pes)
        else:
            launch_a = self._elaborate_weight_stationary_input(m, pes, launch, popped)
            column_values = [pes[rows - 1][j].psum_out for j in range(cols)]
            out_control = delayed(m, pes[rows - 1][cols - 1].control, ProcessingElement.LATENCY,
                                  shape=TileControl, name="out_control", reset_less=False)

        # Skew: row i starts i cycles late (plus the weight-stationary launch register), then
        # hops one PE per cycle to the right.
        for i in range(rows):
            m.d.comb += [
                pes[i][0].a.eq(delayed(m, launch_a[i], self._launch_delay + i,
                                       shape=OPERAND_SHAPE, name=f"a_skew_{i}",
                                       reset_less=True)),
                pes[i][0].control.eq(delayed(m, launch, self._launch_delay + i,
                                             shape=TileControl, name=f"control_skew_{i}",
                                             reset_less=False)),
            ]
            for j in range(1, cols):
                m.d.comb += [pes[i][j].a.eq(pes[i][j - 1].a_out),
                             pes[i][j].control.eq(pes[i][j - 1].control_out)]

        # De-skew: column j leaves C-1-j cycles after column C-1 would, so the row lines up.
        aligned = [delayed(m, column_values[j], cols - 1 - j, shape=self._column_shape,
                           name=f"deskew_{j}", reset_less=True) for j in range(cols)]
        m.d.comb += [
            fifo.w_data.eq(Cat(*aligned, out_control.last)),
            fifo.w_en.eq(out_control.valid),
        ]
        for j in range(cols):
            m.d.comb += self.results.payload.data[j].eq(stored.data[j])     # sign-extended
        return m

    def pe_multiplier(self, row, col):
        """``"dsp"`` or ``"lut"``: the multiplier of PE(`row`, `col`) (see module docstring)."""
        return "dsp" if col * self.rows + row < self.dsp_count else "lut"

    def _elaborate_output_stationary_input(self, m, pes, launch, popped):
        rows, cols = self.rows, self.cols
        reserved = Signal(range(self.result_fifo_depth + 1))
        staged = Signal(self.operand_layout, reset_less=True)
        staged_valid = Signal()
        starting_tile = Signal(init=1)
        # Cycles until the drain chains can take another tile.
        cooldown = Signal(range(rows))
        last_allowed = Signal()
        advance = Signal()
        m.d.comb += [
            last_allowed.eq((cooldown == 0) &
                            (reserved + rows <= self.result_fifo_depth)),
            advance.eq(staged_valid & (~staged.last | last_allowed)),
            self.operands.ready.eq(~staged_valid | advance),
        ]
        with m.If(self.operands.valid & self.operands.ready):
            m.d.sync += [staged.eq(self.operands.payload), staged_valid.eq(1)]
        with m.Elif(advance):
            m.d.sync += staged_valid.eq(0)
        with m.If(advance):
            m.d.sync += starting_tile.eq(staged.last)
        with m.If(advance & staged.last):
            m.d.sync += cooldown.eq(rows - 1)
        with m.Elif(cooldown != 0):
            m.d.sync += cooldown.eq(cooldown - 1)

        m.d.comb += [launch.valid.eq(advance), launch.first.eq(starting_tile),
                     launch.last.eq(staged.last)]
        for j in range(cols):
            m.d.comb += pes[0][j].w.eq(delayed(m, staged.w[j], j, shape=OPERAND_SHAPE,
                                               name=f"w_skew_{j}", reset_less=True))
            for i in range(1, rows):
                m.d.comb += pes[i][j].w.eq(pes[i - 1][j].w_out)
        m.d.sync += reserved.eq(reserved + Mux(advance & staged.last, rows, 0) - popped)
        return staged.a

    def _elaborate_output_stationary_drain(self, m, pes):
        """Per column, a shift chain that takes the finished tile in parallel and moves it up."""
        rows, cols = self.rows, self.cols
        tops = []
        top_control = None
        for j in range(cols):
            values = [Signal(ACCUMULATOR_SHAPE, name=f"drain_{i}_{j}", reset_less=True)
                      for i in range(rows)]
            control = [Signal(TileControl, name=f"drain_control_{i}_{j}") for i in range(rows)]
            with m.If(pes[rows - 1][j].finished):
                for i in range(rows):
                    m.d.sync += [values[i].eq(pes[i][j].result),
                                 control[i].valid.eq(1), control[i].last.eq(i == rows - 1)]
            with m.Else():
                for i in range(rows - 1):
                    m.d.sync += [values[i].eq(values[i + 1]), control[i].eq(control[i + 1])]
                m.d.sync += control[rows - 1].valid.eq(0)
            tops.append(values[0])
            top_control = control[0]
        return tops, top_control

    def _elaborate_weight_stationary_input(self, m, pes, launch, popped):
        rows, cols = self.rows, self.cols
        taken = Signal(range(rows + 1))         # weight beats accepted for the next tile
        # Cycles until the last swap has read every shadow register.
        swap_window = max(self._launch_delay + rows + cols - 3, 0)
        swap_guard = Signal(range(swap_window + 1))
        expect_first = Signal(init=1)
        take = Signal()
        shift = Signal()                        # registered take: the enable of every shadow
        weight_row = Signal.like(self.weights.payload)
        accept = Signal()
        restart = Signal()                      # a tile's first activation: a new weight tile
        # The readies come from flip-flops (timing: each steers the enables of a skid buffer in
        # the compute unit, placed apart from this control logic; computed here from compares
        # of the counters, the 85F build's critical path was that compare, then the route to
        # the buffer). Each flag is registered from the state its condition will see in the
        # next cycle, so it equals that condition on the current state, cycle for cycle (no
        # added latency):
        #   weights.ready      = weights_ready = taken < rows and swap_guard == 0
        #   tile_ready         = not expect_first or loaded (every weight in the shadow
        #                        chain: all taken and the last one shifted, taken == rows and
        #                        not shift)
        #   activations.ready  = a result FIFO row is free (`credit_counter`'s registered
        #                        has_credit) and tile_ready: an AND of two flip-flops
        # The next state's flags are compares of the current state, selected by the handshakes.
        weights_ready = Signal(init=1)
        tile_ready = Signal()
        has_credit, _ = credit_counter(m, slots=self.result_fifo_depth, take=accept,
                                       give=popped, name="result_rows")
        m.d.comb += [
            self.weights.ready.eq(weights_ready),
            take.eq(self.weights.valid & self.weights.ready),
            self.activations.ready.eq(has_credit & tile_ready),
            accept.eq(self.activations.valid & self.activations.ready),
            restart.eq(accept & expect_first),
        ]
        # Loaded every cycle (`shift` qualifies it), so the handshake enables no register here.
        m.d.sync += [shift.eq(take), weight_row.eq(self.weights.payload)]
        # A tile's first activation is only accepted with every weight shifted in (so no take
        # in that cycle: `taken` is `rows`), so no shift is pending when the count restarts.
        with m.If(restart):
            m.d.sync += [taken.eq(0), swap_guard.eq(swap_window)]
        with m.Else():
            with m.If(take):
                m.d.sync += taken.eq(taken + 1)
            with m.If(swap_guard != 0):
                m.d.sync += swap_guard.eq(swap_guard - 1)
        with m.If(accept):
            m.d.sync += expect_first.eq(self.activations.payload.last)
        taken_below_rows = Mux(take, taken < rows - 1, taken < rows)
        m.d.sync += [
            weights_ready.eq(Mux(restart, swap_window == 0,
                                 taken_below_rows & (swap_guard <= 1))),
            # Next cycle: expect_first is the accepted row's `last` (else unchanged); loaded
            # needs every weight taken and none shifting: `taken` already `rows` (then no take
            # now, so no shift next) and no restart emptying the count.
            tile_ready.eq(Mux(accept, ~self.activations.payload.last, ~expect_first) |
                          (~restart & (taken == rows))),
        ]

        m.d.comb += [launch.valid.eq(accept), launch.first.eq(expect_first),
                     launch.last.eq(self.activations.payload.last)]
        for j in range(cols):
            m.d.comb += pes[rows - 1][j].shadow_in.eq(weight_row[j])
            for i in range(rows):
                m.d.comb += pes[i][j].shift.eq(shift)
                if i < rows - 1:
                    m.d.comb += pes[i][j].shadow_in.eq(pes[i + 1][j].shadow_out)
                if i > 0:
                    m.d.comb += pes[i][j].psum_in.eq(pes[i - 1][j].psum_out)
        return self.activations.payload.a
