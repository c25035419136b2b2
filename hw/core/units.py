"""The core's execution units: compute (array), store (requant + pool) and binary.

The store and binary units take one command at a time on their `command` stream and raise `busy`
from the cycle after the command is accepted until every effect of it has landed in memory (the
dispatcher in `hw.core.core` retires the command when `busy` falls). The compute unit takes the
next command while the current one still runs (its generator sets it up meanwhile) and marks
each command's last result row (``acc_write.end``): the core retires a GEMM/CONV when that row
has landed in its accumulator half; its `busy` (any command in flight) feeds the counters only.
Memory ports are plain address/enable/data signals because the core shares them with the host
link, which always wins: a unit sees a ``*_blocked`` input and waits (nothing is lost, see
`hw.core.read_stage`). A scratchpad reader offers ``*_request`` (it reads ``*_addr`` this cycle
unless ``*_blocked``), so the core's port arbitration starts from the readers' flip-flops, not
from its own ``blocked`` answers.

ComputeUnit (weight-stationary)::

    command -> ConvBeatGenerator -weights-----> ReadStage(port w) -> SkidBuffer
                                                         -> SystolicArray.weights
                                 \\-activations-> ReadStage(port a) -> SkidBuffer
                                                         -> SystolicArray.activations
             tag FIFO {acc_addr, accumulate, end}  <-- pushed per activation, popped per result
    SystolicArray.results + tag -> acc_write (AccumulatorMemory.write: write or accumulate)

    Weight rows and activation rows are read on two scratchpad ports (two banks), so the next
    tile's weights load into the array's shadow registers while the current tile computes: a
    tile costs max(M, R + C - 1 + R) cycles, i.e. one activation row per cycle when M is at least
    about 2R + C (the array's swap window, see `hw.systolic.array`). When both streams hit the
    same bank, activations win and weights wait (correct, slower). On an idle unit the first
    weight row is requested 3 cycles after the generator's set-up products, the first activation
    row 4; the next command's are set up meanwhile and follow the current command's rows with
    no bubble (see `hw.memory.im2col`); a row read takes 5 cycles through its `ReadStage` (the
    scratchpad's registered read port, then the response FIFO) and one through its `SkidBuffer`.

StoreUnit::

    set-up (from the cycle after the accept): M = height*width and the output row count on a
    shift-and-add multiplier (no DSP), 3 + ceil(bits(width)/2) cycles each (at most 19 cycles
    in all), then
    for each column block: load C requant parameters (C+2 cycles, after the previous block
    has left the pipeline), then M accumulator rows -> SkidBuffer (the drain requests)
    -> ReadStage(drain port) -> Requantizer
    -> SkidBuffer -> optional 2x2 max-pool (line FIFO of width/2 rows; compare register, then
    the maximum chosen into the write register) -> SkidBuffer -> scratchpad write
    Throughput: one row per max(2, ceil(C / requant_lanes)) cycles (the pool rests a cycle after
    each row it takes).

    The drain requests (address, valid), the line FIFO's write and read and the scratchpad write
    (address, row, enable) come straight from registers: a drain request reaches the port a
    cycle after it is made (its skid buffer), and a row is written four cycles after it leaves
    the requantizer (a skid buffer, the compare and write registers, a skid buffer).

BinaryUnit::

    layer descriptor (k, folds, weight and threshold bases) -> BinaryEngine; scratchpad rows
    a_base .. a_base + vectors*F - 1 (low `width` bits each, requested from an address
    register) -> SkidBuffer (the requests) -> ReadStage -> SkidBuffer -> activations;
    every result (one neuron fold) -> binary result memory (``to_results``)
                                   -> BitPacker -> scratchpad write port (``to_scratchpad``)
    Set-up (from the cycle after the accept): the beat count (vectors*F) and the last fold's op
    count on a shift-and-add multiplier (no DSP), 3 + ceil(bits/2) cycles each (at most 20
    cycles in all).
    Throughput: the engine's, one beat per cycle (2 * width * lanes binary ops per cycle); the
    packer takes a fold per cycle when `lanes` divides `width` (`hw.binary.packer`), else it
    holds the engine back to ``gcd(lanes, width)`` bits per cycle. The command is done when its
    last result is written and the packer has written its last row.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.binary.engine import BinaryEngine, dot_shape
from hw.binary.packer import BitPacker
from hw.pipeline import SkidBuffer, delayed
from hw.systolic.array import SystolicArray
from hw.systolic.requant import Requantizer

from hw.memory.accumulator import AccumulatorMemory
from hw.memory.im2col import ConvBeatGenerator, conv_command_layout
from hw.memory.scratchpad import Scratchpad
from hw.memory.sequential_multiplier import (SequentialMultiplier, multiply_by_constant,
                                             sequence_products)
from .isa import ADDRESS_BITS
from .read_stage import ReadStage

__all__ = ["ComputeUnit", "StoreUnit", "BinaryUnit", "store_command_layout",
           "binary_command_layout", "parameter_layout", "binary_result_layout"]


def store_command_layout(accumulator_rows):
    return data.StructLayout({
        "acc_base": (accumulator_rows - 1).bit_length(), "height": 10, "width": 10,
        "n_blocks": 10, "param_base": ADDRESS_BITS, "out_base": ADDRESS_BITS,
        "out_stride": ADDRESS_BITS, "rounding": 1, "zero_point": signed(8),
        "act_min": signed(8), "act_max": signed(8), "pool": 1,
    })


def binary_command_layout():
    return data.StructLayout({
        "a_base": ADDRESS_BITS, "vectors": 16, "k": 16, "neuron_folds": 10, "last_lanes": 9,
        "w_base": ADDRESS_BITS, "t_base": ADDRESS_BITS, "result_base": ADDRESS_BITS,
        "out_base": ADDRESS_BITS, "out_stride": ADDRESS_BITS, "to_results": 1,
        "to_scratchpad": 1,
    })


parameter_layout = data.StructLayout({"bias": signed(32), "multiplier": 31, "shift": 5})


def binary_result_layout(lanes, max_k):
    """A binary result memory row: the dots at their real width (`hw.binary.engine.dot_shape`;
    the bus window sign-extends them to 32 bits), then the threshold bits."""
    return data.StructLayout({"dots": data.ArrayLayout(dot_shape(max_k), lanes), "bits": lanes})


def _idle_state(m, command, cmd, accepted):
    """The IDLE state of a unit's FSM: take the next command into `cmd`, go to SETUP. `accepted`
    pulses in SETUP's first cycle: the set-up starts from it, so the command's `valid` (the
    dispatcher's decision) only reaches the state and that flip-flop. `cmd` follows the payload
    on every idle cycle, so its enable is the unit's own state (timing: the dispatcher's valid
    would fan out to every bit of it across the die); the unit uses `cmd` only outside IDLE,
    and is IDLE only with nothing of its last command in flight."""
    m.d.sync += accepted.eq(0)
    with m.State("IDLE"):
        m.d.comb += command.ready.eq(1)
        m.d.sync += cmd.eq(command.payload)
        with m.If(command.valid):
            m.d.sync += accepted.eq(1)
            m.next = "SETUP"


def _row_layout(row_bytes):
    return data.ArrayLayout(signed(8), row_bytes)


class ComputeUnit(wiring.Component):
    """Weight-stationary conv/GEMM layers (see module docstring).

    Parameters (keyword-only): rows, cols, multiplier, dsp_pes (`SystolicArray`), row_bytes,
    accumulator_rows.
    """

    def __init__(self, *, rows, cols, multiplier, dsp_pes, row_bytes, accumulator_rows):
        self.rows, self.cols, self.multiplier, self.dsp_pes = rows, cols, multiplier, dsp_pes
        self.row_bytes = row_bytes
        self.accumulator_rows = accumulator_rows
        acc_addr = (accumulator_rows - 1).bit_length()
        super().__init__({
            "command": In(stream.Signature(conv_command_layout())),
            "sp_addr": Out(ADDRESS_BITS), "sp_request": Out(1),
            "sp_data": In(_row_layout(row_bytes)), "sp_blocked": In(1),
            "weight_addr": Out(ADDRESS_BITS), "weight_request": Out(1),
            "weight_data": In(_row_layout(row_bytes)), "weight_blocked": In(1),
            "acc_write": Out(stream.Signature(data.StructLayout({
                "addr": acc_addr, "data": data.ArrayLayout(signed(32), cols), "accumulate": 1,
                "end": 1}))),
            "busy": Out(1),
            "issued": Out(1),       # a weight or activation row entered the array last cycle
            "macs": Out(11),        # useful MACs of the activation row that entered last cycle
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        m.submodules.generator = generator = ConvBeatGenerator(
            rows=rows, cols=cols, accumulator_rows=self.accumulator_rows)
        m.submodules.array = array = SystolicArray(rows=rows, cols=cols,
                                                   dataflow="weight_stationary",
                                                   multiplier=self.multiplier,
                                                   dsp_pes=self.dsp_pes)
        tag_layout = data.StructLayout({
            "pad": 1, "zero_point": signed(8), "acc_addr": generator.acc_addr_width,
            "accumulate": 1, "last": 1, "end": 1, "macs": 11})
        m.submodules.reader = reader = ReadStage(
            addr_width=ADDRESS_BITS, data_shape=_row_layout(self.row_bytes), tag_shape=tag_layout,
            port_latency=Scratchpad.READ_LATENCY)
        m.submodules.weight_reader = weight_reader = ReadStage(
            addr_width=ADDRESS_BITS, data_shape=_row_layout(self.row_bytes), tag_shape=0,
            port_latency=Scratchpad.READ_LATENCY)
        result_tag_layout = data.StructLayout({"acc_addr": generator.acc_addr_width,
                                               "accumulate": 1, "end": 1})
        m.submodules.result_tags = result_tags = SyncFIFOBuffered(
            width=result_tag_layout.size, depth=array.result_fifo_depth + 2)

        wiring.connect(m, wiring.flipped(self.command), generator.command)

        m.d.comb += [
            weight_reader.request.valid.eq(generator.weights.valid),
            generator.weights.ready.eq(weight_reader.request.ready),
            weight_reader.request.payload.addr.eq(generator.weights.payload),
            weight_reader.request.payload.read.eq(1),
            self.weight_addr.eq(weight_reader.port_addr),
            self.weight_request.eq(weight_reader.port_request),
            weight_reader.port_data.eq(self.weight_data),
            weight_reader.blocked.eq(self.weight_blocked),
        ]
        beat = generator.activations.payload
        m.d.comb += [
            reader.request.valid.eq(generator.activations.valid),
            generator.activations.ready.eq(reader.request.ready),
            reader.request.payload.addr.eq(beat.sp_addr),
            reader.request.payload.read.eq(~beat.pad),
            reader.request.payload.tag.pad.eq(beat.pad),
            reader.request.payload.tag.zero_point.eq(beat.zero_point),
            reader.request.payload.tag.acc_addr.eq(beat.acc_addr),
            reader.request.payload.tag.accumulate.eq(beat.accumulate),
            reader.request.payload.tag.last.eq(beat.last),
            reader.request.payload.tag.end.eq(beat.end),
            reader.request.payload.tag.macs.eq(beat.macs),
            self.sp_addr.eq(reader.port_addr),
            self.sp_request.eq(reader.port_request),
            reader.port_data.eq(self.sp_data),
            reader.blocked.eq(self.sp_blocked),
        ]

        # The activation rows reach the array through a skid buffer, so the array's ready (its
        # credit and weight checks, from the array's flip-flops) steers only that buffer, not
        # the reader's FIFO.
        m.submodules.activation_slice = activation_slice = SkidBuffer(
            reader.response.payload.shape())
        wiring.connect(m, reader.response, activation_slice.i)
        response = activation_slice.o
        # The weight rows too: the array's weight ready steers this buffer, not the reader's FIFO.
        m.submodules.weight_slice = weight_slice = SkidBuffer(
            weight_reader.response.payload.shape())
        wiring.connect(m, weight_reader.response, weight_slice.i)
        weight_response = weight_slice.o
        row = response.payload
        tag = row.tag
        weight_row = array.weights.payload
        activation = array.activations.payload
        for lane in range(cols):
            m.d.comb += weight_row[lane].eq(weight_response.payload.data[lane])
        for lane in range(rows):
            m.d.comb += activation.a[lane].eq(Mux(tag.pad, tag.zero_point, row.data[lane]))
        # A row's tag is pushed the cycle after the row enters the array, from registers (timing:
        # the write enable reaches every distributed-RAM slice of the tag FIFO). The FIFO never
        # fills: the array accepts a row only while it has reserved a result FIFO row for it
        # (`hw.systolic.array`), so at most result_fifo_depth tags wait, two fewer than it holds.
        sent = array.activations.valid & array.activations.ready
        pushed_tag = Signal(result_tag_layout)
        push_tag = Signal()
        with m.If(sent):
            m.d.sync += [pushed_tag.acc_addr.eq(tag.acc_addr),
                         pushed_tag.accumulate.eq(tag.accumulate), pushed_tag.end.eq(tag.end)]
        m.d.sync += push_tag.eq(sent)
        m.d.comb += [
            activation.last.eq(tag.last),
            array.weights.valid.eq(weight_response.valid),
            weight_response.ready.eq(array.weights.ready),
            array.activations.valid.eq(response.valid),
            response.ready.eq(array.activations.ready),
            result_tags.w_data.eq(pushed_tag),
            result_tags.w_en.eq(push_tag),
        ]

        popped_tag = Signal(result_tag_layout)
        m.d.comb += [
            popped_tag.eq(result_tags.r_data),
            self.acc_write.valid.eq(array.results.valid),
            self.acc_write.payload.addr.eq(popped_tag.acc_addr),
            self.acc_write.payload.accumulate.eq(popped_tag.accumulate),
            self.acc_write.payload.end.eq(popped_tag.end),
            self.acc_write.payload.data.eq(array.results.payload.data),
            array.results.ready.eq(self.acc_write.ready),
            result_tags.r_en.eq(array.results.valid & self.acc_write.ready),
        ]

        written = self.acc_write.valid & self.acc_write.ready
        outstanding = Signal(range(array.result_fifo_depth + 3))
        m.d.sync += outstanding.eq(outstanding + sent - written)
        # Registered (timing: the array's handshakes and the unit's state reach the counters from
        # flip-flops; the dispatcher retires a GEMM/CONV by its `end` row, not by `busy`). What
        # the unit still has to do is registered once (`pending`) and `busy` again, together with
        # an offered command: `busy` rises the cycle after a command is offered (the dispatcher
        # offers only what the unit takes at once), stays high while any command's work is in
        # the unit and falls two cycles after the last of it has left.
        pending = Signal()
        offered = Signal()
        m.d.sync += [
            pending.eq(~generator.command.ready | ~reader.idle | response.valid |
                       ~weight_reader.idle | weight_response.valid | (outstanding != 0)),
            offered.eq(self.command.valid),
            self.busy.eq(self.command.valid | offered | pending),
            self.issued.eq(sent | (array.weights.valid & array.weights.ready)),
            self.macs.eq(Mux(sent, tag.macs, 0)),
        ]
        return m


class StoreUnit(wiring.Component):
    """Accumulator -> bias + requant -> optional 2x2 max-pool -> scratchpad (module docstring).

    Parameters (keyword-only): cols, requant_lanes, row_bytes, accumulator_rows, max_pool_width.
    """

    def __init__(self, *, cols, requant_lanes, row_bytes, accumulator_rows, max_pool_width):
        self.cols, self.requant_lanes, self.row_bytes = cols, requant_lanes, row_bytes
        self.max_pool_width = max_pool_width
        self.acc_addr_width = (accumulator_rows - 1).bit_length()
        super().__init__({
            "command": In(stream.Signature(store_command_layout(accumulator_rows))),
            "drain_addr": Out(self.acc_addr_width), "drain_en": Out(1),
            "drain_data": In(data.ArrayLayout(signed(32), cols)), "drain_blocked": In(1),
            "param_addr": Out(ADDRESS_BITS), "param_data": In(parameter_layout),
            "sp_addr": Out(ADDRESS_BITS), "sp_data": Out(_row_layout(row_bytes)),
            "sp_en": Out(1), "sp_blocked": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols = self.cols
        cmd = Signal.like(self.command.payload)
        m.submodules.requant = requant = Requantizer(channels=cols, lanes=self.requant_lanes)
        m.submodules.reader = reader = ReadStage(
            addr_width=self.acc_addr_width, data_shape=data.ArrayLayout(signed(32), cols),
            tag_shape=1, port_latency=AccumulatorMemory.DRAIN_LATENCY)
        # The drain requests reach the reader through a skid buffer: the reader's accept (which
        # waits for the host's reads of the accumulator) steers only that buffer, and the drain
        # counters see its registered ready.
        m.submodules.drain_slice = drain_slice = SkidBuffer(reader.request.payload.shape())
        wiring.connect(m, drain_slice.o, reader.request)
        drain_request = drain_slice.i
        pool_row = data.ArrayLayout(signed(8), cols)
        m.submodules.line = line = SyncFIFOBuffered(width=pool_row.size,
                                                    depth=max(1, self.max_pool_width // 2))

        m.d.comb += [
            requant.settings.rounding.eq(cmd.rounding),
            requant.settings.zero_point.eq(cmd.zero_point),
            requant.settings.act_min.eq(cmd.act_min),
            requant.settings.act_max.eq(cmd.act_max),
            self.drain_addr.eq(reader.port_addr),
            self.drain_en.eq(reader.port_en),
            reader.port_data.eq(self.drain_data),
            reader.blocked.eq(self.drain_blocked),
            requant.i.valid.eq(reader.response.valid),
            requant.i.payload.data.eq(reader.response.payload.data),
            requant.i.payload.last.eq(reader.response.payload.tag),
            reader.response.ready.eq(requant.i.ready),
        ]

        # The block's sizes, formed once per command without a DSP block (they are all taken).
        m.submodules.multiplier = multiplier = SequentialMultiplier(
            a_width=10, b_width=10, product_width=20, bits_per_cycle=2)
        pixels = Signal(20)
        out_rows = Signal(20)
        accepted = Signal()
        _, setup_done = sequence_products(m, multiplier, [
            (pixels, cmd.height, cmd.width),
            (out_rows, Mux(cmd.pool, cmd.height >> 1, cmd.height),
             Mux(cmd.pool, cmd.width >> 1, cmd.width)),
        ], start=accepted)
        blocks_after = Signal(10)           # blocks after the current one
        at_last_block = Signal()            # blocks_after == 0, kept with it (timing: the
                                            # block registers' enable is then from flip-flops)
        block_acc = Signal(self.acc_addr_width)
        block_param = Signal(ADDRESS_BITS)
        block_out = Signal(ADDRESS_BITS)
        issued = Signal(20)
        drain_addr = Signal(self.acc_addr_width)
        draining = Signal()                 # registered: issued != pixels during DRAIN
        last_pixel = Signal(20)             # pixels - 1
        written = Signal(20)
        param_index = Signal(range(cols + 2))
        param_valid = Signal()
        param_channel = Signal(range(cols))

        # Output side: pool stage and scratchpad write, counting rows of the current block.
        # Position of the next row in the image as counts down to the last column and image row,
        # with the parity and "at the last one" of each kept as flags beside them (timing: the
        # flags are loaded from compares with a constant, no adder behind the row's handshake).
        columns_left = Signal(10)
        rows_left = Signal(10)
        last_column = Signal(10)            # width - 1, registered (timing)
        last_image_row = Signal(10)         # height - 1
        odd_column = Signal()
        odd_row = Signal()
        at_last_row = Signal()              # rows_left == 0
        at_last_column = Signal()           # columns_left == 0
        held = Signal(pool_row)
        out_addr = Signal(ADDRESS_BITS)
        # The requantizer's rows reach the pool through a skid buffer: its output FIFO's read
        # logic sees a ready from a flip-flop, and the pool's decisions start from flip-flops.
        m.submodules.requant_output = requant_output = SkidBuffer(requant.o.payload.shape())
        wiring.connect(m, requant.o, requant_output.i)
        row_in = requant_output.o
        # The pool takes a row when `accept`, a flip-flop, is high, and rests the cycle after
        # (timing: its ready and every decision behind the row's handshake start from
        # flip-flops, one LUT from `taken`; rows come at most one per ceil(C / lanes) cycles,
        # at least two unless every channel has its own lane). `accept` is computed for the
        # next cycle from the flags of the row that comes next: its write register is then
        # free (nothing was taken) and a line pair it saw ready is still there (only a pop
        # takes one, and the row after a pop does not pop).
        accept = Signal()
        taken = row_in.valid & accept
        incoming = row_in.payload.data
        pair = Signal(pool_row)
        line_row = Signal(pool_row)
        line_wins = Signal(cols)            # the line's pair beats both of this row's pixels
        m.d.comb += line_row.eq(line.r_data)
        for lane in range(cols):
            m.d.comb += [
                pair[lane].eq(Mux(held[lane] > incoming[lane], held[lane], incoming[lane])),
                # max(line, pair) with its compares side by side, not after pair's (timing).
                line_wins[lane].eq((line_row[lane] > held[lane]) &
                                   (line_row[lane] > incoming[lane])),
            ]
        emits = ~cmd.pool | (odd_column & odd_row)
        # From flip-flops only: they steer the row's ready and the line FIFO.
        pushes = cmd.pool & odd_column & ~odd_row & ~at_last_row
        pops = cmd.pool & odd_column & odd_row
        # A popping row has its pair at the line's head. The pop is registered (timing: the line
        # FIFO's read enable reaches its memory's read register, placed away from the pool, so it
        # comes from a flip-flop, not from `taken`): the head moves on the cycle after the row
        # is taken. The row after a pop is an even column, which does not pop, so the head it
        # still sees is never used. `line_ready`, "the head is the next pair", is a flip-flop
        # too, from the FIFO's state: after a pop, whether a second pair was in it.
        line_pop = Signal()
        line_ready = Signal()
        m.d.sync += [line_pop.eq(taken & pops),
                     line_ready.eq(Mux(line_pop, line.r_level >= 2, line.r_rdy))]
        pair_ready = ~pops | line_ready
        # The line FIFO is written from registers, the cycle after the row is taken (timing: its
        # write enable reaches every distributed-RAM slice of the line). It holds at most
        # width / 2 <= depth rows, one image row of pairs (the dispatcher refuses a pooled store
        # wider than max_pool_width), so it is never full when written and a pushing row does not
        # wait for it (timing: its fill level is not in the row's ready); a row that pops waits
        # until it sees the FIFO offer its pair (at most a few cycles, for rows only two pixels
        # wide at one pixel per cycle).
        line_push = Signal()
        line_push_row = Signal(pool_row)
        # The row is loaded every cycle (`line_push` qualifies it): no handshake enable on it.
        m.d.sync += [line_push.eq(taken & pushes), line_push_row.eq(pair)]
        # Compare register: a taken row's candidates and the compares between them, loaded
        # from flip-flops through one carry chain; the maximum is chosen from them a cycle
        # later (timing: compare and select in one cycle were the 85F build's critical path).
        # It is free again whenever the write register takes it, so a row taken in cycle t
        # moves on in cycle t + 1 unless the scratchpad port stalled the rows before it.
        compared_valid = Signal()
        compared = Signal(data.StructLayout({
            "pool": 1, "incoming": pool_row, "pair": pool_row, "line": pool_row,
            "line_wins": cols}))
        # Write register: the pooled row is registered beside the pool, then passes a skid
        # buffer to the scratchpad write port, which the host may take for a cycle
        # (`sp_blocked`). Timing: the port's stall steers only the skid buffer's registers,
        # placed by the scratchpad, and the pool's decisions see that buffer's ready, a
        # flip-flop, so they are not pulled towards the port.
        write_valid = Signal()
        write_row = Signal(pool_row)
        m.submodules.pool_output = pool_output = SkidBuffer(pool_row)
        write_free = ~write_valid | pool_output.i.ready
        compared_free = ~compared_valid | write_free
        m.d.sync += accept.eq(~taken & (~emits | (compared_free & pair_ready)))
        m.d.comb += [
            pool_output.i.valid.eq(write_valid),
            pool_output.i.payload.eq(write_row),
            pool_output.o.ready.eq(~self.sp_blocked),
            row_in.ready.eq(accept),
            self.sp_addr.eq(out_addr),
            self.sp_data.eq(pool_output.o.payload),
            self.sp_en.eq(pool_output.o.valid & ~self.sp_blocked),
            line.w_data.eq(line_push_row),
            line.w_en.eq(line_push),
            line.r_en.eq(line_pop),
        ]
        with m.If(compared_free):
            m.d.sync += [compared_valid.eq(taken & emits), compared.pool.eq(cmd.pool),
                         compared.incoming.eq(incoming), compared.pair.eq(pair),
                         compared.line.eq(line_row), compared.line_wins.eq(line_wins)]
        with m.If(write_free):
            m.d.sync += write_valid.eq(compared_valid)
            for lane in range(cols):
                quad = Mux(compared.line_wins[lane], compared.line[lane], compared.pair[lane])
                m.d.sync += write_row[lane].eq(Mux(compared.pool, quad,
                                                   compared.incoming[lane]))
        with m.If(self.sp_en):
            m.d.sync += [written.eq(written + 1), out_addr.eq(out_addr + cmd.out_stride)]
        # `held` follows the even column's row while it is offered (the offer holds until it is
        # taken): its enable is two flip-flops, not the row's handshake.
        with m.If(row_in.valid & ~odd_column):
            m.d.sync += held.eq(incoming)
        with m.If(taken):
            with m.If(at_last_column):
                m.d.sync += [columns_left.eq(last_column), odd_column.eq(0),
                             at_last_column.eq(last_column == 0),
                             rows_left.eq(rows_left - 1), odd_row.eq(~odd_row),
                             at_last_row.eq(rows_left == 1)]
            with m.Else():
                m.d.sync += [columns_left.eq(columns_left - 1), odd_column.eq(~odd_column),
                             at_last_column.eq(columns_left == 1)]

        registered_parameter = delayed(m, self.param_data, 1, name="parameter",
                                       reset_less=True)
        # Parameters of a block: channel i - 1 is read at param_index i, written at i + 2 (the
        # last one in DRAIN's first cycle, long before a drained row reaches the requantizer).
        m.d.comb += [
            self.param_addr.eq(block_param + param_index - 1),
            # The parameter memory's read data is registered before it reaches the requantizer's
            # lane memories (timing: block RAM clock-to-out), so the write is one cycle later.
            requant.params.valid.eq(delayed(m, param_valid, 1, name="param_valid")),
            requant.params.payload.channel.eq(delayed(m, param_channel, 1,
                                                      name="param_channel")),
            *(requant.params.payload[name].eq(registered_parameter[name])
              for name in parameter_layout.members),
        ]
        m.d.sync += param_valid.eq(0)

        # The requantizer's `busy` and the block's end are registered before the FSM reads them
        # (timing: the requantizer and the store's control are placed apart). A block has ended
        # when every row is requested and written and the requantizer is empty; `block_done`
        # is only computed in DRAIN, so a finished block's flag never reaches the next one.
        requant_busy = Signal()
        block_done = Signal()
        in_drain = Signal()
        m.d.sync += [requant_busy.eq(requant.busy),
                     block_done.eq(in_drain & ~draining & (written == out_rows) & ~requant.busy)]

        with m.FSM() as fsm:
            m.d.comb += in_drain.eq(fsm.ongoing("DRAIN"))
            _idle_state(m, self.command, cmd, accepted)
            with m.State("SETUP"):
                m.d.sync += [blocks_after.eq(cmd.n_blocks - 1),
                             at_last_block.eq(cmd.n_blocks == 1), block_acc.eq(cmd.acc_base),
                             block_param.eq(cmd.param_base), block_out.eq(cmd.out_base),
                             last_column.eq(cmd.width - 1), last_image_row.eq(cmd.height - 1)]
                with m.If(setup_done):
                    m.d.sync += last_pixel.eq(pixels - 1)
                    m.next = "PARAMETERS"
            with m.State("PARAMETERS"):
                with m.If(param_index == 0):
                    # The requantizer's parameters may only change while it is empty.
                    with m.If(~requant_busy):
                        m.d.sync += param_index.eq(1)
                with m.Elif(param_index <= cols):
                    m.d.sync += [param_valid.eq(1), param_channel.eq(param_index - 1),
                                 param_index.eq(param_index + 1)]
                with m.Else():
                    m.d.sync += [param_index.eq(0), issued.eq(0), drain_addr.eq(block_acc),
                                 draining.eq(pixels != 0), written.eq(0),
                                 columns_left.eq(last_column), odd_column.eq(0),
                                 at_last_column.eq(last_column == 0),
                                 rows_left.eq(last_image_row), odd_row.eq(0),
                                 at_last_row.eq(last_image_row == 0),
                                 out_addr.eq(block_out)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(drain_request.valid & drain_request.ready):
                    m.d.sync += [issued.eq(issued + 1), drain_addr.eq(drain_addr + 1),
                                 draining.eq(issued != last_pixel)]
                with m.If(block_done):
                    with m.If(at_last_block):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [blocks_after.eq(blocks_after - 1),
                                     at_last_block.eq(blocks_after == 1),
                                     block_acc.eq(block_acc + pixels),
                                     block_param.eq(block_param + cols),
                                     block_out.eq(block_out + 1)]
                        m.next = "PARAMETERS"
        # The drain requests come from registers (address, valid), not from an adder and a
        # comparator in front of the accumulator port.
        m.d.comb += [
            drain_request.valid.eq(draining),
            drain_request.payload.addr.eq(drain_addr),
            drain_request.payload.read.eq(1),
            drain_request.payload.tag.eq(issued == last_pixel),
            self.busy.eq(~self.command.ready),
        ]
        return m


class BinaryUnit(wiring.Component):
    """Binary (W1A1) layers on `BinaryEngine` (see module docstring).

    Parameters (keyword-only): width, lanes, max_k, max_n, row_bytes, result_rows.
    """

    def __init__(self, *, width, lanes, max_k, max_n, row_bytes, result_rows):
        if width > 8 * row_bytes:
            raise ValueError(f"binary_width must be <= 8 * row_bytes = {8 * row_bytes} (one "
                             f"scratchpad row per beat), not {width}")
        self.width, self.lanes, self.row_bytes = width, lanes, row_bytes
        self.engine = BinaryEngine(width=width, lanes=lanes, max_k=max_k, max_n=max_n)
        self.packer = BitPacker(lanes=lanes, width=width, row_bits=8 * row_bytes,
                                address_width=ADDRESS_BITS)
        self.result_addr_width = (result_rows - 1).bit_length()
        super().__init__({
            "command": In(stream.Signature(binary_command_layout())),
            "weights": In(stream.Signature(self.engine.weights.payload.shape())),
            "thresholds": In(stream.Signature(self.engine.thresholds.payload.shape())),
            "sp_addr": Out(ADDRESS_BITS), "sp_request": Out(1),
            "sp_data": In(_row_layout(row_bytes)), "sp_blocked": In(1),
            "sp_write_addr": Out(ADDRESS_BITS), "sp_write_data": Out(_row_layout(row_bytes)),
            "sp_write_en": Out(1), "sp_write_blocked": In(1),
            "result_addr": Out(self.result_addr_width), "result_en": Out(1),
            "result_data": Out(binary_result_layout(lanes, max_k)),
            "busy": Out(1),
            "beats": Out(1),        # an activation beat entered the engine last cycle
            "ops": Out(32),         # useful binary ops (2 per XNOR-popcount bit) of a result
        })

    def elaborate(self, platform):
        m = Module()
        engine, packer = self.engine, self.packer
        m.submodules.engine = engine
        m.submodules.packer = packer
        m.submodules.reader = reader = ReadStage(
            addr_width=ADDRESS_BITS, data_shape=_row_layout(self.row_bytes), tag_shape=1,
            port_latency=Scratchpad.READ_LATENCY)
        wiring.connect(m, wiring.flipped(self.weights), engine.weights)
        wiring.connect(m, wiring.flipped(self.thresholds), engine.thresholds)
        # Activation rows reach the engine through a skid buffer, so its issue logic steers
        # only that buffer, not the reader's FIFO.
        m.submodules.activation_slice = activation_slice = SkidBuffer(
            reader.response.payload.shape())
        wiring.connect(m, reader.response, activation_slice.i)
        response = activation_slice.o

        cmd = Signal(binary_command_layout())
        folds_log2 = self.width.bit_length() - 1
        folds = Signal(16)
        beats_total = Signal(32)
        fold = Signal(16)
        vectors_done = Signal(16)
        result_addr = Signal(self.result_addr_width)
        ops_full = Signal(32)
        ops_last = Signal(32)
        m.d.comb += folds.eq((cmd.k + (self.width - 1)) >> folds_log2)
        # Per-command sizes without a DSP block (the array and the requantizer take them all).
        m.submodules.multiplier = multiplier = SequentialMultiplier(
            a_width=17, b_width=16, product_width=32, bits_per_cycle=2)
        accepted = Signal()
        _, setup_done = sequence_products(m, multiplier, [
            (beats_total, cmd.vectors, folds),
            (ops_last, cmd.k << 1, cmd.last_lanes),
        ], start=accepted)
        # The activation requests come from registers (address, valid) and reach the reader
        # through a skid buffer: the reader's accept (which waits for the host's reads of the
        # scratchpad, decided at the port arbiter) steers only that buffer, and the request
        # counters see its registered ready.
        m.submodules.request_slice = request_slice = SkidBuffer(reader.request.payload.shape())
        wiring.connect(m, request_slice.o, reader.request)
        request = request_slice.i
        request_addr = Signal(ADDRESS_BITS)
        requesting = Signal()               # registered: a request is left during RUN
        # Requests left after the next one, minus one: its sign is the next `requesting`, a
        # flip-flop (timing: no 32-bit compare in front of the request's valid).
        requests_after = Signal(signed(33))

        m.d.comb += [
            self.sp_addr.eq(reader.port_addr),
            self.sp_request.eq(reader.port_request),
            reader.port_data.eq(self.sp_data),
            reader.blocked.eq(self.sp_blocked),
            request.valid.eq(requesting),
            request.payload.addr.eq(request_addr),
            request.payload.read.eq(1),
            request.payload.tag.eq(fold == folds - 1),
            engine.activations.valid.eq(response.valid),
            engine.activations.payload.bits.eq(response.payload.data.as_value()[:self.width]),
            engine.activations.payload.last.eq(response.payload.tag),
            response.ready.eq(engine.activations.ready),
            engine.layer.payload.k.eq(cmd.k),
            engine.layer.payload.neuron_folds.eq(cmd.neuron_folds),
            engine.layer.payload.weight_base.eq(cmd.w_base),
            engine.layer.payload.threshold_base.eq(cmd.t_base),
        ]
        with m.If(request.valid & request.ready):
            m.d.sync += [request_addr.eq(request_addr + 1),
                         requests_after.eq(requests_after - 1),
                         requesting.eq(~requests_after[-1]),
                         fold.eq(Mux(fold == folds - 1, 0, fold + 1))]

        # Registered (timing: the engine's handshake reaches the counters from a flip-flop).
        m.d.sync += self.beats.eq(engine.activations.valid & engine.activations.ready)
        # Every result goes to the result memory (always ready) and/or the packer, whose ready
        # is a flip-flop (its input skid buffer).
        result = engine.results.payload
        taken = engine.results.valid & engine.results.ready
        m.d.comb += [
            engine.results.ready.eq(~cmd.to_scratchpad | packer.folds.ready),
            self.result_addr.eq(result_addr),
            self.result_en.eq(taken & cmd.to_results),
            *(self.result_data.dots[lane].eq(result.dots[lane]) for lane in range(self.lanes)),
            self.result_data.bits.eq(result.bits),
            packer.folds.valid.eq(engine.results.valid & cmd.to_scratchpad),
            packer.folds.payload.bits.eq(result.bits),
            packer.folds.payload.last.eq(result.last),
            packer.start.eq(accepted),
            packer.base.eq(cmd.out_base),
            packer.stride.eq(cmd.out_stride),
            packer.last_lanes.eq(cmd.last_lanes),
            self.sp_write_addr.eq(packer.sp_addr),
            self.sp_write_data.eq(packer.sp_data),
            self.sp_write_en.eq(packer.sp_en),
            packer.sp_blocked.eq(self.sp_write_blocked),
        ]
        with m.If(taken):
            m.d.sync += result_addr.eq(result_addr + 1)
            with m.If(result.last):
                m.d.sync += vectors_done.eq(vectors_done + 1)
        m.d.comb += self.ops.eq(Mux(taken, Mux(result.last, ops_last, ops_full), 0))

        with m.FSM():
            _idle_state(m, self.command, cmd, accepted)
            with m.State("SETUP"):
                m.d.sync += [
                    ops_full.eq(multiply_by_constant(cmd.k, 2 * self.lanes)),
                    request_addr.eq(cmd.a_base), fold.eq(0), vectors_done.eq(0),
                    result_addr.eq(cmd.result_base),
                ]
                with m.If(setup_done):
                    m.next = "LAYER"
            with m.State("LAYER"):
                m.d.comb += engine.layer.valid.eq(1)
                with m.If(engine.layer.ready):
                    m.d.sync += [requesting.eq(beats_total != 0),
                                 requests_after.eq(beats_total - 2)]
                    m.next = "RUN"
            with m.State("RUN"):
                # Every result is in, so no request waits in the skid buffer either; the
                # packer has written its last row.
                with m.If((vectors_done == cmd.vectors) & reader.idle & packer.idle):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~self.command.ready)
        return m
