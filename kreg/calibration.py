"""Temperature scaling of predicted probabilities (Guo et al., ICML 2017).

Guo et al. divide a network's logits `z` by one scalar `T > 0` fitted on
held-out data: `q = softmax(z / T)`. `T > 1` softens overconfident
predictions, `T < 1` sharpens underconfident ones, and the argmax never
changes. kreg works on probabilities, so the "logits" are `z = log p`:
`softmax(log(p) / T)` is `p ** (1/T)` renormalized, and for a binary
(sigmoid) probability it is `sigmoid(logit(p) / T)`, the same transformation
on the two classes `[1 - p, p]`. A zero probability stays exactly zero.

Where the temperature enters for a Monte Carlo predictor: on the MC mean.
With `p_t` the probabilities of sample t and `pbar = (1/S) sum_t p_t` their
mean over S samples, the calibrated prediction is `q = apply_temperature(pbar,
T)`, and T is fitted on that same quantity (`fit_temperature(pbar_val,
y_val)`), so the NLL minimized is the NLL of the reported mean. (Tempering
every sample's logits and averaging, `mean_t softmax(log p_t / T)`, is another
predictor; `log pbar` is the natural logit of the mixture, and temperature
scaling on it is what the held-out fit optimizes.)

The uncertainty split stays consistent with `q` as follows (computed by
`tempered_uncertainty`). Read the S samples as a joint distribution of (sample
t, class c), `P(t, c) = p_t[c] / S`, whose class marginal is `pbar`. Tempering
tilts it by a function of the class only, `w[c] = q[c] / pbar[c]`:
`P_T(t, c) = p_t[c] w[c] / S`. This is the joint closest to the original (in
KL) among those whose class marginal is `q`, and at T = 1 it is the original.
Under it, sample t has weight and class distribution

    u_t[c] = p_t[c] * q[c] / pbar[c]   (0 where pbar[c] = 0)
    a_t = sum_c u_t[c] / S             (sum_t a_t = 1)
    q_t = u_t / sum_c u_t[c]           (sum_t a_t q_t = q exactly)

and the split is the usual one under `P_T`:

    entropy            = H[q]                              (total)
    expected_entropy   = sum_t a_t H[q_t]                  (aleatoric)
                       = (1/S) sum_t [r_t log r_t - sum_c u_t[c] log u_t[c]],
                         with r_t = sum_c u_t[c]
    mutual_information = entropy - expected_entropy       (epistemic, >= 0)

`mutual_information` is the mutual information between the sample and the
class under `P_T`, so it is >= 0 by Jensen's inequality for every T, and at
T = 1 every number is `kreg.MCPrediction`'s. (The naive split, H[q] minus
the mean entropy of separately tempered samples, can be negative for T < 1.)
The spread to report with `q` is `variance = sum_t a_t (q_t - q)^2` (`std`
its square root; `kreg.MCPrediction.variance` at T = 1). The variation ratio
is a vote of the raw samples and does not change with T.
Sigmoid outputs are K independent binary problems, each tempered on its two
classes; their entropies are summed, as in `kreg.MCPrediction`.

`apply_temperature`, `fit_temperature` and `tempered_uncertainty` take NumPy
arrays (or anything `np.asarray` accepts), check them, and compute in float64.
`tempered_uncertainty_ops` is the same computation in `keras.ops` on backend
tensors, for a traced graph such as a SavedModel signature; both run one
definition (`_tempered_split`).

References:
    Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
    ICML 2017, section 4.2 (temperature scaling). Depeweg et al., ICML 2018
    (the entropy decomposition).
"""

import math
import numbers

import keras
import numpy as np

from kreg import _validation as v
from kreg._entropy import categorical_entropy
from kreg._entropy import xlogx

__all__ = [
    "apply_temperature",
    "fit_temperature",
    "tempered_uncertainty",
    "tempered_uncertainty_ops",
]

_PROB_TOL = 1e-3  # slack for [0, 1] and row sums, as in kreg.acquisition
_NLL_FLOOR = 1e-12  # kreg's NLL floors the true-class probability (mc.metrics)
_GRID_POINTS = 81  # coarse scan of log T before the golden-section search
_LOG_T_TOL = 1e-9
_EXPECTED_PROBS = (
    "probabilities of shape (N, C) (softmax rows summing to 1, C >= 2) or "
    "(N,) / (N, 1) (sigmoid probabilities of the positive class)"
)


def _check_probs(owner, probs, *, name="probs", expected=_EXPECTED_PROBS,
                 shown=None):
    """Validated probabilities as float64 (N, C); C = 1 means sigmoid.

    `shown` is the value an error message shows (default: `probs`).
    """
    p = v.numeric_array(owner, name, probs, expected, "fiu", "float64")
    shown = v.shown(p) if shown is None else shown

    def bad(why):
        return v.invalid_value(owner, name, f"{expected} ({why})", shown)

    if p.ndim not in (1, 2):
        raise bad("got another shape")
    if p.shape[0] == 0:
        raise bad("got 0 rows")
    p = p.reshape(len(p), -1)
    if p.shape[1] == 0:
        raise bad("got 0 classes")
    if not np.all(np.isfinite(p)):
        raise bad("got NaN or inf")
    if p.min() < -_PROB_TOL or p.max() > 1 + _PROB_TOL:
        raise bad("got values outside [0, 1]: these look like logits; pass "
                  "softmax or sigmoid outputs, e.g. keras.ops.softmax(logits)")
    p = np.clip(p, 0.0, 1.0)
    if p.shape[1] == 1:
        return p
    total = p.sum(axis=1, keepdims=True)
    if np.max(np.abs(total - 1.0)) > _PROB_TOL:
        raise bad("got rows that do not sum to 1; multi-label sigmoid outputs "
                  "are not supported")
    return p / total


def _check_temperature(owner, temperature):
    return v.check_float(owner, "temperature", temperature, low=0.0, low_open=True)


def _two_class(p, xp):
    """Sigmoid probabilities (..., 1) or (...,) -> (..., 2): [1 - p, p]."""
    return xp.stack([1.0 - p, p], axis=-1)


def _temper_rows(p, inv_t, xp):
    """softmax(log(p) / T) along the last axis; zeros stay exactly zero."""
    z = xp.log(p) * inv_t  # -inf where p == 0; every row has a positive entry
    z = z - xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z)
    return e / xp.sum(e, axis=-1, keepdims=True)


def _tempered_split(samples, inv_t, sigmoid, xp):
    """The tempered mean and entropy split of samples (S, N, K) (see the module)."""
    s = _two_class(samples, xp) if sigmoid else samples  # (S, N, [K,] C)
    pbar = xp.mean(s, axis=0)
    q = _temper_rows(pbar, inv_t, xp)
    positive = pbar > 0
    ratio = xp.where(positive, q / xp.where(positive, pbar, xp.ones_like(pbar)),
                     xp.zeros_like(pbar))
    u = s * xp.expand_dims(ratio, 0)
    r = xp.sum(u, axis=-1, keepdims=True)
    entropy = categorical_entropy(q, xp=xp)
    expected = xp.mean(xp.sum(xlogx(r, xp), axis=-1) - xp.sum(xlogx(u, xp), axis=-1),
                       axis=0)
    # sum_t a_t (q_t - q)^2 = (1/S) sum_t (u_t - r_t q)^2 / r_t (a_t = 0 if r_t = 0)
    spread = xp.square(u - r * xp.expand_dims(q, 0))
    variance = xp.mean(xp.where(r > 0, spread / xp.where(r > 0, r, xp.ones_like(r)),
                                xp.zeros_like(spread)), axis=0)
    mean = q
    if sigmoid:  # K independent binary problems: entropies add up
        mean, variance = q[..., 1], variance[..., 1]
        entropy = xp.sum(entropy, axis=-1)
        expected = xp.sum(expected, axis=-1)
    return {
        "mean": mean,
        "variance": variance,
        "entropy": entropy,
        "expected_entropy": expected,
        # Jensen: >= 0; clip float round-off below zero (as kreg.MCPrediction).
        "mutual_information": xp.maximum(entropy - expected, xp.zeros_like(entropy)),
    }


def apply_temperature(probs, temperature):
    """Temperature-scale predicted probabilities: `softmax(log(probs) / T)`.

    For binary probabilities of shape (N,) or (N, 1) this is
    `sigmoid(logit(probs) / T)`. The argmax (for binary: which side of 0.5)
    never changes, and T = 1 is the identity.

    Args:
        probs: probabilities of shape (N, C) (softmax rows, C >= 2) or (N,) /
            (N, 1) (sigmoid probabilities of the positive class). For a Monte
            Carlo predictor, the MC mean (see the module docstring).
        temperature: float > 0. T > 1 softens, T < 1 sharpens.

    Returns:
        float64 array of the shape of `probs`.

    Example:

    >>> import numpy as np
    >>> from kreg import calibration
    >>> p = np.array([[0.8, 0.2], [0.5, 0.5]])
    >>> calibration.apply_temperature(p, 2.0).round(4).tolist()  # 0.8**0.5 ...
    [[0.6667, 0.3333], [0.5, 0.5]]
    >>> calibration.apply_temperature([0.9, 0.1], 2.0).round(4).tolist()  # sigmoid
    [0.75, 0.25]

    References:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017,
        section 4.2.
    """
    owner = "apply_temperature"
    p = _check_probs(owner, probs)
    inv_t = 1.0 / _check_temperature(owner, temperature)
    shape = np.shape(probs)
    with np.errstate(divide="ignore"):
        if p.shape[1] == 1:
            return _temper_rows(_two_class(p[:, 0], np), inv_t, np)[:, 1].reshape(shape)
        return _temper_rows(p, inv_t, np)


def _check_labels(owner, y, n, c):
    """Integer labels (N,) in [0, C) from labels (N,) / (N, 1) or one-hot (N, C)."""
    classes = max(c, 2)
    expected = (f"{n} integer labels in [0, {classes}) of shape ({n},) or ({n}, 1)"
                + (f", or one-hot rows of shape ({n}, {c})" if c > 1 else ""))
    arr = v.numeric_array(owner, "y", y, expected, "biuf", "float64")
    if c > 1 and arr.shape == (n, c):
        if np.any((arr != 0) & (arr != 1)) or np.any(arr.sum(axis=1) != 1):
            raise v.invalid_value(owner, "y", expected + " (got rows that are not "
                                  "one-hot)", v.shown(arr))
        return arr.argmax(axis=1)
    if arr.shape not in ((n,), (n, 1)):
        raise v.invalid_value(owner, "y", expected + " (got another shape)",
                              v.shown(arr))
    arr = arr.reshape(n)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise v.invalid_value(owner, "y", expected + " (got non-integer values)",
                              v.shown(arr))
    if arr.min() < 0 or arr.max() >= classes:
        raise v.invalid_value(
            owner, "y", expected + f" (got labels outside [0, {classes}))",
            v.shown(arr))
    return arr.astype("int64")


def _check_bounds(owner, bounds):
    expected = "a pair (low, high) of floats with 0 < low < high"
    if (not isinstance(bounds, (tuple, list)) or len(bounds) != 2
            or not all(isinstance(b, numbers.Real) and not isinstance(b, bool)
                       for b in bounds)):
        raise v.invalid_type(owner, "bounds", expected, bounds)
    low, high = (float(b) for b in bounds)
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise v.invalid_value(owner, "bounds", expected, bounds)
    return low, high


def _nll_curve(log_p, labels):
    """NLL(log T) of softmax(log_p / T): kreg's NLL (true-class floor 1e-12)."""
    rows = np.arange(len(labels))
    true = log_p[rows, labels]
    floor = -math.log(_NLL_FLOOR)

    def nll(log_t):
        z = log_p * math.exp(-log_t)
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        # A true class of probability 0 (true = -inf) stays 0: the floor's NLL.
        return float(np.mean(np.minimum(lse - true * math.exp(-log_t), floor)))

    return nll


def fit_temperature(probs, y, *, bounds=(0.01, 100.0)):
    """The temperature T > 0 that minimizes the NLL of `apply_temperature(probs, T)`.

    Fit on held-out data (a validation split), never on the training data.
    The NLL is kreg's (`kreg.mc.metrics.classification_scores`: the mean of
    `-log q[y]`, the true-class probability floored at 1e-12). The search runs
    over log T in `bounds`: a scan of 81 points, then a golden-section search
    around the best one to 1e-9 in log T. The NLL of temperature scaling is
    convex in 1/T (a log-sum-exp of linear functions minus a linear one), so
    its minimum is unique; the floor only flattens rows whose true class gets
    a probability below 1e-12. NumPy only (float64).

    Args:
        probs: held-out probabilities, (N, C) softmax or (N,) / (N, 1) sigmoid,
            as in `apply_temperature`. For a Monte Carlo predictor, the MC mean.
        y: held-out labels: integers (N,) or (N, 1) in [0, C) (0/1 for
            sigmoid), or one-hot (N, C).
        bounds: pair of floats, default (0.01, 100.0). The search interval for
            T. A minimum at an end (the NLL still falling there, e.g. when every
            held-out prediction is right) is an error, not a clipped answer.

    Returns:
        float, the fitted temperature.

    Example:

    >>> import numpy as np
    >>> from kreg import calibration
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(2000, 3)) * 2
    >>> y = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in logits])
    >>> over = np.exp(5 * logits) / np.exp(5 * logits).sum(1, keepdims=True)
    >>> t = calibration.fit_temperature(over, y)   # logits scaled by 5
    >>> bool(4.0 < t < 6.0)
    True

    References:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017,
        section 4.2 (T optimized with respect to NLL on the validation set).
    """
    owner = "fit_temperature"
    p = _check_probs(owner, probs)
    labels = _check_labels(owner, y, p.shape[0], p.shape[1])
    low, high = _check_bounds(owner, bounds)
    if p.shape[1] == 1:
        p = _two_class(p[:, 0], np)
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    nll = _nll_curve(log_p, labels)
    grid = np.linspace(math.log(low), math.log(high), _GRID_POINTS)
    values = np.array([nll(g) for g in grid])
    if values.max() - values.min() <= 1e-12 * max(1.0, abs(values.min())):
        raise v.invalid_value(
            owner, "probs",
            "probabilities whose held-out NLL depends on the temperature (got "
            "an NLL that is the same for every T: one-hot or uniform rows?)",
            v.shown(np.asarray(probs)))
    best = int(np.argmin(values))
    if best in (0, _GRID_POINTS - 1):
        end = "lower" if best == 0 else "upper"
        raise v.invalid_value(
            owner, "bounds",
            f"an interval (low, high) that contains the minimum of the held-out "
            f"NLL (it still falls at T={math.exp(grid[best]):.4g}, the {end} end; "
            f"are all held-out predictions right, or the labels wrong?)",
            (low, high))
    return math.exp(_golden_section(nll, grid[best - 1], grid[best + 1]))


def _golden_section(f, a, b):
    """The minimizer of a unimodal f on [a, b] (to `_LOG_T_TOL`)."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > _LOG_T_TOL:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def _check_activation(owner, activation):
    return v.check_option(owner, "activation", activation, ("softmax", "sigmoid"))


def tempered_uncertainty(samples, temperature, *, activation="softmax"):
    """The tempered MC mean and its consistent entropy split (NumPy, float64).

    `mean` is `apply_temperature` of the mean over samples; the split is the
    one derived in the module docstring (`entropy = H[mean]`,
    `mutual_information = entropy - expected_entropy >= 0`). At T = 1 every
    value is `kreg.MCPrediction`'s.

    Args:
        samples: per-sample probabilities of shape (S, N, C) (softmax) or
            (S, N) / (S, N, K) (sigmoid: K independent binary outputs).
        temperature: float > 0, e.g. from `fit_temperature` on the MC mean of
            a validation split.
        activation: `"softmax"` (default) or `"sigmoid"`.

    Returns:
        dict of float64 arrays: `mean` and `variance` (the shape of
        `samples[0]`), `entropy`, `expected_entropy` and `mutual_information`
        (N,), in nats.

    Example:

    >>> import numpy as np
    >>> from kreg import calibration
    >>> s = np.array([[[0.9, 0.1]], [[0.5, 0.5]]])   # S=2 samples, N=1 input
    >>> out = calibration.tempered_uncertainty(s, 0.5)
    >>> out["mean"].round(4).tolist()                 # 0.7**2 : 0.3**2
    [[0.8448, 0.1552]]
    >>> bool(np.isclose(out["entropy"][0],
    ...      out["expected_entropy"][0] + out["mutual_information"][0]))
    True
    """
    owner = "tempered_uncertainty"
    activation = _check_activation(owner, activation)
    expected = ("per-sample probabilities of shape (S, N, C) (softmax) or (S, N) / "
                "(S, N, K) (sigmoid)")
    s = v.numeric_array(owner, "samples", samples, expected, "fiu", "float64")
    sigmoid = activation == "sigmoid"
    if (s.ndim < 2 or 0 in s.shape
            or (not sigmoid and (s.ndim != 3 or s.shape[2] < 2))):
        raise v.invalid_value(owner, "samples", expected + " (got another shape)",
                              v.shown(s))
    t, n = s.shape[:2]
    s3 = s.reshape(t, n, -1)
    # The checks of `probs`, on every (sample, input) row (sigmoid: every entry).
    rows = s3.reshape(-1) if sigmoid else s3.reshape(t * n, -1)
    _check_probs(owner, rows, name="samples", expected=expected, shown=v.shown(s))
    inv_t = 1.0 / _check_temperature(owner, temperature)
    with np.errstate(divide="ignore"):
        out = _tempered_split(np.clip(s3, 0.0, 1.0), inv_t, sigmoid, np)
    out["mean"] = out["mean"].reshape(s.shape[1:])
    out["variance"] = out["variance"].reshape(s.shape[1:])
    return out


def tempered_uncertainty_ops(samples, temperature, *, activation="softmax"):
    """`tempered_uncertainty` in `keras.ops`, for a traced graph.

    The same definition as `tempered_uncertainty`, on backend tensors (inside
    a `tf.function` or a SavedModel signature, say). The values are not
    checked (a graph cannot raise on data); the temperature and activation
    are. Pass float64 for the precision of the NumPy path.

    Args:
        samples: tensor (S, N, C) (softmax) or (S, N, K) (sigmoid) of
            probabilities.
        temperature: float > 0 (a Python number; it becomes a constant), or
            a scalar tensor (a value of the graph, not checked: one traced
            function serves every temperature).
        activation: `"softmax"` (default) or `"sigmoid"`.

    Returns:
        dict of tensors: `mean` and `variance` (N, C) or (N, K), `entropy`,
        `expected_entropy` and `mutual_information` (N,).

    Example:

    >>> import keras
    >>> from kreg import calibration
    >>> s = keras.ops.convert_to_tensor([[[0.9, 0.1]], [[0.5, 0.5]]])
    >>> out = calibration.tempered_uncertainty_ops(s, 0.5)
    >>> keras.ops.convert_to_numpy(out["mean"]).astype("float64").round(4).tolist()
    [[0.8448, 0.1552]]
    """
    owner = "tempered_uncertainty_ops"
    activation = _check_activation(owner, activation)
    s = keras.ops.convert_to_tensor(samples)
    if keras.ops.is_tensor(temperature):
        inv_t = 1.0 / keras.ops.cast(temperature, s.dtype)
    else:
        inv_t = 1.0 / _check_temperature(owner, temperature)
    if len(s.shape) != 3:
        raise v.invalid_value(owner, "samples",
                              "a tensor of shape (S, N, C) or (S, N, K)", tuple(s.shape))
    return _tempered_split(s, inv_t, activation == "sigmoid", keras.ops)
