"""QONNX zoo: binary and mixed MLPs written with `onnx.helper` as Brevitas and FINN export them.

* `binary_mlp`: Brevitas' QONNX export of a binarized MLP: the float input and every weight
  matrix pass through `BipolarQuant` (domain qonnx.custom_op.general; +1 where x >= 0, else -1,
  times a scale), a hidden layer is MatMul -> BatchNormalization -> BipolarQuant, the last
  layer a plain MatMul.
* `threshold_mlp`: the same network after FINN's streamlining: +1/-1 weights as plain constants
  and every hidden BatchNorm + sign as a `MultiThreshold` with one threshold per channel and a
  bipolar output (out_scale 2, out_bias -1).
* `mixed_mlp`: FINN's mixed network: an 8-bit `Quant` on the input and on the first and last
  layers' weights (power-of-two scales, as FINN's quantizers use), binary hidden layers, and an
  8-bit `Quant` on the output.

Expected values never come from here: tests run the file with qonnx's executor (`run_qonnx`),
which executes the QONNX ops in NumPy and the standard ops in onnxruntime.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["binary_mlp", "threshold_mlp", "mixed_mlp", "run_qonnx", "QONNX_DOMAIN",
           "ZOO"]

QONNX_DOMAIN = "qonnx.custom_op.general"


class _Builder:
    def __init__(self):
        self.nodes, self.initializers = [], []

    def constant(self, name, value):
        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op, inputs, output, qonnx=False, **attributes):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output,
                                           domain=QONNX_DOMAIN if qonnx else "", **attributes))
        return output

    def quant(self, x, output, scale, bits, zero_point=0.0, signed=True):
        """A Quant of `bits` bits (rounding half to even, not narrow)."""
        return self.node("Quant", [x, self.constant(f"{output}_scale", scale),
                                   self.constant(f"{output}_zero_point", zero_point),
                                   self.constant(f"{output}_bits", bits)],
                         output, qonnx=True, signed=int(signed), narrow=0, rounding_mode="ROUND")

    def sign(self, x, output, scale, quantizer="BipolarQuant"):
        """+1/-1 times `scale`: a BipolarQuant, or a Quant of one signed bit (qonnx executes
        both as a sign)."""
        if quantizer == "Quant":
            return self.quant(x, output, scale, 1)
        return self.node("BipolarQuant", [x, self.constant(f"{output}_scale", scale)], output,
                         qonnx=True)

    def batchnorm_sign(self, rng, x, index, n, dot_std, quantizer="BipolarQuant"):
        """BatchNormalization (gamma of both signs) then a sign: a hidden binary layer."""
        gamma = rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n)
        normalized = self.node("BatchNormalization", [
            x, self.constant(f"bn{index}_gamma", gamma),
            self.constant(f"bn{index}_beta", rng.standard_normal(n)),
            self.constant(f"bn{index}_mean", rng.standard_normal(n) * dot_std),
            self.constant(f"bn{index}_var", rng.uniform(0.5, 2.0, n) * dot_std ** 2)],
            f"bn{index}", epsilon=1e-4)
        return self.sign(normalized, f"act{index}", 1.0, quantizer)

    def model(self, name, sizes):
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, sizes[0]])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, sizes[-1]])],
            self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                       helper.make_opsetid(QONNX_DOMAIN, 1)])


def binary_mlp(rng, sizes=(64, 32, 32, 10), weight_scale=1.0, quantizer="BipolarQuant"):
    """Brevitas' binary MLP with layer sizes `sizes`: a sign (`quantizer`: BipolarQuant, or a
    1-bit signed Quant) on the input and on every weight matrix (scale `weight_scale`), MatMul
    -> BatchNormalization (random, gamma of both signs) -> sign per hidden layer, a plain
    MatMul last. Returns the ModelProto."""
    builder = _Builder()
    x = builder.sign("input", "input_bipolar", 1.0, quantizer)
    layers = len(sizes) - 1
    for index, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights = builder.sign(builder.constant(f"w{index}", rng.standard_normal((k, n))),
                               f"w{index}_bipolar", weight_scale, quantizer)
        dot = "output" if index == layers - 1 else f"dot{index}"
        builder.node("MatMul", [x, weights], dot)
        if index == layers - 1:
            break
        x = builder.batchnorm_sign(rng, dot, index, n, np.sqrt(k) * weight_scale, quantizer)
    return builder.model("binary_mlp", sizes)


def _signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, 1.0, -1.0)


def threshold_mlp(rng, sizes=(64, 32, 32, 10)):
    """FINN's streamlined binary MLP: BipolarQuant input, MatMul with +1/-1 constants, one
    MultiThreshold per hidden layer (thresholds on the dot: integers of both parities, so that
    dots equal to a threshold occur, and halves), a plain MatMul last."""
    builder = _Builder()
    x = builder.sign("input", "input_bipolar", 1.0)
    layers = len(sizes) - 1
    for index, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        dot = "output" if index == layers - 1 else f"dot{index}"
        builder.node("MatMul", [x, builder.constant(f"w{index}", _signs(rng, (k, n)))], dot)
        if index == layers - 1:
            break
        thresholds = rng.integers(-6, 7, (n, 1)) + rng.choice([0.0, 0.5], (n, 1))
        x = builder.node("MultiThreshold", [dot, builder.constant(f"t{index}", thresholds)],
                         f"act{index}", qonnx=True, out_dtype="BIPOLAR", out_scale=2.0,
                         out_bias=-1.0)
    return builder.model("threshold_mlp", sizes)


def mixed_mlp(rng, sizes=(64, 32, 32, 10), input_bits=8, input_signed=True):
    """INT8 first layer (input of `input_bits` bits, signed or not, scale 2^-5; 8-bit weights,
    scale 2^-7) with BatchNorm + sign, binary hidden layers, INT8 last layer (8-bit weights,
    scale 2^-6) quantized to 8 bits at the output (scale 0.0771, zero point 3)."""
    builder = _Builder()
    x = builder.quant("input", "input_quant", 2.0 ** -5, input_bits, signed=input_signed)
    layers = len(sizes) - 1
    for index, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index == 0:
            weights = builder.quant(builder.constant("w0", rng.standard_normal((k, n)) / 8),
                                    "w0_quant", 2.0 ** -7, 8)
            dot_std = np.sqrt(k) * 32 * 2.0 ** -5 * 16 * 2.0 ** -7
        elif index == layers - 1:
            weights = builder.quant(builder.constant(f"w{index}", rng.standard_normal((k, n))
                                                     / 2), f"w{index}_quant", 2.0 ** -6, 8)
        else:
            weights = builder.sign(builder.constant(f"w{index}", rng.standard_normal((k, n))),
                                   f"w{index}_bipolar", 0.125)
            dot_std = np.sqrt(k) * 0.125
        dot = builder.node("MatMul", [x, weights], f"dot{index}")
        if index == layers - 1:
            builder.quant(dot, "output", 0.0771, 8, zero_point=3.0)
            break
        x = builder.batchnorm_sign(rng, dot, index, n, dot_std)
    return builder.model("mixed_mlp", sizes)


ZOO = {"binary_mlp": binary_mlp, "threshold_mlp": threshold_mlp, "mixed_mlp": mixed_mlp}


def run_qonnx(model, x):
    """Every tensor of `model` (a ModelProto) for the float input x [1, K], executed by qonnx."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    wrapper = ModelWrapper(onnx.ModelProto.FromString(model.SerializeToString()))
    wrapper = wrapper.transform(InferShapes())
    return execute_onnx(wrapper, {"input": np.asarray(x, np.float32)},
                        return_full_exec_context=True)
