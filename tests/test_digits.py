"""`sw.digits`: the split and training are deterministic and the quantized models are accurate."""

import numpy as np
import pytest

from sw.digits import load_split, train_binary_mlp, train_int8_cnn, train_int8_mlp
from sw.model import BinaryDense, Conv2D, Dense, Flatten, run_reference

# (trainer, float accuracy floor, reference accuracy floor) on the 359 test images.
TRAINERS = {
    "int8_mlp": (train_int8_mlp, 0.95, 0.95),
    "int8_cnn": (train_int8_cnn, 0.95, 0.95),
    "binary_mlp": (train_binary_mlp, 0.85, 0.85),
}


@pytest.fixture(scope="module", params=sorted(TRAINERS))
def trained(request):
    trainer, float_floor, reference_floor = TRAINERS[request.param]
    return request.param, trainer, trainer(), float_floor, reference_floor


def test_split_is_seeded_and_disjoint():
    first, again, other = load_split(seed=0), load_split(seed=0), load_split(seed=1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    x_train, y_train, x_test, y_test = first
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64)
    assert len(y_train) == 1438 and len(y_test) == 359
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert not np.array_equal(x_test, other[2])
    train_rows = {row.tobytes() for row in x_train}
    # The digits set has a few duplicate images; nearly all test images are unseen.
    assert sum(row.tobytes() in train_rows for row in x_test) < 5


def test_accuracy_and_hardware_ready_test_split(trained):
    name, _, result, float_floor, reference_floor = trained
    assert result.float_accuracy >= float_floor, name
    assert result.reference_accuracy >= reference_floor, name
    model = result.model
    assert result.x_test.dtype == np.int8
    assert result.x_test.shape == (len(result.y_test), *model.input_shape)
    predictions = np.argmax(run_reference(model, result.x_test), axis=1)
    assert result.reference_accuracy == np.mean(predictions == result.y_test)
    if model.is_binary:
        assert set(np.unique(result.x_test)) <= {-1, 1}
        assert all(isinstance(layer, BinaryDense) for layer in model.layers)
        assert model.layers[-1].is_output and not model.layers[0].is_output
        # The folded thresholds reproduce the float BatchNorm+sign network.
        assert abs(result.reference_accuracy - result.float_accuracy) <= 1 / len(result.y_test)
    else:
        assert abs(result.reference_accuracy - result.float_accuracy) <= 0.02
        kinds = [type(layer) for layer in model.layers]
        assert kinds in ([Dense, Dense], [Conv2D, Flatten, Dense])
        assert [layer.rounding for layer in model.layers if not isinstance(layer, Flatten)] \
            == (["single", "single"] if kinds[0] is Dense else ["double", "single"])
        # Hidden layer has a fused ReLU: act_min is its output zero point.
        assert model.layers[0].act_min == max(-128, model.layers[0].output_zero_point)


def test_training_is_deterministic(trained):
    name, trainer, result, _, _ = trained
    again = trainer()
    np.testing.assert_array_equal(again.x_test, result.x_test)
    for first, second in zip(result.model.layers, again.model.layers):
        for field in ("weights", "bias", "multiplier", "shift", "thresholds", "ascending"):
            if hasattr(first, field) and getattr(first, field) is not None:
                np.testing.assert_array_equal(getattr(first, field), getattr(second, field),
                                              err_msg=f"{name} {field}")
    assert again.reference_accuracy == result.reference_accuracy


@pytest.mark.parametrize("call, words", [
    (lambda: train_int8_mlp(hidden=0), "hidden must be a positive integer, not 0"),
    (lambda: train_int8_cnn(epochs=1.5), "epochs must be a positive integer, not 1.5"),
    (lambda: train_binary_mlp(hidden=(64, -1)), "hidden must be a positive integer, not -1"),
    (lambda: load_split(seed=-1), "seed must be a non-negative integer"),
])
def test_rejects(call, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        call()
