"""A model file as `sw.run` sees it: the imported graph, and how the model's own inputs reach it.

`open_model(path)` imports the file (`sw.importers.load_model`) and reads from it what the graph
does not keep: the format, and for each graph input the model's own input (its name in the
runtime, its shape per sample and layout) and how the model turns a float input into the
graph's integers (an `InputEdge`):

======  ===========================================  ==========================================
format  a float input becomes the graph's input by   computed as
======  ===========================================  ==========================================
TFLite  its QUANTIZE (LiteRT's reference kernel)     float32 ``x / scale`` rounded half away
                                                     from zero, ``+ zero_point``, clamped
ONNX    its QuantizeLinear (onnxruntime)             float32 ``x / scale`` rounded half to
                                                     even, ``+ zero_point``, clamped; NCHW ->
                                                     NHWC (uint8 models: minus 128, as the
                                                     graph holds them)
QONNX   its BipolarQuant                             +1 where ``x >= 0``, else -1 (a multi-bit
                                                     input: as ONNX)
======  ===========================================  ==========================================

A TFLite model whose input is int8 (no QUANTIZE) takes integers only. Integer arrays are always
the graph's own input: int8 in the graph's layout (NHWC), or +1/-1 for a binary input.
Problems with the user's arrays raise `InputError` naming the input, what was found and what is
expected.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.reference import INT8_MAX, INT8_MIN
from sw.importers import ModelImportError, is_tflite, load_model
from sw.quantize import round_half_away

__all__ = ["InputError", "NotInstalled", "InputEdge", "ModelFile", "open_model",
           "read_input_file"]

_QUANTIZERS = {
    "half_away": "its QUANTIZE does (float32 x / scale, half away from zero)",
    "half_even": "its QuantizeLinear does (float32 x / scale, half to even)",
    "sign": "its BipolarQuant does (+1 where x >= 0, else -1)",
}


class NotInstalled(RuntimeError):
    """An optional dependency that reading the model (the ``import`` extra) or ``--compare``
    (the ``compare`` extra) needs is not installed; the message says what to install."""


class InputError(ValueError):
    """An input array (from ``--input`` or given to `InputEdge.prepare`) that the model cannot
    take: the message names the input, what was found and what is expected."""


@dataclass(frozen=True)
class InputEdge:
    """How the model's input `model_name` reaches the graph input `tensor` (a
    `sw.graph.Tensor`): `model_shape` per sample in the model's layout (`channels_first`: NCHW
    where the graph is NHWC); `quantizer` a key of `_QUANTIZERS` when the model takes floats and
    quantizes them itself, None when it takes the graph's integers."""

    tensor: object
    model_name: str
    model_shape: tuple
    channels_first: bool
    quantizer: str | None

    def describe(self):
        graph = f"{self.tensor.dtype} [{', '.join(map(str, self.tensor.shape))}]"
        if self.quantizer is None:
            return f"input {self.tensor.name!r}: {graph} (the model takes integers)"
        quantization = f" (scale {self.tensor.scale:.6g}, zero point " \
            f"{self.tensor.zero_point})" if isinstance(self.tensor.scale, float) else ""
        return (f"input {self.tensor.name!r}: float32 [{', '.join(map(str, self.model_shape))}]"
                f" -> {graph}{quantization}, quantized as {_QUANTIZERS[self.quantizer]}")

    def quantize(self, x):
        """The graph's integers for float model inputs `x` [B, *model_shape]."""
        if self.quantizer == "sign":
            graph = np.where(x >= 0, 1, -1).astype(np.int8)
        else:
            quotient = x.astype(np.float32) / np.float32(self.tensor.scale)
            rounded = round_half_away(quotient) if self.quantizer == "half_away" \
                else np.rint(quotient.astype(np.float64))
            graph = np.clip(rounded + self.tensor.zero_point, INT8_MIN, INT8_MAX).astype(np.int8)
        return graph.transpose(0, 2, 3, 1) if self.channels_first else graph

    def dequantize(self, q):
        """Float model inputs [B, *model_shape] that the model quantizes back to exactly `q`
        (the graph's integers): ``(q - zero_point) * scale`` in float32 is within a tiny
        fraction of a step of ``q``, so its division by the scale rounds back to it."""
        if self.quantizer == "sign":
            x = q.astype(np.float32)
        else:
            x = ((q.astype(np.float32) - np.float32(self.tensor.zero_point))
                 * np.float32(self.tensor.scale))
        return x.transpose(0, 3, 1, 2) if self.channels_first else x

    def prepare(self, array):
        """(graph input, model input) for a user's array: floats in the model's layout (for a
        model that quantizes its input), or the graph's integers; one sample or a batch."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            if self.quantizer is None:
                raise InputError(f"input {self.tensor.name!r}: the model takes "
                                 f"{self.tensor.dtype} integers (it has no float input to "
                                 f"quantize), not {array.dtype} values")
            x = self._batch(array, self.model_shape, "float")
            if not np.all(np.isfinite(x)):
                raise InputError(f"input {self.tensor.name!r}: the float values must be finite "
                                 f"(found NaN or infinity)")
            return self.quantize(x), x.astype(np.float32)
        if array.dtype.kind not in "iu":
            raise InputError(f"input {self.tensor.name!r}: expected float32 values or the "
                             f"graph's {self.tensor.dtype} integers, not dtype {array.dtype}")
        q = self._batch(array, self.tensor.shape, self.tensor.dtype)
        if self.tensor.dtype == "binary":
            if not np.all((q == 1) | (q == -1)):
                raise InputError(f"input {self.tensor.name!r} is binary: integers must be +1 "
                                 f"or -1, found [{q.min()}, {q.max()}]")
        elif q.min() < INT8_MIN or q.max() > INT8_MAX:
            raise InputError(f"input {self.tensor.name!r}: int8 values must be in "
                             f"[{INT8_MIN}, {INT8_MAX}], found [{q.min()}, {q.max()}]")
        q = q.astype(np.int8)
        return q, (q if self.quantizer is None else self.dequantize(q))

    def _batch(self, array, shape, what):
        """`array` as [B, *shape] (a single sample gets its batch axis)."""
        if array.shape == tuple(shape):
            array = array[np.newaxis]
        if array.ndim == 0 or array.shape[1:] != tuple(shape) or not len(array):
            dims = ", ".join(map(str, shape))
            raise InputError(f"input {self.tensor.name!r}: {what} values must have shape "
                             f"[B, {dims}] (or [{dims}] for one sample), not {list(array.shape)}"
                             + (" (the model's float input is channels first, NCHW)"
                                if self.channels_first and what == "float" else ""))
        return array

    def random(self, rng, count):
        """`count` random model inputs: floats around the middle of the range the input's
        quantization represents, its ends three standard deviations away (calibrated ranges
        are the extremes of the data, not its spread; standard normal ones for a bipolar
        input), or uniform integers for an integer input."""
        if self.quantizer is None:
            shape = (count, *self.tensor.shape)
            if self.tensor.dtype == "binary":
                return rng.choice(np.array([-1, 1], np.int8), size=shape)
            return rng.integers(INT8_MIN, INT8_MAX + 1, size=shape, dtype=np.int8)
        shape = (count, *self.model_shape)
        if self.quantizer == "sign":
            return rng.standard_normal(shape).astype(np.float32)
        low, high = ((bound - self.tensor.zero_point) * self.tensor.scale
                     for bound in (INT8_MIN, INT8_MAX))
        return rng.normal((low + high) / 2, (high - low) / 6, size=shape).astype(np.float32)


@dataclass(frozen=True)
class ModelFile:
    """path; format "TFLite", "ONNX" or "QONNX"; data (the file's bytes); graph (the imported
    `sw.graph.Graph`); inputs: one `InputEdge` per graph input, in the graph's order."""

    path: Path
    format: str
    data: bytes
    graph: object
    inputs: tuple


def open_model(path):
    """The `ModelFile` at `path`; `ModelImportError` for a file the importers refuse,
    `NotInstalled` when the importers' parsers are missing."""
    try:
        graph = load_model(path)
    except ModuleNotFoundError as error:
        raise NotInstalled(f"reading {str(path)!r} needs the package {error.name!r}, which is "
                           f"not installed: pip install \"ecpnn[import]\"") from None
    data = Path(path).read_bytes()
    if is_tflite(path, data):
        return ModelFile(Path(path), "TFLite", data, graph, _tflite_edges(data, graph))
    import onnx
    from sw.importers.qonnx import is_qonnx
    model = onnx.load_model_from_string(data)
    format_name = "QONNX" if is_qonnx(model) else "ONNX"
    return ModelFile(Path(path), format_name, data, graph, _onnx_edges(model, graph,
                                                                        format_name))


def _tflite_edges(data, graph):
    from sw.importers.tflite_reader import read_tflite
    model = read_tflite(data)
    edges = []
    for name, index in zip(graph.inputs, model.inputs):
        tensor, source = graph.tensor(name), model.tensors[index]
        edges.append(InputEdge(tensor, source.name, tuple(source.shape[1:]) or (1,), False,
                               "half_away" if source.dtype == np.float32 else None))
    return tuple(edges)


def _onnx_edges(model, graph, format_name):
    constants = {initializer.name for initializer in model.graph.initializer}
    sources = [value for value in model.graph.input if value.name not in constants]
    if len(sources) != len(graph.inputs):
        raise ModelImportError(f"the {format_name} model has {len(sources)} inputs but its "
                               f"graph {len(graph.inputs)}; sw.run maps them in order")
    edges = []
    for name, source in zip(graph.inputs, sources):
        tensor = graph.tensor(name)
        dims = tuple(d.dim_value for d in source.type.tensor_type.shape.dim)[1:]
        channels_first = len(dims) == 3 and len(tensor.shape) == 3
        shape = (tensor.shape[2], *tensor.shape[:2]) if channels_first else tensor.shape
        quantizer = "sign" if tensor.dtype == "binary" else "half_even"
        edges.append(InputEdge(tensor, source.name, shape, channels_first, quantizer))
    return tuple(edges)


def read_input_file(path, edges):
    """{graph input name: array} from a ``.npy`` (a model with one input) or ``.npz`` file
    (one array per input, named by the model's or the graph's input names)."""
    import zipfile
    try:
        with open(path, "rb") as file:
            loaded = np.load(file, allow_pickle=False)
            arrays = {None: loaded} if isinstance(loaded, np.ndarray) else dict(loaded.items())
    except OSError as error:
        raise InputError(f"cannot read --input {str(path)!r}: {error.strerror or error}") \
            from None
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"--input {str(path)!r} is not a readable NumPy .npy or .npz file "
                         f"(truncated or corrupted?): {error}") from None
    if None in arrays:
        if len(edges) != 1:
            raise InputError(f"the model has {len(edges)} inputs: give them in an .npz file "
                             f"named {[edge.model_name for edge in edges]}")
        return {edges[0].tensor.name: arrays[None]}
    values = {}
    for edge in edges:
        name = next((key for key in (edge.model_name, edge.tensor.name) if key in arrays), None)
        if name is None:
            raise InputError(f"--input {str(path)!r} has arrays {sorted(arrays)}; expected "
                             f"one named {edge.model_name!r} (or {edge.tensor.name!r})")
        values[edge.tensor.name] = arrays[name]
    return values
