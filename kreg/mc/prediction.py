"""The result of Monte Carlo prediction: moments and the uncertainty split."""

import numpy as np

from kreg import _validation as v
from kreg import calibration
from kreg.mc._heads import probability_tolerances
from kreg.mc._inputs import Shown as _Shown
from kreg.mc._inputs import check_indices
from kreg.mc._inputs import numeric_array
from kreg.mc.metrics import bernoulli_entropy
from kreg.mc.metrics import categorical_entropy

TASKS = ("classification", "regression")


class MCPrediction:
    """Summary of T stochastic forward passes (Gal & Ghahramani 2016).

    The sample axis is axis 0: `samples[t, i]` is the output of sample t for
    input i. In independent mode (`joint=False`) every (sample, input) pair
    sees its own masks, so only per-input statistics are meaningful. In joint
    mode (`joint=True`) sample t is one network drawn from the approximate
    posterior and applied to every input, so `samples[t]` is a function of the
    inputs and `covariance` across inputs is defined.

    Args:
        samples: array (T, N, ...) of per-sample outputs.
        task: `"classification"` (softmax or sigmoid probabilities) or
            `"regression"`.
        activation: `"softmax"` (default) or `"sigmoid"`; how to read
            classification outputs.
        joint: bool, default False. Whether the samples are joint.
        keep_samples: bool, default True. Keep `samples` on the object.
        temperature: float > 0 or None, default None. Temperature scaling
            (Guo et al. 2017) of a classification output, applied to the MC
            mean: `mean = kreg.calibration.apply_temperature(raw mean, T)`,
            i.e. `softmax(log(pbar) / T)` (for sigmoid outputs
            `sigmoid(logit(pbar) / T)`), and `variance`, `std`, `entropy`,
            `expected_entropy` and `mutual_information` are recomputed by
            `kreg.calibration.tempered_uncertainty` so that they stay
            consistent with that mean (`mutual_information >= 0`, T = 1
            gives the untempered numbers). `samples` and `variation_ratio`
            (a vote of the samples) are the raw, untempered ones. Softmax
            outputs must have samples of shape (T, N, C). An error for
            `task="regression"`.

    Attributes:
        mean: (N, ...) the predictive mean `(1/T) sum_t yhat_t`.
        variance: (N, ...) the 1/T sample variance over samples (add `1/tau`
            for Gal's regression predictive variance: `predictive_variance`).
        std: sqrt of `variance`.
        entropy: (N,) total uncertainty H[mean p] (classification, else None).
        expected_entropy: (N,) aleatoric part (1/T) sum_t H[p_t].
        mutual_information: (N,) epistemic part (BALD) = entropy -
            expected_entropy, >= 0.
        variation_ratio: (N,) 1 - (count of the modal class) / T.
        samples: the (T, N, ...) samples, or None.
        num_samples: T.
        joint: whether `samples[t]` is one network applied to every input.
        temperature: the temperature applied to the mean, or None.

    Example:

    >>> import numpy as np
    >>> from kreg import MCPrediction
    >>> p = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])   # T=2 samples, N=1 input
    >>> pred = MCPrediction(p, task="classification")
    >>> pred.mean.tolist()
    [[0.5, 0.5]]
    >>> round(float(pred.mutual_information[0]), 4)
    0.3681

    References:
        Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016,
        section 3 and appendix; Houlsby et al. 2011 (BALD); Depeweg et al.
        2018 (the entropy decomposition).
    """

    def __init__(self, samples, task="regression", *, activation="softmax",
                 joint=False, keep_samples=True, temperature=None):
        owner = "MCPrediction"
        self._settings(task, activation, joint)
        keep_samples = v.check_bool(owner, "keep_samples", keep_samples)
        samples = _check_samples(samples, self.task, self.activation)
        self._set_temperature(temperature, samples.shape)
        self.num_samples = int(samples.shape[0])
        s64 = samples.astype("float64")
        self.mean = s64.mean(axis=0)
        self.variance = s64.var(axis=0)
        self.std = np.sqrt(self.variance)
        self.samples = samples if keep_samples else None
        self.entropy = self.expected_entropy = None
        self.mutual_information = self.variation_ratio = None
        if self.task == "classification":
            self._uncertainty(s64)
        if self.temperature is not None:
            self._temper(s64)

    def _settings(self, task, activation, joint):
        owner = "MCPrediction"
        self.task = v.check_option(owner, "task", task, TASKS)
        self.activation = v.check_option(owner, "activation", activation,
                                         ("softmax", "sigmoid"))
        self.joint = v.check_bool(owner, "joint", joint)

    def _set_temperature(self, temperature, shape):
        """Validate the temperature for samples of `shape` (T, N, ...)."""
        owner = "MCPrediction"
        self.temperature = check_temperature(owner, temperature, self.task)
        if (self.temperature is not None and self.activation == "softmax"
                and len(shape) != 3):
            raise v.invalid_value(
                owner, "temperature", "None for softmax samples of shape "
                f"{tuple(shape)} (temperature scaling takes (T, N, C))",
                self.temperature)

    @classmethod
    def from_statistics(cls, statistics, task="regression", *, num_samples,
                        activation="softmax", joint=False, samples=None,
                        temperature=None, dtype=None):
        """An `MCPrediction` from statistics already computed (on a device).

        `kreg.MCPredictor` reduces the samples where it draws them
        (`kreg.mc._stats`, float32) and builds its predictions here, from the
        finalized statistics copied to the host; the attributes have the
        meaning (and the float64 dtype) of the constructor's, equal to float32
        round-off. The data checks of the constructor run on the statistics'
        `nan`, `low`, `high` and `sum_error` entries.

        Args:
            statistics: dict of arrays: `mean` and `variance` (N, ...); for
                classification `entropy`, `expected_entropy`,
                `mutual_information` and `variation_ratio` (N,); the checks
                `nan` (count of NaN samples), `low`, `high` (extremes of the
                other values) and `sum_error` (largest `|sum - 1|` of a
                softmax row). With a `temperature`, `mean`, `variance` and
                the entropy split are the tempered ones
                (`kreg.calibration.tempered_uncertainty`).
            task, activation, joint, temperature: as in the constructor.
            num_samples: int >= 1. T.
            samples: None (default) or the (T, N, ...) samples to keep.
            dtype: None (default) or the dtype the samples were drawn in; a
                float16 or bfloat16 softmax may stray further from summing
                to 1 (`kreg.mc._heads.probability_tolerances`).

        Returns:
            An `MCPrediction`.

        Example:

        >>> import numpy as np
        >>> from kreg import MCPrediction
        >>> from kreg.mc import _stats
        >>> p = np.array([[[0.9, 0.1]], [[0.1, 0.9]]], "float32")
        >>> stats = {k: np.asarray(t) for k, t in
        ...          _stats.statistics(p, "softmax").items()}
        >>> pred = MCPrediction.from_statistics(stats, "classification",
        ...                                     num_samples=2)
        >>> round(float(pred.mutual_information[0]), 4)
        0.3681
        """
        owner = "MCPrediction.from_statistics"
        self = cls.__new__(cls)
        self._settings(task, activation, joint)
        self.num_samples = v.check_int(owner, "num_samples", num_samples, low=1)
        stats = {k: np.asarray(a) for k, a in statistics.items()}
        mean = stats["mean"]
        shape = (self.num_samples,) + mean.shape
        check_values(mean.ndim >= 1 and mean.shape[0] >= 1, stats, shape,
                     self.task, self.activation, dtype=dtype)
        self._set_temperature(temperature, shape)
        self.mean = mean.astype("float64")
        self.variance = stats["variance"].astype("float64")
        self.std = np.sqrt(self.variance)
        self.samples = samples
        self.entropy = self.expected_entropy = None
        self.mutual_information = self.variation_ratio = None
        if self.task == "classification":
            for key in ("entropy", "expected_entropy", "mutual_information",
                        "variation_ratio"):
                setattr(self, key, stats[key].astype("float64"))
        return self

    def _temper(self, s):
        """Tempered mean and the entropy split consistent with it."""
        out = calibration.tempered_uncertainty(s, self.temperature,
                                               activation=self.activation)
        self.mean = out["mean"].reshape(self.mean.shape)
        self.variance = out["variance"].reshape(self.variance.shape)
        self.std = np.sqrt(self.variance)
        self.entropy = out["entropy"]
        self.expected_entropy = out["expected_entropy"]
        self.mutual_information = out["mutual_information"]

    def _uncertainty(self, s):
        t, n = s.shape[:2]
        s = s.reshape(t, n, -1)
        mean = s.mean(axis=0)
        if self.activation == "softmax":
            self.entropy = categorical_entropy(mean)
            self.expected_entropy = categorical_entropy(s).mean(axis=0)
            labels = s.argmax(axis=2)  # (T, N)
            c = s.shape[2]
            flat = (np.arange(n)[None, :] * c + labels).ravel()
            counts = np.bincount(flat, minlength=n * c).reshape(n, c)
            self.variation_ratio = 1.0 - counts.max(axis=1) / t
        else:
            self.entropy = bernoulli_entropy(mean).sum(axis=1)
            self.expected_entropy = bernoulli_entropy(s).sum(axis=2).mean(axis=0)
            ones = (s > 0.5).sum(axis=0)  # (N, K)
            self.variation_ratio = (1.0 - np.maximum(ones, t - ones) / t).mean(axis=1)
        # Jensen: H[mean p] >= mean H[p]; clip float round-off below zero.
        self.mutual_information = np.maximum(self.entropy - self.expected_entropy, 0.0)

    def predictive_variance(self, tau):
        """Gal's regression predictive variance `1/tau + variance`."""
        tau = v.check_float("MCPrediction.predictive_variance", "tau", tau,
                            low=0.0, low_open=True)
        return self.variance + 1.0 / tau

    def covariance(self, indices=None):
        """Covariance of the predictions across inputs (joint samples only).

        Args:
            indices: sequence of input indices, default None (all inputs).

        Returns:
            (k, k) for single-output models, else (D, k, k) with one matrix
            per output unit; 1/T normalization, matching `variance`.
        """
        if not self.joint:
            raise ValueError(
                "Invalid value for argument `joint` of MCPrediction.covariance: "
                "expected joint samples (MCPredictor(..., joint=True)); with "
                "independent samples every input sees different networks, so a "
                "covariance across inputs is meaningless. Received: joint=False")
        if self.samples is None:
            raise ValueError(
                "Invalid value for argument `samples` of MCPrediction.covariance: "
                "expected the samples to be kept (keep_samples=True). "
                "Received: samples=None")
        s = self.samples.astype("float64")
        t, n = s.shape[:2]
        s = s.reshape(t, n, -1)
        if indices is not None:
            s = s[:, check_indices("MCPrediction.covariance", indices, n)]
        c = s - s.mean(axis=0, keepdims=True)
        cov = np.einsum("tid,tjd->dij", c, c) / t
        return cov[0] if cov.shape[0] == 1 else cov

    def __repr__(self):
        temp = "" if self.temperature is None else f", temperature={self.temperature:g}"
        return (f"MCPrediction(task={self.task!r}, num_samples={self.num_samples}, "
                f"inputs={self.mean.shape[0]}, joint={self.joint}{temp})")


def check_temperature(owner, temperature, task, output=None):
    """None, or a float T > 0 for a classification output (kreg's wording)."""
    if temperature is None:
        return None
    temperature = v.check_float(owner, "temperature", temperature, low=0.0,
                                low_open=True)
    if task != "classification":
        where = "" if output is None else f" for output {output!r}"
        raise v.invalid_value(
            owner, "temperature",
            f"None{where}: temperature scaling calibrates class probabilities, "
            "and this output is a regression", temperature)
    return temperature


def _check_samples(samples, task, activation):
    """Validate (T, N, ...) samples; classification ones must be probabilities."""
    owner, expected = "MCPrediction", "a numeric array of shape (T, N, ...)"
    arr = numeric_array(owner, "samples", samples, expected)
    nan = np.isnan(arr)
    rest = arr[~nan]
    stats = {"nan": int(nan.sum()), "low": rest.min() if rest.size else 0.0,
             "high": rest.max() if rest.size else 0.0, "sum_error": 0.0}
    if (task == "classification" and activation == "softmax" and arr.ndim > 2
            and arr.shape[-1] > 1 and arr.size):
        stats["sum_error"] = np.max(np.abs(arr.sum(axis=-1) - 1.0))
    check_values(arr.ndim >= 2 and arr.shape[0] > 0 and arr.shape[1] > 0, stats,
                 arr.shape, task, activation, dtype=arr.dtype)
    return arr


def check_values(shaped, stats, shape, task, activation, dtype=None):
    """kreg's errors for bad samples, from their summary (see `from_statistics`).

    Args:
        shaped: bool, whether the samples have a shape (T, N, ...) with
            T, N >= 1.
        stats: dict with `nan` (NaN count), `low` and `high` (the extremes
            of the non-NaN values) and `sum_error` (the largest `|sum - 1|`
            of a softmax row along the last axis; 0 when not computed).
        shape: the samples' shape, for the message.
        task, activation: how the samples are read.
        dtype: the samples' dtype (None: float32 tolerances).
    """
    owner, expected = "MCPrediction", "a numeric array of shape (T, N, ...)"
    shown = _Shown(f"<array of shape {tuple(shape)}>")
    if not shaped:
        raise v.invalid_value(owner, "samples", expected + " with T >= 1 and N >= 1",
                              shown)
    lo, hi = float(stats["low"]), float(stats["high"])
    if float(stats["nan"]) > 0 or not (np.isfinite(lo) and np.isfinite(hi)):
        raise v.invalid_value(owner, "samples", "finite values (no NaN or inf)", shown)
    if task == "classification":
        range_tol, sum_tol = probability_tolerances(dtype)
        bad = lo < -range_tol or hi > 1 + range_tol
        if not bad and activation == "softmax":
            bad = float(stats["sum_error"]) > sum_tol
        if bad:
            raise v.invalid_value(
                owner, "samples", f"{activation} probabilities for "
                "task='classification' (logits? MCPredictor(..., from_logits=True) "
                "turns them into probabilities)", shown)
