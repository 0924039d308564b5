"""Scores for probabilistic predictions: NLL, accuracy, Brier, ECE, RMSE.

NumPy only (float64). Classification inputs are predicted probabilities:
softmax outputs of shape (N, C), or sigmoid outputs of shape (N,) / (N, K)
treated as K independent binary problems. Regression follows Gal &
Ghahramani (2016) with the model precision `tau`.
"""

import warnings

import numpy as np

from kreg._entropy import bernoulli_entropy  # noqa: F401 - kreg.mc's names
from kreg._entropy import categorical_entropy  # noqa: F401
from kreg._entropy import xlogx  # noqa: F401

_EPS = 1e-12


def _logsumexp(a, axis):
    """log(sum(exp(a), axis)), computed stably (NumPy only)."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    total = np.sum(np.exp(a - top), axis=axis)
    return np.log(total) + np.squeeze(top, axis=axis)


def _labels(y, num_classes):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        return y.argmax(axis=1)
    return y.reshape(-1).astype("int64")


def expected_calibration_error(confidence, correct, bins=15):
    """ECE: sum over equal-width confidence bins of (n_b / N) |acc_b - conf_b|."""
    confidence = np.asarray(confidence, "float64").ravel()
    correct = np.asarray(correct, "float64").ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def reliability_curve(confidence, correct, bins=15):
    """Per-bin (mean confidence, accuracy, count) for a reliability diagram."""
    confidence = np.asarray(confidence, "float64").ravel()
    correct = np.asarray(correct, "float64").ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    conf = np.full(bins, np.nan)
    acc = np.full(bins, np.nan)
    count = np.zeros(bins, "int64")
    for b in range(bins):
        sel = idx == b
        count[b] = sel.sum()
        if count[b]:
            conf[b] = confidence[sel].mean()
            acc[b] = correct[sel].mean()
    return conf, acc, count


def classification_scores(probs, y, *, sigmoid=False, bins=15):
    """NLL, accuracy, Brier score and ECE of predicted probabilities.

    Args:
        probs: (N, C) softmax probabilities, or (N,)/(N, K) sigmoid outputs
            when `sigmoid=True`.
        y: integer labels (N,) or one-hot (N, C); 0/1 targets for sigmoid.
        sigmoid: bool, default False.
        bins: int, default 15. ECE bins.

    Returns:
        dict with "nll", "accuracy", "brier", "ece" (floats).
    """
    p = np.asarray(probs, "float64")
    if sigmoid:
        q = p.reshape(len(p), -1)
        t = np.asarray(y, "float64").reshape(q.shape)
        qc = np.clip(q, _EPS, 1 - _EPS)
        nll = -np.mean(np.sum(t * np.log(qc) + (1 - t) * np.log(1 - qc), axis=1))
        pred = (q > 0.5).astype("float64")
        correct = pred == t
        conf = np.where(pred == 1, q, 1 - q)
        brier = np.mean(np.sum(2 * (q - t) ** 2, axis=1))  # both classes' terms
        return {"nll": float(nll), "accuracy": float(correct.mean()),
                "brier": float(brier),
                "ece": expected_calibration_error(conf, correct, bins)}
    p = p.reshape(len(p), -1)
    labels = _labels(y, p.shape[1])
    true_p = p[np.arange(len(p)), labels]
    onehot = np.eye(p.shape[1])[labels]
    pred = p.argmax(axis=1)
    correct = pred == labels
    return {
        "nll": float(-np.mean(np.log(np.maximum(true_p, _EPS)))),
        "accuracy": float(correct.mean()),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        "ece": expected_calibration_error(p.max(axis=1), correct, bins),
    }


def gaussian_log_likelihood(samples, y, tau):
    """Gal & Ghahramani's MC test log-likelihood per point.

    `logsumexp_t(-tau/2 ||y - yhat_t||^2) - log T - D/2 log(2 pi) + D/2 log tau`
    for samples of shape (T, N, ...) and targets (N, ...); returns (N,).
    A deterministic prediction is the case T = 1.
    """
    s = np.asarray(samples, "float64")
    t_count = s.shape[0]
    s = s.reshape(t_count, s.shape[1], -1)
    y = np.asarray(y, "float64").reshape(s.shape[1], -1)
    d = s.shape[2]
    sq = np.sum((s - y[None]) ** 2, axis=2)
    return (_logsumexp(-0.5 * tau * sq, axis=0) - np.log(t_count)
            - 0.5 * d * np.log(2 * np.pi) + 0.5 * d * np.log(tau))


def regression_scores(samples, y, tau=None):
    """RMSE of the mean prediction, and the NLL when `tau` is given."""
    s = np.asarray(samples, "float64")
    mean = s.mean(axis=0).reshape(s.shape[1], -1)
    y = np.asarray(y, "float64").reshape(mean.shape)
    out = {"rmse": float(np.sqrt(np.mean((mean - y) ** 2))), "nll": None}
    if tau is not None:
        out["nll"] = float(-np.mean(gaussian_log_likelihood(s, y, tau)))
    return out


def model_precision(keep_prob, length_scale, num_train, weight_decay):
    """Gal's model precision `tau = p l^2 / (2 N lambda)`.

    Args:
        keep_prob: the dropout keep probability p.
        length_scale: the prior length-scale l.
        num_train: the number of training points N.
        weight_decay: lambda in the `(1/N) sum E + lambda ||W||^2` objective.

    Returns:
        tau as a float.

    Example:

    >>> from kreg.mc.metrics import model_precision
    >>> model_precision(0.5, 1.0, 100, 0.01)
    0.25
    """
    return float(keep_prob * length_scale ** 2 / (2 * num_train * weight_decay))


# Uncertainty quality (Hendrycks & Gimpel 2017; Geifman & El-Yaniv 2017): how
# well a score separates out-of-distribution inputs, and selective prediction.
def _score_vector(owner, name, value, expected, kinds="fiu"):
    """A validated non-empty 1-D float64 array without NaN (+-inf allowed)."""
    from kreg import _validation as v

    arr = v.numeric_array(owner, name, value, expected, kinds)
    shown = v.shown(arr)
    if arr.ndim != 1 or arr.size == 0:
        why = "got no values" if arr.size == 0 else "got another shape"
        raise v.invalid_value(owner, name, f"{expected} ({why})", shown)
    arr = arr.astype("float64")
    if np.isnan(arr).any():
        raise v.invalid_value(owner, name, f"{expected} (got NaN)", shown)
    return arr


def _tie_groups(values):
    """Order by decreasing value, and the last position of each run of ties."""
    order = np.argsort(-values, kind="stable")
    ordered = values[order]
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    return order, ends


def ood_scores(score_in, score_out):
    """AUROC, AUPR and FPR at 95% TPR of an out-of-distribution score.

    The score should be higher on out-of-distribution (OOD) inputs (predictive
    entropy, mutual information, `1 - max probability`, a regression std);
    OOD is the positive class. Ties are handled as scikit-learn does: AUROC
    counts a tied (in, out) pair as 1/2 (the trapezoidal ROC area); AUPR is
    average precision over the distinct thresholds, `sum_k (R_k - R_{k-1})
    P_k`, tied inputs entering together; FPR at 95% TPR is the fraction of
    in-distribution scores that are >= the largest threshold detecting at
    least 95% of OOD inputs (the ceil(0.95 n_out)-th largest OOD score), so
    in-distribution scores tied with it count as false positives.

    Args:
        score_in: 1-D array of scores of in-distribution inputs (no NaN).
        score_out: 1-D array of scores of OOD inputs (no NaN).

    Returns:
        dict with `"auroc"`, `"aupr"` and `"fpr_at_95_tpr"` (floats in [0, 1]).

    Example:

    >>> from kreg.mc.metrics import ood_scores
    >>> out = ood_scores([0.1, 0.4, 0.4, 0.8], [0.4, 0.8, 0.9])
    >>> {k: round(x, 4) for k, x in out.items()}   # 9.5/12, 13/18, 3/4
    {'auroc': 0.7917, 'aupr': 0.7222, 'fpr_at_95_tpr': 0.75}

    References:
        Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
        Out-of-Distribution Examples in Neural Networks", ICLR 2017,
        section 2 (AUROC, AUPR with OOD positive, FPR at 95% TPR).
    """
    owner = "ood_scores"
    expected = "a non-empty 1-D array of scores without NaN"
    s_in = _score_vector(owner, "score_in", score_in, expected)
    s_out = _score_vector(owner, "score_out", score_out, expected)
    n_in, n_out = len(s_in), len(s_out)
    positive = np.r_[np.zeros(n_in), np.ones(n_out)]
    order, ends = _tie_groups(np.r_[s_in, s_out])
    tp = np.cumsum(positive[order])[ends]
    fp = (ends + 1) - tp
    tpr = np.r_[0.0, tp / n_out]
    fpr = np.r_[0.0, fp / n_in]
    auroc = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)
    aupr = np.sum(np.diff(tpr) * tp / (tp + fp))
    k = (95 * n_out + 99) // 100  # ceil(0.95 n_out) in integers
    threshold = np.sort(s_out)[::-1][k - 1]
    return {"auroc": float(auroc), "aupr": float(aupr),
            "fpr_at_95_tpr": float(np.mean(s_in >= threshold))}


def risk_coverage(confidence, correct):
    """The risk-coverage curve of selective prediction, and its area (AURC).

    Inputs are sorted by decreasing confidence; at coverage k/n the model
    answers the k most confident inputs and the selective risk is their error
    rate. Ties: inputs of equal confidence cannot be told apart by a
    threshold, so within a run of ties the curve takes the expected risk over
    every order of the run, that is the errors of the run accrue at its mean
    rate: `risk_k = (E + (k - a) e / m) / k` for a run of m inputs after the
    first a, with e errors among them and E before it. At the end of a run it
    is the exact risk of that threshold, and the result does not depend on
    the order of tied inputs. AURC is the mean of `risk` over k = 1..n.

    Args:
        confidence: 1-D array of n confidences (higher = more confident; no
            NaN), e.g. the max of the mean probabilities.
        correct: 1-D boolean array of n (True where the prediction is right);
            0/1 integers or floats are accepted.

    Returns:
        `(coverage, risk, aurc)`: float64 arrays (n,) with `coverage[k-1] =
        k / n` and `risk[k-1]` the selective risk there, rows in order of
        decreasing confidence; `aurc` a float.

    Example:

    >>> from kreg.mc.metrics import risk_coverage
    >>> coverage, risk, aurc = risk_coverage(
    ...     [0.9, 0.8, 0.8, 0.7], [True, False, True, True])
    >>> coverage.tolist(), risk.round(4).tolist(), round(aurc, 4)
    ([0.25, 0.5, 0.75, 1.0], [0.0, 0.25, 0.3333, 0.25], 0.2083)

    References:
        Geifman & El-Yaniv, "Selective Classification for Deep Neural
        Networks", NeurIPS 2017, section 2 (risk and coverage); Geifman et
        al., "Bias-Reduced Uncertainty Estimation for Deep Neural
        Classifiers", ICLR 2019 (AURC).
    """
    from kreg import _validation as v

    owner = "risk_coverage"
    conf = _score_vector(owner, "confidence", confidence,
                         "a non-empty 1-D array of confidences without NaN")
    expected = f"a 1-D boolean array of {len(conf)} values, one per confidence"
    ok = _score_vector(owner, "correct", correct, expected, kinds="biuf")
    if len(ok) != len(conf) or np.any((ok != 0) & (ok != 1)):
        why = "got another length" if len(ok) != len(conf) else "got values not 0/1"
        raise v.invalid_value(owner, "correct", f"{expected} ({why})",
                              v.shown(ok))
    n = len(conf)
    order, ends = _tie_groups(conf)
    starts = np.r_[0, ends[:-1] + 1]
    cum = np.cumsum(1.0 - ok[order])[ends]  # errors up to the end of each run
    before = np.r_[0.0, cum[:-1]]
    run = np.repeat(np.arange(len(ends)), ends - starts + 1)
    k = np.arange(1, n + 1)
    errors = before[run] + (k - starts[run]) * (cum - before)[run] / (ends - starts + 1)[run]
    risk = errors / k
    return k / n, risk, float(risk.mean())
def interval_calibration_error(mean, variance, y, levels=None):
    """Calibration error of Gaussian central prediction intervals.

    For each nominal level q in `levels` the interval
    `mean +- z_q * sqrt(variance)` (z_q the standard normal quantile of
    `0.5 + q / 2`) should contain a fraction q of the targets; the error is
    the mean over levels of |observed fraction - q|, the regression analogue
    of the expected calibration error (Kuleshov et al. compare nominal and
    observed frequencies the same way).

    Args:
        mean: array (N,) or (N, 1), the predictive means.
        variance: array of the same size, the predictive variances (> 0;
            for Gal's MC predictions, the sample variance plus `1 / tau`).
        y: array of the same size, the targets.
        levels: None (default: `0.05, 0.10, ..., 0.95`) or a sequence of
            nominal levels in (0, 1).

    Returns:
        `(error, levels, observed)`: a float in [0, 1] and two float64
        arrays of the nominal and observed coverage per level.

    Example:

    >>> import numpy as np
    >>> from kreg.mc.metrics import interval_calibration_error
    >>> y = np.random.default_rng(0).standard_normal(20000)
    >>> err, levels, observed = interval_calibration_error(
    ...     np.zeros_like(y), np.ones_like(y), y)
    >>> err < 0.01, len(levels)
    (True, 19)
    >>> interval_calibration_error([0.0], [1.0], [0.5], levels=[0.5])[0]  # |1 - 0.5|
    0.5

    References:
        Kuleshov, Fenner & Ermon, "Accurate Uncertainties for Deep Learning
        Using Calibrated Regression", ICML 2018.
    """
    from statistics import NormalDist

    from kreg import _validation as v

    owner = "interval_calibration_error"
    if levels is None:
        levels = np.round(np.arange(0.05, 1.0, 0.05), 2)
    levels = np.asarray(levels, "float64").ravel()
    if levels.size == 0 or not np.all((levels > 0) & (levels < 1)):
        raise v.invalid_value(owner, "levels", "nominal levels in (0, 1)",
                              levels.tolist())
    mean = np.asarray(mean, "float64").ravel()
    variance = np.asarray(variance, "float64").ravel()
    y = np.asarray(y, "float64").ravel()
    if not mean.size:
        raise v.invalid_value(owner, "mean", "at least one prediction", mean.tolist())
    if variance.size != mean.size or y.size != mean.size:
        raise v.invalid_value(
            owner, "y", f"mean, variance and y of one size ({mean.size})",
            f"sizes {mean.size}, {variance.size}, {y.size}")
    if not np.all(np.isfinite(variance)) or np.any(variance <= 0):
        raise v.invalid_value(owner, "variance", "finite values > 0",
                              float(variance.min()) if variance.size else None)
    std = np.sqrt(variance)
    normal = NormalDist()
    z = np.array([normal.inv_cdf(0.5 + q / 2) for q in levels])
    inside = np.abs(y - mean)[None, :] <= z[:, None] * std[None, :]
    observed = inside.mean(axis=1)
    return float(np.mean(np.abs(observed - levels))), levels, observed


#: The grid of `select_tau`: 241 values from 1e-2 to 1e3, evenly spaced in log.
TAU_GRID = np.geomspace(1e-2, 1e3, 241)


def select_tau(samples, y, taus=None, *, on_edge="warn"):
    """Gal & Ghahramani's model precision `tau` chosen on validation data.

    The `tau` in `taus` that maximizes the mean MC test log-likelihood
    (`gaussian_log_likelihood`) of the validation targets, as Gal &
    Ghahramani select it on a validation split (the first maximum on a
    tie). Score the test split with the chosen value
    (`regression_scores(samples_test, y_test, tau)` or
    `MCPredictor.evaluate(..., tau=tau)`; `kreg.regression.regression_report`
    in the target's original units).

    A maximum at the smallest or largest value of the grid means the best
    tau may lie outside it (typically: targets far from unit scale, where
    tau is about 1 / the residual variance). That is a `UserWarning`, or a
    `ValueError` with `on_edge="raise"`; standardize the targets or pass a
    wider grid.

    Args:
        samples: array (T, N, ...), predictions on the validation inputs
            (T = 1 for a deterministic model).
        y: array (N, ...), the validation targets.
        taus: None (default: `TAU_GRID`, 1e-2 to 1e3 in 241 log steps) or a
            sequence of candidate values > 0.
        on_edge: `"warn"` (default) or `"raise"`: what a maximum at the
            smallest or largest candidate (of two or more) does.

    Returns:
        The chosen tau as a float.

    Example:

    >>> import numpy as np
    >>> from kreg.mc.metrics import select_tau
    >>> y = np.random.default_rng(0).normal(scale=0.5, size=5000)
    >>> round(select_tau(np.zeros((1, 5000)), y), 1)  # 1 / var(y) = 4
    4.0
    >>> select_tau(np.zeros((1, 5000)), 100 * y, on_edge="raise")  # var(y) = 2500
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for argument `taus` of select_tau: expected a grid whose...
    maximum is inside it (the best tau, 0.01, is the smallest value of the grid ...

    References:
        Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016,
        section 5.3 and appendix (tau found by grid search on validation data).
    """
    from kreg import _validation as v

    owner = "select_tau"
    taus = TAU_GRID if taus is None else np.asarray(taus, "float64").ravel()
    if taus.size == 0 or not np.all(np.isfinite(taus)) or np.any(taus <= 0):
        raise v.invalid_value(owner, "taus", "a non-empty sequence of values > 0",
                              taus.tolist())
    s = np.asarray(samples, "float64")
    if s.ndim < 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise v.invalid_value(owner, "samples", "an array (T, N, ...) with T, N >= 1",
                              f"shape {s.shape}")
    if np.asarray(y).size != s[0].size:
        raise v.invalid_value(owner, "y", f"{s[0].size} targets (one per prediction)",
                              f"shape {np.asarray(y).shape}")
    on_edge = v.check_option(owner, "on_edge", on_edge, ("warn", "raise"))
    ll = [gaussian_log_likelihood(s, y, t).mean() for t in taus]
    best = float(taus[int(np.argmax(ll))])
    if taus.size > 1 and best in (taus.min(), taus.max()):
        side = "smallest" if best == taus.min() else "largest"
        why = (f"the best tau, {best:.4g}, is the {side} value of the grid "
               f"[{taus.min():.4g}, {taus.max():.4g}]: the best tau may lie outside it; "
               "standardize the targets or pass a wider grid")
        if on_edge == "raise":
            raise ValueError(v.error_message(
                owner, "taus", f"a grid whose maximum is inside it ({why})", None,
                received=f"taus={taus.size} values from {taus.min():.4g} to {taus.max():.4g}"))
        warnings.warn(f"select_tau: {why}.", UserWarning, stacklevel=2)
    return best
