"""DropBlock2D: the paper's gamma, blocks, the dropped fraction against its
closed form (standard errors from per-map counts), the mean kept, data
formats, and errors in kreg's wording. Monte Carlo sampling, export and the
fresh-process `.keras` file are in tests/test_dropout_family_sampling.py."""

import math

import keras
import numpy as np
import pytest

from kreg.layers import DropBlock2D


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_gamma_is_the_papers_formula():
    layer = DropBlock2D(0.1, block_size=7)
    # gamma = (1 - keep) / b^2 * f^2 / (f - b + 1)^2, f = 14 (ResNet's conv4)
    assert layer.gamma(14, 14) == pytest.approx(0.1 / 49 * 196 / 64)
    assert DropBlock2D(0.2, block_size=3).gamma(8, 10) == pytest.approx(
        0.2 / 9 * 80 / (6 * 8))
    assert DropBlock2D(0.3, block_size=1).gamma(5, 5) == pytest.approx(0.3)  # dropout


def test_expected_fraction_is_exact_for_a_block_as_large_as_the_map():
    # One possible block: every unit dropped together, with probability gamma.
    layer = DropBlock2D(0.25, block_size=4)
    assert layer.gamma(4, 4) == pytest.approx(0.25)
    assert layer.expected_drop_fraction(4, 4) == pytest.approx(0.25)
    # Overlapping blocks drop a little less than `rate`.
    big = DropBlock2D(0.25, block_size=3)
    assert 0.2 < big.expected_drop_fraction(16, 16) < 0.25


@pytest.fixture(scope="module")
def draws():
    layer = DropBlock2D(0.2, block_size=3, seed=4)
    x = np.ones((250, 12, 12, 4), "float32")
    return layer, _np(layer(x, training=True))


def test_dropped_fraction_matches_the_closed_form_within_four_standard_errors(draws):
    layer, y = draws
    # Units of a map are dropped together (blocks), so the per-unit binomial
    # variance is wrong; maps are independent, so the standard error comes from
    # the spread of the 1000 per-map fractions.
    per_map = (y == 0).mean(axis=(1, 2)).ravel()
    se = per_map.std(ddof=1) / math.sqrt(per_map.size)
    expected = layer.expected_drop_fraction(12, 12)
    assert abs(per_map.mean() - expected) < 4 * se
    assert se > 0 and abs(expected - 0.2) < 0.03  # "about rate"


def test_dropped_units_are_unions_of_whole_blocks(draws):
    layer, y = draws
    b = layer.block_size
    dropped = (y == 0).transpose(0, 3, 1, 2)  # (batch, channels, rows, cols)
    windows = np.lib.stride_tricks.sliding_window_view(dropped, (b, b), axis=(2, 3))
    full = windows.all(axis=(-1, -2))  # block corners whose block is all dropped
    covered = np.zeros_like(dropped)
    for i in range(b):
        for j in range(b):
            covered[:, :, i:i + full.shape[2], j:j + full.shape[3]] |= full
    np.testing.assert_array_equal(covered, dropped)
    assert dropped.any()


def test_output_is_rescaled_per_example_to_keep_the_mean(draws):
    _, y = draws
    kept = y.reshape(len(y), -1)
    # A constant input: x * M * count(M) / count_ones(M) has mean 1 per example.
    np.testing.assert_allclose(kept.mean(axis=1), 1.0, rtol=1e-5)
    values = np.unique(kept[0])
    assert values[0] == 0.0 and len(values) == 2


def test_mean_of_a_random_input_is_kept_within_standard_errors():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(400, 10, 10, 2)).astype("float32")
    y = _np(DropBlock2D(0.3, block_size=3, seed=2)(x, training=True))
    diff = (y - x).reshape(len(x), -1).mean(axis=1).astype("float64")
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff))


def test_identity_at_inference_and_rate_zero():
    x = np.random.default_rng(1).normal(size=(3, 7, 7, 2)).astype("float32")
    np.testing.assert_array_equal(_np(DropBlock2D(0.5, 3)(x)), x)
    np.testing.assert_array_equal(_np(DropBlock2D(0.0, 3)(x, training=True)), x)


def test_channels_first_equals_channels_last_transposed():
    x = np.random.default_rng(2).normal(size=(4, 9, 8, 3)).astype("float32")
    last = DropBlock2D(0.3, block_size=2, data_format="channels_last", seed=7)
    first = DropBlock2D(0.3, block_size=2, data_format="channels_first", seed=7)
    y_last = _np(last(x, training=True))
    y_first = _np(first(x.transpose(0, 3, 1, 2), training=True))
    np.testing.assert_allclose(y_first.transpose(0, 2, 3, 1), y_last, rtol=1e-6)
    assert (y_last == 0).any()


def test_seeded_streams_repeat_and_advance():
    x = np.ones((2, 8, 8, 2), "float32")
    a, b = DropBlock2D(0.3, 3, seed=5), DropBlock2D(0.3, 3, seed=5)
    first = [_np(a(x, training=True)) for _ in range(2)]
    np.testing.assert_array_equal(first[0], _np(b(x, training=True)))
    assert not np.array_equal(first[0], first[1])


def test_trains_in_a_compiled_fit():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                              DropBlock2D(0.2, block_size=3, seed=1),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    history = model.fit(x, x.sum(axis=(1, 2, 3))[:, None], epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


BAD = [
    ({"rate": 1.0}, ValueError,
     r"Invalid value for argument `rate` of DropBlock2D: expected a float in \[0, 1\)"),
    ({"rate": -0.1}, ValueError, r"argument `rate` of DropBlock2D"),
    ({"rate": "0.1"}, TypeError, r"argument `rate` of DropBlock2D"),
    ({"rate": None}, TypeError, r"argument `rate` of DropBlock2D.*Received: rate=None"),
    ({"rate": 0.1, "block_size": 0}, ValueError,
     r"argument `block_size` of DropBlock2D: expected an integer >= 1. "
     r"Received: block_size=0"),
    ({"rate": 0.1, "block_size": 2.0}, TypeError, r"argument `block_size`"),
    ({"rate": 0.1, "block_size": True}, TypeError, r"argument `block_size`"),
    ({"rate": 0.1, "data_format": "nhwc"}, ValueError, r"argument `data_format`"),
    ({"rate": 0.1, "seed": -1}, ValueError, r"argument `seed` of DropBlock2D"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD)
def test_bad_arguments_have_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DropBlock2D(**kwargs)


def test_block_larger_than_the_feature_map_is_refused_when_called():
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `block_size` of DropBlock2D: expected a "
            r"block no larger than the feature map.*Received: block_size=7 for "
            r"inputs of shape \(None, 5, 9, 2\)")):
        keras.Sequential([keras.Input((5, 9, 2)), DropBlock2D(0.1, block_size=7)])
    with pytest.raises(ValueError, match=r"rows and cols\s+must be known|must be known"):
        keras.Sequential([keras.Input((None, None, 2)), DropBlock2D(0.1, 3)])
    with pytest.raises(ValueError, match=r"argument `rows` of DropBlock2D"):
        DropBlock2D(0.1, 3).gamma(2, 5)


def test_bad_inputs_are_refused():
    layer = DropBlock2D(0.1, 2)
    with pytest.raises(TypeError, match=r"argument `inputs` of DropBlock2D.*int32"):
        layer(np.ones((1, 4, 4, 1), "int32"), training=True)
    with pytest.raises(ValueError, match="expected ndim=4"):
        layer(np.ones((4, 4, 1), "float32"))
