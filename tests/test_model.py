"""`sw.model`: layer validation and the reference executor against an independent integer model.

The independent model below uses Python integers and explicit loops only (no `sim.reference`, no
floats): the TFLite roundings are written out from their definitions.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sim.reference import pack_bits
from sw.model import (BinaryDense, Conv2D, Dense, Flatten, Int8Input, QuantizedModel, SignInput,
                      run_reference, run_reference_layers)

FAST = settings(max_examples=15, deadline=None)


# Independent integer model -----------------------------------------------------------------------

def requant_int(acc, m0, shift, zero_point, act_min, act_max, rounding):
    if rounding == "single":
        total = 31 - shift
        scaled = (acc * m0 + (1 << (total - 1))) >> total
    else:
        product = acc * m0
        nudge = (1 << 30) if product >= 0 else 1 - (1 << 30)
        total = product + nudge
        high = abs(total) >> 31
        high = high if total >= 0 else -high                      # C division: toward zero
        exponent = -shift
        mask = (1 << exponent) - 1
        threshold = (mask >> 1) + (1 if high < 0 else 0)
        scaled = (high >> exponent) + (1 if (high & mask) > threshold else 0)
    return min(max(scaled + zero_point, act_min), act_max)


def dense_int(layer, x):
    k, n = layer.weights.shape
    out = np.zeros((len(x), n), dtype=np.int64)
    for i, row in enumerate(x.tolist()):
        for c in range(n):
            acc = int(layer.bias[c]) + sum((row[j] - layer.input_zero_point)
                                           * int(layer.weights[j, c]) for j in range(k))
            out[i, c] = requant_int(acc, int(layer.multiplier[c]), int(layer.shift[c]),
                                    layer.output_zero_point, layer.act_min, layer.act_max,
                                    layer.rounding)
    return out


def conv_int(layer, x):
    batch, height, width, _ = x.shape
    kh, kw, cin, cout = layer.weights.shape
    (sh, sw), (top, bottom, left, right) = layer.stride, layer.padding
    out_h = (height + top + bottom - kh) // sh + 1
    out_w = (width + left + right - kw) // sw + 1
    out = np.zeros((batch, out_h, out_w, cout), dtype=np.int64)
    for b in range(batch):
        for oh in range(out_h):
            for ow in range(out_w):
                for c in range(cout):
                    acc = int(layer.bias[c])
                    for i in range(kh):
                        for j in range(kw):
                            h, w = oh * sh - top + i, ow * sw - left + j
                            if not (0 <= h < height and 0 <= w < width):
                                continue        # padding holds the zero point: contributes 0
                            for ci in range(cin):
                                acc += (int(x[b, h, w, ci]) - layer.input_zero_point) \
                                    * int(layer.weights[i, j, ci, c])
                    out[b, oh, ow, c] = requant_int(acc, int(layer.multiplier[c]),
                                                    int(layer.shift[c]), layer.output_zero_point,
                                                    layer.act_min, layer.act_max, layer.rounding)
    if layer.pool:
        pooled = np.zeros((batch, out_h // 2, out_w // 2, cout), dtype=np.int64)
        for b, oh, ow, c in np.ndindex(pooled.shape):
            pooled[b, oh, ow, c] = max(out[b, 2 * oh + i, 2 * ow + j, c]
                                       for i in range(2) for j in range(2))
        out = pooled
    return out


def binary_int(layer, x):
    out = np.zeros((len(x), layer.units), dtype=np.int64)
    for i, row in enumerate(x.tolist()):
        for c in range(layer.units):
            dot = sum(a * int(w) for a, w in zip(row, layer.weights[c]))
            if layer.thresholds is None:
                out[i, c] = dot
            else:
                t = int(layer.thresholds[c])
                out[i, c] = 1 if (dot >= t if layer.ascending[c] else dot <= t) else -1
    return out


def run_int(model, x):
    outputs = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            x = dense_int(layer, x)
        elif isinstance(layer, Conv2D):
            x = conv_int(layer, x)
        elif isinstance(layer, Flatten):
            x = x.reshape(len(x), -1)
        else:
            x = binary_int(layer, x)
        outputs.append(x)
    return outputs


# Strategies --------------------------------------------------------------------------------------

def int8_array(rng, shape, low=-128):
    return rng.integers(low, 128, shape).astype(np.int8)


def requant_fields(rng, channels, input_zero_point, rounding):
    output_zero_point = int(rng.integers(-128, 128))
    act_min = int(rng.integers(-128, 128))
    return dict(
        bias=rng.integers(-5000, 5000, channels).astype(np.int32),
        multiplier=rng.integers(1 << 30, 1 << 31, channels),
        shift=rng.integers(-12, 1, channels),
        input_zero_point=input_zero_point, output_zero_point=output_zero_point,
        act_min=act_min, act_max=int(rng.integers(act_min, 128)), rounding=rounding)


def random_int8_model(rng, conv):
    input_zero_point = int(rng.integers(-128, 128))
    layers = []
    if conv:
        height, width = (int(v) for v in rng.integers(2, 6, 2))
        cin, cout = (int(v) for v in rng.integers(1, 4, 2))
        kh = int(rng.integers(1, min(3, height) + 1))
        kw = int(rng.integers(1, min(3, width) + 1))
        padding = tuple(int(rng.integers(0, k)) for k in (kh, kh, kw, kw))
        stride = tuple(int(v) for v in rng.integers(1, 3, 2))
        input_shape = (height, width, cin)
        pool = bool(rng.integers(2))
        conv_layer = Conv2D(weights=int8_array(rng, (kh, kw, cin, cout)), stride=stride,
                            padding=padding, pool=False,
                            **requant_fields(rng, cout, input_zero_point,
                                             str(rng.choice(["double", "single"]))))
        out_h, out_w, _ = conv_layer.output_shape(input_shape)
        if pool and out_h >= 2 and out_w >= 2:
            conv_layer = dataclasses.replace(conv_layer, pool=True)
        layers += [conv_layer, Flatten()]
        features = int(np.prod(conv_layer.output_shape(input_shape)))
        zero_point = conv_layer.output_zero_point
    else:
        features = int(rng.integers(1, 12))
        input_shape = (features,)
        zero_point = input_zero_point
    for _ in range(int(rng.integers(1, 3))):
        units = int(rng.integers(1, 6))
        layer = Dense(weights=int8_array(rng, (features, units)),
                      **requant_fields(rng, units, zero_point,
                                       str(rng.choice(["double", "single"]))))
        layers.append(layer)
        features, zero_point = units, layer.output_zero_point
    return QuantizedModel(layers=layers, input_shape=input_shape,
                          input=Int8Input(scale=0.1, zero_point=input_zero_point),
                          output_scale=0.5)


def signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, 1, -1).astype(np.int8)


def random_binary_model(rng):
    sizes = [int(v) for v in rng.integers(1, 20, int(rng.integers(2, 4)))]
    layers = []
    for index, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = index == len(sizes) - 2
        thresholds = None if last else rng.integers(-k - 1, k + 2, n).astype(np.int32)
        ascending = None if last else rng.random(n) < 0.5
        layers.append(BinaryDense(weights=signs(rng, (n, k)), thresholds=thresholds,
                                  ascending=ascending))
    return QuantizedModel(layers=layers, input_shape=(sizes[0],), input=SignInput(threshold=0.5))


# Executor vs the independent model ---------------------------------------------------------------

@FAST
@given(seed=st.integers(0, 2**32 - 1), conv=st.booleans(), batch=st.integers(1, 3))
def test_int8_model_matches_integer_loops(seed, conv, batch):
    rng = np.random.default_rng(seed)
    model = random_int8_model(rng, conv)
    x = int8_array(rng, (batch, *model.input_shape))
    outputs = run_reference_layers(model, x)
    expected = run_int(model, x.astype(np.int64))
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(run_reference(model, x), expected[-1])


@FAST
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 4))
def test_binary_model_matches_integer_loops(seed, batch):
    rng = np.random.default_rng(seed)
    model = random_binary_model(rng)
    x = signs(rng, (batch, *model.input_shape))
    outputs = run_reference_layers(model, x)
    for got, want in zip(outputs, run_int(model, x.astype(np.int64))):
        np.testing.assert_array_equal(got, want)
    assert outputs[-1].dtype == np.int32
    # Packed input bits are the same input.
    np.testing.assert_array_equal(run_reference(model, pack_bits(x)), outputs[-1])


def test_tie_rounding_differs_between_forms():
    # -6 * 2^30 * 2^(-1-31) = -1.5 exactly: FULLY_CONNECTED ("single") rounds the tie toward
    # +infinity (-1), CONV_2D ("double") away from zero (-2).
    def layer(rounding):
        return Dense(weights=np.ones((1, 1), np.int8), bias=np.zeros(1, np.int32),
                     multiplier=np.array([1 << 30]), shift=np.array([-1]), rounding=rounding)
    x = np.array([[-6]], np.int8)
    assert layer("single").run(x)[0, 0] == -1 == requant_int(-6, 1 << 30, -1, 0, -128, 127,
                                                             "single")
    assert layer("double").run(x)[0, 0] == -2 == requant_int(-6, 1 << 30, -1, 0, -128, 127,
                                                             "double")


def test_folded_bias_is_what_the_hardware_adds():
    rng = np.random.default_rng(1)
    weights = int8_array(rng, (3, 3, 2, 4))
    layer = Conv2D(weights=weights, bias=np.arange(4, dtype=np.int32), multiplier=[1 << 30] * 4,
                   shift=[0] * 4, input_zero_point=-7, padding=(1, 1, 1, 1))
    expected = np.arange(4) + 7 * weights.astype(np.int64).sum(axis=(0, 1, 2))
    np.testing.assert_array_equal(layer.folded_bias, expected)
    assert layer.weight_matrix.shape == (18, 4)
    np.testing.assert_array_equal(layer.weight_matrix[:, 1], weights[..., 1].reshape(-1))


def test_binary_packed_weights_round_trip():
    rng = np.random.default_rng(2)
    weights = signs(rng, (3, 13))
    layer = BinaryDense(weights=weights)
    assert layer.packed_weights.shape == (3, 2) and layer.k == 13 and layer.is_output
    again = BinaryDense.from_packed(layer.packed_weights, 13)
    np.testing.assert_array_equal(again.weights, weights)


# Validation --------------------------------------------------------------------------------------

def dense_kwargs(**changes):
    kwargs = dict(weights=np.ones((4, 2), np.int8), bias=np.zeros(2, np.int32),
                  multiplier=np.full(2, 1 << 30), shift=np.full(2, -3))
    kwargs.update(changes)
    return kwargs


def conv_kwargs(**changes):
    kwargs = dense_kwargs(weights=np.ones((3, 3, 1, 2), np.int8))
    kwargs.update(changes)
    return kwargs


@pytest.mark.parametrize("changes, error, words", [
    (dict(weights=np.ones((4, 2))), TypeError, "Dense.weights must be an integer"),
    (dict(weights=np.full((4, 2), 200)), ValueError, "[-128, 127], found [200, 200]"),
    (dict(weights=np.ones((4,), np.int8)), ValueError, "2-D [K, N]"),
    (dict(bias=np.zeros(3, np.int32)), ValueError, "Dense.bias must have shape (2,)"),
    (dict(bias=np.full(2, 1 << 31)), ValueError, "Dense.bias must hold values"),
    (dict(multiplier=np.full(2, 1 << 29)), ValueError, "[2^30, 2^31)"),
    (dict(multiplier=np.full(2, 1 << 31)), ValueError, "Dense.multiplier must hold values"),
    (dict(shift=np.full(2, 1)), ValueError, "Dense.shift must hold values in [-31, 0]"),
    (dict(shift=np.full(2, -32)), ValueError, "Dense.shift"),
    (dict(input_zero_point=128), ValueError, "Dense.input_zero_point must be in [-128, 127]"),
    (dict(output_zero_point=1.5), TypeError, "Dense.output_zero_point must be an integer"),
    (dict(act_min=10, act_max=9), ValueError, "act_min (10) must not exceed act_max (9)"),
    (dict(rounding="nearest"), ValueError, "Dense.rounding must be one of"),
    (dict(bias=np.full(2, (1 << 31) - 1, np.int32), input_zero_point=-1), OverflowError,
     "folded bias"),
])
def test_dense_rejects(changes, error, words):
    with pytest.raises(error) as info:
        Dense(**dense_kwargs(**changes))
    assert words in str(info.value)


@pytest.mark.parametrize("changes, error, words", [
    (dict(weights=np.ones((3, 3, 2), np.int8)), ValueError, "HWIO"),
    (dict(stride=(0, 1)), ValueError, "Conv2D.stride must be a tuple of 2 integers >= 1"),
    (dict(stride=2), ValueError, "Conv2D.stride"),
    (dict(padding=(1, 1)), ValueError, "Conv2D.padding must be a tuple of 4"),
    (dict(padding=(3, 0, 0, 0)), ValueError, "smaller than the 3x3 window"),
    (dict(pool=1), TypeError, "Conv2D.pool must be a bool"),
])
def test_conv2d_rejects(changes, error, words):
    with pytest.raises(error) as info:
        Conv2D(**conv_kwargs(**changes))
    assert words in str(info.value)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(weights=np.zeros((2, 3), np.int8)), ValueError, "only +1 and -1"),
    (dict(weights=np.ones((2, 3))), TypeError, "integer +1/-1"),
    (dict(weights=np.ones(3, np.int8)), ValueError, "[N, K]"),
    (dict(weights=np.ones((2, 3), np.int8), thresholds=np.zeros(2, np.int32)), ValueError,
     "both be given"),
    (dict(weights=np.ones((2, 3), np.int8), thresholds=np.zeros(3, np.int32),
          ascending=np.ones(2, bool)), ValueError, "BinaryDense.thresholds must have shape (2,)"),
    (dict(weights=np.ones((2, 3), np.int8), thresholds=np.zeros(2, np.int32),
          ascending=np.ones(2, np.int8)), ValueError, "ascending must be a bool array"),
])
def test_binary_dense_rejects(kwargs, error, words):
    with pytest.raises(error) as info:
        BinaryDense(**kwargs)
    assert words in str(info.value)


def test_layers_are_keyword_only_frozen_and_own_their_arrays():
    with pytest.raises(TypeError):
        Dense(np.ones((4, 2), np.int8), np.zeros(2, np.int32), [1 << 30] * 2, [0, 0])
    weights = np.ones((4, 2), np.int8)
    layer = Dense(**dense_kwargs(weights=weights))
    weights[0, 0] = 5
    assert layer.weights[0, 0] == 1
    with pytest.raises(ValueError):
        layer.weights[0, 0] = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.act_min = 0


def int8_model(layers, input_shape=(4,), zero_point=0, **changes):
    kwargs = dict(layers=layers, input_shape=input_shape,
                  input=Int8Input(scale=0.5, zero_point=zero_point), output_scale=0.25)
    kwargs.update(changes)
    return QuantizedModel(**kwargs)


def binary_layer(n, k, hidden):
    return BinaryDense(weights=np.ones((n, k), np.int8),
                       thresholds=np.zeros(n, np.int32) if hidden else None,
                       ascending=np.ones(n, bool) if hidden else None)


@pytest.mark.parametrize("build, error, words", [
    (lambda: int8_model([]), ValueError, "must not be empty"),
    (lambda: int8_model([Dense(**dense_kwargs())], input_shape=(5,)), ValueError,
     "node 'layers[0]' (Dense): Dense expects a per-sample input of shape (4,), not (5,)"),
    (lambda: int8_model([Dense(**dense_kwargs())], zero_point=3), ValueError,
     "node 'layers[0]' (Dense): input_zero_point is 0 but input tensor 'input' has zero point 3"),
    (lambda: int8_model([Dense(**dense_kwargs(output_zero_point=5)),
                         Dense(**dense_kwargs(weights=np.ones((2, 2), np.int8)))]),
     ValueError, "node 'layers[1]' (Dense): input_zero_point is 0 but input tensor 'layers[0]' "
     "has zero point 5"),
    (lambda: int8_model([Conv2D(**conv_kwargs(pool=True))], input_shape=(2, 2, 1)),
     ValueError, "does not fit"),
    (lambda: int8_model([Conv2D(**conv_kwargs(padding=(1, 1, 1, 1), pool=True))],
                        input_shape=(1, 3, 1)), ValueError, "needs at least a 2x2 output"),
    (lambda: int8_model([Conv2D(**conv_kwargs(padding=(1, 1, 1, 1))), Flatten()],
                        input_shape=(3, 3, 1)), ValueError, "must not end with Flatten"),
    (lambda: int8_model([Dense(**dense_kwargs())], output_scale=None), ValueError,
     "output_scale must be a finite number > 0"),
    (lambda: int8_model([Dense(**dense_kwargs())], input=SignInput(threshold=0.0)), TypeError,
     "must be an Int8Input"),
    (lambda: int8_model([Dense(**dense_kwargs()), binary_layer(2, 2, False)]), TypeError,
     "layers[1] is BinaryDense; a INT8 model takes only"),
    (lambda: QuantizedModel(layers=[binary_layer(3, 4, False), binary_layer(2, 3, False)],
                            input_shape=(4,), input=SignInput(threshold=0.0)), ValueError,
     "node 'layers[1]' (BinaryDense): input tensor 'layers[0]' is int32; BinaryDense takes "
     "binary"),
    (lambda: QuantizedModel(layers=[binary_layer(3, 4, False)], input_shape=(4,),
                            input=Int8Input(scale=1.0)), TypeError, "must be a SignInput"),
    (lambda: QuantizedModel(layers=[binary_layer(3, 4, False)], input_shape=(4,),
                            input=SignInput(threshold=0.0), output_scale=1.0), ValueError,
     "output_scale must be None"),
    (lambda: QuantizedModel(layers=[binary_layer(3, 4, False)], input_shape=(0,),
                            input=SignInput(threshold=0.0)), ValueError,
     "input_shape must be a tuple of positive integers"),
    (lambda: Int8Input(scale=0.0), ValueError, "Int8Input.scale must be a finite number > 0"),
    (lambda: Int8Input(scale=1.0, zero_point=-129), ValueError, "Int8Input.zero_point"),
    (lambda: SignInput(threshold=float("nan")), ValueError, "SignInput.threshold"),
])
def test_model_rejects(build, error, words):
    with pytest.raises(error) as info:
        build()
    assert words in str(info.value)


def test_executor_checks_its_input():
    model = int8_model([Dense(**dense_kwargs())])
    with pytest.raises(ValueError, match=r"input 'input' must have shape \[B, 4\]"):
        run_reference(model, np.zeros((2, 5), np.int8))
    with pytest.raises(TypeError, match="quantize_input"):
        run_reference(model, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="found"):
        run_reference(model, np.full((2, 4), 300))
    binary = QuantizedModel(layers=[binary_layer(2, 4, False)], input_shape=(4,),
                            input=SignInput(threshold=0.0))
    with pytest.raises(ValueError, match="only \\+1 and -1"):
        run_reference(binary, np.zeros((1, 4), np.int8))
    with pytest.raises(TypeError, match="QuantizedModel"):
        run_reference(model.layers[0], np.zeros((1, 4), np.int8))


def test_input_quantization_and_scores():
    model = int8_model([Dense(**dense_kwargs(input_zero_point=-1, output_zero_point=2))],
                       zero_point=-1)
    np.testing.assert_array_equal(model.quantize_input(np.array([[0.0, 0.25, -0.75, 100.0]])),
                                  [[-1, 0, -3, 127]])     # 0.5 -> round(0.5) = 1 away from zero
    np.testing.assert_array_equal(model.scores(np.array([[2, 6]], np.int8)), [[0.0, 1.0]])
    assert model.output_shape == (2,)
    np.testing.assert_array_equal(SignInput(threshold=0.5)(np.array([0.49, 0.5, 1.0])), [-1, 1, 1])
