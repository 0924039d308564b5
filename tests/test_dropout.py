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


def test_keras_positional_order_rate_noise_shape_seed():
    # keras.layers.Dropout(0.2, (None, 1, 8), 3) is rate, noise_shape, seed.
    ours, theirs = Dropout(0.2, (None, 1, 8), 3), keras.layers.Dropout(0.2, (None, 1, 8), 3)
    assert (ours.rate, ours.noise_shape, ours.seed) == (0.2, (None, 1, 8), 3)
    assert (theirs.rate, theirs.noise_shape, theirs.seed) == (0.2, (None, 1, 8), 3)
    x = np.ones((4, 5, 8), "float32")
    out = _np(ours(x, training=True))
    assert np.all(out == out[:, :1, :])  # the noise_shape really is the mask's
    # kreg's own arguments are keyword-only: a 4th positional is not keep_prob.
    with pytest.raises(TypeError):
        Dropout(0.2, None, 3, 0.8)
    clone = Dropout.from_config(ours.get_config())
    assert (clone.rate, clone.noise_shape, clone.seed) == (0.2, (None, 1, 8), 3)


def test_wrong_type_is_catchable_as_value_error_like_keras():
    # Keras raises ValueError for these; kreg's error is a TypeError too.
    for bad in ("Invalid", (20, 1.5, 10)):
        for catch in (ValueError, TypeError, kreg.errors.ArgumentTypeError):
            with pytest.raises(catch, match=r"`noise_shape` of Dropout"):
                Dropout(0.5, noise_shape=bad)
        with pytest.raises(ValueError):
            keras.layers.Dropout(0.5, noise_shape=bad)


@pytest.mark.parametrize("scaling", ["inverted", "test_time"])
def test_integer_inputs_refused_wherever_the_layer_scales(scaling):
    """Integer inputs: an error wherever dropout scales, the identity elsewhere.

    Training (both scalings) and test-time-scaled inference would have to
    hold `x / keep_prob` or `keep_prob * x` in an integer; before, test-time
    inference silently returned zeros. Inverted inference is the identity,
    as in Keras.
    """
    x = np.arange(12, dtype="int32").reshape(3, 4)
    layer = Dropout(0.5, scaling=scaling, seed=1)
    wording = (r"Invalid value for argument `inputs` of Dropout: expected a "
               r"floating-point tensor .*Received: inputs.dtype=int32")
    with pytest.raises(kreg.errors.ArgumentTypeError, match=wording):
        layer(x, training=True)
    if scaling == "test_time":
        with pytest.raises(kreg.errors.ArgumentTypeError, match=wording):
            layer(x, training=False)
    else:
        out = _np(layer(x, training=False))
        assert out.dtype == np.int32 and np.array_equal(out, x)
        np.testing.assert_array_equal(_np(keras.layers.Dropout(0.5)(x)), out)
    np.testing.assert_array_equal(_np(Dropout(0.0, scaling=scaling)(x, training=True)), x)


def test_noise_shape_that_does_not_fit_the_input_is_an_error():
    # On TensorFlow keras.random.dropout broadcasts a rank-3 mask over a
    # rank-2 input into a rank-3 output without an error (other backends fail
    # inside the op); kreg refuses it at the call, on every backend.
    x = np.ones((4, 6), "float32")
    if keras.backend.backend() == "tensorflow":
        assert _np(keras.layers.Dropout(0.5, noise_shape=(None, 1, 6))(
            x, training=True)).shape == (4, 4, 6)
    with pytest.raises(ValueError, match=r"`noise_shape` of Dropout: expected a shape "
                       r"of the inputs' rank 2 .*Received: noise_shape=\(None, 1, 6\) "
                       r"for inputs of shape \(4, 6\)"):
        Dropout(0.5, noise_shape=(None, 1, 6))(x, training=True)
    # At inference nothing is drawn: the identity, as in Keras.
    np.testing.assert_array_equal(_np(Dropout(0.5, noise_shape=(None, 1, 6))(x)), x)


def test_mc_sampling_with_a_fixed_batch_noise_shape():
    # While sampling the batch axis holds the tiled samples, so a fixed batch
    # size in noise_shape is compared per sample, not with the tiled batch.
    x = np.ones((3, 4, 5), "float32")
    model = keras.Sequential([keras.Input((4, 5)),
                              Dropout(0.5, noise_shape=(3, 1, 5), seed=2)])
    samples = kreg.MCPredictor(model, samples=6, seed=1, task="regression").predict(
        x, return_samples=True).samples
    assert samples.shape == (6, 3, 4, 5)
    assert np.all(samples == samples[:, :, :1, :])  # shared along axis 1
    assert len({samples[t].tobytes() for t in range(6)}) > 1  # fresh per sample
