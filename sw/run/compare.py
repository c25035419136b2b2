"""``sw.run --compare``: the model's own runtime on the same inputs, tensor by tensor.

===========  ==========================================================================
format       runtime (an optional dependency: ``pip install "ecpnn[compare]"``)
===========  ==========================================================================
TFLite       LiteRT (`ai_edge_litert`) with its reference kernels (BUILTIN_REF), every
             tensor preserved
ONNX         onnxruntime on the CPU with graph optimisations off: the graph as written
             (its default optimisations turn int8 QDQ models into u8s8 kernels that
             saturate on CPUs without AVX-VNNI)
QONNX        qonnx's executor (`qonnx.core.onnx_exec.execute_onnx`)
===========  ==========================================================================

The runtime gets the model's own inputs (the floats the user gave or drew, or the graph's
integers dequantized for it), one sample at a time. The tensors compared are the graph's inputs
(the runtime's quantization of the float input against `sw.run`'s) and outputs (the runtime's
against the device's); each runtime tensor is read where the graph has it (the int8 tensor
before a DEQUANTIZE / DequantizeLinear) and brought to the graph's form: NCHW -> NHWC, uint8
minus 128, a float tensor divided by the graph tensor's scale (plus its zero point) and
rounded, a float bipolar tensor to its sign.
"""

import importlib.metadata
import importlib.util
from dataclasses import dataclass

import numpy as np

from sw.run.model_file import NotInstalled

__all__ = ["RuntimeFailed", "Comparison", "runtime_for", "compare"]

# format -> (module to import, distribution for the version, what to install, description)
_RUNTIMES = {
    "TFLite": ("ai_edge_litert", "ai-edge-litert", "ai-edge-litert",
               "LiteRT {version}, reference kernels (BUILTIN_REF)"),
    "ONNX": ("onnxruntime", "onnxruntime", "onnxruntime",
             "onnxruntime {version}, CPU, graph optimisations off (the graph as written)"),
    "QONNX": ("qonnx", "qonnx", "qonnx", "qonnx {version} executor (execute_onnx)"),
}


class RuntimeFailed(RuntimeError):
    """The runtime could not run the model (its own error, named)."""


@dataclass(frozen=True)
class Comparison:
    """One graph tensor compared: `role` "input" or "output", `elements` compared, `mismatches`
    (elements that differ), `max_difference` (in integer steps of the graph's tensor); `missing`
    says why a tensor could not be compared (then the counts are 0)."""

    tensor: str
    role: str
    elements: int
    mismatches: int
    max_difference: int
    missing: str = None


def runtime_for(format_name):
    """The description of the runtime comparing `format_name` models; `NotInstalled` (with
    what to install) if it is not installed."""
    module, distribution, package, description = _RUNTIMES[format_name]
    if importlib.util.find_spec(module) is None:
        raise NotInstalled(f"--compare runs {format_name} models in {module}, which is not "
                             f"installed: pip install {package} (or pip install "
                             f"\"ecpnn[compare]\" for every format's runtime)")
    return description.format(version=importlib.metadata.version(distribution))


def compare(model_file, model_inputs, graph_values):
    """`Comparison` s of the graph's inputs and outputs: `graph_values` {graph tensor: array}
    (sw.run's quantized inputs and the device's outputs) against the runtime run on
    `model_inputs` {graph input name: the model's own input [B, ...]}."""
    graph = model_file.graph
    names = (*graph.inputs, *graph.outputs)
    run = {"TFLite": _run_litert, "ONNX": _run_onnxruntime, "QONNX": _run_qonnx}
    try:
        found = run[model_file.format](model_file, model_inputs, names)
    except Exception as error:      # the runtime's own failure, whatever its type
        raise RuntimeFailed(f"{model_file.format} runtime failed on {model_file.path}: "
                            f"{type(error).__name__}: {error}") from None
    return [_compare(graph.tensor(name), "input" if name in graph.inputs else "output",
                     graph_values[name], found.get(name), model_file.format)
            for name in names]


def _compare(tensor, role, ours, theirs, format_name):
    if theirs is None:
        return Comparison(tensor.name, role, 0, 0, 0,
                          missing=f"the {format_name} runtime has no tensor of that name")
    theirs = _graph_form(tensor, theirs, channels_first=format_name != "TFLite")
    if isinstance(theirs, str):
        return Comparison(tensor.name, role, 0, 0, 0, missing=theirs)
    difference = np.abs(ours.astype(np.int64) - theirs.reshape(ours.shape))
    return Comparison(tensor.name, role, int(difference.size), int(np.count_nonzero(difference)),
                      int(difference.max(initial=0)))


def _graph_form(tensor, value, channels_first):
    """A runtime's value of graph tensor `tensor` ([B, ...]) as the graph holds it (int64), or
    a string saying why it cannot be."""
    value = np.asarray(value)
    if channels_first and value.ndim == 4 and len(tensor.shape) == 3:
        value = value.transpose(0, 2, 3, 1)
    if value.size != len(value) * int(np.prod(tensor.shape)):
        return f"the runtime's tensor has shape {list(value.shape)}"
    if value.dtype == np.uint8:
        return value.astype(np.int64) - 128
    if value.dtype.kind in "iu":
        return value.astype(np.int64)
    if tensor.dtype == "binary":
        return np.where(value >= 0, 1, -1)
    if tensor.scale is None or not np.isscalar(tensor.scale):
        return "the runtime's tensor is float and the graph's has no single scale"
    return np.rint(value.astype(np.float64) / tensor.scale).astype(np.int64) + tensor.zero_point


def _per_sample(model_file, model_inputs, run_one):
    """Run `run_one({model input name: one sample [1, ...]})` -> {name: [1, ...]} per sample;
    {name: [B, ...]}."""
    edges = model_file.inputs
    samples = len(model_inputs[edges[0].tensor.name])
    results = {}
    for index in range(samples):
        feed = {edge.model_name: model_inputs[edge.tensor.name][index:index + 1]
                for edge in edges}
        for name, value in run_one(feed).items():
            results.setdefault(name, []).append(np.asarray(value).copy())
    return {name: np.concatenate(values) for name, values in results.items()}


def _run_litert(model_file, model_inputs, names):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_content=model_file.data,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    inputs = {detail["name"]: detail for detail in interpreter.get_input_details()}
    tensor_names = {detail["index"]: detail["name"]
                    for detail in interpreter.get_tensor_details()}
    wanted = {name: index for name in names
              if (index := _litert_index(name, tensor_names)) is not None}

    def run_one(feed):
        for name, value in feed.items():
            interpreter.set_tensor(inputs[name]["index"], value.astype(inputs[name]["dtype"]))
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in wanted.items()}
    return _per_sample(model_file, model_inputs, run_one)


def _litert_index(name, tensor_names):
    """The LiteRT tensor index of graph tensor `name` (the importer names a tensor whose name
    is taken or empty ``name#index``)."""
    base, mark, index = name.rpartition("#")
    if mark and index.isdigit() and tensor_names.get(int(index)) == base:
        return int(index)
    return next((i for i, tensor_name in tensor_names.items() if tensor_name == name), None)


def _run_onnxruntime(model_file, model_inputs, names):
    import onnx
    import onnxruntime
    from onnx import helper
    model = onnx.load_model_from_string(model_file.data)
    outputs = [value.name for value in model.graph.output]
    for name in names:
        if name not in outputs and name not in [value.name for value in model.graph.input]:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
            outputs.append(name)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])

    def run_one(feed):
        values = session.run(outputs, {name: value.astype(np.float32)
                                       for name, value in feed.items()})
        return dict(zip(outputs, values))
    return _per_sample(model_file, model_inputs, run_one)


def _run_qonnx(model_file, model_inputs, names):
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    wrapper = ModelWrapper(onnx.load_model_from_string(model_file.data)).transform(InferShapes())

    def run_one(feed):
        context = execute_onnx(wrapper, {name: value.astype(np.float32)
                                         for name, value in feed.items()},
                               return_full_exec_context=True)
        return {name: context[name] for name in names if name in context}
    return _per_sample(model_file, model_inputs, run_one)
