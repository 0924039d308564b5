"""GaussianDropout and GaussianNoise: moments, equivalence in distribution with
Keras's layers, inference, argument errors, `convert_dropout`'s mapping."""

import math

import keras
import numpy as np
import pytest

import kreg
from kreg.layers import GaussianDropout
from kreg.layers import GaussianNoise


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _ks_statistic(a, b):
    """The two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return np.abs(fa - fb).max()


def _ks_bound(n, m, alpha=1e-6):
    """The KS critical value at level alpha (asymptotic)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_noise_moments_match_closed_form(rate):
    n = 100_000
    var = rate / (1 - rate)
    r = _np(GaussianDropout(rate, seed=3)(np.ones((n // 100, 100), "float32"),
                                          training=True)).astype("float64")
    # Mean 1: SE sqrt(var / n). Sample variance: SE var sqrt(2 / (n - 1)).
    assert abs(r.mean() - 1.0) < 5 * math.sqrt(var / n)
    assert abs(r.var() - var) < 5 * var * math.sqrt(2 / (n - 1))
    # Third central moment 0: SE sqrt(15 var^3 / n).
    assert abs(((r - 1) ** 3).mean()) < 5 * math.sqrt(15 * var ** 3 / n)


def test_keep_prob_matches_the_bernoulli_variance():
    p = 0.8
    layer = GaussianDropout(keep_prob=p)
    assert layer.rate == pytest.approx(0.2)
    assert layer._stddev() ** 2 == pytest.approx((1 - p) / p)  # Bernoulli b / p


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_same_distribution_as_keras_gaussian_dropout(rate):
    n = 20_000
    x = np.full((n // 100, 100), 2.0, "float32")
    ours = _np(GaussianDropout(rate, seed=1)(x, training=True)).ravel()
    theirs = _np(keras.layers.GaussianDropout(rate, seed=2)(x, training=True)).ravel()
    assert _ks_statistic(ours, theirs) < _ks_bound(n, n)
    # The test can fail: another rate is rejected.
    other = _np(keras.layers.GaussianDropout(rate * 0.7, seed=2)(x, training=True)).ravel()
    assert _ks_statistic(ours, other) > _ks_bound(n, n)


def test_gaussian_noise_moments_and_keras_equivalence():
    n = 20_000
    x = np.full((n // 100, 100), -1.0, "float32")
    ours = _np(GaussianNoise(0.3, seed=1)(x, training=True)).ravel().astype("float64")
    theirs = _np(keras.layers.GaussianNoise(0.3, seed=2)(x, training=True)).ravel()
    assert abs(ours.mean() + 1.0) < 5 * 0.3 / math.sqrt(n)
    assert abs(ours.var() - 0.09) < 5 * 0.09 * math.sqrt(2 / (n - 1))
    assert _ks_statistic(ours, theirs) < _ks_bound(n, n)


def test_identity_at_inference_and_without_noise():
    x = np.random.default_rng(0).normal(size=(4, 7)).astype("float32")
    for layer in (GaussianDropout(0.4), GaussianNoise(0.5)):
        np.testing.assert_array_equal(_np(layer(x)), x)
        np.testing.assert_array_equal(_np(layer(x, training=False)), x)
        assert layer.supports_masking
        assert layer.compute_output_shape((None, 7)) == (None, 7)
    for layer in (GaussianDropout(0.0), GaussianDropout(keep_prob=1.0), GaussianNoise(0.0)):
        np.testing.assert_array_equal(_np(layer(x, training=True)), x)
        assert not layer.is_stochastic


def test_fresh_noise_every_call_and_seeded_streams_repeat():
    x = np.ones((3, 5), "float32")
    layer = GaussianDropout(0.5, seed=4)
    a, b = _np(layer(x, training=True)), _np(layer(x, training=True))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(_np(GaussianDropout(0.5, seed=4)(x, training=True)), a)


@pytest.mark.parametrize(
    "cls, kwargs, exc, match",
    [
        (GaussianDropout, {}, ValueError, r"`rate` of GaussianDropout: expected a float "
         r"in \[0, 1\) \(or give `keep_prob` instead\). Received: rate=None"),
        (GaussianDropout, {"rate": 1.0}, ValueError, r"`rate` of GaussianDropout: "
         r"expected a float in \[0, 1\)"),
        (GaussianDropout, {"rate": -0.5}, ValueError, r"Received: rate=-0.5"),
        (GaussianDropout, {"rate": "0.5"}, TypeError, r"`rate` of GaussianDropout"),
        (GaussianDropout, {"keep_prob": 0.0}, ValueError, r"`keep_prob` of GaussianDropout"),
        (GaussianDropout, {"rate": 0.2, "keep_prob": 0.8}, ValueError,
         r"`keep_prob` of GaussianDropout: expected either `rate` or `keep_prob`, not both"),
        (GaussianDropout, {"rate": 0.5, "seed": -2}, ValueError, r"`seed` of GaussianDropout"),
        (GaussianNoise, {"stddev": -0.1}, ValueError, r"`stddev` of GaussianNoise: "
         r"expected a float in \[0, inf\). Received: stddev=-0.1"),
        (GaussianNoise, {"stddev": None}, TypeError, r"`stddev` of GaussianNoise"),
        (GaussianNoise, {"stddev": float("inf")}, ValueError, r"Received: stddev=inf"),
        (GaussianNoise, {"stddev": 0.1, "seed": True}, TypeError, r"`seed` of GaussianNoise"),
    ],
)
def test_bad_arguments_have_clear_errors(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)


# -- convert_dropout -----------------------------------------------------------
def _keras_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = keras.layers.GaussianNoise(0.2, seed=3, name="noise")(inp)
    h = keras.layers.Dense(8, activation="relu")(h)
    h = keras.layers.GaussianDropout(0.3, seed=4, name="gdrop")(h)
    h = keras.layers.AlphaDropout(0.1, name="alpha")(h)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))


def test_convert_maps_gaussian_dropout_and_noise_only_when_asked():
    model = _keras_model()
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    plain = kreg.convert_dropout(model)
    both = kreg.convert_dropout(model, gaussian_noise=True)
    for conv in (plain, both):
        gdrop = conv.get_layer("gdrop")
        assert type(gdrop) is GaussianDropout
        assert (gdrop.rate, gdrop.seed) == (pytest.approx(0.3), 4)
        # AlphaDropout is not mapped (see convert_dropout's docstring).
        assert type(conv.get_layer("alpha")) is keras.layers.AlphaDropout
        np.testing.assert_allclose(_np(conv.predict(x, verbose=0)),
                                   _np(model.predict(x, verbose=0)), rtol=1e-6)
    assert type(plain.get_layer("noise")) is keras.layers.GaussianNoise
    noise = both.get_layer("noise")
    assert type(noise) is GaussianNoise and (noise.stddev, noise.seed) == (0.2, 3)
    # Monte Carlo samples draw both kreg layers of the converted model.
    pred = kreg.MCPredictor(both, samples=20, seed=0).predict(x, verbose=0)
    assert pred.std.max() > 0
    layers = kreg.MCPredictor(both, samples=2).sampling_layers
    # (and Keras's AlphaDropout, sampled in place: kreg.layers._keras_noise)
    assert {type(layer) for layer in layers} == {GaussianDropout, GaussianNoise,
                                                 keras.layers.AlphaDropout}
    with pytest.raises(TypeError, match=r"`gaussian_noise` of convert_dropout: "
                       r"expected a bool. Received: gaussian_noise=1"):
        kreg.convert_dropout(model, gaussian_noise=1)
    assert kreg.layers.GaussianDropout is GaussianDropout
