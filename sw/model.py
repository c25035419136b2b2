"""Chain models: the quantized networks the accelerator runs end to end, as graphs.

A `QuantizedModel` is a chain of layers (`sw.ops` kinds `Dense`, `Conv2D`, `Flatten`, or
`BinaryDense`) plus how float inputs become the integers the first layer takes (`Int8Input` or
`SignInput`) and how the last layer's integers become scores. It is a thin constructor of a
`sw.graph.Graph` (``model.graph``): node ``layers[i]`` writes tensor ``layers[i]``, the input
tensor is ``input``. The graph does the checking (shapes chain, each layer's
``input_zero_point`` equals its input tensor's zero point, binary layers take binary tensors),
with messages naming the node; the model adds its own rules (one kind of model, INT8 or binary;
every hidden binary layer thresholds, so only the last may output int dots, which the graph's
dtype rule enforces). `run_reference` executes the graph with `sim.reference` kernels only; it
is the definition of what running the model on the hardware must return, layer by layer
(`run_reference_layers`). The per-layer contract is in `sw.ops`.

The requant parameters are what the hardware's parameter memory holds per output channel: the
int32 `folded_bias`, M0 (`multiplier`, in [2^30, 2^31)) and the right shift ``-shift`` (0..31).
Input zero points never reach the hardware: they are folded into the bias, and a convolution's
padding is filled with the input zero point so that the folding stays exact at the borders.
"""

from dataclasses import dataclass, field

import numpy as np

from sim.reference import INT8_MAX, INT8_MIN, unpack_bits
from sw.graph import Graph, Node, Tensor, node_output_spec, run_reference_tensors
from sw.ops import BinaryDense, Conv2D, Dense, Flatten, _int_in, _is_int
from sw.quantize import quantize

__all__ = ["Dense", "Conv2D", "Flatten", "BinaryDense", "Int8Input", "SignInput",
           "QuantizedModel", "run_reference", "run_reference_layers"]


# Model -------------------------------------------------------------------------------------------

def _positive_float(owner, name):
    value = getattr(owner, name)
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{type(owner).__name__}.{name} must be a finite number > 0, "
                         f"not {value!r}")
    object.__setattr__(owner, name, float(value))


@dataclass(frozen=True, kw_only=True)
class Int8Input:
    """Affine input quantization: ``q = clamp(round_half_away(x / scale) + zero_point)``."""

    scale: float
    zero_point: int = 0

    def __post_init__(self):
        _positive_float(self, "scale")
        _int_in(self, "zero_point", INT8_MIN, INT8_MAX)

    def __call__(self, x):
        return quantize(x, self.scale, self.zero_point)


@dataclass(frozen=True, kw_only=True)
class SignInput:
    """Binarized input: +1 where ``x >= threshold``, else -1 (int8)."""

    threshold: float

    def __post_init__(self):
        if not isinstance(self.threshold, (int, float, np.floating, np.integer)) \
                or isinstance(self.threshold, bool) or not np.isfinite(self.threshold):
            raise ValueError(f"SignInput.threshold must be a finite number, "
                             f"not {self.threshold!r}")
        object.__setattr__(self, "threshold", float(self.threshold))

    def __call__(self, x):
        return np.where(np.asarray(x, dtype=np.float64) >= self.threshold, 1, -1).astype(np.int8)


_INT8_LAYERS = (Dense, Conv2D, Flatten)


@dataclass(frozen=True, eq=False, kw_only=True)
class QuantizedModel:
    """A network the accelerator runs end to end.

    layers : a sequence of layers (stored as a tuple); input_shape : one sample's shape, e.g.
    ``(64,)`` or ``(8, 8, 1)`` (HWC); input : `Int8Input` for INT8 models, `SignInput` for binary
    ones; output_scale : the real value of one step of the last INT8 layer's output (scores =
    ``(y - output_zero_point) * output_scale``), None for binary models, whose scores are dots.
    """

    layers: tuple
    input_shape: tuple
    input: object
    output_scale: float = None
    graph: Graph = field(init=False, repr=False)

    def __post_init__(self):
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ValueError("QuantizedModel.layers must not be empty")
        binary = isinstance(layers[0], BinaryDense)
        allowed = (BinaryDense,) if binary else _INT8_LAYERS
        for index, layer in enumerate(layers):
            if not isinstance(layer, allowed):
                raise TypeError(f"QuantizedModel.layers[{index}] is {type(layer).__name__}; a "
                                f"{'binary' if binary else 'INT8'} model takes only "
                                f"{[cls.__name__ for cls in allowed]}")
        if not (isinstance(self.input_shape, (tuple, list)) and self.input_shape
                and all(_is_int(v) and v > 0 for v in self.input_shape)):
            raise ValueError(f"QuantizedModel.input_shape must be a tuple of positive integers, "
                             f"not {self.input_shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        if binary:
            self._check_binary()
        else:
            self._check_int8(layers)
        object.__setattr__(self, "graph", self._chain_graph(layers, binary))

    def _check_binary(self):
        if not isinstance(self.input, SignInput):
            raise TypeError(f"QuantizedModel.input of a binary model must be a SignInput, "
                            f"not {self.input!r}")
        if self.output_scale is not None:
            raise ValueError("QuantizedModel.output_scale must be None for a binary model "
                             "(its scores are the int dots)")

    def _check_int8(self, layers):
        if not isinstance(self.input, Int8Input):
            raise TypeError(f"QuantizedModel.input of an INT8 model must be an Int8Input, "
                            f"not {self.input!r}")
        _positive_float(self, "output_scale")
        if isinstance(layers[-1], Flatten):
            raise ValueError("QuantizedModel.layers must not end with Flatten")

    def _chain_graph(self, layers, binary):
        """Tensor "input" -> node "layers[0]" -> tensor "layers[0]" -> ... (checked by Graph)."""
        if binary:
            tensors = [Tensor(name="input", shape=self.input_shape, dtype="binary")]
        else:
            tensors = [Tensor(name="input", shape=self.input_shape, scale=self.input.scale,
                              zero_point=self.input.zero_point)]
        nodes = []
        for index, layer in enumerate(layers):
            node = Node(name=f"layers[{index}]", op=layer, inputs=(tensors[-1].name,),
                        output=f"layers[{index}]")
            spec = node_output_spec(node, {tensor.name: tensor for tensor in tensors})
            last = index == len(layers) - 1
            tensors.append(Tensor(name=node.output, shape=spec.shape, dtype=spec.dtype,
                                  scale=self.output_scale if last else spec.scale,
                                  zero_point=spec.zero_point))
            nodes.append(node)
        return Graph(tensors=tensors, nodes=nodes, inputs=("input",), outputs=(nodes[-1].output,))

    @property
    def is_binary(self):
        return isinstance(self.layers[0], BinaryDense)

    @property
    def output_shape(self):
        return self.graph.tensor(self.graph.outputs[0]).shape

    def quantize_input(self, x):
        """Float samples [M, *input_shape] -> what the first layer takes (int8 or +1/-1 int8)."""
        return self.input(x)

    def scores(self, y):
        """The last layer's integers as float scores (dequantized, or the dots as floats)."""
        y = np.asarray(y, dtype=np.float64)
        if self.is_binary:
            return y
        return (y - self.layers[-1].output_zero_point) * self.output_scale

    def predict(self, x):
        """Class indices for float samples, through the reference executor."""
        return np.argmax(run_reference(self, self.quantize_input(x)), axis=-1)


# Executor ----------------------------------------------------------------------------------------

def _model_input(model, x):
    """`x` as the graph input: packed bits unpacked; floats refused with a pointer to
    `quantize_input` (the graph checks shape, dtype and range)."""
    x = np.asarray(x)
    if model.is_binary and x.dtype == np.uint8 and x.ndim == 2:
        x = unpack_bits(x, model.input_shape[0])
    if x.dtype.kind not in "iu":
        raise TypeError(f"input must be an integer array, not dtype {x.dtype}; quantize floats "
                        f"with model.quantize_input")
    return x


def run_reference_layers(model, x):
    """Every layer's output for input `x`, in order: int8 [M, ...], +1/-1 int8 or int32 dots.

    x: a batch [M, *model.input_shape] of int8 (INT8 models) or +1/-1 int8 (binary models; uint8
    [M, ceil(K/8)] packed bits are accepted too). Each output is the next layer's input.
    """
    if not isinstance(model, QuantizedModel):
        raise TypeError(f"model must be a QuantizedModel, not {type(model).__name__}")
    values = run_reference_tensors(model.graph, _model_input(model, x))
    return [values[node.output] for node in model.graph.nodes]


def run_reference(model, x):
    """The model's final output for input `x` (see `run_reference_layers`)."""
    return run_reference_layers(model, x)[-1]
