"""Weight-stationary beat sequence of a convolution (a GEMM is a 1x1 convolution), im2col on chip.

`ConvBeatGenerator` takes one layer command and emits two address streams, one beat per cycle
each, with no bubble at row, tile or block boundaries. Tiles are ordered::

    for nb < n_blocks: for kh < KH: for kw < KW: for cb < cin_blocks:      (one array tile each)

`weights`: the R weight rows of every tile in that order, ``w_base + tile*R + r`` -- one
sequential run of ``n_blocks*KH*KW*cin_blocks*R`` rows. `activations`: for every tile, one beat
per output pixel (ho, wo), ``ho_start <= ho < ho_start + ho_count``, ``wo < out_w``::

    h = ho*stride - pad_top + kh, w = wo*stride - pad_left + kw
    pad = pixel outside the H x W image (the row is the input zero point, nothing is read)
    sp_addr = a_base + (h*in_w + w)*cin_blocks + cb
    acc_addr = acc_base + nb*M + p (p = pixel index), accumulate = not the first kernel chunk
    (or the command's `accumulate`), last = final pixel of the tile,
    end = the command's final beat (its last tile's last pixel), zero_point = the command's

The two streams are independent, so the next tile's weights are read (from another scratchpad
bank) and shifted into the array's shadow registers while the current tile computes; the array
itself holds a tile's first activation until its weights are in.

The activation layout (pixel-major, ``cin_blocks`` rows per pixel) is the one the store unit
writes, so layers chain without the host touching data; a GEMM's A is an ``M x 1`` image with
``cin_blocks = k_blocks``. Addresses advance by additions only; the set-up values (``stride*in_w*
cin_blocks``, ``ho_start*stride``, ``M = ho_count*out_w``, the weight row count, ...) are formed
once per command on one shift-and-add `SequentialMultiplier` (2 bits per cycle, no DSP block: the
array and the requantizer need them all). ``macs`` is the useful multiply-accumulates of a beat:
real input lanes of the chunk (``cin_last`` in the last one) times real output columns of the block.

`activations` leaves through an output register with a skid register beside it: the loop nest
advances whenever the skid register is empty, so the stream's ``ready`` steers only those two
registers (timing: it comes through the scratchpad port arbitration)::

    cycle          0      1      2      3      4
    loop state     b      b+1    b+2    b+3    b+3    (holds while the skid register is full)
    ready          -      1      0      1      1
    output reg     -      b      b+1    b+1    b+2
    skid register  -      -      -      b+2    -

Commands overlap: a command is set up while the one before still emits its beats. The set-up
stage (the command, its products) hands the command to the two streams as each comes free: the
weight run once the previous command's last weight row is out, the activation loop in the cycle
the previous command's last beat leaves the loop nest (the loop copies the command and the
products it steps by, so the set-up stage takes the next command at once). Back-to-back
commands whose set-up is done in time leave their beats with no bubble between them.

Latency: the set-up starts the cycle after the command is accepted and runs 11 products of
``3 + ceil(bits(b)/2)`` cycles each, ``b`` being the small operand (stride, in_w, out_w, kw,
cin_blocks, n_blocks, n_last, at most 10 bits); on an idle generator the first weight row comes
3 cycles after the last product, the first activation beat 4 cycles after it: about 54 cycles
after the command is accepted for a 3x3, stride 1 conv of a 16x16 image with a few blocks, at
most 80 cycles. Throughput: one beat per cycle on each stream while it is ready, across commands
too; the next command is accepted once both streams of this one have started.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import ROW_ADDRESS_BITS as ADDRESS_BITS
from .sequential_multiplier import SequentialMultiplier, multiply_by_constant, sequence_products

__all__ = ["ConvBeatGenerator", "conv_command_layout"]

_WIDE = signed(34)      # signed image addresses: padding positions go negative before the check
_SETUP_BITS = 34        # set-up products are exact up to here (addresses need only 16 bits)


def conv_command_layout():
    """Arguments of one layer (the fields of `hw.core.isa` CONV; GEMM maps onto them)."""
    return data.StructLayout({
        "a_base": ADDRESS_BITS, "w_base": ADDRESS_BITS, "acc_base": ADDRESS_BITS, "accumulate": 1,
        "in_h": 16, "in_w": 10, "cin_blocks": 10, "cin_last": 6,
        "kh": 4, "kw": 4, "stride": 3, "pad_top": 4, "pad_left": 4, "zero_point": 8,
        "out_w": 10, "ho_start": 10, "ho_count": 16, "n_blocks": 10, "n_last": 6,
    })


class ConvBeatGenerator(wiring.Component):
    """Beats of one weight-stationary conv/GEMM layer on an R x C array (see module docstring).

    Parameters (keyword-only): rows, cols (R, C, 1..32), accumulator_rows (power of two).

    Members
    -------
    command : In(stream.Signature(conv_command_layout()))
    weights : Out(stream.Signature(ADDRESS_BITS))     scratchpad row of the next weight row
    activations : Out(stream.Signature({pad, sp_addr, acc_addr, accumulate, last, end, macs,
                                          zero_point}))
    """

    def __init__(self, *, rows, cols, accumulator_rows):
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 32:
                raise ValueError(f"ConvBeatGenerator {name} must be an integer in 1..32, "
                                 f"not {value!r}")
        self.rows, self.cols = rows, cols
        self.acc_addr_width = (accumulator_rows - 1).bit_length()
        self.beat_layout = data.StructLayout({
            "pad": 1, "sp_addr": ADDRESS_BITS, "acc_addr": self.acc_addr_width,
            "accumulate": 1, "last": 1, "end": 1, "macs": 11, "zero_point": signed(8),
        })
        super().__init__({
            "command": In(stream.Signature(conv_command_layout())),
            "weights": Out(stream.Signature(ADDRESS_BITS)),
            "activations": Out(stream.Signature(self.beat_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        setup_cmd = Signal(conv_command_layout())  # the command in set-up (or set up, waiting)
        cmd = Signal(conv_command_layout())        # the command whose activation beats run
        beat = Signal(self.beat_layout)     # the loop state's beat, before the output stage

        # Set-up values, formed once per command on the shared shift-and-add multiplier.
        m.submodules.multiplier = multiplier = SequentialMultiplier(
            a_width=_SETUP_BITS, b_width=10, product_width=_SETUP_BITS, bits_per_cycle=2)
        ho_stride = Signal(14)              # ho_start*stride
        h_first = Signal(signed(18))        # ho_start*stride - pad_top
        cin_step = Signal(24)               # stride*cin_blocks: next output column
        image_row = Signal(28)              # in_w*cin_blocks: next input row
        pixels = Signal(26)                 # M = ho_count*out_w
        h_step = Signal(32)                 # stride*in_w*cin_blocks: next output row
        first_pixel = Signal(_WIDE)         # h_first*in_w: pixel index of (h_first, 0)
        # Row addresses are kept modulo 2**ADDRESS_BITS: only their low bits are read, and the
        # low bits of a sum depend only on the low bits of its terms (an address of a padding
        # position may wrap; it is never read).
        origin_first = Signal(ADDRESS_BITS) # (h_first, -pad_left), cb 0, less a_base
        kernel_taps = Signal(8)             # kh*kw
        kernel_rows = Signal(18)            # kh*kw*cin_blocks
        tiles = Signal(_SETUP_BITS)         # n_blocks*kh*kw*cin_blocks
        macs_both_last = Signal(11)         # cin_last*n_last (the last chunk of the last block)

        # What the activation loop uses while it runs, copied from the set-up when it starts (the
        # next command's set-up may then overwrite the originals).
        used_while_running = {"cin_step": cin_step, "image_row": image_row, "pixels": pixels,
                              "h_step": h_step, "macs_both_last": macs_both_last}
        held = {name: Signal.like(value, name=f"held_{name}")
                for name, value in used_while_running.items()}

        # Loop state.
        running = Signal()
        w_addr = Signal(ADDRESS_BITS)
        w_last = Signal(ADDRESS_BITS)       # w_base + every tile's R rows - 1
        weights_left = Signal()
        nb, kh, kw, cb = (Signal(10, name="nb"), Signal(4, name="kh"), Signal(4, name="kw"),
                          Signal(10, name="cb"))
        origin_first_held = Signal(ADDRESS_BITS)  # a_base + origin_first
        origin_kh = Signal(ADDRESS_BITS)    # (kh, kw=0, cb=0) tile origin
        origin_kw = Signal(ADDRESS_BITS)    # (kh, kw, cb=0)
        origin = Signal(ADDRESS_BITS)       # this tile: pixel (ho_start, wo=0)
        acc_block = Signal(self.acc_addr_width)
        wo = Signal(10)
        ho = Signal(16)
        pixel = Signal(26)
        h = Signal(signed(18))
        w = Signal(signed(14))
        tile_w_start = Signal(signed(14))   # w of the tile's first output column
        row_addr = Signal(ADDRESS_BITS)
        addr = Signal(ADDRESS_BITS)
        # Every loop counter has an "at the last index" flag beside it, updated with the counter
        # from registers only (the counter against its trip count - 2, or that value's sign), so
        # the loop decisions below start from flip-flops, not from subtractors and comparators.
        loops = {name: (counter, Signal(signed(len(counter) + 1), name=f"{name}_last_but_one"),
                        Signal(name=f"{name}_at_last"))
                 for name, counter in (("pixel", pixel), ("wo", wo), ("cb", cb), ("kw", kw),
                                       ("kh", kh), ("nb", nb))}

        def count(name):
            counter, last_but_one, at_last = loops[name]
            return [counter.eq(counter + 1), at_last.eq(counter == last_but_one)]

        def restart(name):
            counter, last_but_one, at_last = loops[name]
            return [counter.eq(0), at_last.eq(last_but_one < 0)]

        accept = self.command.valid & self.command.ready
        # The set-up starts the cycle after the accept: the command's `valid` (the dispatcher's
        # decision) then only reaches `setup_cmd`'s enable and this flip-flop.
        accepted = Signal()
        m.d.sync += accepted.eq(accept)
        c = setup_cmd
        setup_busy, setup_done = sequence_products(m, multiplier, [
            (ho_stride, c.ho_start, c.stride),
            (cin_step, c.cin_blocks, c.stride),
            (image_row, c.cin_blocks, c.in_w),
            (pixels, c.ho_count, c.out_w),
            (h_step, image_row, c.stride),
            # Signed a: products are modulo 2**_SETUP_BITS and addresses use only their low
            # ADDRESS_BITS, so the two's complement operand gives the right address.
            (first_pixel, ho_stride - c.pad_top, c.in_w),
            (origin_first, first_pixel - c.pad_left, c.cin_blocks),
            (kernel_taps, c.kh, c.kw),
            (kernel_rows, kernel_taps, c.cin_blocks),
            (tiles, kernel_rows, c.n_blocks),
            (macs_both_last, c.cin_last, c.n_last),
        ], start=accepted)
        # Output stage of `activations`: a register and a skid register. The loop state moves on
        # while the skid register is empty, so `activations.ready` (the reader's, behind the
        # port arbitration) only steers these two registers, never the loop nest.
        out_valid = Signal()
        skid_valid = Signal()
        skid = Signal(self.beat_layout)
        advance = running & ~skid_valid
        with m.If(~out_valid | self.activations.ready):
            with m.If(skid_valid):
                m.d.sync += [self.activations.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.activations.payload.eq(beat), out_valid.eq(advance)]
        with m.Elif(advance):
            m.d.sync += [skid.eq(beat), skid_valid.eq(1)]

        # A set-up command waits for each stream of the one before: its weight run starts once
        # the last weight row is out, its activation loop with (or after) the last beat of the
        # loop before, so back-to-back commands leave no bubble. Both from flip-flops.
        weights_waiting = Signal()
        activations_waiting = Signal()
        final_beat = Signal()               # the loop state is at the command's last beat
        start_weights = weights_waiting & ~weights_left
        start_activations = activations_waiting & (~running | (advance & final_beat))
        with m.If(setup_done):
            m.d.sync += [weights_waiting.eq(1), activations_waiting.eq(1)]
        with m.If(start_weights):
            m.d.sync += weights_waiting.eq(0)
        with m.If(start_activations):
            m.d.sync += activations_waiting.eq(0)
        m.d.comb += [
            self.activations.valid.eq(out_valid),
            self.command.ready.eq(~accepted & ~setup_busy & ~setup_done & ~weights_waiting &
                                  ~activations_waiting),
        ]
        with m.If(accept):
            m.d.sync += setup_cmd.eq(self.command.payload)

        tile_last, last_wo, last_cb, last_kw, last_kh, last_nb = (
            loops[name][2] for name in ("pixel", "wo", "cb", "kw", "kh", "nb"))
        first_chunk = (kh == 0) & (kw == 0) & (cb == 0)
        inside = (h >= 0) & (h < cmd.in_h) & (w >= 0) & (w < cmd.in_w)
        m.d.comb += [
            self.weights.valid.eq(weights_left),
            self.weights.payload.eq(w_addr),
            final_beat.eq(tile_last & last_cb & last_kw & last_kh & last_nb),
            beat.pad.eq(~inside),
            beat.sp_addr.eq(addr),
            beat.acc_addr.eq(acc_block + pixel),
            beat.accumulate.eq(cmd.accumulate | ~first_chunk),
            beat.last.eq(tile_last),
            beat.end.eq(final_beat),
            beat.zero_point.eq(cmd.zero_point),
            beat.macs.eq(Mux(last_cb,
                             Mux(last_nb, held["macs_both_last"],
                                 multiply_by_constant(cmd.cin_last, cols)),
                             Mux(last_nb, multiply_by_constant(cmd.n_last, rows), rows * cols))),
        ]

        with m.If(self.weights.valid & self.weights.ready):
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(w_addr == w_last):
                m.d.sync += weights_left.eq(0)
        with m.If(start_weights):
            m.d.sync += [w_last.eq(c.w_base + multiply_by_constant(tiles, rows) - 1),
                         w_addr.eq(c.w_base), weights_left.eq(1)]

        def start_tile(tile_origin, h_start, w_start):
            return [origin.eq(tile_origin), row_addr.eq(tile_origin), addr.eq(tile_origin),
                    h.eq(h_start), w.eq(w_start), tile_w_start.eq(w_start),
                    ho.eq(0), *restart("wo"), *restart("pixel")]

        with m.If(advance):
            with m.If(~tile_last):
                m.d.sync += count("pixel")
                with m.If(last_wo):
                    next_row = row_addr + held["h_step"]
                    m.d.sync += [*restart("wo"), ho.eq(ho + 1), h.eq(h + cmd.stride),
                                 w.eq(tile_w_start), row_addr.eq(next_row), addr.eq(next_row)]
                with m.Else():
                    m.d.sync += [*count("wo"), w.eq(w + cmd.stride),
                                 addr.eq(addr + held["cin_step"])]
            # The tile's last pixel: move the kernel-chunk loop nest (cb, kw, kh, nb) on.
            with m.Elif(~last_cb):
                m.d.sync += [*count("cb"),
                             *start_tile(origin + 1, h_first + kh, kw - cmd.pad_left)]
            with m.Elif(~last_kw):
                m.d.sync += [*restart("cb"), *count("kw"),
                             origin_kw.eq(origin_kw + cmd.cin_blocks),
                             *start_tile(origin_kw + cmd.cin_blocks, h_first + kh,
                                         kw + 1 - cmd.pad_left)]
            with m.Elif(~last_kh):
                next_kernel_row = origin_kh + held["image_row"]
                m.d.sync += [*restart("cb"), *restart("kw"), *count("kh"),
                             origin_kh.eq(next_kernel_row), origin_kw.eq(next_kernel_row),
                             *start_tile(next_kernel_row, h_first + kh + 1, -cmd.pad_left)]
            with m.Elif(~last_nb):
                m.d.sync += [*restart("cb"), *restart("kw"), *restart("kh"), *count("nb"),
                             acc_block.eq(acc_block + held["pixels"]),
                             origin_kh.eq(origin_first_held), origin_kw.eq(origin_first_held),
                             *start_tile(origin_first_held, h_first, -cmd.pad_left)]
            with m.Else():
                m.d.sync += running.eq(0)

        # After the loop nest, so a start in the cycle of the last beat overrides its `running`.
        with m.If(start_activations):
            first = Signal(ADDRESS_BITS)
            m.d.comb += first.eq(c.a_base + origin_first)
            m.d.sync += [
                cmd.eq(c), *(held[name].eq(value) for name, value in used_while_running.items()),
                h_first.eq(ho_stride - c.pad_top),
                origin_first_held.eq(first), origin_kh.eq(first), origin_kw.eq(first),
                origin.eq(first), row_addr.eq(first), addr.eq(first),
                h.eq(ho_stride - c.pad_top), w.eq(-c.pad_left),
                tile_w_start.eq(-c.pad_left),
                ho.eq(0), acc_block.eq(c.acc_base), running.eq(1),
            ]
            for name, count_value in (("pixel", pixels), ("wo", c.out_w),
                                      ("cb", c.cin_blocks), ("kw", c.kw), ("kh", c.kh),
                                      ("nb", c.n_blocks)):
                counter, last_but_one, at_last = loops[name]
                m.d.sync += [counter.eq(0), last_but_one.eq(count_value - 2),
                             at_last.eq(count_value == 1)]
        return m
