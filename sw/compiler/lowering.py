"""One lowering per node kind: `LOWERINGS[kind]` turns a node plus the device's geometry into
steps of the lowering context (`sw.compiler.plan.Plan`): scratchpad regions, weight and parameter
images, `hw.core.isa` commands, reads and writes over the link, or a host step with its reason.

A lowering has ``host_reason(node, core)``: None when the device can run the node, else why it
runs on the host; and ``lower(plan, node)`` for a device node. Tiling (column blocks, bands of
output rows, accumulator halves) is `sw.compiler.layout.layer_commands`; weight placement is
`plan_weights`.

* Dense -> GEMM + REQUANT_STORE per output-block group (the samples of a round are the GEMM's
  rows); Conv2D -> CONV + REQUANT_STORE per image with the activation range and the 2x2
  max-pool fused into the store. Both read their input from the scratchpad in R-lane rows and
  store their output there, so INT8 -> INT8 layers hand over on chip. A stride-1 Conv2D on a
  graph input with few channels (a network's first layer: 3 of 12 lanes used) has its kw
  horizontal taps folded into the channels by the host as it writes the input
  (`column_fold`): a kh x 1 conv over kw*cin channels, fewer input rows per output pixel.
* DenseInt32 -> GEMM tiles as Dense's (`sw.compiler.layout.output_bands`, weights placed
  alike), each followed by FENCE and a host read of its accumulator half, which adds the bias
  (the raw int32 accumulators: no REQUANT_STORE, no parameters).
* Flatten, Reshape: no data moves when each row holds whole channel blocks before and after
  (the rows are then the flattened order already), or for binary rows (always the flattened
  order); else the host reshapes.
* BinaryDense -> BINARY on the XNOR-popcount engine, weights and thresholds of every binary
  layer resident side by side in the engine's memories while they fit. A hidden layer writes
  its threshold bits to the scratchpad in the rows the next BINARY reads, so binary -> binary
  layers hand over on chip (no FENCE between them, no link traffic); the output layer's int32
  dots come back through the binary result memory. Binary -> INT8 and INT8 -> binary (Sign,
  a host op) go through the host, and so do the bits of a hidden layer wider than the engine
  whose neuron groups cannot end on whole scratchpad rows (binary_max_n < lcm(lanes, width)).
* Every other kind: a host step running the op's `sim.reference` kernel, with the reason.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from hw.core.isa import Opcode, encode

from .layout import (ConvLayer, binary_threshold_words, binary_weight_words, column_fold_shape,
                     compute_command, layer_commands, output_bands, parameter_words, weight_rows)
from .plan import DoesNotFit, WeightPlacement
from .program import Step

__all__ = ["LOWERINGS", "device_nodes", "plan_weights"]


def _blocks(size, block):
    return -(-size // block)


class HostOnly:
    """A kind the core has no operation for: always a host step with `reason`."""

    def __init__(self, reason):
        self.reason = reason

    def host_reason(self, node, core):
        return self.reason

    def lower(self, plan, node):
        plan.host_step(self.reason)


def _int8_reason(core):
    if core.dataflow != "weight_stationary":
        return "the core is output-stationary: it runs no GEMM/CONV"
    return None


class DenseLowering:
    """Dense -> GEMM + REQUANT_STORE, the round's samples as the GEMM's rows."""

    def host_reason(self, node, core):
        k, n = node.op.weights.shape
        if _blocks(k, core.rows) > 1023 or _blocks(n, core.cols) > 1023:
            return f"{k}x{n} weights exceed the GEMM command's 1023 row/column blocks"
        return _int8_reason(core)

    def lower(self, plan, node):
        _lower_int8(plan, node, self._commands, "GEMM + REQUANT_STORE (act range fused)")

    @staticmethod
    def _commands(plan, node, source, out, placement, first, cout):
        plan.commands(lambda half: DenseLowering._gemm(plan, node, source, out, placement,
                                                       first, cout, half))

    @staticmethod
    def _gemm(plan, node, source, out, placement, first, cout, half):
        op, core = node.op, plan.core
        layer = ConvLayer(in_h=plan.batch, in_w=1, cin=op.weights.shape[0], cout=cout,
                          a_base=source.base, w_base=placement.w_base,
                          out_base=out.base + first, param_base=placement.p_base,
                          rounding=op.rounding, output_zero_point=op.output_zero_point,
                          act_min=op.act_min, act_max=op.act_max,
                          out_stride=out.rows_per_sample)
        return layer_commands(layer, rows=core.rows, cols=core.cols,
                              accumulator_rows=core.accumulator_rows,
                              requant_lanes=core.requant_lanes, gemm=True, first_half=half)


class DenseInt32Lowering(DenseLowering):
    """DenseInt32 -> GEMM tiles (the round's samples as the GEMM's rows), each read back from
    the accumulator by the host, which adds the bias: the raw int32 accumulators."""

    def lower(self, plan, node):
        _lower_int8(plan, node, self._tiles,
                    "GEMM; the int32 accumulators read back, the bias added on the host")
        plan.host.add(node.output)

    @classmethod
    def _tiles(cls, plan, node, source, out, placement, first, cout):
        core = plan.core
        shape = ConvLayer(in_h=plan.batch, in_w=1, cin=node.op.weights.shape[0], cout=cout)
        for band in output_bands(shape, cols=core.cols, accumulator_rows=core.accumulator_rows):
            cls._tile(plan, node, shape, band, source, placement, first * core.cols)

    @staticmethod
    def _tile(plan, node, shape, band, source, placement, group_low):
        """GEMM + FENCE of one `output_bands` tile of the group (`shape`: its `ConvLayer`
        without addresses; its first channel `group_low`) into an accumulator half, then the
        step reading it."""
        core = plan.core
        half_rows = core.accumulator_rows // 2
        sample, rows, block, blocks = band
        low = group_low + block * core.cols
        high = min(group_low + shape.cout, low + blocks * core.cols)
        bias = node.op.folded_bias[low:high]

        def commands(half):         # made once the input region has its address
            layer = replace(shape, a_base=source.base, w_base=placement.w_base)
            gemm = compute_command(layer, band, half * half_rows, rows=core.rows,
                                   cols=core.cols, gemm=True)
            return [gemm, encode(Opcode.FENCE)], half ^ 1

        def read(half):
            return Step("read_accumulators", node.name, {
                "tensor": node.output, "acc_base": half * half_rows, "first": sample,
                "rows": rows, "blocks": blocks, "low": low, "high": high,
                "units": node.op.output_features}, bias,
                bytes_out=blocks * rows * core.accumulator_stride * 4)
        plan.commands(commands, sample=sample, read=read)


class Conv2DLowering:
    """Conv2D -> CONV + REQUANT_STORE per image (im2col on chip; pool and act range fused)."""

    def host_reason(self, node, core):
        op = node.op
        (kh, kw), (sh, sw) = op.kernel_size, op.stride
        if sh != sw:
            return f"the core's CONV takes one stride for both axes, not {op.stride}"
        if sh > 7 or kh > 15 or kw > 15 or max(op.padding) > 15:
            return (f"stride {sh} (at most 7), kernel {kh}x{kw} (at most 15) or padding "
                    f"{op.padding} (at most 15) beyond the CONV command")
        if _blocks(op.in_channels, core.rows) > 255:
            return f"{op.in_channels} input channels exceed the CONV command's 255 blocks"
        return _int8_reason(core)

    def lower(self, plan, node):
        op, core = node.op, plan.core
        height, width, _ = op.conv_output_shape(plan.graph.tensor(node.inputs[0]).shape)
        geometry = _conv_geometry(plan.graph, node, core)
        half = core.accumulator_rows // 2
        if op.pool and width > core.max_pool_width:
            reason = (f"the 2x2 max-pool takes rows of at most {core.max_pool_width} pixels, "
                      f"not {width}")
        elif (2 if op.pool else 1) * width > half:
            reason = (f"{'two output rows' if op.pool else 'an output row'} of {width} pixels "
                      f"do not fit half of the accumulator ({half} rows)")
        else:
            what = "2x2 max-pool and act range" if op.pool else "act range"
            folded = (f"; its {op.kernel_size[1]} horizontal taps folded into the channels on "
                      f"the host" if geometry["layout"]["layout"] == "int8_columns" else "")
            _lower_int8(plan, node, lambda *args: self._commands(*args, geometry),
                        f"CONV (im2col on chip) + REQUANT_STORE ({what} fused){folded}",
                        layout=geometry["layout"], weights=geometry["weights"])
            return
        plan.host_step(reason)

    @staticmethod
    def _commands(plan, node, source, out, placement, first, cout, geometry):
        """One command step per image (a round without the image skips it), one FENCE after
        the last: the images' stores overlap the next image's compute."""
        for sample in range(plan.batch):
            plan.commands(lambda half, sample=sample: Conv2DLowering._image(
                plan, node, source, out, placement, first, cout, geometry, sample, half),
                sample=sample)
        plan.commands(lambda half: ([encode(Opcode.FENCE)], half))

    @staticmethod
    def _image(plan, node, source, out, placement, first, cout, geometry, sample, half):
        op, core = node.op, plan.core
        layer = ConvLayer(
            **geometry["layer"], cout=cout, stride=op.stride[0], zero_point=op.input_zero_point,
            a_base=source.base + sample * source.rows_per_sample, w_base=placement.w_base,
            out_base=out.base + sample * out.rows_per_sample + first,
            param_base=placement.p_base, rounding=op.rounding,
            output_zero_point=op.output_zero_point, act_min=op.act_min, act_max=op.act_max,
            pool=op.pool, out_stride=_blocks(op.out_channels, core.cols))
        words, half = layer_commands(layer, rows=core.rows, cols=core.cols,
                                     accumulator_rows=core.accumulator_rows,
                                     requant_lanes=core.requant_lanes, first_half=half)
        return words[:-1], half         # without its FENCE


def _weights_hwio(op):
    return op.weights if op.weights.ndim == 4 else op.weights[np.newaxis, np.newaxis]


def column_fold(graph, node, core):
    """``(kw, pad_left, pad_right, zero_point)`` when Conv2D `node` reads a graph input, has
    stride 1 and a kw > 1 kernel, and folding its kw horizontal taps into the channels on the
    host takes fewer R-lane input blocks per output pixel (kh * ceil(kw*cin/R) < kh * kw *
    ceil(cin/R)); else None. The conv is then kh x 1 over the folded input (`column_fold_shape`),
    with the horizontal padding written by the host."""
    op = node.op
    kw, cin = op.kernel_size[1], op.in_channels
    if (node.inputs[0] not in graph.inputs or op.stride[0] != 1 or kw == 1
            or _blocks(kw * cin, core.rows) >= kw * _blocks(cin, core.rows)):
        return None
    _, _, left, right = op.padding
    return (kw, left, right, op.input_zero_point)


def _conv_geometry(graph, node, core):
    """The conv as the device runs it: the input region's `layout`, the HWIO `weights` and the
    `ConvLayer` fields of the input (`layer`), with or without the `column_fold`."""
    op = node.op
    height, width, cin = graph.tensor(node.inputs[0]).shape
    (kh, kw), (top, bottom) = op.kernel_size, op.padding[:2]
    fold = column_fold(graph, node, core)
    if fold is None:
        return {"layout": {"layout": "int8", "block": core.rows}, "weights": op.weights,
                "layer": dict(in_h=height, in_w=width, cin=cin, kh=kh, kw=kw,
                              padding=op.padding)}
    _, width, folded = column_fold_shape((height, width, cin), *fold[:3])
    return {"layout": {"layout": "int8_columns", "block": core.rows, "fold": fold},
            "weights": op.weights.reshape(kh, 1, folded, op.out_channels),
            "layer": dict(in_h=height, in_w=width, cin=folded, kh=kh, kw=1,
                          padding=(top, bottom, 0, 0))}


def _lower_int8(plan, node, emit_commands, reason, *, layout=None, weights=None):
    """Input region (R-lane rows, or `layout`) -> output region (C-lane rows, pixel-major; None
    for a DenseInt32, whose accumulators the host reads); weights (HWIO `weights`, default the
    op's) and requant parameters (none for a DenseInt32) per output-block group (once if
    resident), then `emit_commands` for the group."""
    op, core = node.op, plan.core
    requantized = node.kind in _REQUANTIZED
    source = plan.in_scratch(node.inputs[0], layout or {"layout": "int8", "block": core.rows})
    out = plan.new_region(node.output, {"layout": "int8", "block": core.cols}) \
        if requantized else None
    placement = plan.weights[node.name]
    weights = _weights_hwio(op) if weights is None else weights
    cout = op.weight_matrix.shape[1]
    bias = op.folded_bias
    for first, count in placement.groups:
        low, high = first * core.cols, min(cout, (first + count) * core.cols)
        plan.scratch_image(placement.w_base, weight_rows(
            weights[..., low:high], rows=core.rows, cols=core.cols, row_bytes=core.row_bytes),
            resident=placement.resident)
        if requantized:
            plan.image("parameters", 4 * placement.p_base, parameter_words(
                bias[low:high], op.multiplier[low:high], op.shift[low:high],
                channels=count * core.cols), resident=placement.resident)
        emit_commands(plan, node, source, out, placement, first, high - low)
    streamed = "" if placement.resident else (
        f"; weights streamed every round in {len(placement.groups)} group(s): they do not fit "
        f"resident beside the others")
    plan.place("device", reason + streamed)


class ReshapeLowering:
    """Flatten / Reshape: an alias of the input's rows when they hold whole channel blocks."""

    def host_reason(self, node, core):
        return None

    def lower(self, plan, node):
        source = plan.find(node.inputs[0])
        if source is None:
            plan.host_step("its input is on the host (a reshape there moves no link data)")
            return
        if source.layout["layout"] == "binary":
            source.last = max(source.last, plan.at)
            plan.alias(node.output, source)
            plan.place("device", "no data moves: binary rows hold the bits in flattened order")
            return
        block = source.layout["block"]
        channels = plan.graph.tensor(node.inputs[0]).shape[-1]
        target = plan.graph.tensor(node.output).shape[-1]
        if channels % block or target % block:
            plan.host_step(f"the rows hold {channels} channels in blocks of {block} lanes "
                           f"(padded): the reshape moves data")
            return
        source.last = max(source.last, plan.at)
        plan.alias(node.output, source)
        plan.place("device", f"no data moves: each row holds whole blocks of {block} channels")


class BinaryDenseLowering:
    """BinaryDense -> BINARY: a hidden layer's bits to the scratchpad (on chip), the output
    layer's dots through the result memory."""

    def host_reason(self, node, core):
        if node.op.k > core.binary_max_k:
            return (f"k={node.op.k} input bits exceed the engine's longest vector "
                    f"(binary_max_k={core.binary_max_k})")
        return None

    def lower(self, plan, node):
        op, core = node.op, plan.core
        width = core.binary_width
        source = plan.in_scratch(node.inputs[0], {"layout": "binary", "width": width})
        _, bits_on_chip = _binary_group(node, core)
        out = plan.new_region(node.output, {"layout": "binary", "width": width}) \
            if bits_on_chip else None
        placement = plan.weights[node.name]
        packed = op.packed_weights
        for (low, high), (w_base, t_base) in zip(placement.groups,
                                                 _binary_group_bases(placement, op.k, core)):
            plan.image("binary_weights", w_base * core.lanes_stride * core.weight_word_stride,
                       binary_weight_words(packed[low:high], op.k, width=width,
                                           lanes=core.binary_lanes,
                                           lanes_stride=core.lanes_stride,
                                           weight_word_stride=core.weight_word_stride),
                       resident=placement.resident)
            if not op.is_output:
                plan.image("binary_thresholds", t_base * core.lanes_stride, binary_threshold_words(
                    op.thresholds[low:high], op.ascending[low:high], op.k,
                    lanes=core.binary_lanes, lanes_stride=core.lanes_stride),
                    resident=placement.resident)
            layer = _BinaryGroup(source, low, high, w_base, t_base)
            if out is None:
                self._results(plan, node, layer)
            else:
                self._bits(plan, node, layer, out)
        streamed = "" if placement.resident else "; weights written every round"
        if out is not None:
            plan.place("device", "BINARY; threshold bits stay on chip (scratchpad rows the "
                                 "next binary layer reads)" + streamed)
            return
        plan.host.add(node.output)
        if op.is_output:
            plan.place("device", "BINARY; int32 dots read back from the result memory"
                       + streamed)
        else:
            plan.place("device", f"BINARY; threshold bits read back from the result memory: "
                                 f"its groups of at most binary_max_n={core.binary_max_n} "
                                 f"neurons do not end on whole {width}-bit rows" + streamed)

    @staticmethod
    def _command(plan, node, layer, first, **outputs):
        """The BINARY command for vectors from `first` on; `outputs`: the remaining fields."""
        lanes = plan.core.binary_lanes
        folds = _blocks(layer.high - layer.low, lanes)
        a_base = layer.source.base + first * layer.source.rows_per_sample
        return encode(Opcode.BINARY, a_base=a_base, k=node.op.k, neuron_folds=folds,
                      last_lanes=layer.high - layer.low - (folds - 1) * lanes,
                      w_base=layer.w_base, t_base=layer.t_base, **outputs)

    def _bits(self, plan, node, layer, out):
        """The whole round in one command: vector v's bits -> its rows of `out`."""
        width = plan.core.binary_width
        plan.commands(lambda half: ([self._command(
            plan, node, layer, 0, vectors=plan.batch, result_base=0,
            out_base=out.base + layer.low // width, out_stride=out.rows_per_sample,
            to_results=0, to_scratchpad=1)], half))

    def _results(self, plan, node, layer):
        """Chunks of vectors that fill the result memory, each read back after its FENCE."""
        core = plan.core
        folds = _blocks(layer.high - layer.low, core.binary_lanes)
        per_chunk = min(core.binary_result_rows // folds, 2**16 - 1, plan.batch)
        if per_chunk == 0:
            raise DoesNotFit(f"node {node.name!r} (BinaryDense): one vector's "
                             f"{layer.high - layer.low} neurons need {folds} binary result "
                             f"rows, the device has {core.binary_result_rows}")
        output = "dots" if node.op.is_output else "signs"
        for first in range(0, plan.batch, per_chunk):
            vectors = min(per_chunk, plan.batch - first)
            plan.commands(lambda half, first=first, vectors=vectors: ([self._command(
                plan, node, layer, first, vectors=vectors, result_base=0, out_base=0,
                out_stride=0, to_results=1, to_scratchpad=0), encode(Opcode.FENCE)], half),
                sample=first)
            plan.emit(lambda first=first, vectors=vectors: Step("read_binary", node.name, {
                "tensor": node.output, "vector": first, "vectors": vectors, "folds": folds,
                "low": layer.low, "high": layer.high, "units": node.op.units,
                "output": output}, bytes_out=vectors * folds * core.result_stride * 4))


@dataclass(frozen=True)
class _BinaryGroup:
    """A group of a BinaryDense's neurons placed: input region, neurons low..high, weight and
    threshold rows."""
    source: object
    low: int
    high: int
    w_base: int
    t_base: int


def _binary_group(node, core):
    """(neurons per group of a BinaryDense, whether a hidden layer's bits stay on chip). A group
    is as many whole folds as the engine takes; a hidden layer's groups on chip must also end on
    whole scratchpad rows of bits (each group writes its own rows), else its bits go through the
    result memory and the host."""
    lanes, units, most = core.binary_lanes, node.op.units, core.binary_max_n
    if units <= most:
        return units, not node.op.is_output
    aligned = most // math.lcm(lanes, core.binary_width) * math.lcm(lanes, core.binary_width)
    if aligned and not node.op.is_output:
        return aligned, True
    return most // lanes * lanes or most, False


def _binary_group_rows(node, core):
    """(weight rows, threshold rows) of each group of a BinaryDense."""
    (per_group, _), units = _binary_group(node, core), node.op.units
    rows = []
    for low in range(0, units, per_group):
        folds = _blocks(min(units, low + per_group) - low, core.binary_lanes)
        rows.append((folds * _blocks(node.op.k, core.binary_width),
                     0 if node.op.is_output else folds))
    return rows


def _binary_group_bases(placement, k, core):
    """(weight row, threshold row) of each group: side by side when resident, else each group
    at the node's base (written just before it runs)."""
    w_base, t_base = placement.w_base, placement.p_base
    for low, high in placement.groups:
        yield w_base, t_base
        if placement.resident:
            folds = _blocks(high - low, core.binary_lanes)
            w_base += folds * _blocks(k, core.binary_width)
            t_base += folds


LOWERINGS = {
    "Dense": DenseLowering(),
    "DenseInt32": DenseInt32Lowering(),
    "Conv2D": Conv2DLowering(),
    "Flatten": ReshapeLowering(),
    "Reshape": ReshapeLowering(),
    "BinaryDense": BinaryDenseLowering(),
    "DepthwiseConv2D": HostOnly("no hardware op: the array runs full convolutions only"),
    "Sign": HostOnly("no hardware op: the engine thresholds popcount dots, not int8 values"),
    "Add": HostOnly("no hardware op for element-wise addition"),
    "MaxPool2D": HostOnly("no standalone pool: the 2x2 max-pool is fused into a Conv2D's store"),
    "AveragePool2D": HostOnly("no hardware op for average pooling"),
    "Mean": HostOnly("no hardware op for a mean"),
    "Concat": HostOnly("no hardware op for concatenation"),
    "Requantize": HostOnly("no hardware op for an int8 -> int8 rescale"),
    "Pad": HostOnly("no hardware op for padding a tensor"),
    "Softmax": HostOnly("a host float kernel (no hardware op)"),
}

_REQUANTIZED = ("Dense", "Conv2D")      # their parameters (bias, M0, shift) go to the core
_WEIGHTED = (*_REQUANTIZED, "DenseInt32")


def device_nodes(graph, core):
    """Names of the nodes whose lowering can run them on the device."""
    return {node.name for node in graph.nodes
            if LOWERINGS[node.kind].host_reason(node, core) is None}


def plan_weights(graph, core, on_device):
    """{node name: `WeightPlacement`} for the device's Dense, DenseInt32, Conv2D and BinaryDense
    nodes."""
    int8 = [node for node in graph.nodes if node.name in on_device and node.kind in _WEIGHTED]
    placements = _plan_int8_weights(graph, int8, core)
    placements.update(_plan_binary_weights(
        [node for node in graph.nodes if node.name in on_device and node.kind == "BinaryDense"],
        core))
    return placements


def _plan_binary_weights(nodes, core):
    """Resident side by side in the engine's weight and threshold memories while they fit; the
    largest are streamed (every group written before it runs) into what is left."""
    rows = {node.name: _binary_group_rows(node, core) for node in nodes}
    resident, streamed = [node.name for node in nodes], []

    def used(names, part):
        return sum(group[part] for name in names for group in rows[name])

    def fits():
        free = (core.binary_weight_depth - used(resident, 0),
                core.binary_threshold_depth - used(resident, 1))
        return min(free) >= 0 and all(group[part] <= free[part] for name in streamed
                                      for group in rows[name] for part in (0, 1))
    while not fits():
        largest = max(resident, key=lambda name: used([name], 0))
        resident.remove(largest)
        streamed.append(largest)
    placements, row, threshold = {}, 0, 0
    for node in nodes:
        (per_group, _), units = _binary_group(node, core), node.op.units
        groups = [(low, min(units, low + per_group)) for low in range(0, units, per_group)]
        if node.name in resident:
            placements[node.name] = WeightPlacement(True, row, threshold, groups)
            row, threshold = row + used([node.name], 0), threshold + used([node.name], 1)
        else:
            placements[node.name] = WeightPlacement(False, None, None, groups)
    for name in streamed:
        placements[name].w_base, placements[name].p_base = row, threshold
    return placements


def _plan_int8_weights(graph, nodes, core):
    """Resident while they fit (upper bank, parameter memory: `cols` entries per output block
    of a requantized node); the largest are streamed into what is left, in groups of whole
    output blocks."""
    bank, entries, cols = core.scratchpad_rows // 2, core.parameter_rows, core.cols
    sizes = {}
    for node in nodes:
        weights = (_conv_geometry(graph, node, core)["weights"] if node.kind == "Conv2D"
                   else _weights_hwio(node.op))
        kh, kw, cin = weights.shape[:3]
        tile = kh * kw * _blocks(cin, core.rows) * core.rows
        if tile > bank:
            raise DoesNotFit(f"node {node.name!r} ({node.kind}) does not fit the device: one "
                             f"block of {cols} output channels needs {tile} weight rows, but "
                             f"the scratchpad's weight bank holds {bank} rows "
                             f"(scratchpad_rows={core.scratchpad_rows})")
        sizes[node.name] = (tile, _blocks(node.op.weight_matrix.shape[1], cols),
                            cols if node.kind in _REQUANTIZED else 0)
    resident, streamed = [node.name for node in nodes], []

    def totals():
        return (sum(sizes[n][0] * sizes[n][1] for n in resident),
                sum(sizes[n][2] * sizes[n][1] for n in resident))
    while True:
        rows, params = totals()
        if rows <= bank and params <= entries and all(
                sizes[n][0] <= bank - rows and sizes[n][2] <= entries - params
                for n in streamed):
            break
        largest = max(resident, key=lambda n: sizes[n][0] * sizes[n][1])
        resident.remove(largest)
        streamed.append(largest)
    placements, row, entry = {}, bank, 0
    for name in resident:
        tile, blocks, parameters = sizes[name]
        placements[name] = WeightPlacement(True, row, entry, [(0, blocks)])
        row, entry = row + tile * blocks, entry + parameters * blocks
    for name in streamed:
        tile, blocks, parameters = sizes[name]
        per_group = min((2 * bank - row) // tile,
                        (entries - entry) // parameters if parameters else blocks)
        placements[name] = WeightPlacement(False, row, entry, [
            (first, min(per_group, blocks - first)) for first in range(0, blocks, per_group)])
    return placements
