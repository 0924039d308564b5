"""Monte Carlo regression in the target's original units.

A regression network is usually trained on standardized targets,
`z = (y - loc) / scale` (scikit-learn's `StandardScaler`: `loc = mean_`,
`scale = scale_`), and Gal & Ghahramani's model precision tau is chosen on
validation data in those units (`select_tau`). The numbers to report are in
the target's own units: predictions `loc + scale * z`, the RMSE times
`scale`, tau divided by `scale ** 2`, and the log-likelihood minus
`sum_d log scale_d` (the Jacobian of the change of units). This module does
those conversions once, from the predictor's samples.

`select_tau` (from `kreg.mc.metrics`) warns, or with `on_edge="raise"`
refuses, when its best tau is at the edge of its grid: the sign of targets
far from unit scale.

References:
    Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016,
    section 5 (the predictive variance `1 / tau + sample variance` and the MC
    test log-likelihood).
"""

import numpy as np

from kreg import _validation as v
from kreg.mc.metrics import gaussian_log_likelihood
from kreg.mc.metrics import interval_calibration_error
from kreg.mc.metrics import select_tau

__all__ = ["regression_report", "select_tau", "to_original_units"]


def _units(owner, loc, scale, d):
    """`loc` and `scale` as float64 arrays of shape (D,), checked."""
    out = []
    for name, value, positive in (("loc", loc, False), ("scale", scale, True)):
        arr = v.numeric_array(owner, name, value, "a finite number or one per output",
                              kinds="iuf", dtype="float64").ravel()
        if arr.size not in (1, d):
            raise v.invalid_value(owner, name, f"a number or {d} numbers (one per output)",
                                  arr.tolist())
        if not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
            expected = "finite values > 0" if positive else "finite values"
            raise v.invalid_value(owner, name, expected, arr.tolist())
        out.append(np.broadcast_to(arr, (d,)))
    return out


def _samples(owner, samples):
    s = v.numeric_array(owner, "samples", samples, "an array (T, N, ...) of predictions",
                        kinds="biuf", dtype="float64")
    if s.ndim < 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(v.error_message(owner, "samples", "an array (T, N, ...) with T, N >= 1",
                                         None, received=f"samples.shape={s.shape}"))
    return s.reshape(s.shape[0], s.shape[1], -1)


def to_original_units(samples, *, loc=0.0, scale=1.0):
    """Predictions in standardized units back in the target's units.

    Args:
        samples: array (T, N) or (T, N, D) of predictions of `(y - loc) / scale`
            (or any array whose last axis is the outputs).
        loc: float or array (D,), default 0.0. The targets' shift (the
            scaler's `mean_`).
        scale: float > 0 or array (D,), default 1.0. The targets' scale (the
            scaler's `scale_`).

    Returns:
        float64 array of the shape of `samples`: `loc + scale * samples`.

    Example:

    >>> import numpy as np
    >>> from kreg.regression import to_original_units
    >>> to_original_units(np.array([[0.0, 1.0], [-1.0, 2.0]]), loc=10.0, scale=3.0)
    array([[10., 13.],
           [ 7., 16.]])
    """
    owner = "to_original_units"
    s = v.numeric_array(owner, "samples", samples, "an array of predictions",
                        kinds="biuf", dtype="float64")
    d = s.shape[-1] if s.ndim >= 3 else 1
    loc, scale = _units(owner, loc, scale, d)
    if s.ndim >= 3:
        return loc + scale * s
    return loc[0] + scale[0] * s


def regression_report(samples, y, tau, *, loc=0.0, scale=1.0, levels=None):
    """MC regression scores and uncertainty in the target's original units.

    Args:
        samples: array (T, N) or (T, N, D), the MC samples of a network
            trained on standardized targets `(y - loc) / scale`
            (`MCPredictor(...).predict(x, return_samples=True).samples`;
            T = 1 for a deterministic prediction).
        y: array (N,) or (N, D), the targets in their original units.
        tau: float > 0, Gal's model precision in the standardized units
            (`select_tau` on standardized validation targets).
        loc: float or array (D,), default 0.0. The scaler's `mean_`.
        scale: float > 0 or array (D,), default 1.0. The scaler's `scale_`.
        levels: None or a sequence of nominal levels in (0, 1), default None
            (`interval_calibration_error`'s 0.05, ..., 0.95).

    Returns:
        A dict, everything in the target's units: `"rmse"` (of the MC mean),
        `"nll"` (Gal's MC negative log-likelihood per point), `"tau"` (a
        float; an array (D,) when the outputs have different scales),
        `"mean"`, `"std"` (the spread of the samples) and `"predictive_std"`
        (`sqrt(variance + 1 / tau)`), each (N, D), and `"interval_error"`
        (`interval_calibration_error` of the Gaussian predictive intervals).

    Example:

    >>> import numpy as np
    >>> from kreg.regression import regression_report
    >>> rng = np.random.default_rng(0)
    >>> y = 50.0 + 20.0 * rng.standard_normal(4000)    # original units
    >>> z = (y - 50.0) / 20.0
    >>> samples = z[None] + 0.1 * rng.standard_normal((30, 4000))  # a perfect fit, noisy
    >>> r = regression_report(samples, y, tau=100.0, loc=50.0, scale=20.0)
    >>> round(r["tau"], 3), round(float(r["predictive_std"].mean()), 1)  # 100 / 20**2
    (0.25, 2.8)
    >>> round(r["rmse"], 2)  # about 20 * 0.1 / sqrt(30)
    0.37
    """
    owner = "regression_report"
    s = _samples(owner, samples)
    t, n, d = s.shape
    tau = v.check_float(owner, "tau", tau, low=0.0, low_open=True)
    yy = v.numeric_array(owner, "y", y, "targets, one per prediction", kinds="biuf",
                         dtype="float64")
    if yy.size != n * d:
        raise ValueError(v.error_message(owner, "y", f"{n * d} targets (one per prediction)",
                                         None, received=f"y.shape={yy.shape}"))
    yy = yy.reshape(n, d)
    loc, scale = _units(owner, loc, scale, d)
    z = (yy - loc) / scale
    ll = gaussian_log_likelihood(s, z, tau) - np.sum(np.log(scale))
    mean = loc + scale * s.mean(axis=0)
    variance = s.var(axis=0)
    predictive_std = scale * np.sqrt(variance + 1.0 / tau)
    taus = tau / scale ** 2
    interval_error = interval_calibration_error(
        mean.ravel(), (predictive_std ** 2).ravel(), yy.ravel(), levels=levels)[0]
    return {
        "rmse": float(np.sqrt(np.mean((mean - yy) ** 2))),
        "nll": float(-np.mean(ll)),
        "tau": float(taus[0]) if np.all(taus == taus[0]) else taus,
        "mean": mean,
        "std": scale * np.sqrt(variance),
        "predictive_std": predictive_std,
        "interval_error": interval_error,
    }
