"""Host side of the core: tensors <-> scratchpad rows, and layers -> command lists.

The one tiling implementation: the compiler's lowerings (`sw.compiler.lowering`), the driver,
`tests/core_host.py` and `sim.bench core` use it. The layouts are the ones documented in
`hw.core.isa` (pixel-major activations, ``cin_blocks`` rows of R lanes per pixel; weight tiles
of R rows per (column block, kh, kw, cin block)). Every function takes explicit sizes, no config.
"""

from dataclasses import dataclass

import numpy as np

from sim import reference

from hw.binary.encoding import threshold_writes, weight_writes
from hw.core.isa import Opcode, encode

__all__ = ["activation_rows", "column_fold_shape", "fold_columns", "weight_rows", "rows_to_words",
           "words_to_rows", "output_from_rows", "parameter_words", "ConvLayer", "output_bands",
           "tile_cycles", "schedule_cycles", "schedule_tiles", "compute_command",
           "layer_commands", "accumulator_values",
           "binary_activation_rows", "binary_from_rows", "binary_weight_words",
           "binary_threshold_words",
           "binary_results"]


def _blocks(size, block):
    return -(-size // block)


def activation_rows(x, *, rows, row_bytes):
    """HWC int8 -> [H*W*ceil(C/rows), row_bytes] int8: pixel-major, R-lane chunks, zero-filled."""
    x = np.asarray(x, dtype=np.int8)
    height, width, channels = x.shape
    chunks = _blocks(channels, rows)
    out = np.zeros((height * width, chunks, row_bytes), np.int8)
    padded = np.zeros((height * width, chunks * rows), np.int8)
    padded[:, :channels] = x.reshape(height * width, channels)
    out[:, :, :rows] = padded.reshape(height * width, chunks, rows)
    return out.reshape(-1, row_bytes)


def column_fold_shape(shape, kw, pad_left, pad_right):
    """(H, Wo, kw*C) of an HWC `shape` whose kw horizontal taps `fold_columns` folds."""
    height, width, channels = shape
    return height, width + pad_left + pad_right - kw + 1, kw * channels


def fold_columns(x, *, kw, pad_left, pad_right, zero_point):
    """[B, H, W, C] int8 -> [B, H, Wo, kw*C]: pixel (h, wo) holds the input pixels (h, wo + j -
    pad_left) for j < kw (the padding filled with `zero_point`), tap-major, so a kh x kw,
    stride-1 conv of `x` is a kh x 1 conv of the result with HWIO weights reshaped to
    (kh, 1, kw*C, Cout)."""
    x = np.asarray(x, dtype=np.int8)
    batch, height, width, channels = x.shape
    padded = np.full((batch, height, width + pad_left + pad_right, channels), zero_point,
                     np.int8)
    padded[:, :, pad_left:pad_left + width] = x
    out_width = column_fold_shape(x.shape[1:], kw, pad_left, pad_right)[1]
    return np.concatenate([padded[:, :, tap:tap + out_width] for tap in range(kw)], axis=-1)


def weight_rows(w, *, rows, cols, row_bytes):
    """HWIO int8 -> R rows per tile, tiles ordered (n block, kh, kw, cin block), zero-padded."""
    w = np.asarray(w, dtype=np.int8)
    kh, kw, cin, cout = w.shape
    cin_blocks, n_blocks = _blocks(cin, rows), _blocks(cout, cols)
    padded = np.zeros((kh, kw, cin_blocks * rows, n_blocks * cols), np.int8)
    padded[:, :, :cin, :cout] = w
    out = np.zeros((n_blocks, kh, kw, cin_blocks, rows, row_bytes), np.int8)
    tiles = padded.reshape(kh, kw, cin_blocks, rows, n_blocks, cols).transpose(4, 0, 1, 2, 3, 5)
    out[..., :cols] = tiles
    return out.reshape(-1, row_bytes)


def rows_to_words(rows_int8, *, stride):
    """Scratchpad rows -> bus words, `stride` words per row (byte b of a row = lane b)."""
    rows_int8 = np.asarray(rows_int8, dtype=np.int8)
    count, row_bytes = rows_int8.shape
    padded = np.zeros((count, stride * 4), np.uint8)
    padded[:, :row_bytes] = rows_int8.view(np.uint8)
    return [int(word) for word in padded.view("<u4").reshape(-1)]


def words_to_rows(words, *, row_bytes, stride):
    data = np.asarray(words, dtype="<u4").reshape(-1, stride).view(np.uint8)
    return data[:, :row_bytes].view(np.int8)


def output_from_rows(rows_int8, *, pixels, channels, cols, stride):
    """REQUANT_STORE rows (pixel p, block nb at ``p*stride + nb``) -> [pixels, channels]."""
    rows_int8 = np.asarray(rows_int8, dtype=np.int8)
    blocks = _blocks(channels, cols)
    out = np.zeros((pixels, blocks * cols), np.int8)
    for block in range(blocks):
        out[:, block * cols:(block + 1) * cols] = rows_int8[block:block + pixels * stride:stride,
                                                            :cols]
    return out[:, :channels]


def parameter_words(bias, multiplier, shift, *, channels):
    """Parameter-window words for `channels` entries (4 words each; missing channels are 0).

    `shift` is TFLite's (<= 0); the hardware takes the right shift ``-shift``."""
    words = np.zeros((channels, 4), np.uint32)
    count = len(bias)
    words[:count, 0] = np.asarray(bias, np.int64) & 0xFFFF_FFFF
    words[:count, 1] = np.asarray(multiplier, np.int64)
    words[:count, 2] = -np.asarray(shift, np.int64)
    return [int(word) for word in words.reshape(-1)]


def binary_activation_rows(a_packed, k, *, width, row_bytes):
    """Packed +-1 vectors [M, ceil(k/8)] -> scratchpad rows, ceil(k/width) rows per vector."""
    a_packed = np.asarray(a_packed, dtype=np.uint8)
    beats = _blocks(k, width)
    out = np.zeros((a_packed.shape[0] * beats, row_bytes), np.uint8)
    for vector, row in enumerate(a_packed):
        value = int.from_bytes(row.tobytes(), "little") & ((1 << k) - 1)
        for beat in range(beats):
            bits = (value >> (beat * width)) & ((1 << width) - 1)
            out[vector * beats + beat, :width // 8] = np.frombuffer(
                bits.to_bytes(width // 8, "little"), np.uint8)
    return out.view(np.int8)


def binary_from_rows(rows_int8, k, *, width):
    """Inverse of `binary_activation_rows` (also what a BINARY command's ``to_scratchpad``
    writes): ceil(k/width) rows per vector -> +1/-1 int8 [M, k]."""
    rows = np.ascontiguousarray(np.asarray(rows_int8, dtype=np.int8).view(np.uint8))
    beats = _blocks(k, width)
    packed = rows[:, :width // 8].reshape(-1, beats * width // 8)
    return reference.unpack_bits(packed, k)


@dataclass(frozen=True)
class ConvLayer:
    """One int8 conv (or GEMM: ``in_w = kh = kw = 1``) layer placed in the core's memories."""
    in_h: int
    in_w: int
    cin: int
    cout: int
    kh: int = 1
    kw: int = 1
    stride: int = 1
    padding: tuple = (0, 0, 0, 0)        # top, bottom, left, right
    zero_point: int = 0
    a_base: int = 0
    w_base: int = 0
    out_base: int = 0
    param_base: int = 0
    rounding: str = "double"
    output_zero_point: int = 0
    act_min: int = -128
    act_max: int = 127
    pool: bool = False
    out_stride: int = None              # rows per output pixel (None: this layer's column blocks)

    @property
    def out_h(self):
        top, bottom, _, _ = self.padding
        return reference.conv_output_size(self.in_h, self.kh, self.stride, top, bottom)

    @property
    def out_w(self):
        _, _, left, right = self.padding
        return reference.conv_output_size(self.in_w, self.kw, self.stride, left, right)


def output_bands(layer, *, cols, accumulator_rows):
    """The tiles of `layer` that each fill at most one accumulator half, as (first output row,
    output rows, first column block, column blocks): one column block of every output row per
    tile when they fit, so each tile's store overlaps the next tile's compute, else bands of
    output rows (an even number of them when pooling; a pooled layer's odd last output row,
    which the pool drops, is not computed)."""
    half_rows = accumulator_rows // 2
    n_blocks = _blocks(layer.cout, cols)
    pixels = layer.out_h * layer.out_w
    if pixels <= half_rows:
        # One column block per tile: the store of one overlaps the compute of the next, leaving
        # only the last block's store exposed.
        return [(0, layer.out_h, nb, 1) for nb in range(n_blocks)]
    band, needed_rows = _band_limits(layer, half_rows)
    return [(ho, min(band, needed_rows - ho), nb, 1)
            for nb in range(n_blocks) for ho in range(0, needed_rows, band)]


def _band_limits(layer, half_rows):
    """(most output rows a band of `layer` may have in an accumulator half of `half_rows` rows,
    an even number when pooling; output rows to compute: the 2x2 pool drops an odd last row, so
    it is not computed and no band is left with a single row to pool)."""
    most_rows = half_rows // layer.out_w
    if layer.pool:
        most_rows -= most_rows % 2
    if most_rows == 0:
        raise ValueError(f"an output row of {layer.out_w} pixels does not fit half of the "
                         f"accumulator ({half_rows} rows)")
    needed_rows = layer.out_h - layer.out_h % 2 if layer.pool else layer.out_h
    return most_rows, needed_rows


def compute_command(layer, band, acc_base, *, rows, cols, gemm=False):
    """The GEMM (``gemm``: the rows of `layer`'s input are the GEMM's rows) or CONV command
    computing `band` (an `output_bands` tile) of `layer` into the accumulator rows from
    `acc_base` (block-major: ``acc_base + block*band_pixels + pixel``)."""
    ho_start, ho_count, nb_start, count = band
    cin_blocks, n_blocks = _blocks(layer.cin, rows), _blocks(layer.cout, cols)
    n_last = cols if nb_start + count < n_blocks else layer.cout - (n_blocks - 1) * cols
    w_base = layer.w_base + nb_start * layer.kh * layer.kw * cin_blocks * rows
    if gemm:
        return encode(
            Opcode.GEMM, a_base=layer.a_base + ho_start * cin_blocks, w_base=w_base,
            acc_base=acc_base, accumulate=0, m=ho_count, k_blocks=cin_blocks,
            k_last=layer.cin - (cin_blocks - 1) * rows, n_blocks=count, n_last=n_last)
    top, _, left, _ = layer.padding
    return encode(
        Opcode.CONV, a_base=layer.a_base, w_base=w_base, acc_base=acc_base, accumulate=0,
        in_h=layer.in_h, in_w=layer.in_w, cin_blocks=cin_blocks,
        cin_last=layer.cin - (cin_blocks - 1) * rows, kh=layer.kh, kw=layer.kw,
        stride=layer.stride, pad_top=top, pad_left=left, zero_point=layer.zero_point,
        out_w=layer.out_w, ho_start=ho_start, ho_count=ho_count, n_blocks=count, n_last=n_last)


# Cycles a tile costs the core beyond its rows, from the per-command timeline of `python -m
# sim.bench core` (CXXRTL, 12x12 and 16x16): a GEMM/CONV takes its set-up products (~55), the
# first weight row's read (6), the first tile's R weight rows (R + 2), the array's drain after
# its last row (R + C + 6) and the dispatch of the next one (4); a REQUANT_STORE starts ~38
# cycles after the compute dispatched with it, takes ~12 for its set-up and, per column block,
# C + 1 to load the requant parameters and ~30 from the first accumulator row read to the first
# row written (the next block's parameters wait until the requantizer is empty). Since the core
# overlaps GEMM/CONVs on the two halves (the next one set up while the previous streams, its
# rows following while that one drains), a compute's own cycles are hidden only where it
# follows the previous compute; it still waits for the store of its half (tile k + 1 for tile
# k - 1's), and then they all show: the model holds to within 1% of `sim.bench core` on the
# shipped 12x12 either way (session 19: 0.990-0.996 of its cycles on every int8 layer).
COMPUTE_TILE_CYCLES = 73          # + 2R + C
STORE_TILE_CYCLES = 50
STORE_BLOCK_CYCLES = 31           # + C


def tile_cycles(layer, tile, *, rows, cols, requant_lanes):
    """(compute, store) cycles the core takes for `tile` (an `output_bands`-style tile) of
    `layer`, by the cost model above: every array tile but the first of a command takes at least
    the array's weight swap window (2R + C - 1 rows, `hw.systolic.array`), and the store one
    row per max(2, ceil(C / requant_lanes)) cycles (`hw.core.units`)."""
    _, ho_count, _, count = tile
    pixels = ho_count * layer.out_w
    chunks = count * layer.kh * layer.kw * _blocks(layer.cin, rows)
    compute = (COMPUTE_TILE_CYCLES + 2 * rows + cols + pixels
               + (chunks - 1) * max(pixels, 2 * rows + cols - 1))
    store = STORE_TILE_CYCLES + count * (STORE_BLOCK_CYCLES + cols
                                         + pixels * max(2, _blocks(cols, requant_lanes)))
    return compute, store


def schedule_cycles(costs):
    """Cycles of tiles with (compute, store) `costs` run as `layer_commands` orders them: tile
    k + 1's compute and tile k's store start together, once tile k's compute and tile k - 1's
    store (which read the accumulator half tile k + 1 writes) have ended."""
    total, store = 0, 0
    for compute, next_store in costs:
        total += max(compute, store)
        store = next_store
    return total + store


# At most this many row bands per column block are considered by `schedule_tiles`.
_BAND_CHOICES = 16


def schedule_tiles(layer, *, rows, cols, accumulator_rows, requant_lanes):
    """The tiles of `layer` (as `output_bands`: first output row, output rows, first column
    block, column blocks; each filling at most one accumulator half), in column-block order,
    with the fewest `schedule_cycles`: several whole column blocks per tile amortize a tile's
    own cycles where the array's rows outweigh the store's, short tiles first and last expose
    less of the first compute and the last store. A tile is either whole column blocks (when
    one block of every output row fits a half) or a band of output rows of one block (an even
    number of them when pooling; a pooled layer's odd last output row is not computed)."""
    half_rows = accumulator_rows // 2
    n_blocks = _blocks(layer.cout, cols)
    block_pixels = layer.out_h * layer.out_w
    most_rows, needed_rows = _band_limits(layer, half_rows)
    step = min(most_rows, max(1, _blocks(needed_rows, _BAND_CHOICES)))
    if layer.pool:
        step += step % 2
    # Bands of `step` rows, and those of `output_bands` (as many rows as fill a half).
    bounds = sorted({*range(0, needed_rows, step), *range(0, needed_rows, most_rows),
                     needed_rows})
    whole_blocks = block_pixels <= half_rows
    most_blocks = half_rows // block_pixels if whole_blocks else 0

    def moves(block, bound):
        """(tile, next position) from column block `block`, row bound index `bound`."""
        if bound == 0:
            for count in range(1, min(most_blocks, n_blocks - block) + 1):
                yield (0, layer.out_h, block, count), (block + count, 0)
        first = bounds[bound]
        for end in range(bound + 1, len(bounds)):
            if bounds[end] - first > most_rows:
                break
            if bound == 0 and end == len(bounds) - 1 and whole_blocks:
                continue                        # the whole block, above
            tile = (first, bounds[end] - first, block, 1)
            yield tile, ((block + 1, 0) if end == len(bounds) - 1 else (block, end))

    # Per position, the schedules reaching it that no other beats on both their cycles so far
    # and the store they leave to overlap: (cycles, last store, tiles).
    fronts = {(0, 0): [(0, 0, ())]}
    for block in range(n_blocks):
        for bound in range(len(bounds) - 1):
            for cycles, store, tiles in fronts.pop((block, bound), ()):
                for tile, position in moves(block, bound):
                    compute, next_store = tile_cycles(layer, tile, rows=rows, cols=cols,
                                                      requant_lanes=requant_lanes)
                    _keep(fronts.setdefault(position, []),
                          (cycles + max(compute, store), next_store, tiles + (tile,)))
    return min(fronts[(n_blocks, 0)], key=lambda entry: entry[0] + entry[1])[2]


def _keep(front, entry):
    """Add `entry` (cycles, last store, ...) to `front` unless one there is as good on both;
    drop those it beats."""
    if any(other[0] <= entry[0] and other[1] <= entry[1] for other in front):
        return
    front[:] = [other for other in front if not (entry[0] <= other[0] and entry[1] <= other[1])]
    front.append(entry)


def layer_commands(layer, *, rows, cols, accumulator_rows, requant_lanes, gemm=False,
                   first_half=0):
    """GEMM/CONV + REQUANT_STORE commands covering `layer` (its `schedule_tiles`), alternating
    accumulator halves, then FENCE. Each tile's store comes after the next tile's compute
    command: the dispatcher takes commands in program order, so the next compute is checked while
    the current one runs and starts as soon as it ends, and the store overlaps it. Returns (list
    of word lists, next half)."""
    half_rows = accumulator_rows // 2
    n_blocks = _blocks(layer.cout, cols)
    pooled_w = layer.out_w // 2 if layer.pool else layer.out_w
    out_stride = n_blocks if layer.out_stride is None else layer.out_stride
    computes, stores = [], []
    half = first_half
    for band in schedule_tiles(layer, rows=rows, cols=cols, accumulator_rows=accumulator_rows,
                               requant_lanes=requant_lanes):
        ho_start, ho_count, nb_start, count = band
        acc_base = half * half_rows
        computes.append(compute_command(layer, band, acc_base, rows=rows, cols=cols, gemm=gemm))
        first_pixel = (ho_start // 2) * pooled_w if layer.pool else ho_start * layer.out_w
        stores.append(encode(
            Opcode.REQUANT_STORE, acc_base=acc_base, height=ho_count, width=layer.out_w,
            n_blocks=count, param_base=layer.param_base + nb_start * cols,
            out_base=layer.out_base + nb_start + first_pixel * out_stride, out_stride=out_stride,
            rounding=("double", "single").index(layer.rounding), zero_point=layer.output_zero_point,
            act_min=layer.act_min, act_max=layer.act_max, pool=int(layer.pool)))
        half ^= 1
    commands = [computes[0]]
    for compute, store in zip(computes[1:], stores):
        commands += [compute, store]
    commands += [stores[-1], encode(Opcode.FENCE)]
    return commands, half


def accumulator_values(words, *, rows, band_rows, blocks, cols, stride):
    """Accumulator rows of a GEMM tile (row ``i`` of column block ``b`` at ``b*band_rows + i``,
    `stride` words each, the first `cols` the int32 lanes) -> int32 [rows, blocks*cols], the
    first `rows` of the tile's `band_rows` rows. `words` start at the tile's first row and reach
    at least row ``(blocks-1)*band_rows + rows - 1``."""
    lanes = np.asarray(words, "<u4").view(np.int32).reshape(-1, stride)[:, :cols]
    index = np.arange(blocks)[:, np.newaxis] * band_rows + np.arange(rows)
    return lanes[index].transpose(1, 0, 2).reshape(rows, blocks * cols)


def binary_weight_words(w_bits, k, *, width, lanes, lanes_stride, weight_word_stride):
    """Binary weights window words for neurons ``w_bits`` (uint8 [N, ceil(k/8)], N <= one
    load): entry (fold address, lane) at ``(address*lanes_stride + lane)*weight_word_stride``."""
    words_per_beat = _blocks(width, 32)
    writes = weight_writes(w_bits, k, width=width, lanes=lanes)
    depth = max(item["address"] for item in writes) + 1
    words = np.zeros(depth * lanes_stride * weight_word_stride, np.int64)
    for item in writes:
        base = (item["address"] * lanes_stride + item["lane"]) * weight_word_stride
        for word in range(words_per_beat):
            words[base + word] = (item["bits"] >> (32 * word)) & 0xFFFF_FFFF
    return words


def binary_threshold_words(thresholds, ascending, k, *, lanes, lanes_stride):
    """Binary thresholds window words: neuron fold f, lane l at ``f*lanes_stride + l`` (31-bit
    threshold, bit 31 the comparison direction)."""
    writes = threshold_writes(thresholds, ascending, k, lanes=lanes)
    folds = max(item["neuron_fold"] for item in writes) + 1
    words = np.zeros(folds * lanes_stride, np.int64)
    for item in writes:
        words[item["neuron_fold"] * lanes_stride + item["lane"]] = (
            (int(item["threshold"]) & 0x7FFF_FFFF) | item["ascending"] << 31)
    return words


def binary_results(words, *, vectors, folds, lanes, result_stride, result_bit_words):
    """Binary result rows (vector v, fold f at row ``v*folds + f``) -> (int32 dots, +1/-1 int8
    signs), each [vectors, folds*lanes]."""
    words = np.asarray(words, "<u4").reshape(vectors, folds, result_stride)
    dots = words[:, :, :lanes].view(np.int32).reshape(vectors, folds * lanes)
    bit_words = words[:, :, lanes:lanes + result_bit_words]
    bits = np.stack([(bit_words[:, :, lane // 32] >> (lane % 32)) & 1
                     for lane in range(lanes)], axis=-1).reshape(vectors, -1)
    return dots, np.where(bits, 1, -1).astype(np.int8)
