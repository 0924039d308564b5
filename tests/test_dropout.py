"""Dropout: closed-form statistics, scaling rules, noise_shape, RNG state, fit."""

import math

import keras
import numpy as np
import pytest

import kreg
from kreg.layers import Dropout


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_keep_fraction_and_mean_match_closed_form(rate):
    p = 1.0 - rate
    n = 200_000
    layer = Dropout(rate, seed=11)
    out = _np(layer(np.ones((n // 100, 100), "float32"), training=True))
    kept = (out != 0).mean()
    # Bernoulli(p) fraction: standard error sqrt(p(1-p)/n); 5 SE tolerance.
    assert abs(kept - p) < 5 * math.sqrt(p * (1 - p) / n)
    # Inverted scaling: E[r x / p] = x; Var = (1-p)/p per element.
    assert abs(out.mean() - 1.0) < 5 * math.sqrt((1 - p) / p / n)
    np.testing.assert_allclose(out.max(), 1.0 / p, rtol=1e-6)
    values = np.unique(out)
    assert len(values) == 2 and values[0] == 0.0


def test_identity_at_inference_and_rate_zero():
    x = np.random.default_rng(0).normal(size=(4, 7)).astype("float32")
    np.testing.assert_array_equal(_np(Dropout(0.4)(x)), x)
    np.testing.assert_array_equal(_np(Dropout(0.4)(x, training=False)), x)
    np.testing.assert_array_equal(_np(Dropout(0.0)(x, training=True)), x)
    np.testing.assert_array_equal(_np(Dropout(keep_prob=1.0)(x, training=True)), x)


def test_vanilla_and_inverted_expectations_equal_inference_output():
    p = 0.7
    n = 100_000
    x = np.full((n // 50, 50), 3.0, "float32")
    for scaling in ("inverted", "test_time"):
        layer = Dropout(keep_prob=p, scaling=scaling, seed=5)
        train = _np(layer(x, training=True))
        infer = _np(layer(x, training=False))
        # Inference: x for inverted, p x for the textbook's vanilla dropout.
        expected = 3.0 if scaling == "inverted" else 3.0 * p
        np.testing.assert_allclose(infer, expected, rtol=1e-6)
        # Training output per element is c * r with r ~ Bernoulli(p),
        # c = 3/p (inverted) or 3 (vanilla): SE = c sqrt(p(1-p)/n).
        c = 3.0 / p if scaling == "inverted" else 3.0
        se = c * math.sqrt(p * (1 - p) / n)
        assert abs(train.mean() - expected) < 5 * se
    # Vanilla training output is unscaled: values are 0 or x.
    vanilla = _np(Dropout(keep_prob=p, scaling="test_time", seed=1)(x, training=True))
    assert set(np.unique(vanilla)) <= {0.0, 3.0}


def test_noise_shape_broadcasts_mask():
    x = np.ones((8, 5, 6), "float32")
    out = _np(Dropout(0.5, noise_shape=(None, 1, 6), seed=3)(x, training=True))
    # One mask per (example, channel), shared along the time axis.
    assert np.all(out == out[:, :1, :])
    assert 0 < (out == 0).mean() < 1
    out2 = _np(Dropout(0.5, noise_shape=(1, 5, 1), seed=3)(x, training=True))
    assert np.all(out2 == out2[:1, :, :1])


def test_noise_shape_validation_matches_keras():
    assert Dropout(0.5, noise_shape=[None, 1, 3]).noise_shape == (None, 1, 3)
    for bad in ("abc", 5, (1.5, 2), (0, 2), (-1, 2), (True, 2)):
        with pytest.raises((TypeError, ValueError),
                           match=r"Invalid value for argument `noise_shape` of Dropout"):
            Dropout(0.5, noise_shape=bad)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"rate": 1.0}, ValueError, r"`rate` of Dropout: expected a float in \[0, 1\)"),
        ({"rate": -0.1}, ValueError, r"Received: rate=-0.1"),
        ({"rate": float("nan")}, ValueError, r"Received: rate=nan"),
        ({"rate": "0.5"}, TypeError, r"`rate` of Dropout: expected a float"),
        ({"rate": True}, TypeError, r"`rate` of Dropout"),
        ({"keep_prob": 0.0}, ValueError, r"`keep_prob` of Dropout: expected a float "
         r"in \(0, 1\] \(a keep probability of 0 drops every unit"),
        ({"keep_prob": 1.5}, ValueError, r"Received: keep_prob=1.5"),
        ({"rate": 0.2, "keep_prob": 0.8}, ValueError,
         r"`keep_prob` of Dropout: expected either `rate` or `keep_prob`, not both"),
        ({"scaling": "vanilla"}, ValueError,
         r"`scaling` of Dropout: expected one of 'inverted', 'test_time'. "
         r"Received: scaling='vanilla'"),
        ({"seed": -1}, ValueError, r"`seed` of Dropout"),
        ({"seed": 1.5}, TypeError, r"`seed` of Dropout"),
    ],
)
def test_bad_arguments_have_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Dropout(**kwargs)


def test_keep_prob_sets_rate():
    layer = Dropout(keep_prob=0.8)
    assert layer.rate == pytest.approx(0.2)
    assert layer.keep_prob == pytest.approx(0.8)
    assert Dropout().rate == 0.5


def test_seeded_masks_reproducible_across_processes(fresh_python):
    code = """
        import json, numpy as np, kreg
        layer = kreg.layers.Dropout(0.5, seed=42)
        x = np.ones((3, 10), "float32")
        a = np.asarray(layer(x, training=True)); b = np.asarray(layer(x, training=True))
        print("JSON:" + json.dumps([a.tolist(), b.tolist()]))
    """
    first = fresh_python(code).result
    layer = Dropout(0.5, seed=42)
    x = np.ones((3, 10), "float32")
    here = [_np(layer(x, training=True)).tolist(), _np(layer(x, training=True)).tolist()]
    assert first == here
    assert first[0] != first[1]  # the generator advances: fresh masks


class _Recorder(keras.layers.Layer):
    """Stores its training-time input in a variable (to observe masks in fit)."""

    def build(self, input_shape):
        self.seen = self.add_weight(shape=input_shape[1:], initializer="zeros",
                                    trainable=False, name="seen")

    def call(self, x, training=None):
        if training:
            self.seen.assign(x[0])
        return x


def test_fresh_mask_on_every_step_inside_fit():
    keras.utils.set_random_seed(0)
    rec = _Recorder()
    model = keras.Sequential([keras.Input((64,)), Dropout(0.5, seed=7), rec,
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    masks = []

    class MaskLog(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # Reading `self.model` syncs the state mid-epoch on JAX.
            masks.append(_np(self.model.get_layer(rec.name).seen.value).copy())

    cb = MaskLog()
    x = np.ones((40, 64), "float32")
    model.fit(x, np.zeros((40, 1)), batch_size=8, epochs=2, verbose=0,
              shuffle=False, callbacks=[cb])
    assert len(masks) == 10
    distinct = {tuple((m != 0).astype(int)) for m in masks}
    assert len(distinct) == 10
    # Each mask keeps about half of the 64 units.
    assert all(10 < (m != 0).sum() < 54 for m in masks)


def test_compute_output_shape_and_masking():
    layer = Dropout(0.5)
    assert layer.compute_output_shape((None, 3, 4)) == (None, 3, 4)
    assert layer.supports_masking
    assert kreg.layers.Dropout is Dropout
