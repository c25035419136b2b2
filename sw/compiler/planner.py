"""The planner: a graph and a device -> a `Program`.

1. Each node's lowering (`sw.compiler.lowering.LOWERINGS`) says whether the device can run it
   (else a host step with the reason).
2. Weights and requant parameters of device nodes are placed once: the scratchpad's upper bank
   and the parameter memory (INT8), the binary engine's weight and threshold memories (binary)
   hold them resident while they fit; otherwise the largest nodes are *streamed* (written every
   round, in output-channel or neuron groups, into what the resident ones leave).
3. The nodes are lowered in topological order into steps whose tensors live in *regions* of the
   scratchpad's lower bank; a region lives from the node that writes it to its last reader (a
   graph output: to the end of the round), and the tensors move over the link only where a host
   step needs them or a device node needs a layout the producer did not write.
4. The regions get addresses (first fit, freed after their last reader), for the largest batch
   (samples per round) that fits; then the commands are encoded, alternating accumulator halves
   through the whole program so each store overlaps the next compute.
"""

from sw.graph import Graph

from .geometry import DeviceGeometry
from .lowering import LOWERINGS, device_nodes, plan_weights
from .plan import DoesNotFit, Overflow, Plan
from .program import Placement, Program

__all__ = ["DoesNotFit", "compile_graph", "MAX_BATCH"]

MAX_BATCH = 1023        # a GEMM's rows are one store's height (10 bits)


def compile_graph(graph, device, *, batch=None, max_batch=MAX_BATCH):
    """The `Program` running `graph` (a `sw.graph.Graph`, or a model with a ``graph``) on
    `device` (a `DeviceGeometry`), `batch` samples per round (default: the most that fit, up to
    `max_batch`). Raises `DoesNotFit` naming the node that does not fit even split."""
    graph = getattr(graph, "graph", graph)
    if not isinstance(graph, Graph):
        raise TypeError(f"compile_graph takes a sw.graph.Graph or a model with one, "
                        f"not {type(graph).__name__}")
    if not isinstance(device, DeviceGeometry):
        raise TypeError(f"device must be a DeviceGeometry, not {type(device).__name__}")
    for name, value in (("batch", batch), ("max_batch", max_batch)):
        if value is not None and (not isinstance(value, int) or not 1 <= value <= MAX_BATCH):
            raise ValueError(f"{name} must be an integer in [1, {MAX_BATCH}], not {value!r}")
    on_device = device_nodes(graph, device.core)
    weights = plan_weights(graph, device.core, on_device)

    def plan(samples):
        result = Plan(graph, device, samples, weights)
        for index, node in enumerate(graph.nodes):
            result.at, result.node = index, node
            if node.name in on_device:
                LOWERINGS[node.kind].lower(result, node)
            else:
                result.host_step(LOWERINGS[node.kind].host_reason(node, device.core))
        result.at = len(graph.nodes)
        for name in graph.outputs:      # read at the end of the round, for the node writing it
            result.node = graph.writer(name) or graph.nodes[-1]
            result.on_host(name)
        result.allocate()
        return result

    def fits(samples):
        try:
            return plan(samples)
        except Overflow:
            return None

    if batch is None:
        low, high = 1, max_batch
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        batch = low
    try:
        chosen = plan(batch)
    except Overflow as overflow:
        raise DoesNotFit(_overflow_message(overflow, batch, device.core)) from None
    return Program(
        device=device.describe(), batch=batch,
        inputs={name: (graph.tensor(name).shape, graph.tensor(name).dtype)
                for name in graph.inputs},
        outputs={name: (graph.tensor(name).shape, graph.tensor(name).dtype)
                 for name in graph.outputs},
        resident=tuple(chosen.resident), steps=tuple(chosen.materialize()),
        placements=tuple(Placement(*placement) for placement in chosen.placements))


def _overflow_message(overflow, batch, core):
    region = overflow.region
    need = region.rows_per_sample * batch + sum(other.rows_per_sample * batch
                                                for other in overflow.live)
    held = ", ".join(f"{other.tensor!r} {other.rows_per_sample * batch}"
                     for other in overflow.live) or "nothing else"
    return (f"node {region.owner!r} does not fit the device: with {batch} sample(s) per round "
            f"its tensor {region.tensor!r} needs {region.rows_per_sample * batch} scratchpad "
            f"rows beside the live tensors ({held}), {need} rows in all, but the scratchpad's "
            f"activation bank (its lower half) has {overflow.capacity} rows "
            f"(scratchpad_rows={core.scratchpad_rows})")

