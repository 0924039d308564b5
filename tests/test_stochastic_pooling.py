"""StochasticPooling2D: location frequencies, the probabilistic weighting,
MaxPooling2D's regions, gradients, negative inputs, argument errors."""

import math

import keras
import numpy as np
import pytest

import kreg
from kreg.layers import StochasticPooling2D
from kreg.layers.base import SamplingContext
from kreg.layers.base import sampling_scope


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _regions(shape, pool, strides, padding):
    """MaxPooling2D's regions as lists of in-bounds (row, col) pairs."""
    rows, cols = shape
    (kh, kw), (sh, sw) = pool, strides
    if padding == "same":
        out = (-(-rows // sh), -(-cols // sw))
        top = max((out[0] - 1) * sh + kh - rows, 0) // 2
        left = max((out[1] - 1) * sw + kw - cols, 0) // 2
    else:
        out = ((rows - kh) // sh + 1, (cols - kw) // sw + 1)
        top = left = 0
    return [[[(r, c) for r in range(i * sh - top, i * sh - top + kh)
              for c in range(j * sw - left, j * sw - left + kw)
              if 0 <= r < rows and 0 <= c < cols]
             for j in range(out[1])] for i in range(out[0])]


def _reference(x, pool, strides, padding, moment):
    """sum_i p_i a_i^moment over each region (moment 1: the layer's inference)."""
    regions = _regions(x.shape[1:3], pool, strides, padding)
    a = np.maximum(x.astype("float64"), 0.0)
    out = np.zeros((x.shape[0], len(regions), len(regions[0]), x.shape[3]))
    for i, row in enumerate(regions):
        for j, cells in enumerate(row):
            vals = np.stack([a[:, r, c] for r, c in cells], axis=-1)
            total = vals.sum(-1)
            safe = np.where(total > 0, total, 1.0)
            out[:, i, j] = (vals ** (1 + moment)).sum(-1) / safe
    return out


CONFIGS = [((2, 2), None, "valid"), ((3, 3), (2, 2), "valid"), ((3, 3), (2, 2), "same"),
           ((2, 3), (1, 2), "same"), ((2, 2), None, "same")]


@pytest.mark.parametrize("pool, strides, padding", CONFIGS)
def test_shapes_and_regions_match_max_pooling(pool, strides, padding):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, size=(2, 7, 6, 3)).astype("float32")
    layer = StochasticPooling2D(pool, strides, padding, seed=1)
    keras_pool = keras.layers.MaxPooling2D(pool, strides, padding)
    expected = tuple(keras_pool(x).shape)
    assert tuple(layer(x).shape) == expected
    assert tuple(layer(x, training=True).shape) == expected
    assert layer.compute_output_shape((None, 7, 6, 3)) == \
        keras_pool.compute_output_shape((None, 7, 6, 3))
    # Inference is the NumPy probabilistic weighting over MaxPooling2D's regions.
    np.testing.assert_allclose(_np(layer(x)), _reference(x, pool, layer.strides,
                                                         padding, 1), rtol=1e-5)
    # Values 256^k, k in 0..5: the weighting is within 8/256 of the region's
    # max (at most 8 smaller values, each <= max/256), so the regions are Keras's.
    peaked = np.exp2(8.0 * rng.integers(0, 6, size=x.shape)).astype("float32")
    np.testing.assert_allclose(_np(layer(peaked)), _np(keras_pool(peaked)), rtol=0.032)
    # Every training pick is an activation of its region: never above the max.
    assert np.all(_np(layer(x, training=True)) <= _np(keras_pool(x)))


def test_location_frequencies_match_p_within_five_standard_errors():
    n = 20_000  # regions: 2000 rows x 10 channels
    values = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 5.0, 0.0, 0.0], "float32")
    x = np.broadcast_to(values.reshape(1, 3, 3, 1), (n // 10, 3, 3, 10))
    picks = _np(StochasticPooling2D(3, seed=4)(x, training=True)).ravel()
    assert picks.size == n
    p = values / values.sum()
    for value, prob in zip(values, p):
        if value == 0:
            continue
        freq = (picks == value).mean()
        assert abs(freq - prob) < 5 * math.sqrt(prob * (1 - prob) / n), (value, freq)
    assert not np.any(picks == 0.0)  # zeros are never picked (p_i = 0)


def test_all_zero_region_outputs_zero_and_negatives_count_as_zero():
    layer = StochasticPooling2D(2, seed=2)
    zeros = np.zeros((4, 4, 4, 2), "float32")
    assert np.all(_np(layer(zeros, training=True)) == 0)
    assert np.all(_np(layer(zeros)) == 0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6, 6, 2)).astype("float32")
    relu = np.maximum(x, 0)
    np.testing.assert_allclose(_np(layer(x)), _np(layer(relu)), rtol=1e-6)
    # The same random numbers give the same picks on x and on max(x, 0).
    seed = np.array([5, 0])
    with sampling_scope(SamplingContext(seed)):
        a = _np(layer(x))
    with sampling_scope(SamplingContext(seed)):
        b = _np(layer(relu))
    np.testing.assert_array_equal(a, b)
    assert np.all(a >= 0)


def test_mean_of_many_samples_converges_to_the_inference_output():
    t = 4000
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 1.0, size=(1, 5, 5, 2)).astype("float32")
    x[0, :2, :2, 0] = 0.0  # an all-zero region
    layer = StochasticPooling2D(3, 2, "same", seed=3)
    samples = _np(layer(np.repeat(x, t, axis=0), training=True)).astype("float64")
    mean = _reference(x, (3, 3), (2, 2), "same", 1)[0]
    var = _reference(x, (3, 3), (2, 2), "same", 2)[0] - mean ** 2
    np.testing.assert_allclose(_np(layer(x))[0], mean, rtol=1e-5)
    se = np.sqrt(np.maximum(var, 0) / t)
    assert np.all(np.abs(samples.mean(axis=0) - mean) <= 5 * se + 1e-7)
    assert samples[:, 0, 0, 0].max() == 0.0


def _gradient(fn, x):
    """d sum(fn(x)) / dx on the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = tf.reduce_sum(fn(xt))
        return tape.gradient(y, xt).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v).sum())(x))
    import torch

    xt = torch.tensor(x, requires_grad=True)
    fn(xt).sum().backward()
    return xt.grad.numpy()


def test_gradient_flows_to_the_chosen_activation_only():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 1.0, size=(2, 6, 6, 3)).astype("float32")
    w = rng.normal(size=(2, 3, 3, 3)).astype("float32")
    layer = StochasticPooling2D(2, seed=0)

    def picked(v):  # one fixed draw: a function of the seed only
        with sampling_scope(SamplingContext(np.array([9, 0]))):
            return layer(v) * keras.ops.convert_to_tensor(w)

    y = _np(picked(x)) / w
    grad = _gradient(picked, x)
    expected = np.zeros_like(x)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                for c in range(3):
                    region = x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
                    hit = np.argwhere(np.isclose(region, y[b, i, j, c], rtol=1e-6))
                    assert len(hit) == 1
                    r, q = hit[0]
                    expected[b, 2 * i + r, 2 * j + q, c] = w[b, i, j, c]
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_channels_first_equals_channels_last_transposed():
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(2, 7, 5, 3)).astype("float32")
    xt = np.transpose(x, (0, 3, 1, 2))
    last = StochasticPooling2D(3, 2, "same", data_format="channels_last")
    first = StochasticPooling2D(3, 2, "same", data_format="channels_first")
    np.testing.assert_allclose(np.transpose(_np(first(xt)), (0, 2, 3, 1)),
                               _np(last(x)), rtol=1e-6)
    assert first.compute_output_shape((None, 3, 7, 5)) == (None, 3, 4, 3)
    seed = np.array([1, 0])
    with sampling_scope(SamplingContext(seed)):
        a = _np(last(x))
    with sampling_scope(SamplingContext(seed)):
        b = np.transpose(_np(first(xt)), (0, 2, 3, 1))
    np.testing.assert_array_equal(a, b)


def test_fresh_picks_every_call_and_seeded_streams_repeat():
    x = np.random.default_rng(5).uniform(size=(4, 8, 8, 4)).astype("float32")
    layer = StochasticPooling2D(2, seed=7)
    first, second = _np(layer(x, training=True)), _np(layer(x, training=True))
    assert not np.array_equal(first, second)
    again = StochasticPooling2D(2, seed=7)
    np.testing.assert_array_equal(_np(again(x, training=True)), first)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"pool_size": 0}, ValueError, r"`pool_size` of StochasticPooling2D: expected a "
         r"positive integer or a tuple of 2 positive integers. Received: pool_size=0"),
        ({"pool_size": (2, 2, 2)}, TypeError, r"`pool_size` of StochasticPooling2D"),
        ({"pool_size": 2.0}, TypeError, r"Received: pool_size=2.0"),
        ({"pool_size": True}, TypeError, r"`pool_size` of StochasticPooling2D"),
        ({"strides": (1, -1)}, ValueError, r"`strides` of StochasticPooling2D: expected "
         r"a positive integer or a tuple of 2 positive integers, or None"),
        ({"strides": "2"}, TypeError, r"`strides` of StochasticPooling2D"),
        ({"padding": "full"}, ValueError, r"`padding` of StochasticPooling2D: expected "
         r"one of 'valid', 'same'. Received: padding='full'"),
        ({"padding": 1}, TypeError, r"`padding` of StochasticPooling2D"),
        ({"data_format": "NHWC"}, ValueError, r"`data_format` of StochasticPooling2D: "
         r"expected one of 'channels_last', 'channels_first'"),
        ({"seed": -1}, ValueError, r"`seed` of StochasticPooling2D"),
        ({"seed": "1"}, TypeError, r"`seed` of StochasticPooling2D"),
    ],
)
def test_bad_arguments_have_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        StochasticPooling2D(**kwargs)


def test_defaults_and_normalised_arguments():
    layer = StochasticPooling2D()
    assert (layer.pool_size, layer.strides, layer.padding) == ((2, 2), (2, 2), "valid")
    assert layer.data_format == keras.config.image_data_format()
    assert StochasticPooling2D(3, padding="SAME").padding == "same"
    assert StochasticPooling2D([2, 3], 1).strides == (1, 1)
    assert layer.is_stochastic and layer.rate is None
    assert kreg.layers.StochasticPooling2D is StochasticPooling2D


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_dynamic_spatial_dimensions_in_a_compiled_predict(padding):
    model = keras.Sequential([keras.Input((None, None, 2)),
                              StochasticPooling2D(3, 2, padding, seed=1)])
    rng = np.random.default_rng(6)
    for shape in ((2, 7, 9, 2), (1, 5, 4, 2)):
        x = rng.uniform(size=shape).astype("float32")
        np.testing.assert_allclose(model.predict(x, verbose=0),
                                   _reference(x, (3, 3), (2, 2), padding, 1), rtol=1e-5)
