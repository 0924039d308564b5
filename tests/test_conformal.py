"""kreg.conformal: the split-conformal quantile, coverage, the APS/RAPS sets,
persistence, every bad input, MAPIE/crepes interop and served sets.

Coverage is tested statistically on synthetic exchangeable data: over R
random calibration/test splits of i.i.d. points whose labels do NOT follow
the model's probabilities (a miscalibrated model), the mean coverage of
split conformal is k/(n + 1) exactly for continuous scores, k =
ceil((n + 1)(1 - alpha)) (Angelopoulos & Bates 2021, theorem D.1). The
coverage of one split is Beta(k, n + 1 - k) over the calibration draw plus a
binomial over the m test points, so the mean of R splits has standard error
sqrt((k (n + 1 - k) / ((n + 1)^2 (n + 2)) + c (1 - c) / m) / R); the
tolerance is 4 of them, smaller than the 1/(n + 1) that a quantile one rank
off would shift the mean by.
"""

import json
import math
import types

import keras
import numpy as np
import pytest

import kreg
from kreg.conformal import SplitConformal
from kreg.conformal import _scores

N_CAL, N_TEST, SPLITS, K = 99, 500, 400, 5
ALPHA = 0.1


# -- synthetic exchangeable data ------------------------------------------------
def _draw_classes(rng, n, bias=(1.0, 0.0, 0.0, 0.0, -0.5)):
    """Model probabilities (n, K) and labels drawn from a flatter truth (the
    model is overconfident) with a class bias the model does not know."""
    logits = rng.normal(size=(n, K)) * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    true_logits = 0.5 * logits + np.asarray(bias)
    truth = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = (truth.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return probs, y


@pytest.fixture(scope="module")
def classes():
    return _draw_classes(np.random.default_rng(0), 6000)


def _draw_regression(rng, n):
    """A mean, a std that tracks the noise, and heteroscedastic targets."""
    x = rng.uniform(-1, 1, size=n)
    noise = 0.1 + 0.9 * (x > 0)
    mean = np.sin(3 * x)
    std = noise * np.exp(0.1 * rng.normal(size=n))
    y = mean + noise * rng.normal(size=n)
    return mean, std, y, noise > 0.5


@pytest.fixture(scope="module")
def regression():
    return _draw_regression(np.random.default_rng(1), 6000)


def _splits(draw, seed=2):
    """SPLITS independent (calibration, test) draws of N_CAL and N_TEST points
    (fresh data for each: the splits are independent, so the SE of their
    mean coverage is known)."""
    rng = np.random.default_rng(seed)
    for _ in range(SPLITS):
        data = draw(rng, N_CAL + N_TEST)
        yield [a[:N_CAL] for a in data], [a[N_CAL:] for a in data]


def _tolerance(n=N_CAL, m=N_TEST):
    k = _scores.conformal_rank(n, ALPHA)
    c = k / (n + 1)
    var = k * (n + 1 - k) / ((n + 1) ** 2 * (n + 2)) + c * (1 - c) / m
    return c, 4 * math.sqrt(var / SPLITS)


# (method, kwargs): the guarantee is checked for each.
CLASS_METHODS = [("lac", {}), ("aps", {}), ("raps", {"k_reg": 1, "lam": 0.05}),
                 ("aps", {"randomized": True, "seed": 0}),
                 ("raps", {"randomized": True, "seed": 0, "lam": 0.1})]


@pytest.mark.parametrize("method,kwargs", CLASS_METHODS)
def test_classification_coverage_is_k_over_n_plus_1(classes, method, kwargs):
    covers = []
    for (p_cal, y_cal), (p_test, y_test) in _splits(_draw_classes):
        cp = SplitConformal(ALPHA, method, **kwargs).fit(p_cal, y_cal)
        sets = cp.predict(p_test)
        covers.append(sets[np.arange(N_TEST), y_test].mean())
    expected, tol = _tolerance()
    assert 1 / (N_CAL + 1) > tol  # a quantile one rank off would show
    assert np.mean(covers) > expected - tol, (np.mean(covers), expected, tol)
    if method == "lac" or kwargs.get("randomized"):
        # Continuous scores: exactly k / (n + 1). (Non-randomized APS/RAPS
        # scores have an atom, the last label's score 1 (+ its penalty), at
        # which the full set is returned: coverage is then >= k / (n + 1).)
        assert np.mean(covers) < expected + tol, (np.mean(covers), expected, tol)
    # The model alone (its 90% top mass) undercovers: conformal is doing work.
    probs, y = classes
    naive = _scores.label_scores(probs, "aps") <= 0.9
    assert naive[np.arange(len(y)), y].mean() < expected - 5 * tol


def test_class_conditional_covers_every_class():
    # Fresh data for every split: independent splits, so the SE of the mean
    # per-class coverage is known.
    splits, n_cal, n_test, bias = 100, 1500, 1000, (2.0, 0.0, 0.0, 0.0, -1.0)
    hits = {"mondrian": np.zeros(K), "marginal": np.zeros(K)}
    counts = np.zeros(K)
    cal_counts = np.zeros(K)
    rng = np.random.default_rng(3)
    for _ in range(splits):
        probs, y = _draw_classes(rng, n_cal + n_test, bias)
        cal, test = slice(0, n_cal), slice(n_cal, None)
        np.add.at(counts, y[test], 1)
        np.add.at(cal_counts, y[cal], 1)
        for name, mondrian in (("mondrian", True), ("marginal", False)):
            cp = SplitConformal(ALPHA, "lac", class_conditional=mondrian)
            cp.fit(probs[cal], y[cal])
            assert len(cp.quantiles) == (K if mondrian else 1)
            inside = cp.predict(probs[test])[np.arange(n_test), y[test]]
            np.add.at(hits[name], y[test], inside)
    # Class c's coverage: Beta over its n_c calibration points, binomial over
    # its test points; the mean over the splits has this SE.
    n_c = cal_counts / splits
    c = 1 - ALPHA
    se = np.sqrt(c * (1 - c) / (n_c + 2) / splits + c * (1 - c) / counts)
    per_class = hits["mondrian"] / counts
    assert np.all(per_class > c - 4 * se), (per_class, se)
    # Marginal LAC covers on average only: its worst class is well below.
    marginal = hits["marginal"] / counts
    worst = marginal.argmin()
    assert marginal[worst] < c - 10 * se[worst], (marginal, se)


@pytest.mark.parametrize("method", ["absolute", "normalized"])
def test_regression_coverage_is_k_over_n_plus_1(method):
    covers, noisy_covers = [], []
    for (m_cal, s_cal, y_cal, _), (m_test, s_test, y_test, noisy) in _splits(
            _draw_regression):
        cp = SplitConformal(ALPHA, method).fit((m_cal, s_cal), y_cal)
        lower, upper = cp.predict((m_test, s_test))
        inside = (y_test >= lower) & (y_test <= upper)
        covers.append(inside.mean())
        noisy_covers.append(inside[noisy].mean())
    expected, tol = _tolerance()
    assert abs(np.mean(covers) - expected) < tol
    # Conditional on the noisy half: normalized holds, absolute does not.
    if method == "normalized":
        assert np.mean(noisy_covers) > 0.88
    else:
        assert np.mean(noisy_covers) < 0.85


# -- the quantile ---------------------------------------------------------------
@pytest.mark.parametrize("n,alpha,k", [(9, 0.1, 9), (10, 0.1, 10), (19, 0.1, 18),
                                       (99, 0.1, 90), (100, 0.1, 91), (19, 0.05, 19),
                                       (1, 0.5, 1), (3, 0.3, 3), (1000, 0.01, 991)])
def test_conformal_rank(n, alpha, k):
    assert _scores.conformal_rank(n, alpha) == k
    assert _scores.min_calibration(alpha) <= n


@pytest.mark.parametrize("n", [9, 10, 37, 100])
def test_fitted_quantile_is_the_kth_smallest_score(n):
    rng = np.random.default_rng(n)
    probs = rng.dirichlet(np.ones(4), size=n)
    y = rng.integers(0, 4, n)
    cp = SplitConformal(ALPHA, "lac").fit(probs, y)
    scores = np.sort(1 - probs[np.arange(n), y])
    k = math.ceil((n + 1) * (1 - ALPHA) - 1e-9)
    assert cp.quantiles == [scores[k - 1]]
    assert cp.n_calibration == n and cp.num_classes == 4
    # The rule: a label is in the set iff its score is <= q.
    test = rng.dirichlet(np.ones(4), size=50)
    np.testing.assert_array_equal(cp.predict(test), 1 - test <= scores[k - 1])


def test_too_few_calibration_points_is_a_clear_error():
    probs = np.full((8, 2), 0.5)
    with pytest.raises(ValueError, match=r"Invalid value for argument `pred` of "
                       r"SplitConformal.fit: expected at least 9 calibration points "
                       r"for alpha=0.1 .*Received: pred=8 points"):
        SplitConformal(0.1).fit(probs, np.zeros(8, int))
    SplitConformal(0.1).fit(np.full((9, 2), 0.5), np.zeros(9, int))
    with pytest.raises(ValueError, match="at least 9 calibration points of class 1"):
        SplitConformal(0.1, class_conditional=True).fit(
            np.full((20, 2), 0.5), np.r_[np.zeros(15, int), np.ones(5, int)])


# -- APS / RAPS against a brute-force reference ----------------------------------
def _brute_scores(p, method, k_reg=0, lam=0.0, u=None):
    n, k = p.shape
    out = np.zeros((n, k))
    for i in range(n):
        for y in range(k):
            before = [j for j in range(k)
                      if p[i, j] > p[i, y] or (p[i, j] == p[i, y] and j < y)]
            score = p[i, before].sum() + p[i, y]
            if u is not None:
                score -= u[i] * p[i, y]
            if method == "raps":
                score += lam * max(len(before) + 1 - k_reg, 0)
            out[i, y] = score
    return out


@pytest.mark.parametrize("method,kwargs", [("aps", {}), ("raps", {"k_reg": 2, "lam": 0.2}),
                                           ("raps", {"k_reg": 0, "lam": 0.05})])
@pytest.mark.parametrize("randomized", [False, True])
def test_aps_raps_sets_match_brute_force(method, kwargs, randomized):
    rng = np.random.default_rng(4)
    # Probabilities on a grid of tenths: many ties, broken by label order.
    raw = rng.integers(0, 4, size=(300, 4)).astype(float)
    raw[raw.sum(1) == 0, 0] = 1
    p = raw / raw.sum(1, keepdims=True)
    y = rng.integers(0, 4, 300)
    cal, test = slice(0, 200), slice(200, 300)
    cp = SplitConformal(0.2, method, randomized=randomized, seed=7, **kwargs)
    cp.fit(p[cal], y[cal])
    uniforms = np.random.default_rng(7)
    u_cal = uniforms.uniform(size=200) if randomized else None
    u_test = uniforms.uniform(size=100) if randomized else None
    cal_scores = _brute_scores(p[cal], method, u=u_cal, **kwargs)[np.arange(200), y[cal]]
    q = np.sort(cal_scores)[_scores.conformal_rank(200, 0.2) - 1]
    assert cp.quantiles[0] == pytest.approx(q, abs=1e-12)
    want = _brute_scores(p[test], method, u=u_test, **kwargs) <= q + 1e-9
    np.testing.assert_array_equal(cp.predict(p[test]), want)


def test_raps_defaults_and_smaller_sets_than_aps(classes):
    probs, y = classes
    cp = SplitConformal(ALPHA, "raps")
    assert cp.score_kwargs == {"k_reg": 1, "lam": 0.01}
    aps = SplitConformal(ALPHA, "aps").fit(probs[:2000], y[:2000])
    raps = SplitConformal(ALPHA, "raps", lam=0.2).fit(probs[:2000], y[:2000])
    assert raps.predict(probs[2000:]).sum(1).mean() <= aps.predict(probs[2000:]).sum(1).mean()


def test_sigmoid_probabilities_are_two_classes():
    rng = np.random.default_rng(5)
    p1 = rng.uniform(size=100)
    y = (rng.uniform(size=100) < p1).astype(int)
    two = SplitConformal(0.2).fit(np.stack([1 - p1, p1], 1), y)
    one = SplitConformal(0.2).fit(p1[:, None], y)
    assert one.quantiles == pytest.approx(two.quantiles)
    np.testing.assert_array_equal(one.predict(p1), two.predict(np.stack([1 - p1, p1], 1)))


# -- persistence ------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"alpha": 0.2, "method": "raps", "k_reg": 2, "lam": 0.1, "randomized": True,
     "seed": 3, "output": "cls"},
    {"alpha": 0.1, "method": "lac", "class_conditional": True, "output": 1},
    {"alpha": 0.3, "method": "normalized"},
])
def test_config_round_trips_with_the_fitted_quantiles(classes, regression, kwargs):
    cp = SplitConformal(**kwargs)
    blank = cp.get_config()
    assert SplitConformal.from_config(json.loads(json.dumps(blank))).get_config() == blank
    if cp.task == "classification":
        data = {"cls": classes[0][:300]} if kwargs.get("output") == "cls" else classes[0][:300]
        cp.fit(data, classes[1][:300])
        test = classes[0][300:400]
    else:
        mean, std, y, _ = regression
        cp.fit((mean[:300], std[:300]), y[:300])
        test = (mean[300:400], std[300:400])
    config = cp.get_config()
    assert json.loads(json.dumps(config)) == config  # plain JSON values
    again = SplitConformal.from_config(json.loads(json.dumps(config)))
    assert again.get_config() == config
    ser = keras.saving.serialize_keras_object(cp)
    assert ser["registered_name"] == "kreg>SplitConformal"
    assert keras.saving.deserialize_keras_object(json.loads(json.dumps(ser))).quantiles \
        == cp.quantiles
    if not cp.randomized:
        a = cp.predict({"cls": test} if kwargs.get("output") == "cls" else test)
        b = again.predict({"cls": test} if kwargs.get("output") == "cls" else test)
        for x, z in zip(np.atleast_1d(a), np.atleast_1d(b)):
            np.testing.assert_array_equal(x, z)


def test_from_config_refuses_a_bad_state():
    config = SplitConformal(0.1).get_config()
    with pytest.raises(ValueError, match=r"argument `quantiles` of "
                       r"SplitConformal.from_config: expected a list of 1 float"):
        SplitConformal.from_config({**config, "quantiles": [0.1, 0.2],
                                    "num_classes": 3, "n_calibration": 10})


# -- bad inputs: kreg's wording ------------------------------------------------------
def _fitted(method="lac"):
    if method in ("absolute", "normalized"):
        return SplitConformal(0.1, method).fit((np.zeros(20), np.ones(20)), np.ones(20))
    return SplitConformal(0.1, method).fit(np.full((20, 3), 1 / 3), np.arange(20) % 3)


P3 = np.full((20, 3), 1 / 3)
Y3 = np.arange(20) % 3
BAD = {
    "alpha 0": (lambda: SplitConformal(0.0), ValueError,
                "argument `alpha` of SplitConformal: expected a float in (0, 1). "
                "Received: alpha=0.0"),
    "alpha 1": (lambda: SplitConformal(1.0), ValueError, "a float in (0, 1)"),
    "alpha str": (lambda: SplitConformal("0.1"), TypeError, "a float in (0, 1)"),
    "method": (lambda: SplitConformal(0.1, "thr"), ValueError,
               "argument `method` of SplitConformal: expected one of 'lac', 'aps', "
               "'raps', 'absolute', 'normalized'. Received: method='thr'"),
    "k_reg not raps": (lambda: SplitConformal(0.1, "aps", k_reg=2), ValueError,
                       "argument `k_reg` of SplitConformal: expected None for "
                       "method='aps'"),
    "lam negative": (lambda: SplitConformal(0.1, "raps", lam=-1.0), ValueError,
                     "argument `lam` of SplitConformal: expected a float in [0, inf)"),
    "k_reg negative": (lambda: SplitConformal(0.1, "raps", k_reg=-1), ValueError,
                       "argument `k_reg` of SplitConformal: expected an integer >= 0"),
    "randomized lac": (lambda: SplitConformal(0.1, randomized=True), ValueError,
                       "argument `randomized` of SplitConformal: expected False for "
                       "method='lac'"),
    "mondrian regression": (lambda: SplitConformal(0.1, "absolute",
                                                   class_conditional=True),
                            ValueError, "argument `class_conditional`"),
    "output float": (lambda: SplitConformal(output=1.5), TypeError,
                     "argument `output` of SplitConformal: expected None, an output name"),
    "seed": (lambda: SplitConformal(seed=-1), ValueError, "argument `seed`"),
    "y wrong length": (lambda: SplitConformal().fit(P3, Y3[:10]), ValueError,
                       "argument `y` of SplitConformal.fit: expected 20 integer labels"),
    "y out of range": (lambda: SplitConformal().fit(P3, Y3 + 1), ValueError,
                       "(got labels outside [0, 3))"),
    "y non-integer": (lambda: SplitConformal().fit(P3, Y3 + 0.5), ValueError,
                      "(got non-integer values)"),
    "y strings": (lambda: SplitConformal().fit(P3, ["a"] * 20), TypeError,
                  "argument `y` of SplitConformal.fit"),
    "probs NaN": (lambda: SplitConformal().fit(np.full((20, 3), np.nan), Y3),
                  ValueError, "(got NaN or inf)"),
    "probs 0 rows": (lambda: SplitConformal().fit(np.zeros((0, 3)), []), ValueError,
                     "(got 0 rows)"),
    "probs not summing to 1": (lambda: SplitConformal().fit(np.full((20, 3), 0.5), Y3),
                               ValueError, "(got rows that do not sum to 1"),
    "logits": (lambda: SplitConformal().fit(np.full((20, 3), 3.0), Y3), ValueError,
               "look like logits"),
    "probs 3-d": (lambda: SplitConformal().fit(np.full((2, 20, 3), 1 / 3), Y3),
                  ValueError, "(got another shape)"),
    "pair for lac": (lambda: SplitConformal().fit((np.zeros(20), np.ones(20)), Y3),
                     TypeError, "a pair (mean, std) is for 'absolute' and 'normalized'"),
    "predict before fit": (lambda: SplitConformal().predict(P3), ValueError,
                           "argument `self` of SplitConformal.predict: expected a "
                           "fitted SplitConformal"),
    "predict other K": (lambda: _fitted().predict(np.full((4, 2), 0.5)), ValueError,
                        "expected probabilities of 3 classes (as in fit)"),
    "regression array": (lambda: SplitConformal(0.1, "absolute").fit(np.zeros(20),
                                                                    np.zeros(20)),
                         TypeError, "argument `pred` of SplitConformal.fit: expected a "
                         "regression MCPrediction or a pair (mean, std)"),
    "std mismatched": (lambda: SplitConformal(0.1, "absolute").fit(
        (np.zeros(20), np.ones(19)), np.zeros(20)), ValueError,
        "(got a std of shape (19,) and a mean of shape (20,))"),
    "std negative": (lambda: SplitConformal(0.1, "absolute").fit(
        (np.zeros(20), -np.ones(20)), np.zeros(20)), ValueError, "(got a negative std)"),
    "std zero normalized": (lambda: SplitConformal(0.1, "normalized").fit(
        (np.zeros(20), np.zeros(20)), np.zeros(20)), ValueError,
        "method='normalized' divides by it"),
    "mean NaN": (lambda: SplitConformal(0.1, "absolute").fit(
        (np.full(20, np.nan), np.ones(20)), np.zeros(20)), ValueError, "(got NaN or inf)"),
    "mean 2-d": (lambda: SplitConformal(0.1, "absolute").fit(
        (np.zeros((20, 2)), np.ones((20, 2))), np.zeros(20)), ValueError,
        "fit one SplitConformal per output column"),
    "regression 0 rows": (lambda: SplitConformal(0.1, "absolute").fit(
        (np.zeros(0), np.ones(0)), np.zeros(0)), ValueError, "(got 0 rows)"),
    "y regression length": (lambda: SplitConformal(0.1, "absolute").fit(
        (np.zeros(20), np.ones(20)), np.zeros(19)), ValueError,
        "argument `y` of SplitConformal.fit: expected 20 finite targets"),
    "y regression NaN": (lambda: SplitConformal(0.1, "absolute").fit(
        (np.zeros(20), np.ones(20)), np.full(20, np.nan)), ValueError, "(got NaN or inf)"),
    "predict regression before fit": (lambda: SplitConformal(0.1, "absolute").predict(
        (np.zeros(2), np.ones(2))), ValueError, "expected a fitted SplitConformal"),
    "predict negative std": (lambda: _fitted("absolute").predict(
        (np.zeros(2), -np.ones(2))), ValueError, "argument `pred` of "
        "SplitConformal.predict"),
    "several outputs": (lambda: SplitConformal().fit({"a": P3, "b": P3}, Y3), ValueError,
                        "argument `output` of SplitConformal: expected one of 'a', 'b' "
                        "(the argument `pred` of SplitConformal.fit holds the "
                        "predictions of several outputs"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_message(name):
    make, kind, message = BAD[name]
    with pytest.raises(kind) as info:
        make()
    assert message in str(info.value), str(info.value)
    assert str(info.value).startswith("Invalid value for argument")


# -- with a kreg model on this backend ------------------------------------------------
@pytest.fixture(scope="module")
def mc_models():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(6).normal(size=(120, 4)).astype("float32")
    inp = keras.Input((4,), name="x")
    h = kreg.layers.Dropout(0.3)(keras.layers.Dense(16, activation="relu")(inp))
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    multi = keras.Model(inp, {"cls": cls, "reg": reg})
    single = keras.Model(inp, cls)
    regressor = keras.Model(inp, reg)
    # Compiled: the losses say what each output holds (kreg reads them).
    multi.compile(loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"})
    single.compile(loss="sparse_categorical_crossentropy")
    regressor.compile(loss="mse")
    return types.SimpleNamespace(x=x, multi=multi, single=single, regressor=regressor)


def test_mc_predictions_of_a_multi_output_model(mc_models):
    x = mc_models.x
    pred = kreg.MCPredictor(mc_models.multi, 10, seed=0).predict(x, verbose=0)
    y = np.arange(len(x)) % 3
    with pytest.raises(ValueError, match="expected one of 'cls', 'reg'"):
        SplitConformal(0.2).fit(pred, y)
    cp = SplitConformal(0.2, "aps", output="cls").fit(pred, y)
    np.testing.assert_array_equal(cp.predict(pred), SplitConformal(0.2, "aps").fit(
        pred["cls"].mean, y).predict(pred["cls"].mean))
    with pytest.raises(ValueError, match="expected a classification prediction"):
        SplitConformal(0.2, output="reg").fit(pred, y)
    reg = SplitConformal(0.2, "normalized", output="reg").fit(pred, x[:, 0])
    lower, upper = reg.predict(pred)
    assert lower.shape == upper.shape == pred["reg"].mean.shape == (len(x), 1)
    np.testing.assert_allclose(upper - lower, 2 * reg.quantiles[0] * pred["reg"].std)


# -- scikit-learn adapter, MAPIE and crepes -----------------------------------------
def test_adapter_interface(mc_models):
    x = mc_models.x
    clf = kreg.conformal.SklearnAdapter(mc_models.single, "classification", samples=8,
                                        seed=1)
    assert clf.fit(x, None) is clf and clf.__sklearn_is_fitted__()
    assert clf.classes_.tolist() == [0, 1, 2] and clf.fitted_
    proba = clf.predict_proba(x)
    np.testing.assert_array_equal(proba, clf.predict_proba(x))  # seeded
    np.testing.assert_array_equal(clf.predict(x), proba.argmax(1))
    assert clf.get_params()["samples"] == 8
    assert clf.set_params(samples=4).predictor.samples == 4
    reg = kreg.conformal.SklearnAdapter(mc_models.multi, "regression", samples=8,
                                        seed=1, output="reg")
    assert reg.predict(x).shape == reg.predict_std(x).shape == (len(x),)
    with pytest.raises(ValueError, match="argument `task` of SklearnAdapter.predict_proba"):
        reg.predict_proba(x)
    with pytest.raises(ValueError, match="argument `samples` of SklearnAdapter: "
                       "expected None when `model` is an MCPredictor"):
        kreg.conformal.SklearnAdapter(kreg.MCPredictor(mc_models.single, 5),
                                      "classification", samples=5)
    with pytest.raises(TypeError, match="argument `model` of SklearnAdapter"):
        kreg.conformal.SklearnAdapter("model", "classification")


def test_mapie_matches_lac_and_absolute(mc_models):
    mapie = pytest.importorskip("mapie")
    del mapie
    import warnings

    from mapie.classification import SplitConformalClassifier
    from mapie.regression import SplitConformalRegressor

    x = mc_models.x
    y = np.arange(len(x)) % 3
    clf = kreg.conformal.SklearnAdapter(mc_models.single, "classification", samples=8,
                                        seed=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Estimator does not appear fitted")
        m = SplitConformalClassifier(clf, confidence_level=0.8, conformity_score="lac",
                                     prefit=True).conformalize(x[:60], y[:60])
        _, sets = m.predict_set(x[60:])
    cp = SplitConformal(0.2, "lac").fit(clf.predict_proba(x[:60]), y[:60])
    mapie_q = m._mapie_classifier.conformity_score_function_.quantiles_
    assert float(mapie_q[0]) == pytest.approx(cp.quantiles[0], rel=1e-6)
    np.testing.assert_array_equal(sets[:, :, 0], cp.predict(clf.predict_proba(x[60:])))
    reg = kreg.conformal.SklearnAdapter(mc_models.regressor, "regression", samples=8,
                                        seed=2)
    target = x[:, 0]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Estimator does not appear fitted")
        mr = SplitConformalRegressor(reg, confidence_level=0.8, prefit=True,
                                     conformity_score="absolute")
        _, intervals = mr.conformalize(x[:60], target[:60]).predict_interval(x[60:])
    cpa = SplitConformal(0.2, "absolute").fit(reg.predict_mc(x[:60]), target[:60])
    lower, upper = cpa.predict(reg.predict_mc(x[60:]))
    np.testing.assert_allclose(intervals[:, 0, 0], lower[:, 0], atol=1e-6)
    np.testing.assert_allclose(intervals[:, 1, 0], upper[:, 0], atol=1e-6)


def test_crepes_matches_lac_and_normalized(mc_models):
    crepes = pytest.importorskip("crepes")
    x = mc_models.x
    y = np.arange(len(x)) % 3
    clf = kreg.conformal.SklearnAdapter(mc_models.single, "classification", samples=8,
                                        seed=3)
    wrapped = crepes.WrapClassifier(clf)
    wrapped.calibrate(x[:60], y[:60])  # crepes's default score, hinge, is 1 - p_y
    sets = np.asarray(wrapped.predict_set(x[60:], labels=False, confidence=0.8,
                                          smoothing=False)).astype(bool)
    cp = SplitConformal(0.2, "lac").fit(clf.predict_proba(x[:60]), y[:60])
    np.testing.assert_array_equal(sets, cp.predict(clf.predict_proba(x[60:])))
    reg = kreg.conformal.SklearnAdapter(mc_models.regressor, "regression", samples=8,
                                        seed=3)
    target = x[:, 0]
    # crepes's normalized conformal regressor with sigmas = the MC std.
    cr = crepes.ConformalRegressor().fit(target[:60] - reg.predict(x[:60]),
                                         sigmas=reg.predict_std(x[:60]))
    intervals = cr.predict_int(reg.predict(x[60:]), sigmas=reg.predict_std(x[60:]),
                               confidence=0.8)
    wrapped = crepes.WrapRegressor(reg)
    wrapped.calibrate(x[:60], target[:60], de=types.SimpleNamespace(apply=reg.predict_std))
    np.testing.assert_allclose(wrapped.predict_int(x[60:], confidence=0.8), intervals)
    cpn = SplitConformal(0.2, "normalized").fit(reg.predict_mc(x[:60]), target[:60])
    lower, upper = cpn.predict(reg.predict_mc(x[60:]))
    np.testing.assert_allclose(intervals[:, 0], lower[:, 0], atol=1e-6)
    np.testing.assert_allclose(intervals[:, 1], upper[:, 0], atol=1e-6)


# -- served from the SavedModel ---------------------------------------------------------
@pytest.mark.tf_only(reason="SavedModel export is TensorFlow-only")
def test_export_serves_sets_and_intervals(mc_models, tmp_path):
    import tensorflow as tf

    x = mc_models.x
    y = np.arange(len(x)) % 3
    pred = kreg.MCPredictor(mc_models.multi, 10, seed=0).predict(x, verbose=0)
    cps = [SplitConformal(0.2, "raps", lam=0.05, output="cls").fit(pred, y),
           SplitConformal(0.2, "normalized", output="reg").fit(pred, x[:, 0])]
    kreg.export(mc_models.multi, tmp_path / "multi", mc_samples=10, conformal=cps)
    served = tf.saved_model.load(str(tmp_path / "multi"))
    out = {k: t.numpy() for k, t in served.signatures["serve_mc_seeded"](
        x=x, seed=tf.constant(4, tf.int64)).items()}
    assert {"cls_set", "reg_lower", "reg_upper"} <= set(out)
    assert out["cls_set"].dtype == bool
    np.testing.assert_array_equal(out["cls_set"], cps[0].predict(out["cls_mean"]))
    lower, upper = cps[1].predict((out["reg_mean"], out["reg_std"]))
    np.testing.assert_allclose(out["reg_lower"], lower, atol=1e-5)
    np.testing.assert_allclose(out["reg_upper"], upper, atol=1e-5)
    assert "cls_set" in served.signatures["serve_mc"](x=x)
    # One output: unprefixed keys, as `mean` and `std`; one quantile per class.
    single = kreg.MCPredictor(mc_models.single, 10, seed=0).predict(x, verbose=0)
    cp = SplitConformal(0.2, "lac", class_conditional=True).fit(single, y)
    kreg.export(mc_models.single, tmp_path / "lac", mc_samples=10, conformal=cp)
    got = tf.saved_model.load(str(tmp_path / "lac")).signatures["serve_mc_seeded"](
        x=x, seed=tf.constant(4, tf.int64))
    assert "set" in got and "cls_set" not in got
    np.testing.assert_array_equal(got["set"].numpy(), cp.predict(got["mean"].numpy()))


@pytest.mark.tf_only(reason="SavedModel export is TensorFlow-only")
def test_export_serves_randomized_sets_from_the_request_seed(mc_models, tmp_path):
    import tensorflow as tf

    from kreg.conformal import _tf as conformal_tf

    x = mc_models.x
    y = np.arange(len(x)) % 3
    single = kreg.MCPredictor(mc_models.single, 10, seed=0).predict(x, verbose=0)
    cp = SplitConformal(0.2, "raps", lam=0.1, randomized=True, seed=1).fit(single, y)
    kreg.export(mc_models.single, tmp_path / "r", mc_samples=10, conformal=cp)
    served = tf.saved_model.load(str(tmp_path / "r"))
    out = served.signatures["serve_mc"](x=x)
    seed = int(out["seed"].numpy()[0])
    replay = served.signatures["serve_mc_seeded"](x=x, seed=tf.constant(seed, tf.int64))
    np.testing.assert_array_equal(out["set"].numpy(), replay["set"].numpy())
    # The host rule with the uniforms of that seed gives the same sets.
    u = conformal_tf.uniforms(tf.constant(seed, tf.int64), len(x), 0).numpy()
    p = out["mean"].numpy().astype("float64")
    p /= p.sum(1, keepdims=True)
    want = _scores.in_set(_scores.label_scores(p, "raps", u=u, **cp.score_kwargs),
                          cp.quantiles[0])
    np.testing.assert_array_equal(out["set"].numpy(), want)
    assert 0 < out["set"].numpy().sum(1).mean() < 3


@pytest.mark.tf_only(reason="SavedModel export is TensorFlow-only")
def test_export_refuses_bad_conformal(mc_models, tmp_path):
    x = mc_models.x
    y = np.arange(len(x)) % 3
    single = kreg.MCPredictor(mc_models.single, 5, seed=0).predict(x, verbose=0)
    cases = [
        ("not fitted", SplitConformal(0.2), "expected None, a fitted "
         "kreg.conformal.SplitConformal or a list of them (call fit"),
        ("type", "lac", "argument `conformal` of export"),
        ("output", SplitConformal(0.2, output="nope").fit(single, y),
         "naming one of the model's outputs: 'cls', 'reg'"),
        ("classes", SplitConformal(0.2, output="cls").fit(
            np.full((20, 2), 0.5), np.arange(20) % 2),
         "expected a SplitConformal fitted on 3 classes for output 'cls'. Received: "
         "conformal=a SplitConformal fitted on 2 classes"),
        ("task", SplitConformal(0.2, "absolute", output="cls").fit(
            (x[:, 0], np.ones(len(x))), x[:, 1]), "a classification method for output"),
    ]
    for i, (why, cp, message) in enumerate(cases):
        with pytest.raises((ValueError, TypeError), match=None) as info:
            kreg.export(mc_models.multi, tmp_path / str(i), mc_samples=5, conformal=cp)
        assert message in str(info.value), (why, str(info.value))
        assert not (tmp_path / str(i)).exists()  # nothing written


# -- the user guide ------------------------------------------------------------------
@pytest.mark.tf_only(reason="the guide's examples include a SavedModel export")
def test_docs_conformal_python_blocks_run(monkeypatch, tmp_path):
    """Every Python block of docs/conformal.md runs (in this process: the
    imports are paid already)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "conformal.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    exec(compile("\n\n".join(blocks), "docs/conformal.md", "exec"), {})
