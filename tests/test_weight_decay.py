"""decoupled_weight_decay: SGD steps identical to the L2 penalty it replaces
(wd = 2 l), Adam's not, the exclusions, the refusals; mc_dropout_l2 against
Gal's formula."""

import keras
import numpy as np
import pytest

import kreg
from kreg.regularizers import decoupled_weight_decay
from kreg.regularizers import mc_dropout_l2

L2 = 3e-2
X = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
Y = np.random.default_rng(1).normal(size=(16, 1)).astype("float32")


def _model(l2=L2, norm=False, name="net"):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((5,)),
              keras.layers.Dense(4, kernel_regularizer=kreg.regularizers.L2(l2),
                                 bias_initializer="ones", name="hidden")]
    if norm:
        layers.append(keras.layers.LayerNormalization(name="ln"))
    layers.append(keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(l2),
                                     name="out"))
    return keras.Sequential(layers, name=name)


def _train(model, optimizer, steps=4):
    model.compile(optimizer, "mse")
    model.fit(X, Y, epochs=steps, batch_size=16, shuffle=False, verbose=0)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_sgd_steps_equal_the_l2_penalty_steps():
    penalized = _model()
    want = _train(penalized, keras.optimizers.SGD(0.1))
    moved = _model()
    optimizer = keras.optimizers.SGD(0.1)
    change = decoupled_weight_decay(moved, optimizer)
    assert change.weight_decay == pytest.approx(2 * L2)
    assert change.l2 == L2 and change.layers == ["hidden", "out"]
    assert change.previous_weight_decay is None
    assert moved.losses == [] and len(penalized.losses) == 2
    got = _train(moved, optimizer)
    for w, v in zip(want, got):
        np.testing.assert_allclose(v, w, rtol=2e-5, atol=1e-6)


def test_adam_with_l2_is_not_decoupled_decay():
    penalized = _model()
    want = _train(penalized, keras.optimizers.Adam(0.05), steps=6)
    moved = _model()
    optimizer = keras.optimizers.Adam(0.05)
    decoupled_weight_decay(moved, optimizer)
    got = _train(moved, optimizer, steps=6)
    assert max(np.abs(w - v).max() for w, v in zip(want, got)) > 1e-3


def test_only_the_penalized_kernels_are_decayed():
    model = _model(norm=True)
    optimizer = keras.optimizers.AdamW(learning_rate=0.1)
    change = decoupled_weight_decay(model, optimizer)
    assert change.previous_weight_decay == pytest.approx(0.004)
    assert sorted(change.excluded) == ["net/hidden/bias", "net/ln/beta", "net/ln/gamma",
                                       "net/out/bias"]
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    # A zero loss: the decay is the only change (AdamW's update of a zero
    # gradient is zero), w <- w (1 - lr wd) per step, for the kernels only.
    model.compile(optimizer, lambda y, p: 0.0 * keras.ops.mean(p))
    model.fit(X, Y, epochs=3, batch_size=16, verbose=0)
    for w, old in zip(model.trainable_weights, before):
        new = keras.ops.convert_to_numpy(w)
        factor = (1 - 0.1 * 2 * L2) ** 3 if w.path.endswith("kernel") else 1.0
        np.testing.assert_allclose(new, old * factor, rtol=1e-5, err_msg=w.path)


def _with(reg, other=None):
    return keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(2, kernel_regularizer=reg, name="a"),
        keras.layers.Dense(1, kernel_regularizer=other, name="b")])


@pytest.mark.parametrize("make, optimizer, exc, match", [
    (lambda: _with(kreg.regularizers.L2(0.1), kreg.regularizers.L2(0.2)), None,
     ValueError, r"Invalid value for argument `model` of decoupled_weight_decay: "
     r"expected kernel L2 penalties with one coefficient.*\{'a': 0.1, 'b': 0.2\}"),
    (lambda: _with(kreg.regularizers.ElasticNet(0.1, 0.1)), None, ValueError,
     r"expected kernel penalties without an L1 part.*ElasticNet\(l1=0.1, l2=0.1\)"),
    (lambda: _with(keras.regularizers.L1(0.1)), None, ValueError, r"without an L1 part"),
    (lambda: _with(keras.regularizers.OrthogonalRegularizer()), None, ValueError,
     r"expected kernel regularizers that are L2 penalties.*OrthogonalRegularizer"),
    (lambda: _with(None), None, ValueError,
     r"expected a model with at least one L2 kernel penalty to move"),
    (lambda: _with(kreg.regularizers.L2(0.1)), "built", ValueError,
     r"argument `optimizer` of decoupled_weight_decay: expected an optimizer that "
     r"is not built yet"),
    (lambda: _with(kreg.regularizers.L2(0.1)), "adam", TypeError,
     r"argument `optimizer` of decoupled_weight_decay: expected a "
     r"keras.optimizers.Optimizer instance"),
    (lambda: "model", None, TypeError, r"argument `model` of decoupled_weight_decay"),
])
def test_refusals_are_clear_and_change_nothing(make, optimizer, exc, match):
    model = make()
    if optimizer is None:
        optimizer = keras.optimizers.SGD(0.1)
    elif optimizer == "built":
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
    losses = len(model.losses) if not isinstance(model, str) else 0
    with pytest.raises(exc, match=match):
        decoupled_weight_decay(model, optimizer)
    if not isinstance(model, str):
        assert len(model.losses) == losses  # nothing removed


def test_elastic_net_without_l1_and_keras_l1l2_are_moved():
    model = _with(kreg.regularizers.ElasticNet(0.0, 0.05),
                  keras.regularizers.L1L2(l1=0.0, l2=0.05))
    change = decoupled_weight_decay(model, keras.optimizers.SGD(0.1))
    assert change.weight_decay == pytest.approx(0.1) and change.layers == ["a", "b"]
    assert model.get_layer("a").kernel_regularizer is None
    unbuilt = keras.Sequential([keras.layers.Dense(1, kernel_regularizer="l2")])
    with pytest.raises(ValueError, match=r"expected a built Keras model"):
        decoupled_weight_decay(unbuilt, keras.optimizers.SGD(0.1))


def test_mc_dropout_l2_is_gals_formula():
    # tau = p l^2 / (2 N lambda)  <=>  lambda = p l^2 / (2 N tau), p = keep.
    lam = mc_dropout_l2(0.5, rate=0.1, num_train=200, tau=3.0, loss="half_sse")
    assert lam == pytest.approx(0.9 * 0.25 / (2 * 200 * 3.0))
    assert 0.9 * 0.25 / (2 * 200 * lam) == pytest.approx(3.0)
    # Keras's mse is 2 / outputs times Gal's E: the same optimum needs 2 lambda / D.
    assert mc_dropout_l2(0.5, 0.1, 200, 3.0) == pytest.approx(2 * lam)
    assert mc_dropout_l2(0.5, 0.1, 200, 3.0, outputs=4) == pytest.approx(lam / 2)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"length_scale": 0.0}, ValueError, r"argument `length_scale` of mc_dropout_l2"),
    ({"rate": 1.0}, ValueError, r"argument `rate` of mc_dropout_l2"),
    ({"num_train": 0}, ValueError, r"argument `num_train` of mc_dropout_l2"),
    ({"tau": -1.0}, ValueError, r"argument `tau`"),
    ({"loss": "mae"}, ValueError, r"argument `loss` of mc_dropout_l2: expected one of "
                                  r"'mse', 'half_sse'"),
    ({"outputs": 0}, ValueError, r"argument `outputs`"),
])
def test_mc_dropout_l2_errors(kwargs, exc, match):
    args = {"length_scale": 1.0, "rate": 0.1, "num_train": 10, "tau": 1.0} | kwargs
    with pytest.raises(exc, match=match):
        mc_dropout_l2(**args)
