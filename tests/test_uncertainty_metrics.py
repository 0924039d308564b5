"""kreg.mc.metrics.ood_scores and risk_coverage.

Against scikit-learn (roc_auc_score, average_precision_score, roc_curve) on
random scores with many ties, against hand-computed cases with ties, and
risk_coverage's tie rule against brute force over every order of the ties.
"""

import itertools
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve

from kreg.mc.metrics import ood_scores
from kreg.mc.metrics import risk_coverage


# -- ood_scores ------------------------------------------------------------------
@pytest.mark.parametrize("seed, n_in, n_out, decimals", [
    (0, 200, 150, 1), (1, 50, 400, 2), (2, 300, 20, 0), (3, 1000, 1000, 3),
])
def test_ood_scores_match_scikit_learn_with_ties(seed, n_in, n_out, decimals):
    rng = np.random.default_rng(seed)
    s_in = np.round(rng.normal(0.0, 1.0, n_in), decimals)
    s_out = np.round(rng.normal(0.8, 1.0, n_out), decimals)
    assert len(np.unique(np.r_[s_in, s_out])) < n_in + n_out  # ties present
    y = np.r_[np.zeros(n_in), np.ones(n_out)]
    s = np.r_[s_in, s_out]
    got = ood_scores(s_in, s_out)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), rel=1e-12)
    assert got["aupr"] == pytest.approx(average_precision_score(y, s), rel=1e-12)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert got["fpr_at_95_tpr"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-15)
    assert all(isinstance(x, float) for x in got.values())


def test_ood_scores_hand_computed_with_ties():
    # Pairs (out, in), 12 in all: out 0.4 wins 1, ties 2; out 0.8 wins 3, ties
    # 1; out 0.9 wins 4: AUROC = (1 + 1 + 3 + 0.5 + 4) / 12. Thresholds 0.9,
    # 0.8, 0.4: (recall, precision) = (1/3, 1), (2/3, 2/3), (1, 1/2).
    # 95% of 3 OOD inputs needs all 3: threshold 0.4, and 3 of the 4
    # in-distribution scores are >= 0.4.
    got = ood_scores([0.1, 0.4, 0.4, 0.8], [0.4, 0.8, 0.9])
    assert got["auroc"] == pytest.approx(9.5 / 12, rel=1e-15)
    assert got["aupr"] == pytest.approx(float(Fraction(1, 3) * (1 + Fraction(2, 3)
                                                                + Fraction(1, 2))), rel=1e-15)
    assert got["fpr_at_95_tpr"] == 0.75


def test_ood_scores_extremes_and_infinities():
    perfect = ood_scores([0.0, 0.1], [np.inf, 0.5, 0.7])
    assert perfect == {"auroc": 1.0, "aupr": 1.0, "fpr_at_95_tpr": 0.0}
    worst = ood_scores([1.0, 2.0], [-np.inf, 0.0])
    assert worst["auroc"] == 0.0 and worst["fpr_at_95_tpr"] == 1.0
    tied = ood_scores([0.3] * 4, [0.3] * 6)  # an uninformative score
    assert tied == {"auroc": 0.5, "aupr": 0.6, "fpr_at_95_tpr": 1.0}
    # 20 OOD inputs: 95% is 19 of them, so the threshold is the 19th largest.
    got = ood_scores(np.arange(10) + 0.5, np.arange(20.0))
    assert got["fpr_at_95_tpr"] == 0.9  # scores >= 1.0: 9 of 10


# -- risk_coverage ---------------------------------------------------------------
def test_risk_coverage_hand_computed_with_ties():
    # Runs: {0.9: right}, {0.8: wrong, right}, {0.7: right, wrong, wrong}.
    conf = [0.7, 0.8, 0.9, 0.7, 0.8, 0.7]
    correct = [True, False, True, False, True, False]
    coverage, risk, aurc = risk_coverage(conf, correct)
    # Expected errors among the first k: 0 | 1/2, 1 | 1 + 2/3, 1 + 4/3, 3.
    want = [Fraction(0), Fraction(1, 2) / 2, Fraction(1, 3), Fraction(5, 3) / 4,
            Fraction(7, 3) / 5, Fraction(3, 6)]
    np.testing.assert_allclose(risk, [float(w) for w in want], rtol=1e-15)
    np.testing.assert_allclose(coverage, np.arange(1, 7) / 6, rtol=1e-15)
    assert aurc == pytest.approx(float(sum(want) / 6), rel=1e-15)


def _orders_consistent_with_sort(conf):
    """Every order of the inputs by decreasing confidence (ties in any order)."""
    groups = [np.flatnonzero(conf == c) for c in np.unique(conf)[::-1]]
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield np.concatenate(perms)


@pytest.mark.parametrize("seed", range(4))
def test_risk_is_the_mean_over_every_order_of_the_ties(seed):
    rng = np.random.default_rng(seed)
    conf = rng.choice([0.2, 0.5, 0.9], size=7)
    correct = rng.uniform(size=7) < 0.6
    curves = []
    for order in _orders_consistent_with_sort(conf):
        wrong = ~correct[order]
        curves.append(np.cumsum(wrong) / np.arange(1, 8))
    _, risk, aurc = risk_coverage(conf, correct)
    np.testing.assert_allclose(risk, np.mean(curves, axis=0), rtol=1e-12)
    assert aurc == pytest.approx(np.mean(curves), rel=1e-12)


def test_risk_coverage_without_ties_and_inputs_as_numbers():
    rng = np.random.default_rng(9)
    conf = rng.uniform(size=500)
    correct = rng.uniform(size=500) < conf  # confident inputs are right more often
    order = np.argsort(-conf)
    want = np.cumsum(~correct[order]) / np.arange(1, 501)
    coverage, risk, aurc = risk_coverage(conf, correct)
    np.testing.assert_allclose(risk, want, rtol=1e-12)
    assert aurc == pytest.approx(want.mean(), rel=1e-12)
    assert aurc < risk[-1]  # a useful confidence: selective risk below full risk
    for as_numbers in (correct.astype("int64"), correct.astype("float32"), list(correct)):
        np.testing.assert_array_equal(risk_coverage(conf, as_numbers)[1], risk)
    same = risk_coverage(np.full(10, 0.5), [True] * 7 + [False] * 3)
    np.testing.assert_allclose(same[1], 0.3, rtol=1e-12)


# -- bad input -------------------------------------------------------------------
_OK = [0.1, 0.2, 0.3]


@pytest.mark.parametrize("call, arg, why", [
    (lambda b: ood_scores(b, _OK), "score_in", "got no values"),
    (lambda b: ood_scores(_OK, b), "score_out", "got no values"),
    (lambda b: risk_coverage(b, [True]), "confidence", "got no values"),
])
def test_empty_inputs_and_one_class_only(call, arg, why):
    with pytest.raises(ValueError) as err:
        call(np.array([]))
    msg = str(err.value)
    assert msg.startswith(f"Invalid value for argument `{arg}` of ")
    assert f"({why}). Received: {arg}=<array of shape (0,), dtype float64>" in msg


@pytest.mark.parametrize("bad, why", [
    (np.ones((3, 2)), "got another shape"),
    (np.array([0.1, np.nan, 0.3]), "got NaN"),
])
def test_bad_scores(bad, why):
    with pytest.raises(ValueError) as err:
        ood_scores(bad, _OK)
    assert str(err.value).startswith(
        "Invalid value for argument `score_in` of ood_scores: expected a non-empty "
        f"1-D array of scores without NaN ({why}). Received: score_in=<array of shape")
    with pytest.raises(ValueError, match=r"`confidence` of risk_coverage: expected a "
                       r"non-empty 1-D array of confidences without NaN \(" + why):
        risk_coverage(bad, [True] * len(bad))
    for wrong_type in ("abc", None, {"a": 1}, ["a", "b"]):
        with pytest.raises(TypeError, match="`score_out` of ood_scores"):
            ood_scores(_OK, wrong_type)


@pytest.mark.parametrize("correct, why", [
    ([1, 0, 2], "got values not 0/1"),
    ([0.5, 1.0, 0.0], "got values not 0/1"),
    ([True, False], "got another length"),
    ([[True], [False], [True]], "got another shape"),
])
def test_non_boolean_correct(correct, why):
    with pytest.raises(ValueError) as err:
        risk_coverage(_OK, correct)
    msg = str(err.value)
    assert msg.startswith("Invalid value for argument `correct` of risk_coverage: "
                          "expected a 1-D boolean array of 3 values, one per confidence")
    assert why in msg
    with pytest.raises(TypeError, match="`correct` of risk_coverage"):
        risk_coverage(_OK, ["yes", "no", "yes"])
