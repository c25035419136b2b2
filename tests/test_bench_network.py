"""`python -m sim.bench network` on a small device: the digits CNN, the binary MLP and the mixed
INT8/binary network run whole on the simulated SoC (pysim, the ``tiny`` preset's 4x4 array with
a 2,048-row scratchpad so the networks' weights are resident), bit-exact, with per-node MACs
equal to the layers' own math; the CIFAR-shaped CNN compiles for the 85F preset with every
weight resident (planning only). The 85F figures come from the bench itself (compiled
simulator), not from this test.
"""

import argparse

import numpy as np
import pytest

from hw.config import preset
from sim.bench import network

DEVICE = preset("tiny").replace(scratchpad_rows=2048)


@pytest.fixture(scope="module")
def accelerator():
    device = network.open_device(DEVICE, backend="pysim")
    yield device
    device.close()


@pytest.mark.parametrize("name, macs_per_sample, host_nodes", [
    # conv 3x3, padding 1: 8x8 pixels x 9 taps x 1 input channel x 12 outputs; the dense reads
    # the pooled 4x4x12 = 192 values for 10 classes.
    ("digits", {"conv1": 8 * 8 * 9 * 1 * 12, "flatten": 0, "dense": 4 * 4 * 12 * 10}, set()),
    # XNOR-popcount MACs: 64 inputs x 128 hidden neurons, then 128 x 10.
    ("binary_mlp", {"hidden": 64 * 128, "scores": 128 * 10}, set()),
    # The digits conv, the sign on the host, then 192 -> 128 -> 64 -> 10 binary.
    ("mixed", {"conv1": 8 * 8 * 9 * 1 * 12, "flatten": 0, "sign": 0, "hidden0": 192 * 128,
               "hidden1": 128 * 64, "scores": 64 * 10}, {"sign"}),
])
def test_network_runs_whole_and_bit_exact(accelerator, name, macs_per_sample, host_nodes):
    rng = np.random.default_rng(1)
    graph = network.NETWORKS[name](rng)
    x = network.network_inputs(graph, 1, rng)
    rows, summary = network.bench_network(accelerator, name, graph, x)
    assert summary["bit_exact"]
    assert {row["node"] for row in rows if row["where"] == "host"} == host_nodes
    assert summary["nodes"] == len(macs_per_sample)
    assert summary["on_device"] == len(macs_per_sample) - len(host_nodes)
    assert {row["node"]: row["macs"] for row in rows} == {
        node: macs for node, macs in macs_per_sample.items()}
    for row in rows:
        if row["macs"]:
            assert row["cycles"] >= row["macs"] / row["peak_macs_per_cycle"]
            assert 0 < row["utilization"] <= 1
    binary = {row["node"] for row in rows if row["op"] == "BinaryDense"}
    core = accelerator.core
    assert summary["macs"] == sum(row["macs"] for row in rows if row["node"] not in binary)
    assert summary["binary_ops"] == 2 * sum(row["macs"] for row in rows
                                            if row["node"] in binary)
    if summary["macs"]:
        assert summary["utilization"] == summary["macs"] / (
            core.rows * core.cols * summary["active_cycles"])
    else:
        assert summary["utilization"] is None
    assert summary["bytes_per_inference"] > 0 and summary["inferences_per_second"] > 0
    assert "bound_inferences_per_second" not in summary     # only over the UART line


def test_bad_bench_arguments_are_named():
    parser = argparse.ArgumentParser()
    network.add_arguments(parser)
    with pytest.raises(SystemExit, match="unknown networks \\['resnet'\\]"):
        network.run(parser.parse_args(["--networks", "resnet"]))
    with pytest.raises(SystemExit, match="--batch must be at least 1"):
        network.run(parser.parse_args(["--batch", "0"]))
    with pytest.raises(SystemExit, match="unknown device '99F': choose a ULX3S variant "
                                         "\\(12F, 25F, 45F, 85F\\) or a config preset"):
        network.run(parser.parse_args(["--device", "99F", "--networks", "digits"]))


def test_cifar_network_is_resident_on_the_shipped_85f():
    """Issue 19's CIFAR-10-shaped CNN (about 100k parameters, four 3x3 convs of 32-64 channels,
    pools, a dense head) compiles for the 85F preset with every weight and parameter written once
    at load: a round writes no weight or parameter image."""
    from sim.bench.device import device_config
    from sw.compiler import DeviceGeometry
    from sw.compiler.planner import compile_graph
    graph = network.NETWORKS["cifar"](np.random.default_rng(0))
    convs = [node.op for node in graph.nodes if node.kind == "Conv2D"]
    assert len(convs) == 4 and all(op.weights.shape[:2] == (3, 3) for op in convs)
    assert all(32 <= op.weights.shape[3] <= 64 for op in convs)
    assert sum(op.pool for op in convs) >= 2
    assert 90_000 <= sum(network._parameters(node) for node in graph.nodes) <= 110_000
    program = compile_graph(graph, DeviceGeometry(device_config("85F")))
    assert {step.kind for step in program.steps} <= {"write", "commands", "read"}
    assert all(placement.where == "device" for placement in program.placements)
    assert program.load_bytes() > 95_000     # the weights, int8, and their int32 parameters
