"""Demo networks for the accelerator, trained in NumPy on the scikit-learn digits (8x8, 10 classes).

`sklearn.datasets.load_digits` ships with scikit-learn, so nothing is downloaded or cached. The
1,797 images are split once with a seeded permutation (`load_split`); pixels (0..16) are scaled
to [0, 1]. Training is seeded full-NumPy minibatch Adam, deterministic and a few seconds each:

* `train_int8_mlp`: 64-H-10 MLP with ReLU, then post-training INT8 quantization (`sw.quantize`,
  calibrated on the training set) into two `Dense` layers.
* `train_int8_cnn`: conv 3x3, C channels, pad 1 + ReLU + 2x2 max-pool -> flatten -> dense 10,
  quantized into `Conv2D(pool=True)`, `Flatten`, `Dense`.
* `train_binary_mlp`: W1A1 MLP 64-H-10. Pixels are binarized at 0.5 (`SignInput`); hidden
  layers are sign(BatchNorm(dot)) trained with a straight-through estimator (gradient of
  hardtanh) on latent float weights clipped to [-1, 1]; the last layer's int dots are the class
  scores (a shared positive scale during training does not change their argmax). BatchNorm+sign
  is folded into integer thresholds with `sim.reference.fold_batchnorm_sign`.

Each returns a `DigitsResult`: the `QuantizedModel`, the test inputs exactly as the hardware
takes them (int8 or +1/-1 int8) with labels, and the float and reference-integer test accuracy.
``python -m sw.digits`` prints the accuracies.
"""

import argparse
from dataclasses import dataclass

import numpy as np

from sim.reference import fold_batchnorm_sign, im2col
from sw.model import (BinaryDense, Conv2D, Dense, Flatten, Int8Input, QuantizedModel, SignInput,
                      run_reference)
from sw.quantize import calibrate, quantize_layer

__all__ = ["IMAGE_SHAPE", "CLASSES", "TEST_FRACTION", "BINARY_INPUT_THRESHOLD", "DigitsResult",
           "load_split", "train_int8_mlp", "train_int8_cnn", "train_binary_mlp"]

IMAGE_SHAPE = (8, 8)
CLASSES = 10
TEST_FRACTION = 0.2
BINARY_INPUT_THRESHOLD = 0.5        # pixel >= 8 of 16 is +1
_BATCH = 32
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.9


@dataclass(frozen=True, eq=False)
class DigitsResult:
    """A trained and quantized digits model with its test split as the hardware takes it.

    x_test : int8 [M, *model.input_shape] (int8 values or +1/-1); y_test : int [M];
    float_accuracy : the float (or float-simulated binary) network on the test split;
    reference_accuracy : `sw.model.run_reference` on x_test.
    """

    model: QuantizedModel
    x_test: np.ndarray
    y_test: np.ndarray
    float_accuracy: float
    reference_accuracy: float


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _seed(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative integer, not {value!r}")
    return int(value)


def load_split(*, seed=0):
    """``(x_train, y_train, x_test, y_test)``: float64 [M, 64] in [0, 1], int labels.

    A seeded permutation puts `TEST_FRACTION` of the 1,797 images in the test split.
    """
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(_seed(seed)).permutation(len(y))
    test_count = round(TEST_FRACTION * len(y))
    test, train = order[:test_count], order[test_count:]
    return x[train], y[train], x[test], y[test]


# Training helpers --------------------------------------------------------------------------------

class _Adam:
    def __init__(self, parameters, learning_rate):
        self.parameters = parameters
        self.learning_rate = learning_rate
        self.first = [np.zeros_like(p) for p in parameters]
        self.second = [np.zeros_like(p) for p in parameters]
        self.steps = 0

    def step(self, gradients):
        self.steps += 1
        beta1, beta2 = 0.9, 0.999
        for parameter, gradient, first, second in zip(self.parameters, gradients, self.first,
                                                      self.second):
            first *= beta1
            first += (1 - beta1) * gradient
            second *= beta2
            second += (1 - beta2) * gradient * gradient
            corrected = first / (1 - beta1 ** self.steps)
            parameter -= self.learning_rate * corrected / (
                np.sqrt(second / (1 - beta2 ** self.steps)) + 1e-8)


def _softmax_gradient(logits, labels):
    """d(mean cross-entropy)/d(logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    probabilities[np.arange(len(labels)), labels] -= 1
    return probabilities / len(labels)


def _batches(rng, count):
    order = rng.permutation(count)
    return (order[start:start + _BATCH] for start in range(0, count, _BATCH))


def _he(rng, fan_in, shape):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


def _accuracy(scores, labels):
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def _result(model, x_test_float, y_test, float_scores):
    x_test = model.quantize_input(x_test_float)
    return DigitsResult(model=model, x_test=x_test, y_test=y_test,
                        float_accuracy=_accuracy(float_scores, y_test),
                        reference_accuracy=_accuracy(run_reference(model, x_test), y_test))


# INT8 MLP ----------------------------------------------------------------------------------------

def train_int8_mlp(*, hidden=64, epochs=30, learning_rate=0.01, seed=0):
    """64-`hidden`-10 ReLU MLP, quantized to INT8 (`Dense` x2, FULLY_CONNECTED rounding)."""
    hidden, epochs, seed = _positive_int("hidden", hidden), _positive_int("epochs", epochs), \
        _seed(seed)
    x_train, y_train, x_test, y_test = load_split(seed=seed)
    rng = np.random.default_rng(seed)
    w1, b1 = _he(rng, 64, (64, hidden)), np.zeros(hidden)
    w2, b2 = _he(rng, hidden, (hidden, CLASSES)), np.zeros(CLASSES)
    optimizer = _Adam([w1, b1, w2, b2], learning_rate)

    def forward(x):
        h = np.maximum(x @ w1 + b1, 0.0)
        return h, h @ w2 + b2

    for _ in range(epochs):
        for batch in _batches(rng, len(y_train)):
            x = x_train[batch]
            h, logits = forward(x)
            d_logits = _softmax_gradient(logits, y_train[batch])
            d_h = (d_logits @ w2.T) * (h > 0)
            optimizer.step([x.T @ d_h, d_h.sum(0), h.T @ d_logits, d_logits.sum(0)])

    hidden_train, logits_train = forward(x_train)
    input_scale, input_zp = calibrate(x_train)
    hidden_scale, hidden_zp = calibrate(hidden_train)
    output_scale, output_zp = calibrate(logits_train)
    layers = [
        Dense(**quantize_layer(w1, b1, input_scale=input_scale, input_zero_point=input_zp,
                               output_scale=hidden_scale, output_zero_point=hidden_zp,
                               activation="relu")),
        Dense(**quantize_layer(w2, b2, input_scale=hidden_scale, input_zero_point=hidden_zp,
                               output_scale=output_scale, output_zero_point=output_zp)),
    ]
    model = QuantizedModel(layers=layers, input_shape=(64,),
                           input=Int8Input(scale=input_scale, zero_point=input_zp),
                           output_scale=output_scale)
    return _result(model, x_test, y_test, forward(x_test)[1])


# INT8 CNN ----------------------------------------------------------------------------------------

def _pool2x2(a):
    """Float 2x2 max-pool of [B, 8, 8, C] and the mask of the maxima (first one on ties)."""
    batch, height, width, channels = a.shape
    windows = a.reshape(batch, height // 2, 2, width // 2, 2, channels).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(batch, height // 2, width // 2, channels, 4)
    winner = windows.argmax(axis=-1)
    pooled = np.take_along_axis(windows, winner[..., np.newaxis], axis=-1)[..., 0]
    return pooled, winner


def _unpool2x2(d_pooled, winner):
    batch, half_h, half_w, channels = d_pooled.shape
    d_windows = np.zeros((batch, half_h, half_w, channels, 4))
    np.put_along_axis(d_windows, winner[..., np.newaxis], d_pooled[..., np.newaxis], axis=-1)
    d_windows = d_windows.reshape(batch, half_h, half_w, channels, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return d_windows.reshape(batch, 2 * half_h, 2 * half_w, channels)


def train_int8_cnn(*, channels=8, epochs=20, learning_rate=0.01, seed=0):
    """conv3x3(`channels`, pad 1)+ReLU+maxpool2x2 -> dense 10, quantized to INT8.

    Layers: `Conv2D` (CONV_2D double rounding, fused ReLU and pool), `Flatten`, `Dense`. The
    model input is an HWC image (8, 8, 1).
    """
    channels, epochs, seed = _positive_int("channels", channels), \
        _positive_int("epochs", epochs), _seed(seed)
    x_train, y_train, x_test, y_test = load_split(seed=seed)
    x_train, x_test = (x.reshape(-1, *IMAGE_SHAPE, 1) for x in (x_train, x_test))
    rng = np.random.default_rng(seed)
    flat = IMAGE_SHAPE[0] // 2 * IMAGE_SHAPE[1] // 2 * channels
    w_conv, b_conv = _he(rng, 9, (3, 3, 1, channels)), np.zeros(channels)
    w_dense, b_dense = _he(rng, flat, (flat, CLASSES)), np.zeros(CLASSES)
    optimizer = _Adam([w_conv, b_conv, w_dense, b_dense], learning_rate)

    def forward(x):
        columns = im2col(x, 3, 3, 1, 1, pad_value=0.0)
        conv = np.maximum(columns @ w_conv.reshape(9, channels) + b_conv, 0.0)
        conv = conv.reshape(len(x), *IMAGE_SHAPE, channels)
        pooled, winner = _pool2x2(conv)
        return columns, conv, winner, pooled.reshape(len(x), -1), \
            pooled.reshape(len(x), -1) @ w_dense + b_dense

    for _ in range(epochs):
        for batch in _batches(rng, len(y_train)):
            columns, conv, winner, flat_pooled, logits = forward(x_train[batch])
            d_logits = _softmax_gradient(logits, y_train[batch])
            d_pooled = (d_logits @ w_dense.T).reshape(len(batch), IMAGE_SHAPE[0] // 2,
                                                      IMAGE_SHAPE[1] // 2, channels)
            d_conv = (_unpool2x2(d_pooled, winner) * (conv > 0)).reshape(-1, channels)
            optimizer.step([(columns.T @ d_conv).reshape(w_conv.shape), d_conv.sum(0),
                            flat_pooled.T @ d_logits, d_logits.sum(0)])

    _, conv_train, _, _, logits_train = forward(x_train)
    input_scale, input_zp = calibrate(x_train)
    # Max-pool picks one of its inputs, so the pooled tensor keeps the conv output's scale.
    conv_scale, conv_zp = calibrate(conv_train)
    output_scale, output_zp = calibrate(logits_train)
    layers = [
        Conv2D(**quantize_layer(w_conv, b_conv, input_scale=input_scale,
                                input_zero_point=input_zp, output_scale=conv_scale,
                                output_zero_point=conv_zp, activation="relu"),
               padding=(1, 1, 1, 1), pool=True),
        Flatten(),
        Dense(**quantize_layer(w_dense, b_dense, input_scale=conv_scale,
                               input_zero_point=conv_zp, output_scale=output_scale,
                               output_zero_point=output_zp)),
    ]
    model = QuantizedModel(layers=layers, input_shape=(*IMAGE_SHAPE, 1),
                           input=Int8Input(scale=input_scale, zero_point=input_zp),
                           output_scale=output_scale)
    return _result(model, x_test, y_test, forward(x_test)[-1])


# Binary MLP --------------------------------------------------------------------------------------

def _sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def train_binary_mlp(*, hidden=(128,), epochs=60, learning_rate=0.01, seed=0):
    """W1A1 MLP 64-`hidden`...-10 with BatchNorm+sign hidden layers, folded to thresholds.

    The float accuracy is the same binarized network evaluated in float with the BatchNorm
    running statistics, i.e. what the thresholds must reproduce.
    """
    if isinstance(hidden, (int, np.integer)):
        hidden = (hidden,)
    hidden = tuple(_positive_int("hidden", h) for h in hidden)
    epochs, seed = _positive_int("epochs", epochs), _seed(seed)
    x_train, y_train, x_test, y_test = load_split(seed=seed)
    to_signs = SignInput(threshold=BINARY_INPUT_THRESHOLD)
    s_train, s_test = (to_signs(x).astype(np.float64) for x in (x_train, x_test))
    rng = np.random.default_rng(seed)
    sizes = (64, *hidden, CLASSES)
    weights = [rng.uniform(-1.0, 1.0, (fan_in, fan_out))
               for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    gammas = [np.ones(h) for h in hidden]
    betas = [np.zeros(h) for h in hidden]
    # One learned positive scale for the output dots: softmax needs a temperature, argmax not.
    log_scale = np.array([np.log(1.0 / np.sqrt(sizes[-2]))])
    running_means = [np.zeros(h) for h in hidden]
    running_vars = [np.ones(h) for h in hidden]
    optimizer = _Adam([*weights, *gammas, *betas, log_scale], learning_rate)

    def inference_scores(signs):
        for layer, weight in enumerate(weights[:-1]):
            dot = signs @ _sign(weight)
            normalized = (dot - running_means[layer]) / np.sqrt(running_vars[layer] + _BN_EPS)
            signs = _sign(gammas[layer] * normalized + betas[layer])
        return signs @ _sign(weights[-1])

    for _ in range(epochs):
        for batch in _batches(rng, len(y_train)):
            signs, saved = s_train[batch], []
            for layer, weight in enumerate(weights[:-1]):
                dot = signs @ _sign(weight)
                mean, var = dot.mean(0), dot.var(0)
                running_means[layer] = _BN_MOMENTUM * running_means[layer] + \
                    (1 - _BN_MOMENTUM) * mean
                running_vars[layer] = _BN_MOMENTUM * running_vars[layer] + \
                    (1 - _BN_MOMENTUM) * var
                normalized = (dot - mean) / np.sqrt(var + _BN_EPS)
                pre_sign = gammas[layer] * normalized + betas[layer]
                saved.append((signs, normalized, var, pre_sign))
                signs = _sign(pre_sign)
            dots = signs @ _sign(weights[-1])
            scale = np.exp(log_scale[0])
            d_logits = _softmax_gradient(scale * dots, y_train[batch])
            d_weights = [None] * len(weights)
            d_gammas, d_betas = [None] * len(hidden), [None] * len(hidden)
            d_log_scale = np.array([np.sum(d_logits * dots) * scale])
            d_dots = d_logits * scale
            d_weights[-1] = signs.T @ d_dots
            d_signs = d_dots @ _sign(weights[-1]).T
            for layer in reversed(range(len(hidden))):
                layer_input, normalized, var, pre_sign = saved[layer]
                d_pre = d_signs * (np.abs(pre_sign) <= 1.0)          # straight-through (hardtanh)
                d_gammas[layer] = np.sum(d_pre * normalized, axis=0)
                d_betas[layer] = d_pre.sum(0)
                d_normalized = d_pre * gammas[layer]
                d_dot = (d_normalized - d_normalized.mean(0)
                         - normalized * np.mean(d_normalized * normalized, axis=0)) \
                    / np.sqrt(var + _BN_EPS)
                d_weights[layer] = layer_input.T @ d_dot
                d_signs = d_dot @ _sign(weights[layer]).T
            optimizer.step([*d_weights, *d_gammas, *d_betas, d_log_scale])
            for weight in weights:
                np.clip(weight, -1.0, 1.0, out=weight)

    layers = []
    for layer, weight in enumerate(weights[:-1]):
        thresholds, ascending = fold_batchnorm_sign(gammas[layer], betas[layer],
                                                    running_means[layer], running_vars[layer],
                                                    _BN_EPS)
        layers.append(BinaryDense(weights=_sign(weight).T.astype(np.int8),
                                  thresholds=thresholds, ascending=ascending))
    layers.append(BinaryDense(weights=_sign(weights[-1]).T.astype(np.int8)))
    model = QuantizedModel(layers=layers, input_shape=(64,), input=to_signs)
    return _result(model, x_test, y_test, inference_scores(s_test))


TRAINERS = {"int8_mlp": train_int8_mlp, "int8_cnn": train_int8_cnn,
            "binary_mlp": train_binary_mlp}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sw.digits", description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", choices=list(TRAINERS), dest="models",
                        help="train this model (repeatable; default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in args.models or TRAINERS:
        result = TRAINERS[name](seed=args.seed)
        print(f"{name:<11} float {result.float_accuracy:6.2%}  reference "
              f"{result.reference_accuracy:6.2%}  ({len(result.y_test)} test images)")


if __name__ == "__main__":
    main()
