"""The network graph: named quantized tensors and the operations between them, a checked DAG.

A `Graph` is what importers produce and the compiler lowers: `Tensor` s (name, per-sample shape,
dtype "int8" | "int32" | "binary", quantization scale and zero point) and `Node` s (name, one
operation of `sw.ops`, input tensor names, output tensor name). It is checked on construction,
every message naming the node or tensor at fault:

* names: tensor names unique, node names unique, graph inputs/outputs declared;
* wiring: every tensor written by exactly one node or a graph input, every tensor read by a
  node or a graph output (nothing dangles), and no cycle; nodes are kept in a topological order
  (the given order where it already is one);
* each node: its operation's input rules (dtypes, shapes, stated quantization equal to the
  input tensors') and its declared output tensor equal to what the operation produces (shape,
  dtype, zero point, scale where the operation fixes it).

`run_reference(graph, inputs)` executes every node with `sim.reference` kernels (batch first);
`run_reference_tensors` returns every tensor. `GraphBuilder` declares output tensors from the
operations while adding nodes. Nothing here knows the device.
"""

from dataclasses import dataclass

import numpy as np

from sim.reference import INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, tflite_scale
from sw.ops import DTYPES, OPERATIONS

__all__ = ["Tensor", "Node", "Graph", "GraphBuilder", "node_output_spec", "run_reference",
           "run_reference_tensors"]


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_name(owner, value):
    if not isinstance(value, str) or not value:
        raise TypeError(f"{owner} name must be a non-empty string, not {value!r}")


def _name_tuple(where, value):
    if isinstance(value, str) or not isinstance(value, (tuple, list)) \
            or not all(isinstance(v, str) and v for v in value):
        raise TypeError(f"{where} must be a tuple of tensor names, not {value!r}")
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class Tensor:
    """A named tensor: shape per sample (batch first at run time), dtype, quantization.

    int8: real = scale * (q - zero_point); zero_point in [-128, 127] (default 0), scale a float,
    a tuple of floats per channel (last axis), or None where nothing fixes it yet. Scales are
    held as float32 values, as TFLite stores them. int32: raw integers, zero_point 0.
    binary: +1/-1 values, no scale and no zero point.
    """

    name: str
    shape: tuple
    dtype: str = "int8"
    scale: object = None
    zero_point: int = None

    def __post_init__(self):
        _check_name("Tensor", self.name)
        where = f"tensor {self.name!r}"
        if not (isinstance(self.shape, (tuple, list)) and self.shape
                and all(_is_int(v) and v > 0 for v in self.shape)):
            raise ValueError(f"{where}: shape must be a tuple of positive integers, "
                             f"not {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        if self.dtype not in DTYPES:
            raise ValueError(f"{where}: dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.dtype == "binary":
            if self.scale is not None or self.zero_point is not None:
                raise ValueError(f"{where}: a binary tensor has no scale or zero point")
            return
        zero_point = 0 if self.zero_point is None else self.zero_point
        low, high = (INT8_MIN, INT8_MAX) if self.dtype == "int8" else (0, 0)
        if not _is_int(zero_point) or not low <= zero_point <= high:
            raise ValueError(f"{where}: zero_point of an {self.dtype} tensor must be an integer "
                             f"in [{low}, {high}], not {zero_point!r}")
        object.__setattr__(self, "zero_point", int(zero_point))
        object.__setattr__(self, "scale", self._checked_scale())

    def _checked_scale(self):
        try:
            if self.scale is None:
                return None
            if isinstance(self.scale, (tuple, list, np.ndarray)):
                if len(self.scale) != self.shape[-1]:
                    raise ValueError(f"a per-channel scale needs {self.shape[-1]} entries (the "
                                     f"last axis), not {len(self.scale)}")
                return tuple(tflite_scale("scale", s) for s in self.scale)
            return tflite_scale("scale", self.scale)
        except (TypeError, ValueError) as error:
            raise ValueError(f"tensor {self.name!r}: {error}") from None


@dataclass(frozen=True, kw_only=True)
class Node:
    """One operation (`sw.ops`) reading tensors `inputs` (names, in the operation's order) and
    writing the tensor `output`."""

    name: str
    op: object
    inputs: tuple
    output: str

    def __post_init__(self):
        _check_name("Node", self.name)
        if not isinstance(self.op, OPERATIONS):
            raise TypeError(f"node {self.name!r}: op must be one of "
                            f"{[kind.__name__ for kind in OPERATIONS]}, not {self.op!r}")
        inputs = _name_tuple(f"node {self.name!r} ({self.kind}) inputs", self.inputs)
        object.__setattr__(self, "inputs", inputs)
        _check_name(f"node {self.name!r} output tensor", self.output)
        arity = self.op.arity
        if (arity is None and len(inputs) < 2) or (arity is not None and len(inputs) != arity):
            expected = "two or more" if arity is None else str(arity)
            raise ValueError(f"node {self.name!r} ({self.kind}) takes {expected} inputs, "
                             f"not {len(inputs)}")

    @property
    def kind(self):
        return type(self.op).__name__

    def __str__(self):
        return f"node {self.name!r} ({self.kind})"


def node_output_spec(node, tensors):
    """`node`'s output `sw.ops.TensorSpec` given {name: Tensor} holding its inputs; an
    operation's ValueError comes back prefixed with the node."""
    try:
        return node.op.output_spec(tuple(tensors[name] for name in node.inputs))
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from None


def _spec_mismatch(node, tensor, spec):
    checks = [("shape", tuple(spec.shape), tensor.shape), ("dtype", spec.dtype, tensor.dtype)]
    if spec.zero_point is not None:
        checks.append(("zero point", spec.zero_point, tensor.zero_point))
    if spec.scale is not None:
        checks.append(("scale", spec.scale, tensor.scale))
    for what, produced, declared in checks:
        if produced != declared:
            return ValueError(f"{node}: output tensor {tensor.name!r} is declared with {what} "
                              f"{declared!r} but {node.kind} produces {produced!r}")
    return None


@dataclass(frozen=True, eq=False, kw_only=True)
class Graph:
    """A checked DAG of quantized operations (see the module docstring).

    tensors : `Tensor` s; nodes : `Node` s (kept in topological order); inputs, outputs : tensor
    names of the graph's inputs and outputs, in the order `run_reference` takes and returns them.
    """

    tensors: tuple
    nodes: tuple
    inputs: tuple
    outputs: tuple

    def __post_init__(self):
        tensors, nodes = tuple(self.tensors), tuple(self.nodes)
        for what, items, kind in (("tensors", tensors, Tensor), ("nodes", nodes, Node)):
            for item in items:
                if not isinstance(item, kind):
                    raise TypeError(f"Graph.{what} must hold {kind.__name__} objects, "
                                    f"not {item!r}")
        object.__setattr__(self, "tensors", tensors)
        object.__setattr__(self, "inputs", _name_tuple("Graph.inputs", self.inputs))
        object.__setattr__(self, "outputs", _name_tuple("Graph.outputs", self.outputs))
        by_name = self._index_tensors()
        writers = self._check_wiring(nodes, by_name)
        object.__setattr__(self, "nodes", self._topological_order(nodes, writers))
        for node in self.nodes:
            error = _spec_mismatch(node, by_name[node.output], node_output_spec(node, by_name))
            if error:
                raise error

    def _index_tensors(self):
        by_name = {}
        for tensor in self.tensors:
            if tensor.name in by_name:
                raise ValueError(f"tensor name {tensor.name!r} is declared twice")
            by_name[tensor.name] = tensor
        object.__setattr__(self, "_by_name", by_name)
        for where, names in (("input", self.inputs), ("output", self.outputs)):
            if not names:
                raise ValueError(f"a graph needs at least one {where}")
            for name in names:
                if name not in by_name:
                    raise ValueError(f"graph {where} {name!r} is not a declared tensor")
            if len(set(names)) != len(names):
                raise ValueError(f"graph {where}s {names} name a tensor twice")
        return by_name

    def _check_wiring(self, nodes, by_name):
        """{tensor name: writing node}; every tensor written once and read (or an output)."""
        writers, node_names, read = {}, set(), set()
        for node in nodes:
            if node.name in node_names:
                raise ValueError(f"node name {node.name!r} is used by two nodes")
            node_names.add(node.name)
            for name in (*node.inputs, node.output):
                if name not in by_name:
                    verb = "writes" if name == node.output else "reads"
                    raise ValueError(f"{node} {verb} tensor {name!r}, which is not declared")
            if node.output in self.inputs:
                raise ValueError(f"{node} writes tensor {node.output!r}, which is a graph input")
            if node.output in writers:
                raise ValueError(f"{node} writes tensor {node.output!r}, which "
                                 f"{writers[node.output]} writes too")
            writers[node.output] = node
            read.update(node.inputs)
        for node in nodes:
            for name in node.inputs:
                if name not in writers and name not in self.inputs:
                    raise ValueError(f"{node} reads tensor {name!r}, which no node writes and "
                                     f"which is not a graph input")
            if node.output not in read and node.output not in self.outputs:
                raise ValueError(f"{node} writes tensor {node.output!r}, which no node reads "
                                 f"and which is not a graph output")
        for tensor in self.tensors:
            if tensor.name not in writers and tensor.name not in self.inputs:
                raise ValueError(f"tensor {tensor.name!r} is neither written by a node nor a "
                                 f"graph input")
            if tensor.name in self.inputs and tensor.name not in read \
                    and tensor.name not in self.outputs:
                raise ValueError(f"graph input {tensor.name!r} is read by no node")
        return writers

    @staticmethod
    def _topological_order(nodes, writers):
        """Nodes in an order where each follows the writers of its inputs (Kahn's algorithm,
        stable); a cycle raises naming its nodes and tensors."""
        order, done, pending = [], set(), list(nodes)
        while pending:
            ready = [node for node in pending
                     if all(writers.get(name) is None or writers[name].name in done
                            for name in node.inputs)]
            if not ready:
                raise ValueError(_describe_cycle(pending[0], writers, done))
            for node in ready:
                done.add(node.name)
            order += ready
            pending = [node for node in pending if node.name not in done]
        return tuple(order)

    def tensor(self, name):
        """The `Tensor` called `name`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in the graph") from None

    def writer(self, name):
        """The node writing tensor `name`, or None for a graph input."""
        self.tensor(name)
        return next((node for node in self.nodes if node.output == name), None)

    def readers(self, name):
        """The nodes reading tensor `name`, in topological order."""
        self.tensor(name)
        return tuple(node for node in self.nodes if name in node.inputs)


def _describe_cycle(start, writers, done):
    """Name a cycle among the nodes not yet ordered: each of them reads a tensor written by
    another of them (else it would be ready), so walking back from `start` must revisit one."""
    path, seen, node = [], {}, start
    while node.name not in seen:
        seen[node.name] = len(path)
        name = next(name for name in node.inputs
                    if writers.get(name) is not None and writers[name].name not in done)
        path.append((node, name))
        node = writers[name]
    cycle = path[seen[node.name]:]
    steps = ", which ".join(f"reads {name!r}, written by {writers[name]}" for _, name in cycle)
    return f"the graph has a cycle: {cycle[0][0]} {steps}"


class GraphBuilder:
    """Builds a `Graph` node by node, declaring each node's output tensor from its operation.

    ``x = builder.input("x", (8, 8, 1), scale=0.02, zero_point=-128)``;
    ``y = builder.node("conv", Conv2D(...), [x], scale=0.05)`` (the output scale where the
    operation leaves it open); ``graph = builder.build(outputs=[y])``. Errors name the node.
    """

    def __init__(self):
        self._tensors = {}
        self._nodes = []
        self._inputs = []

    def input(self, name, shape, dtype="int8", *, scale=None, zero_point=None):
        """Declare a graph input tensor; returns its name."""
        self._declare(Tensor(name=name, shape=shape, dtype=dtype, scale=scale,
                             zero_point=zero_point))
        self._inputs.append(name)
        return name

    def node(self, name, op, inputs, *, output=None, scale=None):
        """Add node `name` applying `op` to the tensors `inputs`; its output tensor is called
        `output` (default: the node's name) and takes `scale` if `op` does not fix one."""
        node = Node(name=name, op=op, inputs=inputs, output=name if output is None else output)
        for tensor in node.inputs:
            if tensor not in self._tensors:
                raise ValueError(f"{node} reads tensor {tensor!r}, which is not declared yet")
        spec = node_output_spec(node, self._tensors)
        if spec.scale is not None and scale is not None:
            raise ValueError(f"{node}: the output scale is {spec.scale!r}, fixed by {node.kind}; "
                             f"do not pass scale")
        self._declare(Tensor(name=node.output, shape=spec.shape, dtype=spec.dtype,
                             scale=spec.scale if scale is None else scale,
                             zero_point=spec.zero_point))
        self._nodes.append(node)
        return node.output

    def _declare(self, tensor):
        if tensor.name in self._tensors:
            raise ValueError(f"tensor name {tensor.name!r} is declared twice")
        self._tensors[tensor.name] = tensor

    def build(self, outputs):
        """The checked `Graph` with these output tensors."""
        return Graph(tensors=tuple(self._tensors.values()), nodes=tuple(self._nodes),
                     inputs=tuple(self._inputs), outputs=tuple(outputs))


# Executor ----------------------------------------------------------------------------------------

_RANGES = {"int8": (INT8_MIN, INT8_MAX), "int32": (INT32_MIN, INT32_MAX)}


def _check_input(tensor, value):
    x = np.asarray(value)
    expected = f"[B, {', '.join(map(str, tensor.shape))}]"
    if x.shape[1:] != tensor.shape or x.ndim != len(tensor.shape) + 1:
        raise ValueError(f"input {tensor.name!r} must have shape {expected}, not {x.shape}")
    if x.dtype.kind not in "iu":
        raise TypeError(f"input {tensor.name!r} must be an integer array ({tensor.dtype}), "
                        f"not dtype {x.dtype}")
    if tensor.dtype == "binary":
        if not np.all((x == 1) | (x == -1)):
            raise ValueError(f"input {tensor.name!r} is binary: it must hold only +1 and -1")
        return x.astype(np.int8)
    low, high = _RANGES[tensor.dtype]
    if x.size and (x.min() < low or x.max() > high):
        raise ValueError(f"input {tensor.name!r} ({tensor.dtype}) must be in [{low}, {high}], "
                         f"found [{x.min()}, {x.max()}]")
    return x.astype(np.int8 if tensor.dtype == "int8" else np.int32)


def _graph_inputs(graph, inputs):
    if not isinstance(inputs, dict):
        if len(graph.inputs) != 1:
            raise TypeError(f"the graph has inputs {graph.inputs}: pass a dict of arrays")
        inputs = {graph.inputs[0]: inputs}
    if set(inputs) != set(graph.inputs):
        raise ValueError(f"inputs must be exactly the graph inputs {graph.inputs}, "
                         f"not {tuple(inputs)}")
    values = {name: _check_input(graph.tensor(name), inputs[name]) for name in graph.inputs}
    batches = {name: len(value) for name, value in values.items()}
    if len(set(batches.values())) > 1:
        raise ValueError(f"inputs must share one batch size, not {batches}")
    return values


def run_reference_tensors(graph, inputs):
    """Every tensor of `graph` for `inputs`, as {name: array}, batch first.

    inputs: one array (a graph with one input) or {input name: array}, each [B, *shape]: int8
    values, +1/-1 for binary inputs, int32 for int32 inputs. Arrays: int8 (int8 and binary
    tensors, binary as +1/-1) or int32.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a Graph, not {type(graph).__name__}")
    values = _graph_inputs(graph, inputs)
    for node in graph.nodes:
        values[node.output] = node.op.run(*(values[name] for name in node.inputs))
    return values


def run_reference(graph, inputs):
    """The graph's output for `inputs` (see `run_reference_tensors`): one array, or a tuple in
    ``graph.outputs`` order when the graph has several outputs."""
    values = run_reference_tensors(graph, inputs)
    outputs = tuple(values[name] for name in graph.outputs)
    return outputs[0] if len(outputs) == 1 else outputs
