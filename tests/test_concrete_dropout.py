"""ConcreteDropout: the regularizer against the paper's closed form, the relaxed
mask, the learned rate moving the way each term pushes it, hard masks when
Monte Carlo sampling, the regularizer helper, and errors in kreg's wording.
`.keras` files in a fresh process and export are in
tests/test_dropout_family_sampling.py."""

import math

import keras
import numpy as np
import pytest

import kreg
from kreg.layers import ConcreteDropout
from kreg.layers import concrete_dropout_regularizers


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _closed_form(wr, dr, kernel, p, k):
    """weight_regularizer ||W||^2 / (1 - p) - dropout_regularizer K H(p)."""
    entropy = -p * math.log(p) - (1 - p) * math.log(1 - p)
    return wr * float(np.sum(np.square(kernel))) / (1 - p) - dr * k * entropy


@pytest.mark.parametrize("inner, shape, k", [
    (lambda: keras.layers.Dense(3), (5,), 5),
    (lambda: keras.layers.Conv2D(2, 3), (6, 5, 2), 60),
    (lambda: keras.layers.Conv1D(2, 2), (7, 3), 21),
])
def test_regularizer_is_the_papers_closed_form(inner, shape, k):
    wrapper = ConcreteDropout(inner(), weight_regularizer=0.3, dropout_regularizer=0.02,
                              init_rate=0.27)
    model = keras.Sequential([keras.Input(shape), wrapper])
    assert wrapper.input_dim == k
    assert wrapper.rate == pytest.approx(0.27, abs=1e-6)
    (loss,) = model.losses
    kernel = _np(wrapper.layer.kernel)
    assert float(_np(loss)) == pytest.approx(
        _closed_form(0.3, 0.02, kernel, wrapper.rate, k), rel=1e-4)
    # Zero coefficients, zero penalty.
    zero = ConcreteDropout(inner(), weight_regularizer=0.0, dropout_regularizer=0.0)
    keras.Sequential([keras.Input(shape), zero])
    assert float(_np(zero.losses[0])) == 0.0


def _identity_wrapper(rate, seed=1, **kwargs):
    """A wrapper whose layer passes the dropped inputs through unchanged."""
    dense = keras.layers.Dense(400, kernel_initializer="identity", use_bias=False)
    return ConcreteDropout(dense, init_rate=rate, seed=seed, **kwargs)


def test_relaxed_mask_drops_about_rate_and_scales_by_one_over_keep():
    rate, n = 0.3, 40
    wrapper = _identity_wrapper(rate)
    x = np.ones((n, 400), "float32")
    keras.Sequential([keras.Input((400,)), wrapper])
    y = _np(wrapper(x, training=True)).ravel()
    assert y.min() >= 0 and y.max() <= 1 / (1 - rate) + 1e-5
    # At temperature 0.1 the relaxed mask is nearly binary: z > 1/2 exactly
    # when log u - log(1 - u) > log((1 - p) / p), with probability p.
    dropped = y < 0.5 / (1 - rate)
    se = math.sqrt(rate * (1 - rate) / y.size)
    assert abs(dropped.mean() - rate) < 4 * se
    assert np.mean((y < 0.05) | (y > 0.95 / (1 - rate))) > 0.85  # nearly hard
    # Identity at inference (inverted scaling): the wrapped layer itself.
    np.testing.assert_allclose(_np(wrapper(x)), x, rtol=1e-6)


def test_hard_bernoulli_masks_when_monte_carlo_sampling():
    rate = 0.25
    wrapper = _identity_wrapper(rate, seed=3)
    model = keras.Sequential([keras.Input((400,)), wrapper])
    x = np.ones((5, 400), "float32")
    samples = kreg.MCPredictor(model, samples=6, seed=2).predict(
        x, verbose=0, return_samples=True).samples
    values = np.unique(np.round(samples, 5))
    np.testing.assert_allclose(values, [0.0, 1 / (1 - rate)], rtol=1e-5)
    kept = (samples > 0).mean()
    assert abs(kept - (1 - rate)) < 4 * math.sqrt(rate * (1 - rate) / samples.size)


def _train_regularizer_only(weight_regularizer, dropout_regularizer):
    """Fit a zero data loss: only the paper's regularizer moves p."""
    keras.utils.set_random_seed(0)
    wrapper = ConcreteDropout(keras.layers.Dense(4, kernel_initializer="ones"),
                              weight_regularizer=weight_regularizer,
                              dropout_regularizer=dropout_regularizer,
                              init_rate=0.2, seed=1)
    model = keras.Sequential([keras.Input((4,)), wrapper])
    model.compile(keras.optimizers.SGD(0.5), lambda y, p: 0.0 * keras.ops.mean(p))
    before = wrapper.rate
    model.fit(np.ones((8, 4), "float32"), np.zeros((8, 4), "float32"),
              epochs=5, verbose=0)
    return before, wrapper.rate


def test_weight_term_pushes_the_rate_down_and_entropy_term_towards_half():
    before, after = _train_regularizer_only(0.05, 0.0)
    assert after < before - 0.01  # ||W||^2 / (1 - p) grows with p
    before, after = _train_regularizer_only(0.0, 0.05)
    assert before + 0.01 < after < 0.5  # -K H(p) is smallest at p = 1/2


def test_learned_rate_moves_when_fitting_data():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
    wrapper = ConcreteDropout(keras.layers.Dense(1), init_rate=0.3, seed=2,
                              **concrete_dropout_regularizers(64, length_scale=0.1))
    model = keras.Sequential([keras.Input((3,)), wrapper])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(x, y, epochs=40, batch_size=16, verbose=0)
    assert isinstance(wrapper.rate, float)
    assert wrapper.rate < 0.1  # from 0.3: dropout only hurts a noiseless linear fit


def test_regularizer_helper_is_the_papers_setting():
    got = concrete_dropout_regularizers(500, length_scale=0.2, tau=4.0)
    assert got == pytest.approx({"weight_regularizer": 0.04 / 500,
                                 "dropout_regularizer": 2 / (4.0 * 500)})
    wrapper = ConcreteDropout(keras.layers.Dense(1), **got)
    assert wrapper.weight_regularizer == got["weight_regularizer"]


BAD = [
    (lambda: ConcreteDropout(keras.layers.LSTM(2)), TypeError,
     r"Invalid value for argument `layer` of ConcreteDropout: expected a "
     r"keras.layers.Dense, Conv1D, Conv2D or Conv3D layer"),
    (lambda: ConcreteDropout(kreg.layers.DropConnectDense(2)), TypeError,
     r"argument `layer` of ConcreteDropout.*not a kreg stochastic layer"),
    (lambda: ConcreteDropout("dense"), TypeError, r"argument `layer` of ConcreteDropout"),
    (lambda: ConcreteDropout(keras.layers.Dense(2, kernel_regularizer="l2")), ValueError,
     r"argument `layer` of ConcreteDropout: expected a layer without a "
     r"kernel_regularizer"),
    (lambda: ConcreteDropout(keras.layers.Dense(2), init_rate=0.0), ValueError,
     r"argument `init_rate` of ConcreteDropout: expected a float in \(0, 1\)"),
    (lambda: ConcreteDropout(keras.layers.Dense(2), init_rate=1.0), ValueError,
     r"argument `init_rate`"),
    (lambda: ConcreteDropout(keras.layers.Dense(2), temperature=0.0), ValueError,
     r"argument `temperature` of ConcreteDropout"),
    (lambda: ConcreteDropout(keras.layers.Dense(2), weight_regularizer=-1.0), ValueError,
     r"argument `weight_regularizer`"),
    (lambda: ConcreteDropout(keras.layers.Dense(2), dropout_regularizer="a"), TypeError,
     r"argument `dropout_regularizer`"),
    (lambda: ConcreteDropout(keras.layers.Dense(2), seed=-2), ValueError, r"argument `seed`"),
    (lambda: concrete_dropout_regularizers(0, 0.1), ValueError,
     r"argument `num_train` of concrete_dropout_regularizers"),
    (lambda: concrete_dropout_regularizers(10, 0.0), ValueError, r"argument `length_scale`"),
    (lambda: concrete_dropout_regularizers(10, 0.1, tau=-1.0), ValueError, r"argument `tau`"),
    (lambda: keras.Sequential([keras.Input((None, 3)),
                               ConcreteDropout(keras.layers.Conv1D(2, 2))]), ValueError,
     r"argument `inputs` of ConcreteDropout: expected inputs whose size per example"),
]


@pytest.mark.parametrize("make, exc, match", BAD)
def test_bad_arguments_have_clear_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_integer_inputs_are_refused():
    wrapper = ConcreteDropout(keras.layers.Dense(2))
    with pytest.raises(TypeError, match=r"argument `inputs` of ConcreteDropout.*int32"):
        wrapper(np.ones((2, 3), "int32"))
