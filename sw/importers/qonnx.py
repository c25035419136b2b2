"""QONNX binary (W1A1) networks as Brevitas exports them -> `sw.graph.Graph`.

Accepted, per layer (names are QONNX/ONNX op types; BipolarQuant is +1 where x >= 0 else -1,
times its scale)::

    BipolarQuant(graph input)                    the graph input: a binary tensor [K]
    MatMul(binary x, BipolarQuant(W [K, N]))     BinaryDense with weights W^T as +1/-1
      -> BatchNormalization -> BipolarQuant      hidden layer: the BatchNorm and sign folded
      (or -> BipolarQuant alone)                 into per-channel thresholds
      -> graph output                            output layer: the int32 dots, scale = the
                                                 product of the operands' BipolarQuant scales

Folding (`sim.reference.fold_batchnorm_sign`) is exact for integer dots except where a dot lies
within float rounding of a threshold. Positive per-tensor BipolarQuant scales are accepted (a
scale s multiplies the dot, so the BatchNorm is folded on gamma*s and mean/s). The graph's input
is the sign of the float input: feed +1 where x >= 0, else -1.

Refused by name (`ModelImportError`): Quant (multi-bit), MultiThreshold (FINN-streamlined
models), non-positive or per-channel scales, and any other op (the supported list is in the
message).
"""

import numpy as np

from sim.reference import fold_batchnorm_sign
from sw import ops
from sw.graph import Graph, Node, Tensor
from sw.importers.common import ModelImportError, unsupported_op

__all__ = ["QONNX_DOMAINS", "is_qonnx", "qonnx_to_graph", "SUPPORTED_OPS"]

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
SUPPORTED_OPS = ("BipolarQuant", "MatMul", "BatchNormalization", "Identity")


def is_qonnx(model):
    """True if the ONNX ModelProto uses QONNX custom ops."""
    return any(node.domain in QONNX_DOMAINS for node in model.graph.node)


def qonnx_to_graph(model):
    """The `Graph` of a QONNX ModelProto (see the module docstring)."""
    return _Lowering(model).graph()


class _Lowering:
    def __init__(self, model):
        from onnx import numpy_helper
        self.model = model.graph
        self.constants = {init.name: numpy_helper.to_array(init)
                          for init in self.model.initializer}
        self.tensors = {}           # graph tensor name -> Tensor
        self.nodes = []
        self.binary = {}            # ONNX name -> (graph tensor name, scale)
        self.weights = {}           # ONNX name -> (+1/-1 int8 [K, N], scale)
        self.dots = {}              # ONNX name -> pending layer (source, weights [N, K], scale)
        self.normalized = {}        # ONNX name -> (pending layer, BatchNorm parameters)
        self.input = None

    def graph(self):
        for position, node in enumerate(self.model.node):
            handler = _HANDLERS.get(node.op_type)
            if handler is None or (node.op_type == "BipolarQuant") != (node.domain
                                                                       in QONNX_DOMAINS):
                raise unsupported_op("QONNX", node.op_type, node.name, position, SUPPORTED_OPS)
            handler(self, node, position)
        if self.input is None:
            raise ModelImportError("the QONNX model has no BipolarQuant on its input")
        if len(self.model.output) != 1:
            raise ModelImportError(f"the QONNX model has {len(self.model.output)} outputs; one "
                                   f"is supported")
        output = self._output(self.model.output[0].name)
        try:
            return Graph(tensors=tuple(self.tensors.values()), nodes=tuple(self.nodes),
                         inputs=(self.input,), outputs=(output,))
        except ValueError as error:
            raise ModelImportError(f"the QONNX model does not form a valid graph: {error}") \
                from None

    def _error(self, node, position, message):
        return ModelImportError(f"QONNX node {node.name!r} ({node.op_type}, position "
                                f"{position}): {message}")

    def _scale(self, node, position):
        scale = self.constants.get(node.input[1])
        if scale is None or np.size(scale) != 1 or not float(np.ravel(scale)[0]) > 0:
            raise self._error(node, position, f"the scale must be one constant > 0, not "
                                              f"{None if scale is None else scale.tolist()}")
        return float(np.ravel(scale)[0])

    # Ops -----------------------------------------------------------------------------------------

    def bipolar_quant(self, node, position):
        source, output = node.input[0], node.output[0]
        scale = self._scale(node, position)
        if source in self.constants:
            values = self.constants[source]
            if values.ndim != 2:
                raise self._error(node, position, f"weights must be a 2-D [K, N] matrix, not "
                                                  f"{list(values.shape)}")
            self.weights[output] = (np.where(values >= 0, 1, -1).astype(np.int8), scale)
        elif source in [value.name for value in self.model.input]:
            self._graph_input(node, position, source, output, scale)
        elif source in self.normalized:
            (layer, batchnorm) = self.normalized.pop(source)
            self._hidden(node, output, layer, batchnorm, scale)
        elif source in self.dots:
            layer = self.dots.pop(source)
            channels = len(layer[1])
            # sign(dot * s) with s > 0: +1 where dot >= 0.
            self._hidden(node, output, layer, (np.ones(channels), np.zeros(channels),
                                               np.zeros(channels), np.ones(channels), 0.0),
                         scale)
        else:
            raise self._error(node, position, f"{source!r} is neither the graph input, "
                                              f"weights, nor a MatMul or BatchNormalization "
                                              f"output")

    def _graph_input(self, node, position, source, output, scale):
        if self.input is not None:
            raise self._error(node, position, "only one graph input is supported")
        dims = next(v for v in self.model.input if v.name == source).type.tensor_type.shape.dim
        shape = [d.dim_value for d in dims]
        if len(shape) != 2 or shape[0] not in (0, 1) or not shape[1]:
            raise self._error(node, position, f"the input must be [1, K], not {shape}")
        self.tensors[output] = Tensor(name=output, shape=(shape[1],), dtype="binary")
        self.binary[output] = (output, scale)
        self.input = output

    def _hidden(self, node, output, layer, batchnorm, scale):
        source, weights, dot_scale = layer
        gamma, beta, mean, var, epsilon = batchnorm
        # BatchNorm sees dot * dot_scale: fold on gamma * s and mean / s.
        thresholds, ascending = fold_batchnorm_sign(gamma * dot_scale, beta, mean / dot_scale,
                                                    var, epsilon)
        self._emit(output, ops.BinaryDense(weights=weights, thresholds=thresholds,
                                           ascending=ascending), source)
        self.binary[output] = (output, scale)

    def matmul(self, node, position):
        a, b = node.input[:2]
        if a not in self.binary or b not in self.weights:
            raise self._error(node, position, "only MatMul(binary activations, BipolarQuant "
                                              "weights) is supported")
        source, activation_scale = self.binary[a]
        weights, weight_scale = self.weights[b]
        if weights.shape[0] != self.tensors[source].shape[0]:
            raise self._error(node, position, f"weights {list(weights.shape)} do not take "
                                              f"{self.tensors[source].shape[0]} inputs")
        self.dots[node.output[0]] = (source, weights.T, activation_scale * weight_scale)

    def batch_normalization(self, node, position):
        source = node.input[0]
        if source not in self.dots:
            raise self._error(node, position, "BatchNormalization must follow a binary MatMul")
        parameters = [self.constants.get(name) for name in node.input[1:5]]
        if any(p is None for p in parameters):
            raise self._error(node, position, "the BatchNorm parameters must be constants")
        with np.errstate(invalid="ignore"):     # a corrupted value may be a signalling NaN
            parameters = [p.astype(np.float64) for p in parameters]
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        channels = len(self.dots[source][1])
        if any(p.shape != (channels,) or not np.all(np.isfinite(p)) for p in parameters) \
                or not np.all(parameters[3] + epsilon > 0):
            raise self._error(node, position, f"the BatchNorm parameters must be {channels} "
                                              f"finite values each, with var + epsilon > 0")
        self.normalized[node.output[0]] = (self.dots.pop(source), (*parameters, epsilon))

    def identity(self, node, position):
        for table in (self.binary, self.dots, self.normalized, self.weights):
            if node.input[0] in table:
                table[node.output[0]] = table.pop(node.input[0])
                return
        raise self._error(node, position, f"Identity of {node.input[0]!r}, which is not a "
                                          f"layer output")

    def _output(self, name):
        if name in self.dots:
            source, weights, scale = self.dots.pop(name)
            self._emit(name, ops.BinaryDense(weights=weights), source, scale=scale)
            return name
        if name in self.binary:
            return self.binary[name][0]
        raise ModelImportError(f"the QONNX output {name!r} is not a MatMul or BipolarQuant "
                               f"output")

    def _emit(self, name, op, source, scale=None):
        spec = op.output_spec((self.tensors[source],))
        self.tensors[name] = Tensor(name=name, shape=spec.shape, dtype=spec.dtype,
                                    scale=scale, zero_point=spec.zero_point)
        self.nodes.append(Node(name=name, op=op, inputs=(source,), output=name))


_HANDLERS = {"BipolarQuant": _Lowering.bipolar_quant, "MatMul": _Lowering.matmul,
             "BatchNormalization": _Lowering.batch_normalization,
             "Identity": _Lowering.identity}
