"""One-operator TFLite models run by LiteRT (`ai_edge_litert`).

Test helper for test_litert.py: `run_op` writes a model holding a single builtin operator with
the given tensors (with the zoo's `TFLiteWriter`), loads it into LiteRT's interpreter (its
default kernels, or the reference kernels, by `resolver`) and returns the output for the given
inputs.
"""

from dataclasses import dataclass

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from zoo.tflite_models import TFLiteWriter


@dataclass
class TensorDef:
    """shape (with batch); dtype; scale/zero_point lists (per channel along `axis`) or None;
    data: a constant's values, None for an activation."""

    shape: tuple
    dtype: object = np.int8
    scale: list = None
    zero_point: list = None
    data: np.ndarray = None
    axis: int = 0


def build_model(tensors, inputs, outputs, opcode, options=None):
    """The .tflite bytes of one operator `opcode` reading tensors `inputs` and writing `outputs`
    (indices into `tensors`); `options` is its builtin options table as ``(name, {field:
    value})``, e.g. ``("AddOptions", {"FusedActivationFunction": 1})``."""
    writer = TFLiteWriter()
    for index, definition in enumerate(tensors):
        quantization = None
        if definition.scale is not None:
            quantization = (definition.scale, definition.zero_point, definition.axis)
        writer.tensor(f"t{index}", definition.shape, definition.dtype, definition.data,
                      quantization)
    options_name, fields = options if options is not None else (None, {})
    writer.operator(opcode, [f"t{i}" for i in inputs], [f"t{i}" for i in outputs],
                    options_name, **fields)
    return writer.serialise([f"t{i}" for i in inputs if tensors[i].data is None],
                            [f"t{i}" for i in outputs])


def run_op(tensors, inputs, outputs, opcode, arrays, *, options=None,
           resolver=OpResolverType.AUTO):
    """Build the one-operator model and run it on `arrays` (one per non-constant input) with
    LiteRT's kernels chosen by `resolver` (an `OpResolverType`)."""
    content = build_model(tensors, inputs, outputs, opcode, options)
    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    for detail, array in zip(interpreter.get_input_details(), arrays):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
