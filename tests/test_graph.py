"""`sw.graph`: DAG construction, the checks that name the node at fault, and the executor.

Expected values are the `sim.reference` kernels (themselves checked against independent math in
test_reference.py) chained by hand, or Python-integer loops for the binary section, so a wiring
mistake in the graph (an operand swapped, a node run before its input) shows.
"""

import numpy as np
import pytest

from sim import reference as ref
from sw.graph import Graph, GraphBuilder, Node, Tensor, run_reference, run_reference_tensors
from sw.ops import (Add, AveragePool2D, BinaryDense, Concat, Conv2D, Dense, DenseInt32,
                    DepthwiseConv2D, MaxPool2D, Mean, Pad, Requantize, Reshape, Sign, Softmax)


def requant(rng, channels, input_zero_point, output_zero_point, shift=-9):
    return dict(bias=rng.integers(-3000, 3000, channels).astype(np.int32),
                multiplier=rng.integers(1 << 30, 1 << 31, channels),
                shift=np.full(channels, shift), input_zero_point=input_zero_point,
                output_zero_point=output_zero_point)


def weights(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, 1, -1).astype(np.int8)


# Graphs that are not chains ----------------------------------------------------------------------

def residual_block(rng):
    builder = GraphBuilder()
    x = builder.input("x", (6, 5, 4), scale=0.05, zero_point=-10)
    conv1 = Conv2D(weights=weights(rng, (3, 3, 4, 4)), padding=(1, 1, 1, 1),
                   **requant(rng, 4, -10, 3), act_min=3)
    conv2 = Conv2D(weights=weights(rng, (3, 3, 4, 4)), padding=(1, 1, 1, 1),
                   **requant(rng, 4, 3, -7))
    h = builder.node("conv1", conv1, [x], scale=0.04)
    y = builder.node("conv2", conv2, [h], scale=0.09)
    # The skip operand is input 2: its scale differs from the branch's, so a swap would show.
    add = Add(input1_scale=0.09, input1_zero_point=-7, input2_scale=0.05, input2_zero_point=-10,
              output_scale=0.1, output_zero_point=2, act_min=2)
    out = builder.node("add", add, [y, x])
    return builder.build([out]), (conv1, conv2, add)


def test_residual_block_with_add():
    rng = np.random.default_rng(1)
    graph, (conv1, conv2, add) = residual_block(rng)
    x = weights(rng, (3, 6, 5, 4))
    h = ref.requantize(ref.conv2d(x, conv1.weights, conv1.bias, 1, 1, -10), conv1.multiplier,
                       conv1.shift, 3, 3, 127, "double")
    y = ref.requantize(ref.conv2d(h, conv2.weights, conv2.bias, 1, 1, 3), conv2.multiplier,
                       conv2.shift, -7, -128, 127, "double")
    expected = ref.add(y, x, input1_scale=0.09, input1_zero_point=-7, input2_scale=0.05,
                       input2_zero_point=-10, output_scale=0.1, output_zero_point=2, act_min=2)
    result = run_reference(graph, x)
    assert result.dtype == np.int8 and result.shape == (3, 6, 5, 4)
    np.testing.assert_array_equal(result, expected)
    assert [node.name for node in graph.nodes] == ["conv1", "conv2", "add"]
    assert graph.writer("x") is None and graph.writer("conv2").kind == "Conv2D"
    assert [node.name for node in graph.readers("x")] == ["conv1", "add"]
    assert graph.tensor("add").scale == float(np.float32(0.1))


def inception_dag(rng):
    """x -> 1x1 conv ---------------------------\\
         -> 3x3 max-pool (pad 1) -> 1x1 conv ---- Concat -> Mean -> Dense -> Softmax."""
    builder = GraphBuilder()
    x = builder.input("x", (5, 5, 3), scale=0.1, zero_point=0)
    left = builder.node("left", Conv2D(weights=weights(rng, (1, 1, 3, 2)), **requant(rng, 2, 0, 4)),
                        [x], scale=0.2)
    pool = builder.node("pool", MaxPool2D(pool_size=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1)),
                        [x])
    right = builder.node("right", Conv2D(weights=weights(rng, (1, 1, 3, 3)),
                                         **requant(rng, 3, 0, -5)), [pool], scale=0.3)
    concat = builder.node("concat", Concat(input_scales=(0.2, 0.3), input_zero_points=(4, -5),
                                           output_scale=0.2, output_zero_point=4), [left, right])
    mean = builder.node("mean", Mean(input_scale=0.2, input_zero_point=4, output_scale=0.05,
                                     output_zero_point=-1), [concat])
    logits = builder.node("dense", Dense(weights=weights(rng, (5, 4)), **requant(rng, 4, -1, 0)),
                          [mean], scale=0.25)
    probabilities = builder.node("softmax", Softmax(input_scale=0.25, input_zero_point=0),
                                 [logits])
    return builder.build([probabilities, mean])


def test_dag_with_concat_and_every_tensor():
    rng = np.random.default_rng(2)
    graph = inception_dag(rng)
    x = weights(rng, (2, 5, 5, 3))
    ops = {node.name: node.op for node in graph.nodes}
    left = ops["left"].run(x)
    pool = ref.max_pool2d(x, 3, 1, 1)
    right = ops["right"].run(pool)
    concat = ref.concatenate([left, right], input_quantizations=[(0.2, 4), (0.3, -5)],
                             output_scale=0.2, output_zero_point=4)
    mean = ref.mean_hw(concat, input_scale=0.2, input_zero_point=4, output_scale=0.05,
                       output_zero_point=-1)
    logits = ops["dense"].run(mean)
    probabilities = ref.softmax_int8(logits, input_scale=0.25)
    tensors = run_reference_tensors(graph, {"x": x})
    for name, expected in (("pool", pool), ("concat", concat), ("mean", mean),
                           ("dense", logits), ("softmax", probabilities)):
        np.testing.assert_array_equal(tensors[name], expected, err_msg=name)
    assert (tensors["concat"][..., :2] == left).all()           # left copied, right rescaled
    outputs = run_reference(graph, x)
    assert len(outputs) == 2
    np.testing.assert_array_equal(outputs[0], probabilities)
    np.testing.assert_array_equal(outputs[1], mean)
    assert graph.tensor("softmax").scale == 1 / 256 and graph.tensor("softmax").zero_point == -128


def test_depthwise_pad_average_pool_reshape_chain():
    rng = np.random.default_rng(3)
    builder = GraphBuilder()
    x = builder.input("x", (6, 6, 2), scale=0.1, zero_point=-3)
    padded = builder.node("pad", Pad(pads=((1, 1), (0, 2), (0, 0)), zero_point=-3), [x])
    depthwise = DepthwiseConv2D(weights=weights(rng, (3, 3, 2, 2)), stride=(2, 2),
                                **requant(rng, 4, -3, 6))
    dw = builder.node("dw", depthwise, [padded], scale=0.2)
    pooled = builder.node("avg", AveragePool2D(pool_size=(2, 2), stride=(1, 1)), [dw])
    flat = builder.node("reshape", Reshape(shape=(4, 4)), [pooled])
    graph = builder.build([flat])
    sample = weights(rng, (2, 6, 6, 2))
    padded_x = np.pad(sample, ((0, 0), (1, 1), (0, 2), (0, 0)), constant_values=-3)
    acc = ref.depthwise_conv2d(padded_x, depthwise.weights, depthwise.bias, 2, 0, -3)
    y = ref.requantize(acc, depthwise.multiplier, depthwise.shift, 6, rounding="double")
    expected = ref.average_pool2d(y, 2, 1).reshape(2, 4, 4)
    assert graph.tensor("dw").shape == (3, 3, 4) and graph.tensor("reshape").zero_point == 6
    np.testing.assert_array_equal(run_reference(graph, sample), expected)


# INT8 and binary sections in one graph -----------------------------------------------------------

def mixed_graph(rng, int8_last):
    """int8 -> Dense -> Sign -> BinaryDense (hidden) -> BinaryDense dots | Dense (int8 out)."""
    builder = GraphBuilder()
    x = builder.input("x", (16,), scale=0.1, zero_point=5)
    first = builder.node("first", Dense(weights=weights(rng, (16, 12)), **requant(rng, 12, 5, -2)),
                         [x], scale=0.5)
    bits = builder.node("sign", Sign(thresholds=rng.integers(-20, 20, 12),
                                     ascending=rng.random(12) < 0.7), [first])
    hidden = builder.node("hidden", BinaryDense(weights=signs(rng, (10, 12)),
                                                thresholds=rng.integers(-4, 5, 10).astype(np.int32),
                                                ascending=rng.random(10) < 0.5), [bits])
    if int8_last:
        last = Dense(weights=weights(rng, (10, 4)), **requant(rng, 4, 0, 1, shift=-4))
        out = builder.node("last", last, [hidden], scale=0.3)
    else:
        out = builder.node("last", BinaryDense(weights=signs(rng, (4, 10))), [hidden])
    return builder.build([out])


def binary_loops(x, op):
    out = []
    for row in x.tolist():
        dots = [sum(a * int(w) for a, w in zip(row, unit)) for unit in op.weights]
        if op.thresholds is None:
            out.append(dots)
        else:
            out.append([1 if (d >= t if up else d <= t) else -1
                        for d, t, up in zip(dots, op.thresholds.tolist(), op.ascending.tolist())])
    return np.array(out)


@pytest.mark.parametrize("int8_last", [False, True])
def test_mixed_int8_sign_binary_network(int8_last):
    rng = np.random.default_rng(4 + int8_last)
    graph = mixed_graph(rng, int8_last)
    ops = {node.name: node.op for node in graph.nodes}
    x = weights(rng, (7, 16))
    first = ops["first"].run(x)
    thresholds, ascending = ops["sign"].thresholds.tolist(), ops["sign"].ascending.tolist()
    bits = np.array([[1 if (v >= t if up else v <= t) else -1
                      for v, t, up in zip(row, thresholds, ascending)] for row in first.tolist()])
    hidden = binary_loops(bits, ops["hidden"])
    tensors = run_reference_tensors(graph, x)
    np.testing.assert_array_equal(tensors["sign"], bits)
    np.testing.assert_array_equal(tensors["hidden"], hidden)
    assert [graph.tensor(name).dtype for name in ("first", "sign", "hidden", "last")] == \
        ["int8", "binary", "binary", "int8" if int8_last else "int32"]
    if int8_last:
        last = ops["last"]
        acc = hidden @ last.weights.astype(np.int64) + last.bias      # +1/-1 as int8, zp 0
        expected = ref.requantize(acc.astype(np.int32), last.multiplier, last.shift, 1,
                                  rounding="single")
    else:
        expected = binary_loops(hidden, ops["last"])
    np.testing.assert_array_equal(run_reference(graph, x), expected)


def test_dense_int32_gives_the_raw_accumulators():
    """DenseInt32: ``(x - input_zero_point) @ weights + bias`` in Python integers, for an int8
    input with a zero point and for a binary one; the sum leaving int32 is an OverflowError."""
    rng = np.random.default_rng(8)
    op = DenseInt32(weights=weights(rng, (9, 5)), bias=rng.integers(-2**31, 2**31 - 2**21, 5),
                    input_zero_point=-7)
    builder = GraphBuilder()
    x = builder.input("x", (9,), scale=0.1, zero_point=-7)
    out = builder.node("acc", op, [x])
    graph = builder.build([out])
    assert (graph.tensor("acc").dtype, graph.tensor("acc").zero_point) == ("int32", 0)
    samples = weights(rng, (6, 9))
    samples[0] = -128
    expected = [[sum((a + 7) * w for a, w in zip(row, column)) + bias
                 for column, bias in zip(op.weights.T.tolist(), op.bias.tolist())]
                for row in samples.tolist()]
    result = run_reference(graph, samples)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, expected)
    bits = signs(rng, (3, 9))
    binary = DenseInt32(weights=op.weights, bias=np.zeros(5, np.int32))
    np.testing.assert_array_equal(binary.run(bits), [
        [sum(a * w for a, w in zip(row, column)) for column in op.weights.T.tolist()]
        for row in bits.tolist()])
    high = DenseInt32(weights=np.full((2, 1), -128, np.int8), bias=[2**31 - 2**15])
    with pytest.raises(OverflowError, match="gemm result"):
        high.run(np.full((1, 2), -128, np.int8))


def test_nodes_are_kept_in_topological_order():
    rng = np.random.default_rng(6)
    graph, _ = residual_block(rng)
    shuffled = Graph(tensors=graph.tensors[::-1], nodes=graph.nodes[::-1], inputs=graph.inputs,
                     outputs=graph.outputs)
    assert [node.name for node in shuffled.nodes] == ["conv1", "conv2", "add"]
    x = weights(rng, (1, 6, 5, 4))
    np.testing.assert_array_equal(run_reference(shuffled, x), run_reference(graph, x))


# Validation: every message names the node or tensor at fault -------------------------------------

def dense(k=4, n=4, input_zero_point=0, output_zero_point=0):
    return Dense(weights=np.ones((k, n), np.int8), bias=np.zeros(n, np.int32),
                 multiplier=np.full(n, 1 << 30), shift=np.full(n, -3),
                 input_zero_point=input_zero_point, output_zero_point=output_zero_point)


def t(name, shape=(4,), **kwargs):
    return Tensor(name=name, shape=shape, **kwargs)


def two_dense(**changes):
    """x -> a (Dense) -> y -> b (Dense) -> z, with keyword overrides of the four parts."""
    parts = dict(tensors=[t("x"), t("y"), t("z")],
                 nodes=[Node(name="a", op=dense(), inputs=["x"], output="y"),
                        Node(name="b", op=dense(), inputs=["y"], output="z")],
                 inputs=["x"], outputs=["z"])
    parts.update(changes)
    return Graph(**parts)


def add_op(**changes):
    fields = dict(input1_scale=0.5, input1_zero_point=0, input2_scale=0.5, input2_zero_point=0,
                  output_scale=1.0, output_zero_point=0)
    fields.update(changes)
    return Add(**fields)


def test_a_valid_graph_builds():
    assert [node.name for node in two_dense().nodes] == ["a", "b"]


@pytest.mark.parametrize("changes, words", [
    # a cycle: a reads z, which b writes from y, which a writes
    (dict(tensors=[t("x"), t("y"), t("z"), t("w")],
          nodes=[Node(name="a", op=add_op(output_scale=0.5, input1_scale=0.5),
                      inputs=["x", "z"], output="y"),
                 Node(name="b", op=dense(), inputs=["y"], output="z"),
                 Node(name="c", op=dense(), inputs=["y"], output="w")],
          outputs=["w"]),
     "the graph has a cycle: node 'a' (Add) reads 'z', written by node 'b' (Dense), which "
     "reads 'y', written by node 'a' (Add)"),
    (dict(tensors=[t("x"), t("y"), t("z")],
          nodes=[Node(name="a", op=add_op(), inputs=["x", "y"], output="y"),
                 Node(name="b", op=dense(), inputs=["y"], output="z")]),
     "the graph has a cycle: node 'a' (Add) reads 'y', written by node 'a' (Add)"),
    # a dangling input: y is declared but written by no node
    (dict(tensors=[t("x"), t("y"), t("z")],
          nodes=[Node(name="b", op=dense(), inputs=["y"], output="z")]),
     "node 'b' (Dense) reads tensor 'y', which no node writes and which is not a graph input"),
    (dict(tensors=[t("x"), t("y"), t("z"), t("q")]),
     "tensor 'q' is neither written by a node nor a graph input"),
    (dict(tensors=[t("x"), t("y"), t("z"), t("q")], inputs=["x", "q"]),
     "graph input 'q' is read by no node"),
    (dict(tensors=[t("x"), t("z")], nodes=[Node(name="b", op=dense(), inputs=["y"], output="z")]),
     "node 'b' (Dense) reads tensor 'y', which is not declared"),
    # a dangling output: y written but read by nobody and not an output
    (dict(nodes=[Node(name="a", op=dense(), inputs=["x"], output="y"),
                 Node(name="b", op=dense(), inputs=["x"], output="z")]),
     "node 'a' (Dense) writes tensor 'y', which no node reads and which is not a graph output"),
    (dict(tensors=[t("x"), t("y"), t("y")]), "tensor name 'y' is declared twice"),
    (dict(nodes=[Node(name="a", op=dense(), inputs=["x"], output="y"),
                 Node(name="a", op=dense(), inputs=["y"], output="z")]),
     "node name 'a' is used by two nodes"),
    (dict(nodes=[Node(name="a", op=dense(), inputs=["x"], output="y"),
                 Node(name="b", op=dense(), inputs=["x"], output="y")], outputs=["y"],
          tensors=[t("x"), t("y")]),
     "node 'b' (Dense) writes tensor 'y', which node 'a' (Dense) writes too"),
    (dict(nodes=[Node(name="a", op=dense(), inputs=["x"], output="x")], tensors=[t("x")],
          outputs=["x"]), "node 'a' (Dense) writes tensor 'x', which is a graph input"),
    (dict(outputs=["q"]), "graph output 'q' is not a declared tensor"),
    # quantization: b states input zero point 0, tensor y has 5
    (dict(tensors=[t("x"), t("y", zero_point=5), t("z")]),
     "node 'a' (Dense): output tensor 'y' is declared with zero point 5 but Dense produces 0"),
    (dict(nodes=[Node(name="a", op=dense(output_zero_point=5), inputs=["x"], output="y"),
                 Node(name="b", op=dense(), inputs=["y"], output="z")],
          tensors=[t("x"), t("y", zero_point=5), t("z")]),
     "node 'b' (Dense): input_zero_point is 0 but input tensor 'y' has zero point 5"),
    # shapes
    (dict(nodes=[Node(name="a", op=dense(n=3), inputs=["x"], output="y"),
                 Node(name="b", op=dense(), inputs=["y"], output="z")]),
     "node 'a' (Dense): output tensor 'y' is declared with shape (4,) but Dense produces (3,)"),
    (dict(tensors=[t("x"), t("y", shape=(3,)), t("z")],
          nodes=[Node(name="a", op=dense(n=3), inputs=["x"], output="y"),
                 Node(name="b", op=dense(), inputs=["y"], output="z")]),
     "node 'b' (Dense): Dense expects a per-sample input of shape (4,), not (3,)"),
    # dtypes
    (dict(tensors=[t("x"), t("y"), t("z", dtype="int32")],
          nodes=[Node(name="a", op=dense(), inputs=["x"], output="y"),
                 Node(name="b", op=BinaryDense(weights=np.ones((4, 4), np.int8)), inputs=["y"],
                      output="z")]),
     "node 'b' (BinaryDense): input tensor 'y' is int8; BinaryDense takes binary"),
    (dict(tensors=[t("x"), t("y", dtype="binary"), t("z")],
          nodes=[Node(name="a", op=dense(), inputs=["x"], output="y"),
                 Node(name="b", op=dense(), inputs=["y"], output="z")]),
     "node 'a' (Dense): output tensor 'y' is declared with dtype 'binary' but Dense produces "
     "'int8'"),
])
def test_graph_rejects(changes, words):
    with pytest.raises(ValueError) as info:
        two_dense(**changes)
    assert words in str(info.value)


def add_graph(x_quant, y_quant, out_quant, x_shape=(4,)):
    tensors = [t("x", x_shape, **x_quant), t("y", **y_quant), t("s", **out_quant)]
    return Graph(tensors=tensors, nodes=[Node(name="sum", op=add_op(), inputs=["x", "y"],
                                              output="s")], inputs=["x", "y"], outputs=["s"])


@pytest.mark.parametrize("x_quant, y_quant, out_quant, x_shape, words", [
    (dict(scale=0.25), dict(scale=0.5), dict(scale=1.0), (4,),
     "node 'sum' (Add): input1_scale is 0.5 but input tensor 'x' has scale 0.25"),
    (dict(), dict(scale=0.5), dict(scale=1.0), (4,),
     "node 'sum' (Add): input1_scale is 0.5 but input tensor 'x' has no scale"),
    (dict(scale=0.5), dict(scale=0.5, zero_point=1), dict(scale=1.0), (4,),
     "node 'sum' (Add): input2_zero_point is 0 but input tensor 'y' has zero point 1"),
    (dict(scale=0.5), dict(scale=0.5), dict(scale=2.0), (4,),
     "node 'sum' (Add): output tensor 's' is declared with scale 2.0 but Add produces 1.0"),
    (dict(scale=0.5), dict(scale=0.5), dict(scale=1.0), (5,),
     "node 'sum' (Add): input tensors 'x' (5,) and 'y' (4,) must have one shape"),
])
def test_add_quantization_must_match_its_tensors(x_quant, y_quant, out_quant, x_shape, words):
    with pytest.raises(ValueError) as info:
        add_graph(x_quant, y_quant, out_quant, x_shape)
    assert words in str(info.value)


@pytest.mark.parametrize("build, error, words", [
    (lambda: Node(name="n", op=add_op(), inputs=["x"], output="y"), ValueError,
     "node 'n' (Add) takes 2 inputs, not 1"),
    (lambda: Node(name="n", op="Dense", inputs=["x"], output="y"), TypeError,
     "node 'n': op must be one of"),
    (lambda: Node(name="n", op=dense(), inputs="x", output="y"), TypeError,
     "node 'n' (Dense) inputs must be a tuple of tensor names"),
    (lambda: Tensor(name="x", shape=(4,), dtype="binary", zero_point=0), ValueError,
     "tensor 'x': a binary tensor has no scale or zero point"),
    (lambda: Tensor(name="x", shape=(4,), dtype="int32", zero_point=3), ValueError,
     "tensor 'x': zero_point of an int32 tensor must be an integer in [0, 0]"),
    (lambda: Tensor(name="x", shape=(4, 2), scale=(0.1, 0.2, 0.3)), ValueError,
     "tensor 'x': a per-channel scale needs 2 entries"),
    (lambda: Tensor(name="x", shape=(4,), scale=-1.0), ValueError, "tensor 'x': scale must be"),
    (lambda: Tensor(name="x", shape=(0,)), ValueError, "tensor 'x': shape must be"),
    (lambda: Tensor(name="x", shape=(4,), dtype="int4"), ValueError, "dtype must be one of"),
    (lambda: Concat(input_scales=(0.1,), input_zero_points=(0,), output_scale=0.1,
                    output_zero_point=0), ValueError, "two or more"),
    (lambda: Add(input1_scale=1.0, input1_zero_point=0, input2_scale=1.0, input2_zero_point=0,
                 output_scale=2.0 ** -21, output_zero_point=0), ValueError, "Add: ADD needs"),
    (lambda: MaxPool2D(pool_size=(2, 2), stride=(1, 1), padding=(2, 0, 0, 0)), ValueError,
     "MaxPool2D.padding (2, 0, 0, 0) must be smaller than the 2x2 window"),
    (lambda: AveragePool2D(pool_size=(2, 2), stride=(2, 2), rounding="half_even"), ValueError,
     "AveragePool2D.rounding must be one of"),
    (lambda: AveragePool2D(pool_size=(2, 2), stride=(2, 2), input_scale=0.1), ValueError,
     "rounding half_away_from_zero keeps its input's quantization"),
    (lambda: AveragePool2D(pool_size=(2, 2), stride=(2, 2), rounding="float32_half_to_even",
                           input_scale=0.1, input_zero_point=0), ValueError,
     "float32_half_to_even needs input_scale, input_zero_point, output_scale"),
    (lambda: Pad(pads=((1, -1),)), ValueError, "Pad.pads must be"),
    (lambda: Reshape(shape=(0, 4)), ValueError, "Reshape.shape must be"),
    (lambda: Softmax(input_scale=0.1, input_zero_point=0, beta=0), ValueError, "Softmax.beta"),
    (lambda: Sign(thresholds=np.zeros((2, 2), np.int32)), ValueError, "Sign.thresholds"),
    (lambda: DepthwiseConv2D(weights=np.ones((3, 3, 2), np.int8), bias=np.zeros(2, np.int32),
                             multiplier=[1 << 30] * 2, shift=[0, 0]), ValueError,
     "[KH, KW, Cin, M]"),
    (lambda: Requantize(input_scale=0.0, input_zero_point=0, output_scale=1.0,
                        output_zero_point=0), ValueError, "Requantize.input_scale"),
    (lambda: DenseInt32(weights=np.ones(4, np.int8), bias=np.zeros(4, np.int32)), ValueError,
     "DenseInt32.weights must be a non-empty 2-D [K, N] array, not shape (4,)"),
    (lambda: DenseInt32(weights=np.ones((4, 3), np.int8), bias=np.zeros(4, np.int32)),
     ValueError, "DenseInt32.bias must have shape (3,), not (4,)"),
    (lambda: DenseInt32(weights=np.ones((4, 3), np.float32), bias=np.zeros(3, np.int32)),
     TypeError, "DenseInt32.weights must be an integer array (int8), not dtype float32"),
    (lambda: DenseInt32(weights=np.ones((4, 3), np.int8), bias=np.zeros(3, np.int32),
                        input_zero_point=200),
     ValueError, "DenseInt32.input_zero_point must be in [-128, 127], not 200"),
    (lambda: DenseInt32(weights=np.full((4, 1), 127, np.int8), bias=[2**31 - 1],
                        input_zero_point=-128), OverflowError,
     "DenseInt32.bias with input_zero_point -128 folded in"),
])
def test_parts_reject(build, error, words):
    with pytest.raises(error) as info:
        build()
    assert words in str(info.value)


@pytest.mark.parametrize("node, input_tensor, words", [
    (Node(name="s", op=Sign(thresholds=np.zeros(3, np.int32)), inputs=["x"], output="y"),
     t("x"), "node 's' (Sign): input tensor 'x' of shape (4,) must have 3 channels"),
    (Node(name="s", op=Sign(thresholds=np.zeros(4, np.int32)), inputs=["x"], output="y"),
     t("x", dtype="binary"), "node 's' (Sign): input tensor 'x' is binary; Sign takes int8"),
    (Node(name="p", op=Pad(pads=((1, 1),), zero_point=2), inputs=["x"], output="y"), t("x"),
     "node 'p' (Pad): zero_point is 2 but input tensor 'x' has zero point 0"),
    (Node(name="r", op=Reshape(shape=(3,)), inputs=["x"], output="y"), t("x"),
     "node 'r' (Reshape): cannot reshape input tensor 'x' of shape (4,)"),
    (Node(name="m", op=Mean(input_scale=0.1, input_zero_point=0, output_scale=0.1,
                            output_zero_point=0), inputs=["x"], output="y"), t("x", scale=0.1),
     "node 'm' (Mean): Mean expects a per-sample input of shape ('H', 'W', 'C'), not (4,)"),
    (Node(name="a", op=AveragePool2D(pool_size=(1, 1), stride=(1, 1),
                                     rounding="float32_half_to_even", input_scale=0.1,
                                     input_zero_point=0, output_scale=0.2, output_zero_point=0),
          inputs=["x"], output="y"), t("x", shape=(1, 1, 4), scale=0.3),
     "node 'a' (AveragePool2D): input_scale is 0.10000000149011612 but input tensor 'x' has "
     "scale 0.30000001192092896"),
    (Node(name="d", op=dense(input_zero_point=1), inputs=["x"], output="y"),
     t("x", dtype="binary"), "node 'd' (Dense): input tensor 'x' is binary (+1/-1 as int8, zero "
                             "point 0) but input_zero_point is 1"),
    (Node(name="c", op=Concat(input_scales=(0.1, 0.1), input_zero_points=(0, 0),
                              output_scale=0.1, output_zero_point=0), inputs=["x", "x"],
          output="y"), t("x", scale=0.2), "node 'c' (Concat): input tensor 'x' has (scale, zero "
                                          "point) (0.20000000298023224, 0) but Concat states"),
    (Node(name="d", op=DenseInt32(weights=np.ones((4, 2), np.int8), bias=np.zeros(2, np.int32),
                                  input_zero_point=1), inputs=["x"], output="y"), t("x"),
     "node 'd' (DenseInt32): input_zero_point is 1 but input tensor 'x' has zero point 0"),
    (Node(name="d", op=DenseInt32(weights=np.ones((4, 2), np.int8), bias=np.zeros(2, np.int32)),
          inputs=["x"], output="y"), t("x", dtype="int32"),
     "node 'd' (DenseInt32): input tensor 'x' is int32; DenseInt32 takes int8 or binary"),
    (Node(name="d", op=DenseInt32(weights=np.ones((5, 2), np.int8), bias=np.zeros(2, np.int32)),
          inputs=["x"], output="y"), t("x"),
     "node 'd' (DenseInt32): DenseInt32 expects a per-sample input of shape (5,), not (4,)"),
])
def test_node_input_rules(node, input_tensor, words):
    builder = GraphBuilder()
    builder.input("x", input_tensor.shape, input_tensor.dtype, scale=input_tensor.scale,
                  zero_point=input_tensor.zero_point)
    with pytest.raises(ValueError) as info:
        builder.node(node.name, node.op, node.inputs)
    assert words in str(info.value)


def test_builder_refuses_a_scale_the_operation_fixes():
    builder = GraphBuilder()
    x = builder.input("x", (4,), scale=0.5)
    with pytest.raises(ValueError, match="fixed by Softmax; do not pass scale"):
        builder.node("softmax", Softmax(input_scale=0.5, input_zero_point=0), [x], scale=0.1)


def test_executor_checks_its_inputs():
    graph = add_graph(dict(scale=0.5), dict(scale=0.5), dict(scale=1.0))
    x = np.zeros((2, 4), np.int8)
    with pytest.raises(TypeError, match="pass a dict"):
        run_reference(graph, x)
    with pytest.raises(ValueError, match=r"exactly the graph inputs \('x', 'y'\)"):
        run_reference(graph, {"x": x})
    with pytest.raises(ValueError, match=r"input 'y' must have shape \[B, 4\]"):
        run_reference(graph, {"x": x, "y": np.zeros((2, 5), np.int8)})
    with pytest.raises(ValueError, match="one batch size"):
        run_reference(graph, {"x": x, "y": np.zeros((3, 4), np.int8)})
    with pytest.raises(TypeError, match="integer array"):
        run_reference(graph, {"x": x, "y": np.zeros((2, 4))})
    with pytest.raises(ValueError, match=r"input 'x' \(int8\) must be in \[-128, 127\]"):
        run_reference(graph, {"x": np.full((2, 4), 200), "y": x})
    with pytest.raises(TypeError, match="must be a Graph"):
        run_reference("graph", x)
    binary = Graph(tensors=[t("b", dtype="binary"), t("d", (2,), dtype="int32")],
                   nodes=[Node(name="n", op=BinaryDense(weights=np.ones((2, 4), np.int8)),
                               inputs=["b"], output="d")], inputs=["b"], outputs=["d"])
    with pytest.raises(ValueError, match="only \\+1 and -1"):
        run_reference(binary, np.zeros((1, 4), np.int8))
    assert run_reference(binary, np.ones((1, 4), np.int8)).tolist() == [[4, 4]]
