"""Penalties against Keras and NumPy; get, apply and penalty helpers."""

import keras
import numpy as np
import pytest

import kreg
from kreg.regularizers import L1
from kreg.regularizers import L2
from kreg.regularizers import ElasticNet

W = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")


def _f(x):
    return float(keras.ops.convert_to_numpy(x))


@pytest.mark.parametrize("w", [W, np.zeros((3, 2), "float32")])
@pytest.mark.parametrize("c", [0.0, 1e-4, 0.3])
def test_values_equal_keras_and_numpy(w, c):
    assert _f(L1(c)(w)) == _f(keras.regularizers.L1(c)(w))
    assert _f(L2(c)(w)) == _f(keras.regularizers.L2(c)(w))
    assert _f(ElasticNet(c, 2 * c)(w)) == _f(keras.regularizers.L1L2(c, 2 * c)(w))
    np.testing.assert_allclose(_f(L1(c)(w)), c * np.abs(w).sum(), rtol=1e-5)
    np.testing.assert_allclose(_f(L2(c)(w)), c * (w ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(
        _f(ElasticNet(c, 2 * c)(w)), c * np.abs(w).sum() + 2 * c * (w ** 2).sum(),
        rtol=1e-5)


def test_coefficients_are_python_floats():
    for reg in (L1(1), L2(np.float32(0.5)), ElasticNet(np.float64(1), 0)):
        assert all(type(x) is float for x in reg.get_config().values())


@pytest.mark.parametrize("cls, arg", [(L1, "l1"), (L2, "l2"), (ElasticNet, "l1"),
                                      (ElasticNet, "l2")])
@pytest.mark.parametrize("bad, exc", [(-1.0, ValueError), (float("nan"), ValueError),
                                      (float("inf"), ValueError), ("0.1", TypeError),
                                      (None, TypeError)])
def test_bad_coefficients(cls, arg, bad, exc):
    with pytest.raises(exc, match=rf"Invalid value for argument `{arg}` of "
                       rf"{cls.__name__}: expected a finite float >= 0. Received: {arg}="):
        cls(**{arg: bad})


def test_from_ratio_matches_scikit_learn_objective():
    SkEN = pytest.importorskip("sklearn.linear_model").ElasticNet

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    y = x @ np.array([1.0, 0.0, -2.0, 0.5]) + 0.1 * rng.normal(size=50)
    alpha, ratio = 0.1, 0.3
    w = SkEN(alpha=alpha, l1_ratio=ratio, fit_intercept=False, tol=1e-10,
             max_iter=100000).fit(x, y).coef_
    reg = ElasticNet.from_ratio(alpha, ratio)
    assert reg.l1 == pytest.approx(alpha * ratio)
    assert reg.l2 == pytest.approx(alpha * (1 - ratio) / 2)

    def objective(v):
        return ((y - x @ v) ** 2).mean() / 2 + _f(reg(v.astype("float32")))

    # scikit-learn's minimiser is a minimiser of our objective too.
    base = objective(w)
    for delta in np.eye(4) * 1e-3:
        assert objective(w + delta) >= base - 1e-7
        assert objective(w - delta) >= base - 1e-7
    with pytest.raises(ValueError, match=r"`l1_ratio` of ElasticNet.from_ratio"):
        ElasticNet.from_ratio(0.1, 1.5)


def test_get_resolves_every_identifier_form():
    assert kreg.regularizers.get(None) is None
    reg = L2(0.3)
    assert kreg.regularizers.get(reg) is reg
    assert isinstance(kreg.regularizers.get("kreg>ElasticNet"), ElasticNet)
    assert isinstance(kreg.regularizers.get("elastic_net"), ElasticNet)
    assert isinstance(kreg.regularizers.get("l1"), L1)
    assert isinstance(kreg.regularizers.get("L2"), L2)
    conf = keras.saving.serialize_keras_object(ElasticNet(0.1, 0.2))
    assert kreg.regularizers.get(conf).get_config() == {"l1": 0.1, "l2": 0.2}
    assert isinstance(kreg.regularizers.get("orthogonal_regularizer"),
                      keras.regularizers.OrthogonalRegularizer)
    with pytest.raises(ValueError, match=r"`identifier` of kreg.regularizers.get: "
                       r"expected a regularizer instance.*Received: identifier='l3'"):
        kreg.regularizers.get("l3")
    with pytest.raises(TypeError, match=r"`identifier` of kreg.regularizers.get"):
        kreg.regularizers.get(3)


def test_keras_own_get_cannot_resolve_plugin_names():
    # The reason kreg.regularizers.get exists (KERAS_NOTES.md).
    with pytest.raises(ValueError):
        keras.regularizers.get("kreg>ElasticNet")


@pytest.fixture()
def plain_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu", name="d1"),
        kreg.layers.Dropout(0.2, seed=1),
        keras.layers.Dense(1, name="d2"),
    ])
    model.compile("sgd", "mse")
    return model


def test_apply_adds_penalties_seen_by_losses_fit_and_saving(plain_model, tmp_path):
    model = plain_model
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = np.zeros((32, 1), "float32")
    model.fit(x, y, epochs=1, verbose=0)  # a cached train function exists now
    base = model.evaluate(x, y, verbose=0)
    changed = kreg.regularizers.apply(model, kernel=L2(0.5), bias="l1")
    assert [layer.name for layer in changed] == ["d1", "d2"]
    assert len(model.losses) == 4
    expected = sum(0.5 * (keras.ops.convert_to_numpy(layer.kernel) ** 2).sum()
                   + 0.01 * np.abs(keras.ops.convert_to_numpy(layer.bias)).sum()
                   for layer in changed)
    np.testing.assert_allclose(sum(_f(v) for v in model.losses), expected, rtol=1e-5)
    # evaluate and fit include the penalty (their cached functions were reset).
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), base + expected,
                               rtol=1e-4)
    hist = model.fit(x, y, epochs=1, verbose=0, batch_size=32)
    assert hist.history["loss"][0] > base + 0.5 * expected
    # Config and .keras files carry the penalties.
    conf = model.layers[0].get_config()
    assert conf["kernel_regularizer"]["class_name"] == "L2"
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[0].kernel_regularizer, L2)
    assert len(loaded.losses) == 4


def test_apply_rejects_bad_models():
    with pytest.raises(TypeError, match=r"`model` of kreg.regularizers.apply"):
        kreg.regularizers.apply("model", kernel="l2")
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"expected a built model"):
        kreg.regularizers.apply(unbuilt, kernel="l2")


def test_penalty_total_and_breakdown(plain_model):
    model = plain_model
    assert kreg.regularizers.penalty(model) == (0.0, {})
    kreg.regularizers.apply(model, kernel=ElasticNet(0.01, 0.02))
    total, per_layer = kreg.regularizers.penalty(model)
    assert set(per_layer) == {"d1", "d2"}
    for name in per_layer:
        k = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        np.testing.assert_allclose(per_layer[name],
                                   0.01 * np.abs(k).sum() + 0.02 * (k ** 2).sum(),
                                   rtol=1e-5)
    np.testing.assert_allclose(total, sum(_f(v) for v in model.losses), rtol=1e-5)


@pytest.mark.parametrize("name", ["l1", "l2", "l1_l2"])
def test_keras_aliases_with_keras_defaults_and_values(name):
    ours, theirs = getattr(kreg.regularizers, name), getattr(keras.regularizers, name)
    # Keras 3's aliases are its classes; so are kreg's.
    assert ours is getattr(kreg.regularizers, {"l1": "L1", "l2": "L2", "l1_l2": "L1L2"}[name])
    # (Keras stores its coefficients rounded to float32.)
    assert ours().get_config() == pytest.approx(theirs().get_config(), rel=1e-6)
    args = {"l1": (0.002,), "l2": (0.002,), "l1_l2": (0.001, 0.003)}[name]
    assert _f(ours(*args)(W)) == _f(theirs(*args)(W))


def test_elastic_net_keeps_its_defaults_l1l2_takes_keras():
    # The decision of issue 16: ElasticNet() penalizes by default; L1L2 /
    # l1_l2, the drop-ins for Keras's L1L2, default to 0 and 0 like Keras's.
    assert ElasticNet().get_config() == {"l1": 0.01, "l2": 0.01}
    assert kreg.regularizers.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}
    assert keras.regularizers.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}
    assert _f(kreg.regularizers.l1_l2()(W)) == 0.0
    assert isinstance(kreg.regularizers.L1L2(), ElasticNet)
    assert kreg.regularizers.L1L2.from_ratio(0.2, 0.5).get_config() == {"l1": 0.1, "l2": 0.05}


@pytest.mark.parametrize("name", ["l1", "l2", "l1l2", "L1", "L2", "L1L2"])
def test_get_keras_names_give_keras_numbers(name):
    ours, theirs = kreg.regularizers.get(name), keras.regularizers.get(name)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.get_config() == pytest.approx(theirs.get_config(), rel=1e-6)


def test_get_refuses_what_is_not_a_regularizer():
    with pytest.raises(TypeError, match=r"`identifier` of kreg.regularizers.get: .*"
                       r"the class kreg.layers.dropout.Dropout.*Received: "
                       r"identifier='kreg>Dropout'"):
        kreg.regularizers.get("kreg>Dropout")
    with pytest.raises(TypeError, match=r"EarlyStopping.*Received: "
                       r"identifier='kreg>EarlyStopping'"):
        kreg.regularizers.get("kreg>EarlyStopping")
    with pytest.raises(TypeError, match=r"a Dropout \(kreg.layers.dropout\), which is "
                       r"not a regularizer"):
        kreg.regularizers.get(kreg.layers.Dropout(0.5))
    with pytest.raises(ValueError, match=r"expected a config dict with a 'class_name' "
                       r"key .*Received: identifier=\{'bad': 'dict'\}"):
        kreg.regularizers.get({"bad": "dict"})
    # A class is instantiated, as Keras's get does.
    reg = kreg.regularizers.get(L2)
    assert type(reg) is L2 and reg.l2 == 0.01


def test_apply_takes_a_class_and_names_its_own_arguments(plain_model):
    changed = kreg.regularizers.apply(plain_model, kernel=L2)
    assert all(type(layer.kernel_regularizer) is L2 for layer in changed)
    with pytest.raises(TypeError, match=r"`kernel` of kreg.regularizers.apply"):
        kreg.regularizers.apply(plain_model, kernel="kreg>Dropout")


def test_penalty_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match=r"Invalid value for argument `model` of "
                       r"kreg.regularizers.penalty: expected a Keras model or layer. "
                       r"Received: model='x'"):
        kreg.regularizers.penalty("x")


@pytest.mark.parametrize("alpha, ratio", [(0.1, 0.3), (0.2, 0.5), (0.05, 0.0), (0.05, 1.0)])
def test_alpha_l1_ratio_is_scikit_learns_mapping(alpha, ratio):
    reg = ElasticNet(alpha=alpha, l1_ratio=ratio)
    assert reg.l1 == pytest.approx(alpha * ratio)
    assert reg.l2 == pytest.approx(alpha * (1 - ratio) / 2)
    assert reg.get_config() == ElasticNet.from_ratio(alpha, ratio).get_config()
    # The config holds l1 and l2: it rebuilds the same penalty.
    again = ElasticNet.from_config(reg.get_config())
    w = np.array([[1.0, -2.0], [0.5, 0.0]], "float32")
    assert _f(again(w)) == pytest.approx(alpha * ratio * 3.5 + alpha * (1 - ratio) / 2 * 5.25)


def test_alpha_defaults_l1_ratio_to_one_half_as_scikit_learn():
    assert ElasticNet(alpha=0.2).get_config() == pytest.approx({"l1": 0.1, "l2": 0.05})
    assert ElasticNet().get_config() == {"l1": 0.01, "l2": 0.01}


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"alpha": 0.1, "l1": 0.01}, ValueError,
     r"argument `alpha` of ElasticNet: expected either `l1`/`l2` or `alpha`/`l1_ratio`, "
     r"not both \(l1=0.01, l2=0.01\). Received: alpha=0.1"),
    ({"alpha": 0.1, "l2": 0.5}, ValueError, r"not both"),
    ({"l1_ratio": 0.5}, ValueError,
     r"argument `alpha` of ElasticNet: expected a float >= 0 with `l1_ratio`"),
    ({"alpha": -0.1}, ValueError, r"argument `alpha` of ElasticNet: expected a finite float"),
    ({"alpha": "0.1"}, TypeError, r"argument `alpha` of ElasticNet"),
    ({"alpha": 0.1, "l1_ratio": 1.5}, ValueError,
     r"argument `l1_ratio` of ElasticNet: expected a float in \[0, 1\]. Received: l1_ratio=1.5"),
])
def test_alpha_l1_ratio_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ElasticNet(**kwargs)
