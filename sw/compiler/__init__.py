"""The compiler: a `sw.graph.Graph` and a device -> a `Program` the driver loads and runs.

`compile_graph(graph, device, batch=None)`; `device` is a `DeviceGeometry` (a connected
`Accelerator.geometry`, or `DeviceGeometry(config)`). One lowering per node
kind (`LOWERINGS`, `sw.compiler.lowering`) and their context (`sw.compiler.plan`), the planner
(`sw.compiler.planner`), the program and its file (`sw.compiler.program`), and the one tiling
implementation: the tensor layouts and layer -> command lists of `sw.compiler.layout`.
"""

from .geometry import DeviceGeometry
from .lowering import LOWERINGS
from .planner import MAX_BATCH, DoesNotFit, compile_graph
from .program import Placement, Program, Step

__all__ = ["DeviceGeometry", "LOWERINGS", "MAX_BATCH", "DoesNotFit", "compile_graph",
           "Placement", "Program", "Step"]
