"""The digits demo end to end on a few images (compiled simulation): it reports identical
predictions and exits 0, and exits 1 when the device's outputs differ from the reference."""

import numpy as np
import pytest

from sim import cxxrtl
from sw import demo

# The SoC of tests/test_system.py: the compiled model is shared through the cache.
DEVICE = "sim://tiny?max_payload=256&backend=cxxrtl"

pytestmark = pytest.mark.skipif(not cxxrtl.available(),
                                reason=f"CXXRTL backend unusable: {cxxrtl.unavailable_reason()}")


def test_demo_on_a_few_images(capsys):
    assert demo.main(["--device", DEVICE, "--limit", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    reports = [line for line in lines if "images:" in line]
    assert [line.split()[0] for line in reports] == ["int8_mlp", "int8_cnn", "binary_mlp"]
    assert all("6 images" in line and "identical yes" in line for line in reports)
    assert all("active cycles/inference" in line for line in reports)


def test_demo_fails_when_outputs_differ(capsys, monkeypatch):
    # A reference that disagrees in one output: the demo must notice and exit 1.
    def shifted_reference(model, x):
        y = demo_reference(model, x).copy()
        y[0, 0] += 1 if y[0, 0] < 127 else -1
        return y
    demo_reference = demo.run_reference
    monkeypatch.setattr(demo, "run_reference", shifted_reference)
    assert demo.main(["--device", DEVICE, "--limit", "2", "--model", "binary_mlp"]) == 1
    assert "NO (1 images differ)" in capsys.readouterr().out


def test_demo_results_match_the_reference_accuracy():
    with demo.Accelerator.open(DEVICE) as device:
        (result,) = demo.run_demo(device, limit=3, models=("int8_mlp",), print_=lambda _: None)
    assert result["identical"] and result["images"] == 3
    assert result["device_accuracy"] == result["reference_accuracy"]
    assert result["macs"] == 3 * (64 * 64 + 64 * 10)        # 64-64-10 MLP, 3 images
    assert np.isfinite(result["active_cycles_per_inference"])
