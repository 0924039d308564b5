"""kreg.calibration: temperature scaling (Guo et al., ICML 2017).

The fit against the closed form (a model whose logits are scaled by 5 needs
T = 5, within a few standard errors of the estimate) and against a
brute-force grid; the transformation against its formulas; the tempered MC
entropy split against its definition and against `kreg.MCPrediction` at
T = 1; and every bad input's error wording.
"""

import math

import keras
import numpy as np
import pytest

import kreg
from kreg import calibration as cal
from kreg.mc.metrics import categorical_entropy
from kreg.mc.metrics import classification_scores


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _labels_from(probs, rng):
    """One label per row drawn from its categorical distribution."""
    u = rng.uniform(size=(len(probs), 1))
    return (probs.cumsum(axis=1) < u).sum(axis=1).clip(0, probs.shape[1] - 1)


@pytest.fixture(scope="module")
def overconfident():
    """A calibrated model's logits z (labels drawn from softmax(z)), scaled by 5."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8000, 5)) * 1.5
    y = _labels_from(_softmax(z), rng)
    return _softmax(5.0 * z), y


def _nll(probs, y, sigmoid=False):
    return classification_scores(probs, y, sigmoid=sigmoid)["nll"]


# -- the fit ---------------------------------------------------------------------
def test_overconfident_model_gets_t_near_5_and_lower_held_out_nll(overconfident):
    probs, y = overconfident
    val, test = slice(0, 4000), slice(4000, None)
    t = cal.fit_temperature(probs[val], y[val])
    assert t > 1.0
    # Closed form: softmax(5z) tempered by T = 5 is the true model. The
    # estimate of beta = 1/T has a sandwich standard error from the per-row
    # gradient g_i = E_q[log p] - log p_y and the curvature H = mean Var_q[log p].
    beta = 1.0 / t
    log_p = np.log(probs[val])
    q = _softmax(beta * log_p)
    mean_lp = (q * log_p).sum(1)
    g = mean_lp - log_p[np.arange(4000), y[val]]
    h = np.mean((q * log_p ** 2).sum(1) - mean_lp ** 2)
    se = g.std() / math.sqrt(4000) / h
    assert abs(beta - 0.2) < 4 * se, (t, se)
    before = _nll(probs[test], y[test])
    after = _nll(cal.apply_temperature(probs[test], t), y[test])
    assert after < before - 0.1, (before, after)


def _grid_min(probs, y, sigmoid):
    """The least NLL of softmax(log(p) / T) over 2001 values of T (plain NumPy)."""
    p = np.asarray(probs, "float64").reshape(len(y), -1)
    if sigmoid:
        p = np.concatenate([1 - p, p], axis=1)
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    betas = np.exp(-np.linspace(math.log(0.01), math.log(100.0), 2001))
    z = betas[:, None, None] * log_p[None]  # (grid, N, C)
    lse = z.max(-1) + np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1))
    log_q = z[:, np.arange(len(y)), y] - lse
    return np.mean(-np.maximum(log_q, math.log(1e-12)), axis=1).min()


_CASES = ["over", "under", "binary_over", "binary_under", "binary_n1"]


@pytest.mark.parametrize("case", _CASES)
def test_fit_matches_brute_force_grid(case):
    rng = np.random.default_rng(10 + _CASES.index(case))
    sigmoid = case.startswith("binary")
    scale = 3.0 if case.endswith("over") else 0.4
    if sigmoid:
        z = rng.normal(size=600) * 2.0
        y = (rng.uniform(size=600) < _sigmoid(z)).astype("int64")
        probs = _sigmoid(scale * z) if case != "binary_n1" else _sigmoid(2 * z)[:, None]
    else:
        z = rng.normal(size=(600, 4)) * 2.0
        y = _labels_from(_softmax(z), rng)
        probs = _softmax(scale * z)
    t = cal.fit_temperature(probs, y)
    fitted = _nll(cal.apply_temperature(probs, t), y, sigmoid)
    best = _grid_min(probs, y, sigmoid)
    assert fitted <= best + 1e-9
    assert abs(fitted - best) < 1e-3
    assert (t > 1.0) == (case.endswith("over") or case == "binary_n1")


def test_fit_accepts_one_hot_labels_and_zero_probabilities():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(500, 3)) * 2
    y = _labels_from(_softmax(z), rng)
    probs = _softmax(4 * z)
    probs[:5, :] = np.eye(3)[(y[:5] + 1) % 3]  # a true class of probability 0
    t = cal.fit_temperature(probs, y)
    assert cal.fit_temperature(probs, np.eye(3)[y]) == t
    assert cal.fit_temperature(probs, y[:, None].astype("float32")) == t
    fitted = _nll(cal.apply_temperature(probs, t), y)
    assert abs(fitted - _grid_min(probs, y, False)) < 1e-3


# -- the transformation ----------------------------------------------------------
def test_apply_matches_formulas_and_keeps_argmax():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(6) * 0.7, size=200)
    b = rng.uniform(0.001, 0.999, size=200)
    for t in (0.05, 0.3, 1.0, 2.5, 20.0):
        q = cal.apply_temperature(p, t)
        np.testing.assert_allclose(q, p ** (1 / t) / (p ** (1 / t)).sum(1, keepdims=True),
                                   rtol=1e-10, atol=1e-300)
        np.testing.assert_array_equal(q.argmax(1), p.argmax(1))
        qb = cal.apply_temperature(b, t)
        np.testing.assert_allclose(qb, _sigmoid(np.log(b / (1 - b)) / t), rtol=1e-10)
        np.testing.assert_array_equal(qb > 0.5, b > 0.5)
        two = cal.apply_temperature(np.stack([1 - b, b], 1), t)
        np.testing.assert_allclose(two[:, 1], qb, rtol=1e-10)
        assert cal.apply_temperature(b[:, None], t).shape == (200, 1)
    np.testing.assert_allclose(cal.apply_temperature(p, 1.0), p, rtol=1e-12)


def test_zero_and_one_probabilities_stay_exact():
    q = cal.apply_temperature(np.array([[0.0, 0.3, 0.7], [1.0, 0.0, 0.0]]), 50.0)
    assert q[0, 0] == 0.0 and q[1].tolist() == [1.0, 0.0, 0.0]
    assert cal.apply_temperature([0.0, 1.0], 0.1).tolist() == [0.0, 1.0]


# -- the tempered MC mean and its entropy split ----------------------------------
def _split_by_definition(s, t):
    """The module docstring's construction, written out per sample."""
    pbar = s.mean(0)
    q = cal.apply_temperature(pbar, t)
    u = s * np.where(pbar > 0, q / np.where(pbar > 0, pbar, 1), 0)[None]
    a = u.sum(-1) / len(s)  # (S, N) sample weights
    qt = u / u.sum(-1, keepdims=True)
    np.testing.assert_allclose(a.sum(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose((a[..., None] * qt).sum(0), q, rtol=1e-10, atol=1e-15)
    expected = (a * categorical_entropy(qt)).sum(0)
    variance = (a[..., None] * (qt - q[None]) ** 2).sum(0)
    return q, categorical_entropy(q), expected, variance


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0, 2.0, 10.0])
def test_tempered_split_matches_definition_and_is_consistent(t):
    s = np.random.default_rng(2).dirichlet(np.ones(4) * 0.5, size=(30, 40))
    out = cal.tempered_uncertainty(s, t)
    q, entropy, expected, variance = _split_by_definition(s, t)
    np.testing.assert_allclose(out["mean"], q, rtol=1e-12)
    np.testing.assert_allclose(out["variance"], variance, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(out["entropy"], entropy, rtol=1e-10)
    np.testing.assert_allclose(out["expected_entropy"], expected, rtol=1e-9)
    np.testing.assert_allclose(out["mutual_information"], entropy - expected,
                               rtol=1e-7, atol=1e-12)
    assert np.all(entropy - expected > -1e-12)


def test_at_t_1_the_split_is_mcpredictions():
    rng = np.random.default_rng(4)
    cases = [(rng.dirichlet(np.ones(3), size=(25, 10)), "softmax"),
             (rng.uniform(size=(25, 10, 2)), "sigmoid")]
    for s, activation in cases:
        pred = kreg.MCPrediction(s, "classification", activation=activation)
        out = cal.tempered_uncertainty(s, 1.0, activation=activation)
        np.testing.assert_allclose(out["mean"], pred.mean, rtol=1e-12)
        np.testing.assert_allclose(out["variance"], pred.variance, rtol=1e-9, atol=1e-15)
        for key in ("entropy", "expected_entropy", "mutual_information"):
            np.testing.assert_allclose(out[key], getattr(pred, key), rtol=1e-9,
                                       atol=1e-12)


def test_mutual_information_stays_non_negative_where_the_naive_split_does_not():
    s = np.array([[[0.6, 0.4, 0.0]], [[0.6, 0.0, 0.4]]])
    naive = (categorical_entropy(cal.apply_temperature(s.mean(0), 0.5))
             - categorical_entropy(cal.apply_temperature(s[:, 0], 0.5)).mean())
    assert naive[0] < -0.01  # why the split tilts the samples instead
    out = cal.tempered_uncertainty(s, 0.5)
    assert out["mutual_information"][0] > 0.1
    same = cal.tempered_uncertainty(np.repeat(s[:1], 5, axis=0), 0.3)
    np.testing.assert_allclose(same["mutual_information"], 0.0, atol=1e-12)


def test_sigmoid_split_is_the_two_class_split_summed():
    q = np.random.default_rng(5).uniform(0.01, 0.99, size=(20, 8, 3))
    out = cal.tempered_uncertainty(q, 0.7, activation="sigmoid")
    parts = [cal.tempered_uncertainty(np.stack([1 - q[..., k], q[..., k]], -1), 0.7)
             for k in range(3)]
    for key in ("mean", "variance"):
        np.testing.assert_allclose(out[key], np.stack([p[key][:, 1] for p in parts], -1),
                                   rtol=1e-12)
    for key in ("entropy", "expected_entropy", "mutual_information"):
        np.testing.assert_allclose(out[key], sum(p[key] for p in parts), rtol=1e-10)
    flat = cal.tempered_uncertainty(q[..., 0], 0.7, activation="sigmoid")
    assert flat["mean"].shape == (8,)
    np.testing.assert_allclose(flat["entropy"], parts[0]["entropy"], rtol=1e-12)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_ops_path_matches_numpy_on_this_backend(activation):
    rng = np.random.default_rng(6)
    s = (rng.dirichlet(np.ones(3), size=(15, 6)) if activation == "softmax"
         else rng.uniform(size=(15, 6, 2)))
    if activation == "softmax":
        s[:, 0] = [0.5, 0.5, 0.0]  # a class that no sample gives any mass
    else:
        s[0, 0, 0] = 0.0
    want = cal.tempered_uncertainty(s, 0.6, activation=activation)
    got = cal.tempered_uncertainty_ops(keras.ops.convert_to_tensor(s.astype("float32")),
                                       0.6, activation=activation)
    for key, value in want.items():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got[key]), value,
                                   rtol=2e-4, atol=2e-6)


@pytest.mark.tf_only(reason="a traced tf.function graph, as in a SavedModel")
def test_ops_path_runs_in_a_tf_function_in_float64():
    import tensorflow as tf

    s = np.random.default_rng(7).dirichlet(np.ones(4), size=(10, 5))
    fn = tf.function(lambda x: cal.tempered_uncertainty_ops(x, 1.7))
    got = fn(tf.constant(s, tf.float64))
    want = cal.tempered_uncertainty(s, 1.7)
    for key, value in want.items():
        assert got[key].dtype == tf.float64
        np.testing.assert_allclose(got[key].numpy(), value, rtol=1e-12, atol=1e-15)


# -- bad input -------------------------------------------------------------------
_GOOD = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])


@pytest.mark.parametrize("probs, why", [
    (np.array([[0.7, 0.2, 0.2], [0.1, 0.8, 0.1]]), "got rows that do not sum to 1"),
    (np.array([[1.2, -0.2], [0.5, 0.5]]), "got values outside [0, 1]: these look like logits"),
    (np.array([[2.3, -1.0, 0.4]]), "got values outside [0, 1]: these look like logits"),
    (np.array([0.3, -0.1]), "got values outside [0, 1]"),
    (np.array([[np.nan, 1.0]]), "got NaN or inf"),
    (np.array([0.5, np.inf]), "got NaN or inf"),
    (np.zeros((0, 3)), "got 0 rows"),
    (np.full((2, 2, 2), 0.5), "got another shape"),
])
def test_bad_probs_say_why(probs, why):
    for fn in (lambda: cal.apply_temperature(probs, 2.0),
               lambda: cal.fit_temperature(probs, np.zeros(len(probs), "int64"))):
        with pytest.raises(ValueError) as err:
            fn()
        msg = str(err.value)
        assert msg.startswith("Invalid value for argument `probs` of ")
        assert "expected probabilities of shape (N, C)" in msg
        assert why in msg
        assert f"Received: probs=<array of shape {probs.shape}, dtype float64>" in msg


def test_bad_probs_types():
    for bad in ("0.5", None, {"a": 1}, np.array([True, False])):
        with pytest.raises(TypeError, match=r"Invalid value for argument `probs` of "
                           r"apply_temperature: expected probabilities"):
            cal.apply_temperature(bad, 1.0)


@pytest.mark.parametrize("temperature, error", [
    (0.0, ValueError), (-1.0, ValueError), (math.inf, ValueError),
    (math.nan, ValueError), (True, TypeError), ("2", TypeError), (None, TypeError),
])
def test_bad_temperature(temperature, error):
    with pytest.raises(error) as err:
        cal.apply_temperature(_GOOD, temperature)
    assert str(err.value).startswith(
        "Invalid value for argument `temperature` of apply_temperature: expected a "
        "float in (0, inf). Received: temperature=")
    with pytest.raises(error, match="`temperature` of tempered_uncertainty"):
        cal.tempered_uncertainty(_GOOD[None], temperature)
    with pytest.raises(error, match="`temperature` of tempered_uncertainty_ops"):
        cal.tempered_uncertainty_ops(_GOOD[None], temperature)


@pytest.mark.parametrize("y, why", [
    ([0, 3], "got labels outside [0, 3)"),
    ([-1, 0], "got labels outside [0, 3)"),
    ([0, 1.5], "got non-integer values"),
    ([0, 1, 2], "got another shape"),
    ([[1, 0, 0], [1, 1, 0]], "got rows that are not one-hot"),
])
def test_bad_labels(y, why):
    with pytest.raises(ValueError) as err:
        cal.fit_temperature(_GOOD, y)
    msg = str(err.value)
    assert msg.startswith("Invalid value for argument `y` of fit_temperature: expected "
                          "2 integer labels in [0, 3) of shape (2,) or (2, 1), or "
                          "one-hot rows of shape (2, 3)")
    assert why in msg
    with pytest.raises(ValueError, match=r"labels in \[0, 2\).*got labels outside"):
        cal.fit_temperature(np.array([0.2, 0.9]), [0, 2])
    with pytest.raises(TypeError, match="`y` of fit_temperature"):
        cal.fit_temperature(_GOOD, ["a", "b"])


def test_bounds_and_degenerate_fits_are_errors():
    with pytest.raises(ValueError, match=r"`bounds` of fit_temperature: expected a pair"):
        cal.fit_temperature(_GOOD, [0, 1], bounds=(2.0, 1.0))
    with pytest.raises(TypeError, match=r"`bounds` of fit_temperature"):
        cal.fit_temperature(_GOOD, [0, 1], bounds=1.0)
    # Every held-out prediction right: the NLL falls all the way to T -> 0.
    with pytest.raises(ValueError) as err:
        cal.fit_temperature(_GOOD, [0, 1])
    assert str(err.value).startswith(
        "Invalid value for argument `bounds` of fit_temperature: expected an interval "
        "(low, high) that contains the minimum of the held-out NLL (it still falls at "
        "T=0.01, the lower end")
    assert str(err.value).endswith("Received: bounds=(0.01, 100.0)")
    with pytest.raises(ValueError, match=r"`probs` of fit_temperature: expected "
                       r"probabilities whose held-out NLL depends on the temperature"):
        cal.fit_temperature(np.full((4, 2), 0.5), [0, 1, 1, 0])


def test_bad_samples_and_activation():
    with pytest.raises(ValueError) as err:
        cal.tempered_uncertainty(np.array([[[0.6, 0.6]]]), 1.0)
    assert str(err.value).startswith(
        "Invalid value for argument `samples` of tempered_uncertainty: expected "
        "per-sample probabilities of shape (S, N, C) (softmax)")
    assert "got rows that do not sum to 1" in str(err.value)
    assert "Received: samples=<array of shape (1, 1, 2), dtype float64>" in str(err.value)
    for bad in (np.full((3, 4), 0.5), np.full((3, 4, 1), 1.0), np.zeros((0, 2, 2))):
        with pytest.raises(ValueError, match="got another shape"):
            cal.tempered_uncertainty(bad, 1.0)
    with pytest.raises(ValueError, match="got values outside"):
        cal.tempered_uncertainty(np.full((3, 4), 1.5), 1.0, activation="sigmoid")
    with pytest.raises(ValueError, match=r"`activation` of tempered_uncertainty: expected "
                       r"one of 'softmax', 'sigmoid'"):
        cal.tempered_uncertainty(_GOOD[None], 1.0, activation="relu")
    with pytest.raises(ValueError, match="`samples` of tempered_uncertainty_ops"):
        cal.tempered_uncertainty_ops(_GOOD, 1.0)
