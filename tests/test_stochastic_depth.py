"""StochasticDepth: whole-branch drops per example, the kept fraction against
1 - rate, inverted scaling, the linear decay rule, and errors in kreg's
wording. Monte Carlo sampling, export and `.keras` files are in
tests/test_dropout_family_sampling.py."""

import math

import keras
import numpy as np
import pytest

import kreg
from kreg.layers import StochasticDepth
from kreg.layers import stochastic_depth_rates


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_whole_branch_dropped_or_scaled_and_kept_fraction_is_one_minus_rate(rate):
    n = 4000
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, size=(n, 3, 4)).astype("float32")
    y = _np(StochasticDepth(rate, seed=3)(x, training=True))
    kept = np.all(y != 0, axis=(1, 2))
    dropped = np.all(y == 0, axis=(1, 2))
    assert np.all(kept | dropped)  # never part of a branch
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    se = math.sqrt(rate * (1 - rate) / n)  # examples are independent
    assert abs(kept.mean() - (1 - rate)) < 4 * se


def test_mean_of_the_branch_is_kept():
    x = np.random.default_rng(1).normal(size=(5000, 2)).astype("float32")
    y = _np(StochasticDepth(0.3, seed=1)(x, training=True)).astype("float64")
    se = y.std(axis=0) / math.sqrt(len(y))
    assert np.all(np.abs(y.mean(axis=0) - x.mean(axis=0)) < 4 * se)


def test_identity_at_inference_any_rank():
    for shape in [(5,), (2, 3), (2, 4, 4, 3)]:
        x = np.random.default_rng(2).normal(size=shape).astype("float32")
        np.testing.assert_array_equal(_np(StochasticDepth(0.5)(x)), x)
        np.testing.assert_array_equal(_np(StochasticDepth(0.0)(x, training=True)), x)


def test_residual_block_trains_in_a_compiled_fit():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((6,))
    branch = keras.layers.Dense(6)(x_in)
    out = keras.layers.Add()([x_in, StochasticDepth(0.5, seed=2)(branch)])
    model = keras.Model(x_in, keras.layers.Dense(1)(out))
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    history = model.fit(x, x[:, :1], epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_linear_decay_rule():
    rates = stochastic_depth_rates(6, 0.5)
    assert rates == pytest.approx([block / 6 * 0.5 for block in range(1, 7)])
    assert stochastic_depth_rates(1, 0.2) == [0.2]
    assert stochastic_depth_rates(3, 0.0) == [0.0, 0.0, 0.0]


BAD = [
    (lambda: StochasticDepth(1.0), ValueError,
     r"Invalid value for argument `rate` of StochasticDepth: expected a float in \[0, 1\)"),
    (lambda: StochasticDepth(None), TypeError, r"argument `rate` of StochasticDepth"),
    (lambda: StochasticDepth("x"), TypeError, r"argument `rate` of StochasticDepth"),
    (lambda: StochasticDepth(0.1, seed=1.5), TypeError, r"argument `seed`"),
    (lambda: stochastic_depth_rates(0, 0.5), ValueError,
     r"argument `num_blocks` of stochastic_depth_rates: expected an integer >= 1"),
    (lambda: stochastic_depth_rates(3, 1.0), ValueError,
     r"argument `final_rate` of stochastic_depth_rates"),
    (lambda: stochastic_depth_rates(2.0, 0.5), TypeError, r"argument `num_blocks`"),
    (lambda: StochasticDepth(0.2)(np.ones((3, 2), "int32"), training=True), TypeError,
     r"argument `inputs` of StochasticDepth: expected a floating-point tensor.*int32"),
]


@pytest.mark.parametrize("make, exc, match", BAD)
def test_bad_arguments_have_clear_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_public_names():
    assert kreg.layers.StochasticDepth is StochasticDepth
    assert kreg.layers.stochastic_depth_rates is stochastic_depth_rates
