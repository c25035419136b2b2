"""sw.importers checked against the real runtimes on the test zoo (tests/zoo).

TFLite: every tensor of the imported graph (`run_reference_tensors`) equals LiteRT's reference
kernels (BUILTIN_REF) bit for bit. ONNX: every int8 tensor is within one step of onnxruntime's,
in at most 0.1% of elements, and the predictions are identical; the figures are printed per
model as tables by
``pytest -p no:xdist -s tests/test_importers.py -k "tflite_every or onnx_within or qonnx_every"``;
onnxruntime runs the graph as written (optimisations off, `run_onnxruntime`): its default
optimisations turn int8 QDQ models into u8s8 kernels that saturate on CPUs without AVX-VNNI.
QONNX (binary, FINN-thresholded and mixed INT8/binary MLPs): every tensor equals qonnx's
execution.
The expected values come from the runtimes at test time, never from the importers.
"""

import logging

import numpy as np
import pytest

pytest.importorskip("tflite")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from sim.bench.__main__ import format_table                             # noqa: E402
from sw.graph import run_reference_tensors                             # noqa: E402
from sw.importers import ModelImportError, load_model                  # noqa: E402
from zoo.onnx_models import float_onnx, quantized_onnx, run_onnxruntime   # noqa: E402
from zoo.tflite_models import ZOO, Net, run_litert                # noqa: E402

TRIALS = 12


@pytest.fixture(autouse=True)
def quiet_quantizer():
    # onnxruntime.quantization logs advice ("consider pre-processing") on every call.
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _net(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    net = ZOO[name](rng)
    return net, rng.standard_normal((16, *net.shapes["input"][1:])), rng


@pytest.fixture(scope="module")
def agreement_tables():
    """{title: rows} the runtime comparisons fill; printed as tables after the module (-s)."""
    tables = {}
    yield tables
    for title, rows in tables.items():
        print(f"\n{title}\n{format_table(rows)}")


def _inputs(net, rng):
    """Random float inputs at several amplitudes, so that clamping is exercised too."""
    for trial in range(TRIALS):
        yield rng.standard_normal(net.shapes["input"][1:]) * (0.5 + trial % 4)


# TFLite ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ZOO)
def test_tflite_every_tensor_bit_exact_with_litert(name, tmp_path, agreement_tables):
    net, calibration, rng = _net(name)
    model = net.quantized_tflite(calibration)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(model)
    graph = load_model(path)
    elements = 0
    for x in _inputs(net, rng):
        expected = run_litert(model, x[np.newaxis])
        got = run_reference_tensors(graph, expected[graph.inputs[0]])
        compared = 0
        for tensor in graph.tensors:
            if tensor.name not in expected:
                # Only the importer's own flattening before a FULLY_CONNECTED has no LiteRT twin.
                assert tensor.name.endswith("/flattened"), tensor.name
                continue
            want = expected[tensor.name].reshape(got[tensor.name].shape)
            np.testing.assert_array_equal(got[tensor.name], want, err_msg=tensor.name)
            compared += 1
            elements += want.size
        assert compared == len(net.layers) + 1          # every layer's output and the input
    agreement_tables.setdefault("TFLite vs LiteRT BUILTIN_REF", []).append(dict(
        model=name, inputs=TRIALS, tensors=compared, elements=elements, differing=0))


def test_tflite_per_tensor_convolution_weights_bit_exact_with_litert(tmp_path):
    # Older converters quantize CONV_2D/DEPTHWISE_CONV_2D weights per tensor: store one scale.
    net, calibration, rng = _net("mobilenet_block")
    model = net.quantized_tflite(calibration, lambda scales, zero_points, axis:
                                 ([max(scales)], [0], 0))
    path = tmp_path / "per_tensor.tflite"
    path.write_bytes(model)
    graph = load_model(path)
    for node in graph.nodes:
        if node.kind in ("Conv2D", "DepthwiseConv2D", "Dense"):
            assert len(set(node.op.multiplier.tolist())) == 1, node.name
    for x in _inputs(net, rng):
        expected = run_litert(model, x[np.newaxis])
        got = run_reference_tensors(graph, expected[graph.inputs[0]])
        for tensor in graph.tensors:
            want = expected[tensor.name].reshape(got[tensor.name].shape)
            np.testing.assert_array_equal(got[tensor.name], want, err_msg=tensor.name)


# ONNX ------------------------------------------------------------------------------------------

def _nhwc(value):
    return value.transpose(0, 2, 3, 1) if value.ndim == 4 else value


def _onnxruntime_view(graph, name, value):
    """onnxruntime's value of graph tensor `name`, laid out as the graph holds it (a uint8
    tensor shifted to the int8 form the graph holds)."""
    value = _nhwc(value.astype(np.int64) - 128 if value.dtype == np.uint8 else value)
    writer = graph.writer(name)
    if writer is not None and writer.kind == "Flatten":
        height, width, channels = graph.tensor(writer.inputs[0]).shape
        value = value.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    return value.reshape(-1, *graph.tensor(name).shape)


ONNX_CASES = [(name, fmt, per_channel, False, "QInt8") for name in ZOO
              for fmt in ("qdq", "qoperator") for per_channel in (True, False)]
# Dense layers as MatMul (no bias) instead of Gemm: QLinearMatMul / DequantizeLinear on axis 1.
ONNX_CASES += [("digits_cnn", fmt, per_channel, True, "QInt8") for fmt in ("qdq", "qoperator")
               for per_channel in (True, False)]
# uint8 activations. onnxruntime's QOperator kernels for them multiply uint8 by int8 in pairs
# summed in saturating int16 on x86 without AVX-VNNI (up to 27 steps off on this zoo), unless
# the weights have 7 bits: those models are quantized with reduce_range, as onnxruntime advises.
ONNX_CASES += [(name, fmt, True, False, "QUInt8") for name in ZOO
               for fmt in ("qdq", "qoperator")]


@pytest.mark.parametrize("name,fmt,per_channel,matmul,activations", ONNX_CASES)
def test_onnx_within_one_step_of_onnxruntime(name, fmt, per_channel, matmul, activations,
                                             tmp_path, agreement_tables):
    net, calibration, rng = _net(name)
    path = quantized_onnx(net, calibration, tmp_path / f"{name}.onnx", qdq=fmt == "qdq",
                          per_channel=per_channel, dense_as_matmul=matmul,
                          activation_type=activations,
                          reduce_range=(activations, fmt) == ("QUInt8", "qoperator"))
    graph = load_model(path)
    names = [t.name for t in graph.tensors if "/" not in t.name]
    differing = total = largest = same_predictions = 0
    for x in _inputs(net, rng):
        expected = run_onnxruntime(path, x, names)
        got = run_reference_tensors(graph, _onnxruntime_view(graph, graph.inputs[0],
                                                             expected[graph.inputs[0]]))
        for tensor in names:
            want = _onnxruntime_view(graph, tensor, expected[tensor])
            steps = np.abs(got[tensor].astype(np.int64) - want)
            largest = max(largest, int(steps.max()))
            differing += int(np.count_nonzero(steps))
            total += steps.size
        # The prediction, from a session without the extra outputs.
        scores = _onnxruntime_view(graph, graph.outputs[0], run_onnxruntime(path, x)["output"])
        same_predictions += int(np.argmax(got[graph.outputs[0]]) == np.argmax(scores))
    agreement_tables.setdefault("ONNX vs onnxruntime (int8 elements of every tensor)", []).append(
        dict(model=name, format="QDQ" if fmt == "qdq" else "QOperator",
             weights="per-channel" if per_channel else "per-tensor",
             dense="MatMul" if matmul else "Gemm",
             activations="uint8" if activations == "QUInt8" else "int8", inputs=TRIALS,
             elements=total, off_by_one=differing, max_diff=largest,
             predictions_identical=f"{same_predictions}/{TRIALS}"))
    assert largest <= 1, f"an element is {largest} steps from onnxruntime"
    assert differing <= 0.001 * total, f"{differing} of {total} elements differ (> 0.1%)"
    assert same_predictions == TRIALS


# QONNX -----------------------------------------------------------------------------------------

def _qonnx_view(graph, name, value):
    """qonnx's float value of graph tensor `name` as the graph holds it: +1/-1, or the integers
    q of scale * (q - zero point)."""
    tensor = graph.tensor(name)
    value = np.asarray(value, np.float64).reshape(-1, *tensor.shape)
    if tensor.dtype == "binary":
        return np.where(value > 0, 1, -1)
    return np.rint(value / np.asarray(tensor.scale)).astype(np.int64) + tensor.zero_point


QONNX_CASES = [  # (model, its keyword arguments, the graph's node kinds)
    ("binary_mlp", {}, ["BinaryDense"] * 3),
    ("binary_mlp", {"weight_scale": 0.37}, ["BinaryDense"] * 3),
    ("binary_mlp", {"quantizer": "Quant"}, ["BinaryDense"] * 3),      # 1-bit signed Quant
    ("threshold_mlp", {}, ["BinaryDense"] * 3),
    ("mixed_mlp", {}, ["Dense", "Sign", "BinaryDense", "Dense"]),
    # An unsigned 7-bit input (0..127, as a uint8 image scaled to 7 bits): int8 all the same.
    ("mixed_mlp", {"input_bits": 7, "input_signed": False}, ["Dense", "Sign", "BinaryDense",
                                                               "Dense"]),
]


@pytest.mark.parametrize("name,arguments,kinds", QONNX_CASES)
def test_qonnx_every_tensor_equals_qonnx_execution(name, arguments, kinds, tmp_path,
                                                   agreement_tables):
    pytest.importorskip("qonnx")
    from zoo.qonnx_models import ZOO as QONNX_ZOO, run_qonnx
    rng = np.random.default_rng(11)
    model = QONNX_ZOO[name](rng, **arguments)
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    graph = load_model(path)
    assert [node.kind for node in graph.nodes] == kinds
    # Every tensor with a twin in the model (the Dense before a Sign has none).
    names = [t.name for t in graph.tensors if "/" not in t.name and t.name not in graph.inputs]
    elements = 0
    for _ in range(TRIALS * 4):
        x = rng.standard_normal((1, 64))
        expected = run_qonnx(model, x)
        source = graph.inputs[0]
        got = run_reference_tensors(graph, np.where(x >= 0, 1, -1) if graph.tensor(
            source).dtype == "binary" else _qonnx_view(graph, source, expected[source]))
        for tensor in names:
            np.testing.assert_array_equal(got[tensor], _qonnx_view(graph, tensor,
                                                                   expected[tensor]),
                                          err_msg=tensor)
            elements += got[tensor].size
    agreement_tables.setdefault("QONNX vs qonnx's executor", []).append(dict(
        model=f"{name}{''.join(f' {k}={v}' for k, v in arguments.items())}",
        nodes=" ".join(kinds), inputs=TRIALS * 4, tensors=len(names), elements=elements,
        differing=0))


def _replace_constant(model, name, value):
    from onnx import numpy_helper
    index = next(i for i, init in enumerate(model.graph.initializer) if init.name == name)
    model.graph.initializer[index].CopyFrom(numpy_helper.from_array(
        np.asarray(value, np.float32), name))


def _int8_dot_as_output(model):
    output = next(node for node in model.graph.node if node.output[0] == "output")
    model.graph.node.remove(output)
    next(node for node in model.graph.node if node.output[0] == output.input[0]).output[0] = \
        "output"


def _unsigned_input_quant(model):
    from onnx import helper
    quant = next(node for node in model.graph.node if node.output[0] == "input_quant")
    signed = next(attribute for attribute in quant.attribute if attribute.name == "signed")
    signed.CopyFrom(helper.make_attribute("signed", 0))


def _gemm_for_the_first_matmul(model):
    next(node for node in model.graph.node if node.op_type == "MatMul").op_type = "Gemm"


@pytest.mark.parametrize("name,change,message", [
    ("mixed_mlp", lambda m: _replace_constant(m, "input_quant_bits", 16),
     r"node 'input_quant' \(Quant, position 0\): a signed Quant of 16 bits does not fit int8"),
    ("mixed_mlp", _unsigned_input_quant,
     r"node 'input_quant' \(Quant, position 0\): an unsigned Quant of 8 bits does not fit "
     r"int8; signed Quant of 1 to 8 bits and unsigned of 2 to 7 are supported"),
    ("mixed_mlp", lambda m: _replace_constant(m, "w0_quant_scale", np.full((64, 1), 2.0 ** -7)),
     r"node 'w0_quant' \(Quant, position 1\): the scale must be one value or 32 \(shape "
     r"\[1, N\]\)"),
    ("mixed_mlp", lambda m: _replace_constant(m, "w0_quant_zero_point", 1),
     r"node 'w0_quant' \(Quant, position 1\): weights with zero point 1 \(asymmetric\)"),
    ("mixed_mlp", _int8_dot_as_output,
     r"output 'output' is a MatMul with int8 operands; quantize it with a Quant"),
    ("threshold_mlp", lambda m: _replace_constant(m, "t0", np.zeros((32, 3))),
     r"node 'act0' \(MultiThreshold, position 2\): thresholds of shape \[32, 3\] .*only a "
     r"bipolar output is supported"),
    ("binary_mlp", _gemm_for_the_first_matmul,
     r"QONNX op Gemm \(node 'dot0', position 2 .*supported ops: BatchNormalization, "
     r"BipolarQuant, Identity, MatMul, MultiThreshold, Quant"),
])
def test_qonnx_outside_the_graph_is_refused_by_name(name, change, message, tmp_path):
    from zoo.qonnx_models import ZOO as QONNX_ZOO
    model = QONNX_ZOO[name](np.random.default_rng(2))
    change(model)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelImportError, match=message):
        load_model(path)


# Bad input -------------------------------------------------------------------------------------

def _tanh_net():
    rng = np.random.default_rng(5)
    net = Net("tanh", (4, 4, 2))
    x = net.conv("input", (rng.standard_normal((4, 3, 3, 2)) / 4).astype(np.float32),
                 np.zeros(4, np.float32))
    net.output(net.tanh(x))
    return net, rng.standard_normal((4, 4, 4, 2))


def test_float_tflite_names_the_first_float_op(tmp_path):
    net, _, _ = _net("digits_cnn")
    path = tmp_path / "float.tflite"
    path.write_bytes(net.tflite())
    with pytest.raises(ModelImportError, match=r"not quantized: its first float op is CONV_2D "
                                               r"\(position 0.*representative_dataset"):
        load_model(path)


def test_float_onnx_names_the_first_float_op(tmp_path):
    net, _, _ = _net("digits_cnn")
    path = tmp_path / "float.onnx"
    path.write_bytes(float_onnx(net).SerializeToString())
    with pytest.raises(ModelImportError, match=r"not quantized.*first float op is Conv.*"
                                               r"quantize_static"):
        load_model(path)


def test_unsupported_tflite_op_is_named_with_position_and_supported_list(tmp_path):
    net, calibration = _tanh_net()
    path = tmp_path / "tanh.tflite"
    path.write_bytes(net.quantized_tflite(calibration))
    with pytest.raises(ModelImportError, match=r"TFLite op TANH \(node 'tanh1', position 2 .*"
                                               r"supported ops: ADD, .*CONV_2D"):
        load_model(path)


@pytest.mark.parametrize("fmt,position", [("qdq", 7), ("qoperator", 3)])
def test_unsupported_onnx_op_is_named_with_position_and_supported_list(fmt, position,
                                                                       tmp_path):
    net, calibration = _tanh_net()
    path = quantized_onnx(net, calibration, tmp_path / "tanh.onnx", qdq=fmt == "qdq",
                          per_channel=False)
    with pytest.raises(ModelImportError, match=rf"ONNX op Tanh \(node 'tanh1', position "
                                               rf"{position} .*supported ops: Add, .*QLinearConv"):
        load_model(path)


def _one_conv_net(dilation=1):
    rng = np.random.default_rng(9)
    net = Net("one_conv", (6, 6, 2))
    net.output(net.conv("input", (rng.standard_normal((4, 3, 3, 2)) / 4).astype(np.float32),
                        np.zeros(4, np.float32), dilation=dilation))
    return net, rng.standard_normal((4, 6, 6, 2))


@pytest.mark.parametrize("activation_type", [np.uint8, np.int16])
def test_tflite_activations_other_than_int8_are_refused_by_name(activation_type, tmp_path):
    net, calibration = _one_conv_net()
    path = tmp_path / "conv.tflite"
    path.write_bytes(net.quantized_tflite(calibration, activation_type=activation_type))
    name = np.dtype(activation_type).name
    with pytest.raises(ModelImportError, match=rf"TFLite op QUANTIZE \(position 0\) uses tensor 1 "
                                               rf"'input_int8' \({name} .*{name} activations are "
                                               rf"not supported, only int8"):
        load_model(path)


@pytest.mark.parametrize("dilation,weight_quantization,message", [
    (2, None, r"CONV_2D \(node 'conv0', position 1\): dilated convolutions"),
    (1, lambda scales, zero_points, axis: (scales, [3] * len(scales), axis),
     r"asymmetric weights"),
    (1, lambda scales, zero_points, axis: (scales, zero_points, 3),
     r"quantized per channel on axis 3 with 4 scales; CONV_2D takes per-channel scales on "
     r"axis 0"),
])
def test_tflite_quantization_outside_the_device_is_refused_by_name(
        dilation, weight_quantization, message, tmp_path):
    net, calibration = _one_conv_net(dilation)
    path = tmp_path / "conv.tflite"
    path.write_bytes(net.quantized_tflite(calibration, weight_quantization))
    with pytest.raises(ModelImportError, match=message):
        load_model(path)


def test_tflite_grouped_convolution_is_refused_by_name(tmp_path):
    rng = np.random.default_rng(9)
    net = Net("grouped", (6, 6, 4))             # a filter with 2 of the 4 input channels
    net.output(net.conv("input", (rng.standard_normal((4, 3, 3, 2)) / 4).astype(np.float32),
                        np.zeros(4, np.float32)))
    path = tmp_path / "grouped.tflite"
    path.write_bytes(net.quantized_tflite(rng.standard_normal((4, 6, 6, 4))))
    with pytest.raises(ModelImportError, match=r"CONV_2D \(node 'conv0', position 1\): grouped "
                                               r"convolutions are not supported \(input has 4 "
                                               r"channels, the filter 2\)"):
        load_model(path)


@pytest.mark.parametrize("option,message", [
    (dict(activation_type="QInt16", weight_type="QInt8"), "activations must be int8"),
    (dict(activation_type="QUInt8", weight_type="QUInt8"), "weights must be int8"),
    (dict(extra_options={"WeightSymmetric": False}), "asymmetric weights"),
])
def test_onnx_quantization_outside_the_device_is_refused_by_name(option, message, tmp_path):
    net, calibration, _ = _net("residual_block")
    path = quantized_onnx(net, calibration, tmp_path / "model.onnx", qdq=True,
                          per_channel=False, **option)
    with pytest.raises(ModelImportError, match=message):
        load_model(path)


def test_onnx_per_axis_weights_on_another_axis_are_refused(tmp_path):
    import onnx
    from onnx import helper
    net, calibration, _ = _net("digits_cnn")
    path = quantized_onnx(net, calibration, tmp_path / "model.onnx", qdq=True, per_channel=True)
    model = onnx.load(str(path))
    dequantize = next(node for node in model.graph.node
                      if node.input[0] == "conv0_weights_quantized")
    del dequantize.attribute[:]
    dequantize.attribute.append(helper.make_attribute("axis", 1))
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelImportError, match=r"node 'conv0_conv' \(Conv, position \d+\): weights "
                                               r"are quantized per axis 1 with 8 scales; the "
                                               r"output-channel axis 0 is supported"):
        load_model(path)


@pytest.mark.parametrize("attributes,message", [
    (dict(dilations=[2, 2]), "dilated convolutions"),
    (dict(group=2), "grouped convolutions"),
])
def test_onnx_dilated_and_grouped_convolutions_are_refused(attributes, message, tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(3)
    group = attributes.get("group", 1)
    weights = rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32)
    conv = helper.make_node("Conv", ["input", "w"], ["output"], kernel_shape=[3, 3],
                            pads=[2, 2, 2, 2], **attributes)
    model = helper.make_model(helper.make_graph(
        [conv], "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                       [1, 4, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weights, "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    path = quantized_onnx(model, rng.standard_normal((4, 8, 8, 4)), tmp_path / "conv.onnx",
                          qdq=True, per_channel=False)
    with pytest.raises(ModelImportError, match=message):
        load_model(path)


@pytest.mark.parametrize("kind", ["tflite", "onnx", "qonnx"])
def test_truncated_and_corrupted_files_raise_a_clear_error(kind, tmp_path):
    net, calibration, rng = _net("digits_cnn")
    if kind == "tflite":
        data = net.quantized_tflite(calibration)
    elif kind == "onnx":
        data = quantized_onnx(net, calibration, tmp_path / "good.onnx", qdq=True,
                              per_channel=True).read_bytes()
    else:
        from zoo.qonnx_models import mixed_mlp
        data = mixed_mlp(rng).SerializeToString()
    path = tmp_path / f"bad.{'tflite' if kind == 'tflite' else 'onnx'}"
    for length in range(0, len(data), max(1, len(data) // 97)):
        path.write_bytes(data[:length])
        with pytest.raises(ModelImportError):
            load_model(path)
    for _ in range(200):
        corrupted = bytearray(data)
        corrupted[rng.integers(8, len(data))] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(corrupted))
        try:
            load_model(path)           # a flipped weight bit is still a valid model
        except ModelImportError:
            pass


def test_unknown_file_is_refused(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelImportError, match="neither a TFLite flatbuffer"):
        load_model(path)
    with pytest.raises(ModelImportError, match="cannot read model file"):
        load_model(tmp_path / "missing.tflite")
