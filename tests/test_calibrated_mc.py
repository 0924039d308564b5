"""MCPredictor(temperature=T): the tempered MC mean and its consistent split.

The temperature enters on the MC mean (Guo et al. 2017, the logits of the
averaged prediction): `mean == calibration.apply_temperature(raw mean, T)`,
and the uncertainty numbers are `calibration.tempered_uncertainty`'s. Runs on
every backend (KERAS_BACKEND=jax / torch).
"""

import keras
import numpy as np
import pytest

import kreg
from kreg import calibration
from kreg.mc import metrics

X = {"a": np.random.default_rng(0).normal(size=(30, 4)).astype("float32"),
     "b": np.random.default_rng(1).normal(size=(30, 3)).astype("float32")}


@pytest.fixture(scope="module")
def multi_model():
    """Two inputs; a softmax head, a sigmoid logits head and a regression head."""
    keras.utils.set_random_seed(0)
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), name="b")
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([a, b]))
    h = kreg.layers.Dropout(0.4)(h)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    bin_ = keras.layers.Dense(1, name="bin")(h)  # logits
    reg = keras.layers.Dense(2, name="reg")(h)
    return keras.Model({"a": a, "b": b}, {"cls": cls, "bin": bin_, "reg": reg})


def _predict(model, temperature, **kw):
    return kreg.MCPredictor(model, 40, seed=3, temperature=temperature,
                            from_logits={"cls": None, "bin": True, "reg": None},
                            **kw).predict(X, verbose=0, return_samples=True)


def test_temperature_one_equals_no_temperature(multi_model):
    raw = _predict(multi_model, None)
    one = _predict(multi_model, {"cls": 1.0, "bin": 1.0, "reg": None})
    for name in ("cls", "bin"):
        assert one[name].temperature == 1.0 and raw[name].temperature is None
        for attr in ("mean", "variance", "std", "entropy", "expected_entropy",
                     "mutual_information", "variation_ratio"):
            # float32 samples: their rows sum to 1 within ~1e-7, which T = 1
            # renormalizes.
            np.testing.assert_allclose(getattr(one[name], attr), getattr(raw[name], attr),
                                       rtol=0, atol=1e-6, err_msg=f"{name}.{attr}")
    np.testing.assert_array_equal(one["reg"].mean, raw["reg"].mean)


@pytest.mark.parametrize("t", [0.4, 2.5])
def test_tempered_mean_is_apply_temperature_of_the_raw_mean(multi_model, t):
    raw = _predict(multi_model, None)
    hot = _predict(multi_model, {"cls": t, "bin": t, "reg": None})
    for name in ("cls", "bin"):
        np.testing.assert_allclose(
            hot[name].mean, calibration.apply_temperature(raw[name].mean, t),
            rtol=0, atol=1e-6)
        # The samples stay the raw ones, the split is tempered_uncertainty's.
        np.testing.assert_array_equal(hot[name].samples, raw[name].samples)
        ref = calibration.tempered_uncertainty(raw[name].samples, t,
                                               activation=hot[name].activation)
        for key in ("entropy", "expected_entropy", "mutual_information", "variance"):
            # the predictor's split is computed in float32 on the device
            np.testing.assert_allclose(getattr(hot[name], key).reshape(ref[key].shape),
                                       ref[key], rtol=0, atol=1e-5)
        np.testing.assert_allclose(hot[name].std ** 2, hot[name].variance, atol=1e-12)
        assert np.all(hot[name].mutual_information >= 0)
        np.testing.assert_allclose(
            hot[name].entropy, hot[name].expected_entropy + hot[name].mutual_information,
            atol=1e-6)
    np.testing.assert_array_equal(hot["cls"].mean.argmax(1), raw["cls"].mean.argmax(1))
    np.testing.assert_array_equal(hot["bin"].mean > 0.5, raw["bin"].mean > 0.5)
    # Softer for T > 1, sharper for T < 1 (total entropy of the mean).
    assert np.all((hot["cls"].entropy > raw["cls"].entropy - 1e-12) == (t > 1))
    np.testing.assert_array_equal(hot["reg"].mean, raw["reg"].mean)


def test_temperature_argument_errors(multi_model):
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `temperature` of MCPredictor: expected "
            r"None for output 'reg': .* regression\. Received: temperature=2\.0")):
        kreg.MCPredictor(multi_model, 5, temperature=2.0,
                         from_logits={"cls": None, "bin": True, "reg": None})
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `temperature` of MCPredictor: expected a "
            r"float in \(0, inf\)\. Received: temperature=0\.0")):
        kreg.MCPredictor(multi_model, 5, temperature={"cls": 0.0, "bin": None,
                                                      "reg": None})
    with pytest.raises(TypeError, match=(
            r"Invalid value for argument `temperature` of MCPredictor: expected a "
            r"float > 0 or None .*Received: temperature='2'")):
        kreg.MCPredictor(multi_model, 5, temperature="2")
    with pytest.raises(ValueError, match="a dict keyed by the output names"):
        kreg.MCPredictor(multi_model, 5, temperature={"cls": 2.0})
    regression = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                                   kreg.layers.Dropout(0.5), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"expected None: temperature scaling"):
        kreg.MCPredictor(regression, 5, temperature=1.5)
    with pytest.raises(ValueError, match="expected None: temperature scaling"):
        kreg.MCPrediction(np.zeros((2, 3, 1)), "regression", temperature=2.0)


def _blobs(rng, n):
    """Three overlapping Gaussian classes in 2-D (the Bayes error is ~20%)."""
    y = rng.integers(0, 3, n)
    centers = np.array([[0.0, 0.0], [1.5, 0.0], [0.75, 1.3]])
    return (centers[y] + rng.normal(size=(n, 2))).astype("float32"), y


def test_fitted_temperature_lowers_held_out_nll_of_an_overconfident_model():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    x_tr, y_tr = _blobs(rng, 600)
    x_val, y_val = _blobs(rng, 400)
    x_te, y_te = _blobs(rng, 400)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(32, activation="relu"),
                              kreg.layers.Dropout(0.2), keras.layers.Dense(3, name="logits")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_tr, y_tr, epochs=30, batch_size=64, verbose=0)
    # Mis-calibrate on purpose: logits scaled by 5 (overconfident).
    out = model.get_layer("logits")
    out.kernel.assign(out.kernel * 5.0)
    out.bias.assign(out.bias * 5.0)
    raw = kreg.MCPredictor(model, 30, seed=0)
    t = calibration.fit_temperature(raw.predict(x_val, verbose=0).mean, y_val)
    assert t > 2.0
    tempered = kreg.MCPredictor(model, 30, seed=0, temperature=t)
    before = raw.evaluate(x_te, y_te, verbose=0)
    after = tempered.evaluate(x_te, y_te, verbose=0)
    assert after["mc"]["nll"] < before["mc"]["nll"] - 0.1, (t, before, after)
    assert after["mc"]["accuracy"] == before["mc"]["accuracy"]  # argmax unchanged
    assert after["deterministic"] == before["deterministic"]
    # evaluate scores exactly the tempered mean that predict reports.
    mean = tempered.predict(x_te, verbose=0).mean
    np.testing.assert_allclose(
        after["mc"]["nll"], metrics.classification_scores(mean, y_te)["nll"], atol=1e-9)
