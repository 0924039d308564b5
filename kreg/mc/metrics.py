"""Scores for probabilistic predictions: NLL, accuracy, Brier, ECE, RMSE.

NumPy only (float64). Classification inputs are predicted probabilities:
softmax outputs of shape (N, C), or sigmoid outputs of shape (N,) / (N, K)
treated as K independent binary problems. Regression follows Gal &
Ghahramani (2016) with the model precision `tau`.
"""

import numpy as np
from scipy.special import logsumexp

_EPS = 1e-12


def _xlogx(p):
    """p log p with 0 log 0 = 0."""
    return p * np.log(np.where(p > 0, p, 1.0))


def categorical_entropy(p, axis=-1):
    """Entropy (nats) of categorical distributions along `axis`."""
    return -np.sum(_xlogx(np.asarray(p, "float64")), axis=axis)


def bernoulli_entropy(q):
    """Entropy (nats) of Bernoulli(q), elementwise."""
    q = np.asarray(q, "float64")
    return -(_xlogx(q) + _xlogx(1.0 - q))


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
    return (logsumexp(-0.5 * tau * sq, axis=0) - np.log(t_count)
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


def select_tau(samples, y, taus=None):
    """Gal & Ghahramani's model precision `tau` chosen on validation data.

    The `tau` in `taus` that maximizes the mean MC test log-likelihood
    (`gaussian_log_likelihood`) of the validation targets, as Gal &
    Ghahramani select it on a validation split (the first maximum on a
    tie). Score the test split with the chosen value
    (`regression_scores(samples_test, y_test, tau)` or
    `MCPredictor.evaluate(..., tau=tau)`).

    Args:
        samples: array (T, N, ...), predictions on the validation inputs
            (T = 1 for a deterministic model).
        y: array (N, ...), the validation targets.
        taus: None (default: `TAU_GRID`, 1e-2 to 1e3 in 241 log steps) or a
            sequence of candidate values > 0.

    Returns:
        The chosen tau as a float.

    Example:

    >>> import numpy as np
    >>> from kreg.mc.metrics import select_tau
    >>> y = np.random.default_rng(0).normal(scale=0.5, size=5000)
    >>> round(select_tau(np.zeros((1, 5000)), y), 1)  # 1 / var(y) = 4
    4.0

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
    ll = [gaussian_log_likelihood(s, y, t).mean() for t in taus]
    return float(taus[int(np.argmax(ll))])
