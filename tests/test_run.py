"""`python -m sw.run` on zoo models (tests/zoo), on its default simulated device.

The oracles are independent of sw.run: the device's outputs must equal `run_reference` of the
graph `load_model` imports (the reference kernels), fed with the integers the model's own
runtime makes of the float input (LiteRT's QUANTIZE, onnxruntime's QuantizeLinear, qonnx's
BipolarQuant); the --compare report must equal the mismatch count made here from the runtime's
own output. Bad input: the exit status and the message, never a traceback.

A run of a digits-size CNN on the simulated SoC takes 20-100 s (the driver polls the core's
status over simulated frames while it computes): those tests are marked slow.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite")
pytest.importorskip("onnx")

from sw.graph import run_reference                          # noqa: E402
from sw.importers import load_model                         # noqa: E402
from sw.importers import onnx as onnx_importer              # noqa: E402
from sw.importers import qonnx as qonnx_importer            # noqa: E402
from sw.importers import tflite as tflite_importer          # noqa: E402
from sw.run import compare as compare_module                # noqa: E402
from sw.run.__main__ import main                            # noqa: E402
from sw.run.supported import EDGES, IMPORTED_AS, supported_ops_table   # noqa: E402
from zoo.tflite_models import ZOO                           # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"
# The default device's preset with a smaller scratchpad: it elaborates faster and holds these
# models (the table test runs on the default device itself).
DEVICE = ("--device", "sim://tiny?scratchpad_rows=1024")


def run_cli(capsys, *args):
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *args):
    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _calibrated(name, seed):
    rng = np.random.default_rng(seed)
    net = ZOO[name](rng)
    return net, rng.standard_normal((16, *net.shapes["input"][1:])), rng


@pytest.fixture(scope="module")
def digits_tflite(tmp_path_factory):
    net, calibration, _ = _calibrated("digits_cnn", 1)
    path = tmp_path_factory.mktemp("run") / "digits_cnn.tflite"
    path.write_bytes(net.quantized_tflite(calibration))
    return path


# TFLite ----------------------------------------------------------------------------------------

@pytest.mark.slow           # 20-100 s: a digits-size CNN in the Python simulator
def test_tflite_table_and_outputs_on_the_default_device(digits_tflite, tmp_path, capsys):
    graph = load_model(digits_tflite)
    q = np.random.default_rng(3).integers(-128, 128, (2, 8, 8, 1)).astype(np.int8)
    np.save(tmp_path / "q.npy", q)            # the graph's own int8 input
    code, out, err = run_cli(capsys, digits_tflite, "--input", tmp_path / "q.npy")
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("node  "))
    rows = {line.split()[0]: line for line in lines[header + 2:header + 2 + len(graph.nodes)]}
    where = {"Conv2D": "device: CONV", "MaxPool2D": "host: no standalone pool",
             "Reshape": "host: its input is on the host", "Dense": "device: GEMM"}
    assert sorted(node.kind for node in graph.nodes) == sorted(where)
    for node in graph.nodes:
        assert node.kind in rows[node.name] and where[node.kind] in rows[node.name], \
            rows[node.name]
    expected = run_reference(graph, q)
    assert f"output {graph.outputs[0]!r}: int8 [2, 10] in [{expected.min()}, " \
           f"{expected.max()}]" in out
    assert f"argmax per sample: {' '.join(map(str, np.argmax(expected, axis=1)))}\n" in out


@pytest.mark.slow           # 20-100 s: a digits-size CNN in the Python simulator
def test_tflite_float_input_outputs_and_compare(digits_tflite, tmp_path, capsys):
    pytest.importorskip("ai_edge_litert")
    from zoo.tflite_models import run_litert
    x = (np.random.default_rng(2).standard_normal((2, 8, 8, 1)) * 2).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_json(capsys, digits_tflite, "--input", tmp_path / "x.npy", "--compare", *DEVICE)
    graph = load_model(digits_tflite)
    (name,) = graph.outputs
    litert = [run_litert(digits_tflite.read_bytes(), sample[np.newaxis]) for sample in x]
    quantized = np.concatenate([values[graph.inputs[0]] for values in litert])
    expected = run_reference(graph, quantized)
    got = np.array(result["outputs"][name]["values"])
    np.testing.assert_array_equal(got, expected)
    assert result["outputs"][name]["argmax"] == np.argmax(expected, axis=1).tolist()
    runtime_output = np.concatenate([values[name] for values in litert])
    report = {t["tensor"]: t for t in result["compare"]["tensors"]}
    assert report[name]["mismatches"] == np.count_nonzero(runtime_output != expected) == 0
    assert report[name]["elements"] == expected.size
    assert report[graph.inputs[0]]["mismatches"] == 0
    assert result["compare"]["runtime"].startswith("LiteRT 2.3.0")


# ONNX and QONNX --------------------------------------------------------------------------------

@pytest.mark.slow           # 20-100 s: a digits-size CNN in the Python simulator
def test_onnx_float_input_outputs_and_compare(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from zoo.onnx_models import quantized_onnx, run_onnxruntime
    net, calibration, rng = _calibrated("residual_block", 4)
    path = quantized_onnx(net, calibration, tmp_path / "residual.onnx", qdq=False,
                          per_channel=True)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)           # NCHW, as onnxruntime
    np.save(tmp_path / "x.npy", x)
    result = run_json(capsys, path, "--input", tmp_path / "x.npy", "--compare", *DEVICE)
    graph = load_model(path)
    (name,) = graph.outputs
    runs = [run_onnxruntime(path, sample.transpose(1, 2, 0), [graph.inputs[0], name])
            for sample in x]

    def graph_form(value):          # NCHW -> NHWC (the graph's int8 activations)
        return np.asarray(value).astype(np.int64).transpose(0, 2, 3, 1)
    quantized = np.concatenate([graph_form(run[graph.inputs[0]]) for run in runs])
    expected = run_reference(graph, quantized)
    np.testing.assert_array_equal(np.array(result["outputs"][name]["values"]), expected)
    runtime_output = np.concatenate([graph_form(run[name]) for run in runs])
    report = {t["tensor"]: t for t in result["compare"]["tensors"]}
    assert report[name]["mismatches"] == np.count_nonzero(runtime_output != expected)
    assert report[name]["max_difference"] <= 1
    assert report[graph.inputs[0]]["mismatches"] == 0


def test_qonnx_binary_mlp_outputs_compare_and_profile(tmp_path, capsys):
    pytest.importorskip("qonnx")
    from zoo.qonnx_models import binary_mlp, run_qonnx
    model = binary_mlp(np.random.default_rng(5))
    path = tmp_path / "binary_mlp.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.random.default_rng(6).standard_normal((2, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_json(capsys, path, "--input", tmp_path / "x.npy", "--compare", "--profile",
                      *DEVICE)
    graph = load_model(path)
    (name,) = graph.outputs
    expected = run_reference(graph, np.where(x >= 0, 1, -1))
    # The profile: every layer on the binary engine, its MACs the layer's K*N per sample.
    rows = result["profile"]
    assert [row["node"] for row in rows] == [node.name for node in graph.nodes]
    for row, node in zip(rows, graph.nodes):
        assert row["where"] == "device" and row["cycles"] > 0
        assert row["macs"] == len(x) * node.op.k * node.op.units
        assert 0 < row["utilization"] <= 1
    np.testing.assert_array_equal(np.array(result["outputs"][name]["values"]), expected)
    scale = graph.tensor(name).scale
    runtime_output = np.concatenate([np.rint(run_qonnx(model, sample[np.newaxis])["output"]
                                             / scale) for sample in x])
    report = {t["tensor"]: t for t in result["compare"]["tensors"]}
    assert report[name]["mismatches"] == np.count_nonzero(runtime_output != expected) == 0
    assert result["model"]["format"] == "QONNX"


# Supported ops (the README's table) ----------------------------------------------------------

def test_readme_table_is_the_generated_one(capsys):
    text = README.read_text()
    begin, end = "<!-- supported ops: python -m sw.run --list-ops -->", "<!-- end supported ops -->"
    assert begin in text and end in text
    assert text.split(begin)[1].split(end)[0].strip() == supported_ops_table()
    assert run_cli(capsys, "--list-ops") == (0, supported_ops_table() + "\n", "")


@pytest.mark.parametrize("format_name,module", [
    ("TFLite", tflite_importer), ("ONNX", onnx_importer), ("QONNX", qonnx_importer)])
def test_table_names_every_op_the_importers_read(format_name, module):
    cells = " ".join([*(sources.get(format_name, "") for sources in IMPORTED_AS.values()),
                      EDGES[format_name]])
    named = set(re.findall(r"[A-Za-z_0-9]+", cells))
    assert set(module.SUPPORTED_OPS) <= named, set(module.SUPPORTED_OPS) - named


def test_table_has_a_row_per_node_kind():
    from sw.compiler import LOWERINGS
    assert set(IMPORTED_AS) == set(LOWERINGS)


# Bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,name,message", [
    (None, "missing.tflite", "cannot read model file"),
    (b"\x00" * 64, "model.bin", "neither a TFLite flatbuffer"),
    ("truncated", "model.tflite", "truncated or corrupted|inconsistent"),
    ("float", "float.tflite", "not quantized: its first float op is CONV_2D"),
])
def test_bad_model_files_are_usage_errors(content, name, message, digits_tflite, tmp_path,
                                          capsys):
    path = tmp_path / name
    if content == "truncated":
        path.write_bytes(digits_tflite.read_bytes()[:200])
    elif content == "float":
        path.write_bytes(ZOO["digits_cnn"](np.random.default_rng(1)).tflite())
    elif content is not None:
        path.write_bytes(content)
    code, out, err = run_cli(capsys, path)
    assert code == 2 and out == "" and err.startswith("error: ") and re.search(message, err), err


@pytest.mark.parametrize("array,message", [
    (np.zeros((2, 7, 7, 1), np.float32), r"float values must have shape \[B, 8, 8, 1\]"),
    (np.zeros((2, 8, 8, 1), bool), "expected float32 values or the graph's int8 integers, "
                                   "not dtype bool"),
    (np.full((1, 8, 8, 1), 300, np.int16), r"int8 values must be in \[-128, 127\], found "
                                           r"\[300, 300\]"),
    (np.full((8, 8, 1), np.nan, np.float32), "must be finite"),
    ("truncated", "not a readable NumPy .npy or .npz file"),
    ("npz", r"has arrays \['x'\]; expected one named 'input' \(or 'input_int8'\)"),
])
def test_bad_inputs_are_usage_errors(array, message, digits_tflite, tmp_path, capsys):
    path = tmp_path / "x.npy"
    if isinstance(array, str) and array == "npz":
        path = tmp_path / "x.npz"
        np.savez(path, x=np.zeros((1, 8, 8, 1), np.float32))
    elif isinstance(array, str):
        np.save(path, np.zeros((4, 8, 8, 1), np.float32))
        path.write_bytes(path.read_bytes()[:100])
    else:
        np.save(path, array)
    code, out, err = run_cli(capsys, digits_tflite, "--input", path)
    assert code == 2 and re.search(message, err), err


@pytest.mark.parametrize("url,code,message", [
    ("bogus://x", 2, "Unknown transport 'bogus'"),
    ("sim://tiny?scratchpad_rows=lots", 2, "Bad option scratchpad_rows='lots'"),
    ("uart:///dev/ecpnn-no-such-port", 1, "Cannot open serial port"),
    ("sim://tiny", 1, "does not fit the device"),
])
def test_device_problems(url, code, message, digits_tflite, capsys):
    got, out, err = run_cli(capsys, digits_tflite, "--device", url)
    assert got == code and message in err, err


def test_compare_without_its_runtime_fails_before_running(digits_tflite, capsys, monkeypatch):
    monkeypatch.setitem(compare_module._RUNTIMES, "TFLite",
                        ("ecpnn_no_such_runtime", "none", "ai-edge-litert", "none"))
    code, out, err = run_cli(capsys, digits_tflite, "--compare")
    assert code == 1 and out == ""
    assert "not installed: pip install ai-edge-litert" in err, err


def test_command_line_errors_exit_2_without_a_traceback(tmp_path):
    for args in (["--random", "0", "model.tflite"], [str(tmp_path / "missing.onnx")], []):
        done = subprocess.run([sys.executable, "-m", "sw.run", *args], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "error" in done.stderr
