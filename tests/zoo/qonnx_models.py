"""QONNX zoo: a binary (W1A1) MLP written with `onnx.helper` as Brevitas exports one.

Brevitas' QONNX export of a binarized MLP: the float input and every weight matrix pass through
`BipolarQuant` (domain qonnx.custom_op.general; +1 where x >= 0, else -1, times a scale), a
hidden layer is MatMul -> BatchNormalization -> BipolarQuant, the last layer a plain MatMul.
Expected values never come from here: tests run the file with qonnx's executor
(`run_qonnx`), which executes BipolarQuant in NumPy and the standard ops in onnxruntime.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["binary_mlp", "run_qonnx", "QONNX_DOMAIN"]

QONNX_DOMAIN = "qonnx.custom_op.general"


def binary_mlp(rng, sizes=(64, 32, 32, 10), weight_scale=1.0):
    """The float-in, float-out QONNX model of a binary MLP with layer sizes `sizes`; hidden
    BatchNorm parameters random (gamma of both signs). Returns the ModelProto."""
    nodes, initializers = [], []

    def constant(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    x = "input"
    nodes.append(helper.make_node("BipolarQuant", [x, constant("input_scale", 1.0)],
                                  ["input_bipolar"], domain=QONNX_DOMAIN))
    x = "input_bipolar"
    layers = len(sizes) - 1
    for index, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights = constant(f"w{index}", rng.standard_normal((k, n)))
        nodes.append(helper.make_node(
            "BipolarQuant", [weights, constant(f"w{index}_scale", weight_scale)],
            [f"w{index}_bipolar"], domain=QONNX_DOMAIN))
        dot = "output" if index == layers - 1 else f"dot{index}"
        nodes.append(helper.make_node("MatMul", [x, f"w{index}_bipolar"], [dot]))
        if index == layers - 1:
            break
        gamma = rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n)
        nodes.append(helper.make_node(
            "BatchNormalization",
            [dot, constant(f"bn{index}_gamma", gamma),
             constant(f"bn{index}_beta", rng.standard_normal(n)),
             constant(f"bn{index}_mean", rng.standard_normal(n) * np.sqrt(k) * weight_scale),
             constant(f"bn{index}_var", rng.uniform(0.5, 2.0, n) * k * weight_scale ** 2)],
            [f"bn{index}"], epsilon=1e-4))
        nodes.append(helper.make_node("BipolarQuant",
                                      [f"bn{index}", constant(f"act{index}_scale", 1.0)],
                                      [f"act{index}"], domain=QONNX_DOMAIN))
        x = f"act{index}"
    graph = helper.make_graph(
        nodes, "binary_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, sizes[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, sizes[-1]])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(QONNX_DOMAIN, 1)])


def run_qonnx(model, x):
    """Every tensor of `model` (a ModelProto) for the float input x [1, K], executed by qonnx."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    wrapper = ModelWrapper(onnx.ModelProto.FromString(model.SerializeToString()))
    wrapper = wrapper.transform(InferShapes())
    return execute_onnx(wrapper, {"input": np.asarray(x, np.float32)},
                        return_full_exec_context=True)
