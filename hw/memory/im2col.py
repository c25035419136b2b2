"""On-chip im2col: scratchpad row addresses of every convolution window, with padding flags.

The host never expands im2col. An NHWC activation of H x W pixels and Cin channels sits in the
scratchpad as ``CB = ceil(Cin / row_bytes)`` consecutive rows per pixel, pixels in raster order::

    row  base + (h*W + w)*CB + cb  =  x[h, w, cb*row_bytes : (cb+1)*row_bytes]  (zero-filled tail)

For a KH x KW kernel with strides (sh, sw) and padding (top, bottom, left, right), each beat on
`beats` names one row of one window: ``addr`` of input pixel (ho*sh - top + kh, wo*sw - left + kw)
chunk cb, or ``pad=1`` when that pixel lies in the padding (the data path substitutes a row of the
input zero point; ``addr`` is then 0). Concatenating the rows of one output pixel in (kh, kw, cb)
order gives its im2col row (``sim.reference.im2col`` with channels padded to CB*row_bytes).

Two loop orders, fixed at elaboration::

    pixel_major   for ho: for wo: for kh: for kw: for cb     (one im2col row after another)
    chunk_major   for kh: for kw: for cb: for ho: for wo     (one K-chunk of every pixel: the
                                                             weight-stationary feed order)

``group_last`` marks the last beat of the inner group (the last chunk of a pixel, or the last pixel
of a chunk), ``end`` the last beat of the command. The output size needs no division: a loop over
output rows ends when the next window would leave the padded input.

Timing: after a command is accepted a setup phase forms the strides by repeated addition
(``W*CB``, ``sw*CB``, ``sh*W*CB``, the padding offset) in ``max(CB, sw, left) + max(sh, top) + 2``
cycles; then one beat per cycle while `beats.ready` is high, with no bubble at any loop boundary.
A command whose window does not fit the padded input, or with a zero field, emits nothing.
"""

import enum

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._loops import advance_loop_nest
from ._parameters import check_choice, check_int, check_power_of_two

__all__ = ["Im2colAddressGenerator", "LOOP_ORDERS"]

LOOP_ORDERS = ("pixel_major", "chunk_major")


class _State(enum.Enum):
    IDLE = 0
    SETUP_COLUMNS = 1
    SETUP_ROWS = 2
    RUN = 3


class Im2colAddressGenerator(wiring.Component):
    """Convolution-window address generator over an NHWC activation in the scratchpad.

    Parameters (keyword-only)
    -------------------------
    scratchpad_rows : int
        Scratchpad depth, a power of two >= 2 (sets the address width; addresses wrap).
    max_dimension : int
        Largest H and W, 1..65535.
    max_channel_blocks : int
        Largest CB = ceil(Cin / row_bytes), 1..4096.
    max_kernel : int
        Largest KH and KW, 1..31.
    max_stride : int
        Largest stride, 1..15.
    max_padding : int
        Largest padding on any side, 0..max_kernel.
    order : str
        ``"pixel_major"`` or ``"chunk_major"``.

    Members
    -------
    command : In(stream.Signature(command_layout))   (build it with `make_command`)
        {base, height, width, channel_blocks, kernel_h, kernel_w, stride_h, stride_w,
         pad_top, pad_bottom, pad_left, pad_right}
    beats : Out(stream.Signature({addr, pad, group_last, end}))
    """

    def __init__(self, *, scratchpad_rows, max_dimension=1024, max_channel_blocks=64,
                 max_kernel=7, max_stride=4, max_padding=3, order="pixel_major"):
        owner = "Im2colAddressGenerator"
        check_power_of_two(owner, "scratchpad_rows", scratchpad_rows, 2)
        self.max_dimension = check_int(owner, "max_dimension", max_dimension, 1, 65535)
        self.max_channel_blocks = check_int(owner, "max_channel_blocks", max_channel_blocks,
                                            1, 4096)
        self.max_kernel = check_int(owner, "max_kernel", max_kernel, 1, 31)
        self.max_stride = check_int(owner, "max_stride", max_stride, 1, 15)
        self.max_padding = check_int(owner, "max_padding", max_padding, 0, max_kernel)
        self.order = check_choice(owner, "order", order, LOOP_ORDERS)
        self.addr_width = (scratchpad_rows - 1).bit_length()
        dimension_bits = max_dimension.bit_length()
        kernel_bits = max_kernel.bit_length()
        padding_bits = max(1, max_padding.bit_length())
        self.command_layout = data.StructLayout({
            "base": self.addr_width,
            "height": dimension_bits,
            "width": dimension_bits,
            "channel_blocks": max_channel_blocks.bit_length(),
            "kernel_h": kernel_bits,
            "kernel_w": kernel_bits,
            "stride_h": max_stride.bit_length(),
            "stride_w": max_stride.bit_length(),
            "pad_top": padding_bits,
            "pad_bottom": padding_bits,
            "pad_left": padding_bits,
            "pad_right": padding_bits,
        })
        self.beat_layout = data.StructLayout({
            "addr": self.addr_width, "pad": 1, "group_last": 1, "end": 1})
        super().__init__({
            "command": In(stream.Signature(self.command_layout)),
            "beats": Out(stream.Signature(self.beat_layout)),
        })

    def make_command(self, *, base, height, width, channel_blocks, kernel, stride=1, padding=0):
        """A checked command dict. `kernel`/`stride` are an int or (h, w); `padding` an int,
        (ph, pw) or (top, bottom, left, right), as in `sim.reference.im2col`."""
        kernel_h, kernel_w = (kernel, kernel) if isinstance(kernel, int) else kernel
        stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
        if isinstance(padding, int):
            padding = (padding,) * 4
        elif len(padding) == 2:
            padding = (padding[0], padding[0], padding[1], padding[1])
        top, bottom, left, right = padding
        owner = "Im2colAddressGenerator command"
        check_int(owner, "base", base, 0, (1 << self.addr_width) - 1)
        for name, value in (("height", height), ("width", width)):
            check_int(owner, name, value, 1, self.max_dimension)
        check_int(owner, "channel_blocks", channel_blocks, 1, self.max_channel_blocks)
        for name, value in (("kernel_h", kernel_h), ("kernel_w", kernel_w)):
            check_int(owner, name, value, 1, self.max_kernel)
        for name, value in (("stride_h", stride_h), ("stride_w", stride_w)):
            check_int(owner, name, value, 1, self.max_stride)
        for name, value in zip(("pad_top", "pad_bottom", "pad_left", "pad_right"), padding):
            check_int(owner, name, value, 0, self.max_padding)
        if kernel_h > height + top + bottom or kernel_w > width + left + right:
            raise ValueError(f"{owner}: a {kernel_h}x{kernel_w} kernel does not fit a "
                             f"{height}x{width} input padded by {padding}")
        return dict(base=base, height=height, width=width, channel_blocks=channel_blocks,
                    kernel_h=kernel_h, kernel_w=kernel_w, stride_h=stride_h, stride_w=stride_w,
                    pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right)

    def elaborate(self, platform):
        m = Module()
        aw = self.addr_width
        command = Signal(self.command_layout)
        state = Signal(_State)
        beat = self.beats.payload
        step = self.beats.valid & self.beats.ready

        # Strides and offsets in scratchpad rows, formed once per command by repeated addition
        # (no multiplier: the DSPs belong to the array).
        line_rows = Signal(aw)        # W*CB
        column_step = Signal(aw)      # sw*CB
        row_step = Signal(aw)         # sh*W*CB
        origin = Signal(aw)           # base - top*W*CB - left*CB
        products = [  # (product, addend, command field counting the additions, phase)
            (line_rows, command.width, "channel_blocks", _State.SETUP_COLUMNS),
            (column_step, command.channel_blocks, "stride_w", _State.SETUP_COLUMNS),
            (origin, -command.channel_blocks, "pad_left", _State.SETUP_COLUMNS),
            (row_step, line_rows, "stride_h", _State.SETUP_ROWS),
            (origin, -line_rows, "pad_top", _State.SETUP_ROWS),
        ]
        remaining = [Signal.like(command[field], name=f"remaining_{field}")
                     for _, _, field, _ in products]

        # Loop counters; each level keeps its share of the address as a running sum.
        chunk = Signal(range(self.max_channel_blocks))
        kernel_col = Signal(range(self.max_kernel))
        kernel_row = Signal(range(self.max_kernel))
        kernel_col_rows = Signal(aw)   # kernel_col*CB
        kernel_row_rows = Signal(aw)   # kernel_row*W*CB
        dimension_bits = len(command.height)
        window_col = Signal(signed(dimension_bits + 2))   # wo*sw - left
        window_row = Signal(signed(dimension_bits + 2))   # ho*sh - top
        window_col_rows = Signal(aw)                      # wo*sw*CB
        window_row_rows = Signal(aw)                      # ho*sh*W*CB

        levels = {
            "chunk": (chunk == command.channel_blocks - 1, [chunk.eq(0)], [chunk.eq(chunk + 1)]),
            "kernel_col": (kernel_col == command.kernel_w - 1,
                           [kernel_col.eq(0), kernel_col_rows.eq(0)],
                           [kernel_col.eq(kernel_col + 1),
                            kernel_col_rows.eq(kernel_col_rows + command.channel_blocks)]),
            "kernel_row": (kernel_row == command.kernel_h - 1,
                           [kernel_row.eq(0), kernel_row_rows.eq(0)],
                           [kernel_row.eq(kernel_row + 1),
                            kernel_row_rows.eq(kernel_row_rows + line_rows)]),
            "window_col": (window_col + command.stride_w + command.kernel_w >
                           command.width + command.pad_right,
                           [window_col.eq(-command.pad_left), window_col_rows.eq(0)],
                           [window_col.eq(window_col + command.stride_w),
                            window_col_rows.eq(window_col_rows + column_step)]),
            "window_row": (window_row + command.stride_h + command.kernel_h >
                           command.height + command.pad_bottom,
                           [window_row.eq(-command.pad_top), window_row_rows.eq(0)],
                           [window_row.eq(window_row + command.stride_h),
                            window_row_rows.eq(window_row_rows + row_step)]),
        }
        if self.order == "pixel_major":
            inner, outer = ("chunk", "kernel_col", "kernel_row"), ("window_col", "window_row")
        else:
            inner, outer = ("window_col", "window_row"), ("chunk", "kernel_col", "kernel_row")
        nest = [levels[name] for name in inner + outer]

        input_row = window_row + kernel_row
        input_col = window_col + kernel_col
        pad = (input_row < 0) | (input_row >= command.height) | \
              (input_col < 0) | (input_col >= command.width)
        addr = origin + window_row_rows + window_col_rows + kernel_row_rows + kernel_col_rows + chunk
        group_last = Cat(*(levels[name][0] for name in inner)).all()
        last = advance_loop_nest(m, step, nest)
        m.d.comb += [
            self.beats.valid.eq(state == _State.RUN),
            beat.pad.eq(pad),
            beat.addr.eq(Mux(pad, 0, addr)),
            beat.group_last.eq(group_last),
            beat.end.eq(last),
            self.command.ready.eq(state == _State.IDLE),
        ]

        with m.Switch(state):
            with m.Case(_State.IDLE):
                payload = self.command.payload
                fits = (payload.kernel_h <= payload.height + payload.pad_top + payload.pad_bottom) & \
                       (payload.kernel_w <= payload.width + payload.pad_left + payload.pad_right)
                nonzero = ~Cat(payload.height == 0, payload.width == 0,
                               payload.channel_blocks == 0, payload.kernel_h == 0,
                               payload.kernel_w == 0, payload.stride_h == 0,
                               payload.stride_w == 0).any()
                with m.If(self.command.valid & fits & nonzero):
                    m.d.sync += [
                        command.eq(payload),
                        line_rows.eq(0), column_step.eq(0), row_step.eq(0),
                        origin.eq(payload.base),
                        state.eq(_State.SETUP_COLUMNS),
                    ]
                    m.d.sync += [counter.eq(payload[field])
                                 for counter, (_, _, field, _) in zip(remaining, products)]
            for phase, next_state in ((_State.SETUP_COLUMNS, _State.SETUP_ROWS),
                                      (_State.SETUP_ROWS, _State.RUN)):
                with m.Case(phase):
                    busy = []
                    for (product, addend, _, product_phase), counter in zip(products, remaining):
                        if product_phase != phase:
                            continue
                        busy.append(counter != 0)
                        with m.If(counter != 0):
                            m.d.sync += [product.eq(product + addend), counter.eq(counter - 1)]
                    with m.If(~Cat(*busy).any()):
                        m.d.sync += state.eq(next_state)
                        if next_state == _State.RUN:
                            m.d.sync += [statement for _, restart, _ in nest
                                         for statement in restart]
            with m.Case(_State.RUN):
                with m.If(step & last):
                    m.d.sync += state.eq(_State.IDLE)
        return m
