"""Read a TFLite flatbuffer into plain Python values, checked, with the `tflite` package.

`read_tflite(data)` returns the first subgraph as a `TFLiteModel`: its tensors (name, shape,
type, constant data, quantization) and its operators in execution order (builtin name, input and
output tensor indices, options table). Every read is bounds-checked by flatbuffers or here, and
any failure of the parser on a truncated or corrupted file becomes a `ModelImportError` naming
the file's problem, never a traceback from inside the parser.
"""

import struct
from dataclasses import dataclass

import numpy as np

from sw.importers.common import ModelImportError

__all__ = ["TFLiteTensor", "TFLiteOperator", "TFLiteModel", "read_tflite", "TFLITE_IDENTIFIER"]

TFLITE_IDENTIFIER = b"TFL3"       # bytes 4..8 of every TFLite flatbuffer


@dataclass(frozen=True)
class TFLiteTensor:
    """One tensor: `data` is the constant's value (None for activations); `scales` and
    `zero_points` are None for an unquantized tensor, else one entry per tensor or per channel
    along `axis`."""
    index: int
    name: str
    shape: tuple
    dtype: np.dtype
    data: np.ndarray | None
    scales: np.ndarray | None
    zero_points: np.ndarray | None
    axis: int

    @property
    def quantized(self):
        return self.scales is not None

    def describe(self):
        return f"tensor {self.index} {self.name!r} ({self.dtype.name} {list(self.shape)})"


@dataclass(frozen=True)
class TFLiteOperator:
    """One operator: `inputs` may hold -1 for an optional input left out; `options` is the
    builtin options table read as its `tflite` class (None when the op has none)."""
    position: int
    op: str
    inputs: tuple
    outputs: tuple
    options: object


@dataclass(frozen=True)
class TFLiteModel:
    tensors: tuple
    operators: tuple
    inputs: tuple
    outputs: tuple


def read_tflite(data):
    """Parse TFLite flatbuffer bytes; raise `ModelImportError` if they are not a readable
    TFLite model."""
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelImportError(f"not a TFLite flatbuffer: bytes 4..8 are {bytes(data[4:8])!r}, "
                               f"a TFLite file has {TFLITE_IDENTIFIER!r} there")
    try:
        return _read(bytes(data))
    except ModelImportError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, AttributeError, UnicodeDecodeError,
            OverflowError) as error:
        # flatbuffers reads offsets from the file without checking them: a truncated or
        # corrupted file fails somewhere inside the generated accessors.
        raise ModelImportError(f"the TFLite flatbuffer is truncated or corrupted "
                               f"({len(data)} bytes; the parser failed with "
                               f"{type(error).__name__}: {error})") from None


def _read(data):
    import tflite

    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise ModelImportError("the TFLite model has no subgraph")
    if model.SubgraphsLength() > 1:
        raise ModelImportError(f"the TFLite model has {model.SubgraphsLength()} subgraphs; only "
                               f"single-subgraph models (no control flow) are supported")
    subgraph = model.Subgraphs(0)
    names = {value: name for name, value in vars(tflite.BuiltinOperator).items()
             if not name.startswith("_")}
    options = {value: name for name, value in vars(tflite.BuiltinOptions).items()
               if not name.startswith("_")}
    tensors = tuple(_tensor(model, subgraph.Tensors(i), i, data)
                    for i in range(subgraph.TensorsLength()))
    operators = []
    for position in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(position)
        code = model.OperatorCodes(operator.OpcodeIndex())
        builtin = max(code.DeprecatedBuiltinCode(), code.BuiltinCode())
        op = names.get(builtin, f"builtin code {builtin}")
        if builtin == tflite.BuiltinOperator.CUSTOM:
            op = f"CUSTOM {code.CustomCode().decode()!r}"
        operators.append(TFLiteOperator(
            position, op, _indices(operator.InputsAsNumpy(), len(tensors)),
            _indices(operator.OutputsAsNumpy(), len(tensors)),
            _options(tflite, operator, options)))
    return TFLiteModel(tensors, tuple(operators),
                       _indices(subgraph.InputsAsNumpy(), len(tensors)),
                       _indices(subgraph.OutputsAsNumpy(), len(tensors)))


def _indices(values, count):
    values = tuple(int(v) for v in np.atleast_1d(values)) if not isinstance(values, int) else ()
    bad = [v for v in values if not -1 <= v < count]
    if bad:
        raise ModelImportError(f"the TFLite model refers to tensors {bad}, but it has {count}")
    return values


def _options(tflite, operator, names):
    table = operator.BuiltinOptions()
    kind = operator.BuiltinOptionsType()
    if table is None or kind == 0:
        return None
    options = getattr(tflite, names[kind])()
    options.Init(table.Bytes, table.Pos)
    return options


_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
           7: np.int16, 9: np.int8, 10: np.float64, 16: np.uint32, 15: np.uint16}


def _tensor(model, tensor, index, data):
    name = tensor.Name().decode()
    kind = tensor.Type()
    if kind not in _DTYPES:
        raise ModelImportError(f"tensor {index} {name!r} has TFLite type {kind}, which no "
                               f"importer reads")
    dtype = np.dtype(_DTYPES[kind])
    shape = tuple(int(v) for v in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    value = _buffer(model, tensor.Buffer(), data)
    if value is not None:
        count = int(np.prod(shape, dtype=np.int64))
        if len(value) != count * dtype.itemsize:
            raise ModelImportError(f"tensor {index} {name!r} ({dtype.name} {list(shape)}) needs "
                                   f"{count * dtype.itemsize} bytes of data, its buffer holds "
                                   f"{len(value)}")
        value = np.frombuffer(value, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
        value.setflags(write=False)
    scales = zero_points = None
    axis = 0
    quantization = tensor.Quantization()
    if quantization is not None and quantization.ScaleLength():
        with np.errstate(invalid="ignore"):     # a corrupted scale may be a signalling NaN
            scales = quantization.ScaleAsNumpy().astype(np.float64)
        if not np.all(np.isfinite(scales) & (scales > 0)):
            raise ModelImportError(f"tensor {index} {name!r} has scales "
                                   f"{scales[:4].tolist()}; scales must be finite and > 0")
        zero_points = quantization.ZeroPointAsNumpy().astype(np.int64) \
            if quantization.ZeroPointLength() else np.zeros(len(scales), np.int64)
        axis = quantization.QuantizedDimension()
        if len(zero_points) != len(scales):
            raise ModelImportError(f"tensor {index} {name!r} has {len(scales)} scales but "
                                   f"{len(zero_points)} zero points")
    return TFLiteTensor(index, name, shape, dtype, value, scales, zero_points, axis)


def _buffer(model, index, data):
    """The bytes of buffer `index`, or None for an empty buffer (an activation)."""
    if not 0 <= index < model.BuffersLength():
        raise ModelImportError(f"a tensor refers to buffer {index}, but the model has "
                               f"{model.BuffersLength()}")
    buffer = model.Buffers(index)
    if buffer.Offset() > 1:
        # Large models keep buffers after the flatbuffer, addressed by offset and size.
        start, size = buffer.Offset(), buffer.Size()
        if start + size > len(data):
            raise ModelImportError(f"buffer {index} lies at bytes {start}..{start + size}, past "
                                   f"the end of the {len(data)}-byte file")
        return data[start:start + size]
    if buffer.DataLength() == 0:
        return None
    return buffer.DataAsNumpy().tobytes()
