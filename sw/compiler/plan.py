"""The lowering context (`Plan`): what a lowering (`sw.compiler.lowering`) calls while the
planner (`sw.compiler.planner`) walks the graph -- tensors in scratchpad regions or on the host,
steps made once addresses are known, images resident or per round, placements -- and the
regions' first-fit addresses in the scratchpad's lower bank.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from hw.core.isa import COMMAND_WORDS, Opcode, encode
from sw.graph import Graph

from .geometry import DeviceGeometry
from .layout import column_fold_shape, rows_to_words
from .program import Step

__all__ = ["DoesNotFit", "Region", "WeightPlacement", "Plan", "macs_of"]

_WORD = 4
_FENCE = encode(Opcode.FENCE)


class DoesNotFit(ValueError):
    """A node that does not fit the device even when split (names the node, what it needs and
    what the device has)."""


def _blocks(size, block):
    return -(-size // block)


@dataclass(eq=False)
class Region:
    """Rows of the scratchpad's lower bank holding `tensor` in `layout` for a round's samples;
    live from node index `first` to `last` (inclusive)."""

    tensor: str
    layout: dict
    rows_per_sample: int
    owner: str
    first: int
    last: int
    base: int = None


@dataclass
class WeightPlacement:
    """Where a device node's weights and parameters go: resident (written at load) or streamed
    (written every round); `w_base` scratchpad row and `p_base` parameter entry of an INT8
    node, first binary weight row and threshold row of a BinaryDense; `groups` written and run
    one after the other: (first output block, block count) of an INT8 node, (first neuron, end
    neuron) of a BinaryDense."""

    resident: bool
    w_base: int
    p_base: int
    groups: list


class Overflow(Exception):
    """A region found no room in the activation bank (the planner tries a smaller batch)."""

    def __init__(self, region, live, capacity):
        super().__init__()
        self.region, self.live, self.capacity = region, live, capacity


@dataclass(eq=False)
class Plan:
    """The lowering context: what the lowerings call while the planner walks the graph."""

    graph: Graph
    device: DeviceGeometry
    batch: int
    weights: dict
    at: int = 0
    node: object = None
    host: set = field(default_factory=set)
    scratch: dict = field(default_factory=dict)
    regions: list = field(default_factory=list)
    steps: list = field(default_factory=list)      # functions half -> (steps, half)
    placements: list = field(default_factory=list)
    resident: list = field(default_factory=list)

    def __post_init__(self):
        self.core = self.device.core
        self.host = set(self.graph.inputs)

    # Tensors -------------------------------------------------------------------------------------

    def rows_per_sample(self, tensor, layout):
        shape = self.graph.tensor(tensor).shape
        if layout["layout"] == "binary":
            return _blocks(int(np.prod(shape)), layout["width"])
        if layout["layout"] == "int8_columns":
            shape = column_fold_shape(shape, *layout["fold"][:3])
        return int(np.prod(shape[:-1])) * _blocks(shape[-1], layout["block"])

    def _transfer_bytes(self, region):
        return region.rows_per_sample * self.batch * self.core.scratchpad_stride * _WORD

    def find(self, tensor):
        """A live region holding `tensor` in a layout a device node writes ("int8" or "binary";
        not a layout only written from the host), or None."""
        return next((region for (name, _), region in self.scratch.items()
                     if name == tensor and region.layout["layout"] in ("int8", "binary")), None)

    def on_host(self, tensor):
        """Make `tensor`'s value available on the host (a read step if it is only on chip)."""
        if tensor in self.host:
            return
        region = self.find(tensor)
        region.last = max(region.last, self.at)
        shape, node = list(self.graph.tensor(tensor).shape), self.node.name
        self.emit(lambda: Step("read", node, {"tensor": tensor, "shape": shape,
                                                        "base_row": region.base,
                                                        **region.layout},
                               bytes_out=self._transfer_bytes(region)))
        self.host.add(tensor)

    def in_scratch(self, tensor, layout):
        """The region holding `tensor` in `layout` (written from the host if it is not)."""
        key = (tensor, tuple(sorted(layout.items())))
        region = self.scratch.get(key)
        if region is None:
            self.on_host(tensor)
            region = self.new_region(tensor, layout)
            shape, node = list(self.graph.tensor(tensor).shape), self.node.name
            self.emit(lambda: Step("write", node, {"tensor": tensor, "shape": shape,
                                                             "base_row": region.base, **layout},
                                   bytes_in=self._transfer_bytes(region)))
        region.last = max(region.last, self.at)
        return region

    def new_region(self, tensor, layout):
        region = Region(tensor, layout, self.rows_per_sample(tensor, layout), self.node.name,
                        self.at, self.at)
        self.regions.append(region)
        self.scratch[(tensor, tuple(sorted(layout.items())))] = region
        return region

    def alias(self, tensor, region):
        """`tensor` is `region`'s rows read another way (a reshape that moves no data)."""
        self.scratch[(tensor, tuple(sorted(region.layout.items())))] = region

    # Steps -------------------------------------------------------------------------------------

    def emit(self, make_step):
        """Add a step made once addresses are known (`make_step()` -> `Step`)."""
        self.steps.append(lambda half: ([make_step()], half))

    def commands(self, make_commands, *, sample=None, read=None):
        """Add a command step: `make_commands(half)` -> (word lists, next accumulator half).
        Commands for the samples from `sample` on are skipped in a round without them.
        `read(half)`: the step reading what the commands left in accumulator half `half` (the
        one they started in), after them."""
        node, args = self.node.name, {} if sample is None else {"sample": sample}

        def make(half):
            words, next_half = make_commands(half)
            data = np.asarray(words, np.uint32).reshape(-1, COMMAND_WORDS)
            steps = [Step("commands", node, args, data, bytes_in=data.size * _WORD)]
            return steps + ([] if read is None else [read(half)]), next_half
        self.steps.append(make)

    def image(self, window, word, words, *, resident):
        """Words for a memory window: at load (`resident`) or every round."""
        data = np.asarray(words, np.int64).astype(np.uint32)
        step = Step("image", self.node.name, {"window": window, "word": int(word)}, data,
                    bytes_in=data.size * _WORD)
        if resident:
            self.resident.append(step)
        else:
            self.steps.append(lambda half: ([step], half))

    def scratch_image(self, base_row, rows, *, resident):
        self.image("scratchpad", base_row * self.core.scratchpad_stride,
                   rows_to_words(rows, stride=self.core.scratchpad_stride), resident=resident)

    def place(self, where, reason):
        node = self.node
        self.placements.append((node.name, node.kind, where, reason,
                                self.graph.tensor(node.output).shape, macs_of(self.graph, node)))

    def host_step(self, reason):
        """Run the node on the host (its op's `sim.reference` kernel), with `reason`."""
        node = self.node
        for tensor in node.inputs:
            self.on_host(tensor)
        self.emit(lambda: Step("host", node.name, {"op": node.op, "inputs": list(node.inputs),
                                                   "output": node.output}))
        self.host.add(node.output)
        self.place("host", reason)

    # Addresses ---------------------------------------------------------------------------------

    def allocate(self):
        """First-fit addresses in the lower bank; `Overflow` when a region does not fit."""
        capacity = self.core.scratchpad_rows // 2
        live = []
        for region in sorted(self.regions, key=lambda r: r.first):
            live = [other for other in live if other.last >= region.first]
            size = region.rows_per_sample * self.batch
            base = 0
            for other in sorted(live, key=lambda r: r.base):
                if base + size <= other.base:
                    break
                base = max(base, other.base + other.rows_per_sample * self.batch)
            if base + size > capacity:
                raise Overflow(region, live, capacity)
            region.base = base
            live.append(region)

    def materialize(self):
        steps, half = [], 0
        for make in self.steps:
            made, half = make(half)
            steps += made
        return _without_waited_fences(steps)


def _without_waited_fences(steps):
    """`steps` without the FENCE that ends a run of command steps: the driver waits for
    ``completed == pushed`` before the step after the run (or the round's end), and a FENCE
    retires when every unit is idle, the same condition, so there it would add nothing but a
    command frame on the link. A FENCE between two layers' commands stays (it orders the
    scratchpad rows one writes and the other reads)."""
    kept = []
    for index, step in enumerate(steps):
        ends_run = step.kind == "commands" and (index + 1 == len(steps)
                                                or steps[index + 1].kind != "commands")
        if ends_run and step.data[-1].tolist() == _FENCE:
            if len(step.data) == 1:
                continue
            step = replace(step, data=step.data[:-1], bytes_in=step.bytes_in - 4 * len(_FENCE))
        kept.append(step)
    return kept


def macs_of(graph, node):
    """Multiply-accumulates per sample of a node's op (0 for ops without a weight matrix)."""
    op = node.op
    if node.kind == "BinaryDense":
        return op.k * op.units
    if not hasattr(op, "weight_matrix"):
        return 0
    k, n = op.weight_matrix.shape
    if node.kind in ("Dense", "DenseInt32"):
        return k * n
    height, width = graph.tensor(node.output).shape[:2]
    if node.kind == "Conv2D":
        height, width, _ = op.conv_output_shape(graph.tensor(node.inputs[0]).shape)
    return k * n * height * width
