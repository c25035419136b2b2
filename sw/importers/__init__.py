"""Trained, quantized models -> `sw.graph.Graph`: `load_model(path)` picks the format from the file.

=========  ======================================================  ======================
format     recognised by                                           module
=========  ======================================================  ======================
TFLite     ``TFL3`` at bytes 4..8 (any extension)                  `sw.importers.tflite`
ONNX       ``.onnx`` extension                                     `sw.importers.onnx`
QONNX      an ``.onnx`` file using QONNX custom ops (Quant, ...)    `sw.importers.qonnx`
=========  ======================================================  ======================

TFLite full-integer models convert bit-exactly (LiteRT's reference kernels); ONNX models
quantized by onnxruntime convert to the device's fixed-point arithmetic, which differs from
onnxruntime's float32 requantization by one step on rare elements (see `sw.importers.onnx`);
QONNX networks (Brevitas' and FINN's: BipolarQuant, Quant, MultiThreshold) become binary
XNOR-popcount layers with thresholds and INT8 layers, mixed where the network mixes them.
Every problem with a file is a `ModelImportError` that names it.
"""

from pathlib import Path

from sw.importers.common import ModelImportError

__all__ = ["load_model", "is_tflite", "ModelImportError"]


def load_model(path):
    """The `Graph` of the model file at `path` (TFLite or ONNX, chosen from the file)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelImportError(f"cannot read model file {str(path)!r}: {error.strerror}") \
            from None
    if is_tflite(path, data):
        from sw.importers.tflite import tflite_to_graph
        return tflite_to_graph(data)
    if path.suffix.lower() == ".onnx":
        from sw.importers.onnx import onnx_to_graph
        return onnx_to_graph(data)
    raise ModelImportError(f"{str(path)!r} is neither a TFLite flatbuffer ('TFL3' at bytes 4..8) "
                           f"nor an .onnx file; load_model reads TFLite and ONNX models")


def is_tflite(path, data):
    """Whether `load_model` reads the file at `path` holding `data` as TFLite (else as ONNX)."""
    from sw.importers.tflite_reader import TFLITE_IDENTIFIER
    return data[4:8] == TFLITE_IDENTIFIER or Path(path).suffix.lower() == ".tflite"
