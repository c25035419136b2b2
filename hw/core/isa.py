"""The core's command set, defined once for the hardware decoder, the tests and the host driver.

A command is `COMMAND_WORDS` 32-bit words (word 0 first, little-endian bit order: bit ``i`` of
the command is bit ``i % 32`` of word ``i // 32``). Its layout is `COMMAND_LAYOUT`: a 4-bit
`Opcode` and an `args` union whose view is chosen by the opcode.

=============  ================================================================================
Opcode         What the core does
=============  ================================================================================
GEMM           ``acc[acc_base + nb*m + i] (+)= A[i, :] @ W[:, nb*C : nb*C + C]`` for every row
               ``i < m`` and column block ``nb < n_blocks``. Row ``i`` of A is ``k_blocks``
               scratchpad rows ``a_base + i*k_blocks + kb`` (R lanes each, ``k_last`` lanes of
               the last one are real); W tile ``(nb, kb)`` is the R rows
               ``w_base + (nb*k_blocks + kb)*R + r``. One command covers a whole layer (or as
               much of it as the accumulator half holds); the core loops over the tiles.
CONV           The same as a GEMM whose A rows are generated on chip (im2col in the address
               generator): output pixel ``(ho, wo)`` for ``ho_start <= ho < ho_start+ho_count``,
               ``wo < out_w`` reads, for each ``(kh, kw, cb)``, input pixel
               ``(ho*stride - pad_top + kh, wo*stride - pad_left + kw)`` at scratchpad row
               ``a_base + (h*in_w + w)*cin_blocks + cb``, or a row of ``zero_point`` when the
               pixel is outside the image (padding). Bottom/right padding is implied by
               ``out_w`` and the output rows asked for. W tile ``(nb, (kh*KW + kw)*cin_blocks
               + cb)`` holds ``W[kh, kw, cb*R : cb*R+R, nb*C : nb*C+C]`` (HWIO, zero-padded).
               Accumulator row of pixel ``p = (ho-ho_start)*out_w + wo`` in block ``nb``:
               ``acc_base + nb*ho_count*out_w + p``.
REQUANT_STORE  For ``nb < n_blocks``, rows ``i < height*width``: ``acc_base + nb*height*width
               + i`` -> + bias, TFLite requant (``rounding``: 0 double / CONV_2D, 1 single /
               FULLY_CONNECTED), + zero point, clamp -> (``pool``: 2x2 max-pool over the
               ``height x width`` raster, odd edges dropped) -> scratchpad row
               ``out_base + nb + j*out_stride`` (j = output pixel). Channel ``c`` of block
               ``nb`` uses parameter entry ``param_base + nb*C + c``. With ``out_stride`` =
               the layer's column blocks this is exactly the activation layout the next
               GEMM/CONV reads.
BINARY         ``vectors`` input vectors of ``k`` bits, vector ``v`` beat ``j`` = the low
               ``binary_width`` bits of scratchpad row ``a_base + v*ceil(k/width) + j``;
               ``neuron_folds`` folds of ``binary_lanes`` neurons (``last_lanes`` real in the
               last), ``N = (neuron_folds-1)*lanes + last_lanes``. The layer's weights are the
               engine's weight rows from ``w_base`` (neuron fold ``f``, beat ``j`` at ``w_base
               + f*ceil(k/width) + j``), its thresholds the threshold rows from ``t_base``
               (fold ``f`` at ``t_base + f``), so several layers stay resident. Outputs, by
               flag (at least one): ``to_results``: fold ``f`` of vector ``v`` -> binary result
               row ``result_base + v*neuron_folds + f`` (int dots and threshold bits);
               ``to_scratchpad``: vector ``v``'s N threshold bits -> scratchpad rows
               ``out_base + v*out_stride + j``, ``j < ceil(N/width)``, bit ``i`` at bit ``i %
               width`` of row ``j = i // width``, zero above (``out_stride >= ceil(N/width)``;
               vector ``v`` owns ``out_stride`` rows) -- exactly the input a next BINARY with
               ``k = N`` reads, so binary layers chain on chip.
FENCE          Waits until every earlier command has finished (all units idle).
=============  ================================================================================

Loads and stores: VTA and Gemmini put LOAD/STORE (DMA) instructions in the same queue as
compute, because their buffers are filled from DRAM by the accelerator itself. This core has no
DRAM: the host link's bulk transfers write and read the scratchpad, accumulator and parameter
windows directly, so a "load" *is* a bulk write and a "store to host" *is* a bulk read. What the
queue still has to provide is ordering, and that is FENCE plus the completion counter: the host
pushes ``..., FENCE``, polls ``completed`` until it equals the number of commands pushed, and only
then reads results or overwrites inputs. REQUANT_STORE (accumulator -> scratchpad) and BINARY's
``to_scratchpad`` output (threshold bits -> scratchpad) are the on-chip stores, queued commands
because they must be ordered against compute.
"""

from amaranth.hdl import Shape
from amaranth.lib import data, enum

from hw.memory import ROW_ADDRESS_BITS

__all__ = ["Opcode", "ErrorCode", "COMMAND_LAYOUT", "COMMAND_WORDS", "ADDRESS_BITS",
           "encode", "decode"]

ADDRESS_BITS = ROW_ADDRESS_BITS     # scratchpad/accumulator/parameter row addresses


class Opcode(enum.Enum, shape=4):
    GEMM = 1
    CONV = 2
    REQUANT_STORE = 3
    BINARY = 4
    FENCE = 5


class ErrorCode(enum.Enum, shape=4):
    """Value of the ``error_code`` register (sticky until cleared, first error wins)."""
    NONE = 0
    UNKNOWN_OPCODE = 1
    SCRATCHPAD_RANGE = 2        # rows read or written past the scratchpad
    ACCUMULATOR_RANGE = 3       # rows past the accumulator half that holds acc_base
    PARAMETER_RANGE = 4         # requant parameter entries past the parameter memory
    BAD_SHAPE = 5               # a zero count, a lane count out of range, a too-long vector, ...
    # Reserved: earlier bitstreams answered GEMM/CONV with it when their core was built
    # output-stationary (without a compute unit). No core is built that way any more
    # (`hw.core.core.check_core_dataflow`), so none reports it; the number stays taken so that
    # a code never means two things across bitstreams.
    UNSUPPORTED = 6
    QUEUE_OVERFLOW = 7          # a command was pushed while the queue was full (it is dropped)
    RESULT_RANGE = 8            # binary result rows past the binary result memory
    BINARY_WEIGHT_RANGE = 9     # binary weight or threshold rows past the engine's memories


_GEMM = data.StructLayout({
    "a_base": ADDRESS_BITS, "w_base": ADDRESS_BITS, "acc_base": ADDRESS_BITS, "accumulate": 1,
    "m": 16, "k_blocks": 10, "k_last": 6, "n_blocks": 10, "n_last": 6,
})

_CONV = data.StructLayout({
    "a_base": ADDRESS_BITS, "w_base": ADDRESS_BITS, "acc_base": ADDRESS_BITS, "accumulate": 1,
    "in_h": 10, "in_w": 10, "cin_blocks": 8, "cin_last": 6,
    "kh": 4, "kw": 4, "stride": 3, "pad_top": 4, "pad_left": 4, "zero_point": 8,
    "out_w": 10, "ho_start": 10, "ho_count": 10, "n_blocks": 10, "n_last": 6,
})

_REQUANT_STORE = data.StructLayout({
    "acc_base": ADDRESS_BITS, "height": 10, "width": 10, "n_blocks": 10,
    "param_base": ADDRESS_BITS, "out_base": ADDRESS_BITS, "out_stride": ADDRESS_BITS,
    "rounding": 1, "zero_point": 8, "act_min": 8, "act_max": 8, "pool": 1,
})

_BINARY = data.StructLayout({
    "a_base": ADDRESS_BITS, "vectors": 16, "k": 16, "neuron_folds": 10, "last_lanes": 9,
    "w_base": ADDRESS_BITS, "t_base": ADDRESS_BITS, "result_base": ADDRESS_BITS,
    "out_base": ADDRESS_BITS, "out_stride": ADDRESS_BITS, "to_results": 1, "to_scratchpad": 1,
})

_ARGUMENTS = {Opcode.GEMM: "gemm", Opcode.CONV: "conv", Opcode.REQUANT_STORE: "store",
              Opcode.BINARY: "binary"}

_ARGS_LAYOUT = data.UnionLayout({"gemm": _GEMM, "conv": _CONV, "store": _REQUANT_STORE,
                                 "binary": _BINARY})

COMMAND_LAYOUT = data.StructLayout({"opcode": Opcode, "args": _ARGS_LAYOUT})
COMMAND_WORDS = -(-COMMAND_LAYOUT.size // 32)

_SIGNED_FIELDS = {"zero_point", "act_min", "act_max"}     # int8 values, two's complement


def encode(opcode, **fields):
    """The words of one command; `fields` are the opcode's arguments (all of them, by name).

    Raises ValueError for an unknown field, a missing one, or a value that does not fit."""
    opcode = Opcode(opcode)
    members = {}
    if opcode in _ARGUMENTS:
        layout = _ARGS_LAYOUT.members[_ARGUMENTS[opcode]]
        names = {name for name, _ in layout}
        if set(fields) != names:
            raise ValueError(f"{opcode.name} takes fields {sorted(names)}; missing "
                             f"{sorted(names - set(fields))}, "
                             f"unknown {sorted(set(fields) - names)}")
        for name, field in layout:
            value = int(fields[name])
            width = Shape.cast(field.shape).width
            low, high = ((-(1 << (width - 1)), (1 << (width - 1)) - 1) if name in _SIGNED_FIELDS
                         else (0, (1 << width) - 1))
            if not low <= value <= high:
                raise ValueError(f"{opcode.name} field {name} must be in {low}..{high}, "
                                 f"not {value}")
            members[name] = value & ((1 << width) - 1)
        args = {_ARGUMENTS[opcode]: members}
    elif fields:
        raise ValueError(f"{opcode.name} takes no fields, not {sorted(fields)}")
    else:
        args = {}
    bits = COMMAND_LAYOUT.const({"opcode": opcode, "args": args}).as_bits()
    return [(bits >> (32 * word)) & 0xFFFF_FFFF for word in range(COMMAND_WORDS)]


def decode(words):
    """(Opcode or the raw int for an unknown one, {field: int}) of a command's words."""
    if len(words) != COMMAND_WORDS:
        raise ValueError(f"A command is {COMMAND_WORDS} words, not {len(words)}")
    bits = sum((int(word) & 0xFFFF_FFFF) << (32 * index) for index, word in enumerate(words))
    raw_opcode = bits & 0xF
    try:
        opcode = Opcode(raw_opcode)
    except ValueError:
        return raw_opcode, {}
    if opcode not in _ARGUMENTS:
        return opcode, {}
    name = _ARGUMENTS[opcode]
    layout = _ARGS_LAYOUT.members[name]
    view = COMMAND_LAYOUT.from_bits(bits).args[name]
    fields = {}
    for field_name, field in layout:
        value = int(view[field_name])
        if field_name in _SIGNED_FIELDS and value >> (Shape.cast(field.shape).width - 1):
            value -= 1 << Shape.cast(field.shape).width
        fields[field_name] = value
    return opcode, fields


# Control window (word offsets) -------------------------------------------------------------------

COMMAND_REGISTER = 0        # words 0 .. COMMAND_WORDS-1; writing the last one pushes the command
REGISTERS = {
    "queue_free": 8,        # r: commands the queue can still take (push only when > 0)
    "completed": 9,         # r: commands retired since reset (finished, or skipped on error)
    "error_code": 10,       # r: ErrorCode of the first error since cleared; w: clear
    "error_index": 11,      # r: index (0 = first command taken since reset) of that command
    "error_opcode": 12,     # r: its raw opcode
    "busy": 13,             # r: bit 0 compute, 1 store, 2 binary, 3 dispatcher/queue not empty
    "counter_clear": 14,    # w: any value zeroes every performance counter
    "pushed": 15,           # r: commands the queue took since reset (an overflowing one is not
                            #    taken); the core is idle when completed == pushed
}
COUNTERS_BASE = 16          # each counter is 64 bits: low word at base + 2*i, high word next
COUNTERS = (
    "cycles",               # every clock cycle
    "active_cycles",        # a command queued, being dispatched or executing
    "compute_busy", "compute_stall",    # stall: busy, but no row entered the array this cycle
    "store_busy", "store_stall",        # stall: busy, but no accumulator row read or row written
    "binary_busy", "binary_stall",      # stall: busy, no activation beat (includes neuron folds
                                        # replayed from the engine's buffer)
    "dispatch_stall",       # the head command waits for a unit or the accumulator scoreboard
    "macs",                 # useful int8 MACs issued (real input lanes x real output columns)
    "binary_ops",           # useful binary ops, 2 per (input bit x real neuron)
    "commands_retired",
)
CONTROL_WORDS = 64
