"""Split conformal prediction sets and intervals (Vovk et al. 2005)."""

import numbers

import keras
import numpy as np

from kreg import _validation as v
from kreg.calibration import _check_labels
from kreg.calibration import _check_probs
from kreg.conformal import _scores
from kreg.mc.prediction import MCPrediction

OWNER = "SplitConformal"
_EXPECTED_REGRESSION = (
    "a regression MCPrediction or a pair (mean, std) of arrays of shape (N,) "
    "or (N, 1)"
)


def select_output(owner, pred, output, *, who=None):
    """The prediction of `output` when `pred` holds several outputs.

    `pred` as `MCPredictor.predict` returns it: one `MCPrediction`, or a
    dict/list of them for a model with several outputs, of which `output`
    (a key or an index) picks one; an error lists the choices. `who` names
    the object whose `output` argument it is (default `owner`).
    """
    if isinstance(pred, dict):
        items = dict(pred)
    elif (isinstance(pred, (list, tuple)) and pred
          and all(isinstance(p, MCPrediction) for p in pred)):
        items = dict(enumerate(pred))
    else:
        return pred
    if output not in items:
        raise v.invalid_value(
            who or owner, "output", "one of " + ", ".join(repr(k) for k in items)
            + f" (the argument `pred` of {owner} holds the predictions of "
            "several outputs: choose one with output=...)", output)
    return items[output]


@keras.saving.register_keras_serializable(package="kreg")
class SplitConformal:
    """Prediction sets or intervals with a finite-sample coverage guarantee.

    Split conformal prediction: `fit(pred, y)` computes a conformity score
    s(x, y) on n held-out calibration points (not used for training) and
    keeps q, the ceil((n + 1)(1 - alpha))-th smallest; `predict(pred)`
    returns every label (classification) or the interval of values
    (regression) whose score is at most q. If the calibration and test
    points are exchangeable (e.g. drawn i.i.d. from one distribution), the
    true label or value is inside with probability at least 1 - alpha, over
    the draw of both, for any model; the model only decides how small the
    sets are.

    Classification scores (`pred`: probabilities, (N, K) softmax rows or
    (N,) / (N, 1) sigmoid probabilities of the positive class, or a
    classification `kreg.MCPrediction`, whose MC mean is used):

    - `"lac"`: s = 1 - p_y (Sadinle et al. 2019): the smallest sets on
      average; sets can be empty.
    - `"aps"`: the sum of the probabilities, sorted from the largest, down to
      and including y's (Romano et al. 2020): sets adapt to the input's
      difficulty.
    - `"raps"`: APS + `lam` * max(rank(y) - `k_reg`, 0), rank 1 for the
      most probable label (Angelopoulos et al. 2021): penalizes long tails
      of unlikely labels, smaller and more stable sets than APS.

    Regression scores (`pred`: a pair `(mean, std)` or a regression
    `kreg.MCPrediction`):

    - `"absolute"`: s = |y - mean|; intervals mean -+ q, one width for all.
    - `"normalized"`: s = |y - mean| / std with the MC standard deviation
      (Papadopoulos et al. 2008); intervals mean -+ q std, wider where the
      model is unsure.

    Args:
        alpha: float in (0, 1), default 0.1. The miscoverage rate: the sets
            hold the truth with probability >= 1 - alpha.
        method: str, default `"lac"`. One of `"lac"`, `"aps"`, `"raps"`
            (classification), `"absolute"`, `"normalized"` (regression).
        k_reg: int >= 0 or None, default None (1 for `"raps"`). RAPS's
            number of labels free of penalty; only for `"raps"`.
        lam: float >= 0 or None, default None (0.01 for `"raps"`). RAPS's
            penalty per label beyond `k_reg`; only for `"raps"`.
        randomized: bool, default False. The randomized APS/RAPS score
            (minus u p_y, u uniform in [0, 1), one u per input), whose
            coverage is exactly 1 - alpha rather than at least; sets can be
            empty. Only for `"aps"` and `"raps"`. `kreg.export` serves them
            with uniforms drawn from the request's seed.
        class_conditional: bool, default False. Mondrian (class-conditional)
            conformal prediction: one quantile per class, from the
            calibration points of that class, so that coverage holds for
            every class, not only on average (Vovk et al. 2005, ch. 4.5).
            Needs enough calibration points in every class.
        output: None (default), str or int. The output to use when `pred`
            is the prediction of a model with several outputs (a dict or
            list of `kreg.MCPrediction`, as `MCPredictor.predict` returns
            it), and the output that `kreg.export(..., conformal=...)`
            serves the sets of.
        seed: int >= 0 or None, default None. Seeds the uniforms of the
            randomized scores (fit and predict draw from one stream).

    Call arguments:
        fit(pred, y): `pred` as above for the n calibration points; `y` the
            labels, integers in [0, K) of shape (n,) (or one-hot (n, K)),
            or the regression targets of shape (n,) or (n, 1). Returns self.
        predict(pred): `pred` for the test inputs.

    Returns:
        `predict` returns, for classification, a boolean array (N, K), True
        for the labels in each set; for regression, a pair `(lower, upper)`
        of arrays of the shape of the mean.

    Attributes (after `fit`):
        quantiles: list of float, the calibrated q (one, or one per class
            with `class_conditional=True`).
        num_classes: int, K (classification), else None.
        n_calibration: int, n.

    `get_config()` holds these too (plain Python values), so the fitted
    object can be saved as JSON beside the model and rebuilt with
    `from_config`.

    Example:

    >>> import numpy as np, kreg
    >>> rng = np.random.default_rng(0)
    >>> probs = rng.dirichlet(np.ones(4), size=500)          # a 4-class model
    >>> y = np.array([rng.choice(4, p=p) for p in probs])    # labels it calibrates
    >>> cp = kreg.conformal.SplitConformal(alpha=0.1, method="aps").fit(
    ...     probs[:250], y[:250])
    >>> sets = cp.predict(probs[250:])
    >>> sets.shape, sets.dtype
    ((250, 4), dtype('bool'))
    >>> bool(sets[np.arange(250), y[250:]].mean() >= 0.85)
    True
    >>> mean, std = rng.normal(size=200), np.full(200, 0.5)
    >>> cp = kreg.conformal.SplitConformal(0.2, "normalized").fit(
    ...     (mean, std), mean + 0.5 * rng.normal(size=200))
    >>> lower, upper = cp.predict((np.zeros(3), np.ones(3)))
    >>> bool(np.allclose(upper, -lower)), bool(np.allclose(upper, cp.quantiles[0]))
    (True, True)

    References:
        Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World",
        2005; Angelopoulos & Bates, "A Gentle Introduction to Conformal
        Prediction", 2021, sections 1-2; Sadinle, Lei & Wasserman, JASA 2019
        (LAC); Romano, Sesia & Candes, NeurIPS 2020 (APS); Angelopoulos,
        Bates, Malik & Jordan, ICLR 2021 (RAPS); Papadopoulos, Gammerman &
        Vovk, 2008 (normalized nonconformity scores).
    """

    def __init__(self, alpha=0.1, method="lac", *, k_reg=None, lam=None,
                 randomized=False, class_conditional=False, output=None,
                 seed=None):
        self.alpha = v.check_float(OWNER, "alpha", alpha, low=0.0, high=1.0,
                                   low_open=True, high_open=True)
        self.method = v.check_option(OWNER, "method", method, _scores.METHODS)
        raps = method == "raps"
        for name, value in (("k_reg", k_reg), ("lam", lam)):
            if value is not None and not raps:
                raise v.invalid_value(OWNER, name, f"None for method={method!r} "
                                      "(a parameter of method='raps')", value)
        self.k_reg = v.check_int(OWNER, "k_reg", k_reg, low=0, allow_none=True)
        self.lam = None if lam is None else v.check_float(OWNER, "lam", lam, low=0.0)
        self.randomized = v.check_bool(OWNER, "randomized", randomized)
        if randomized and method not in ("aps", "raps"):
            raise v.invalid_value(OWNER, "randomized", f"False for method={method!r} "
                                  "(the randomized scores are APS's and RAPS's)",
                                  randomized)
        self.class_conditional = v.check_bool(OWNER, "class_conditional",
                                              class_conditional)
        if class_conditional and self.task == "regression":
            raise v.invalid_value(
                OWNER, "class_conditional", f"False for method={method!r} "
                "(class-conditional quantiles need classes)", class_conditional)
        if output is not None and (isinstance(output, bool) or not isinstance(
                output, (str, numbers.Integral))):
            raise v.invalid_type(OWNER, "output", "None, an output name (str) or "
                                 "an output index (int)", output)
        self.output = output
        self.seed = v.check_seed(OWNER, seed)
        self._rng = np.random.default_rng(self.seed)
        self.quantiles = None
        self.num_classes = None
        self.n_calibration = None

    @property
    def task(self):
        """`"classification"` or `"regression"`, from the method."""
        return "classification" if self.method in _scores.CLASSIFICATION else "regression"

    @property
    def score_kwargs(self):
        """The parameters of `kreg.conformal._scores.label_scores` (without u)."""
        if self.method != "raps":
            return {}
        return {"k_reg": 1 if self.k_reg is None else self.k_reg,
                "lam": 0.01 if self.lam is None else self.lam}

    @property
    def fitted(self):
        """Whether `fit` (or `from_config` of a fitted config) has run."""
        return self.quantiles is not None

    def fit(self, pred, y):
        """Calibrate on held-out `pred` and their true `y`; returns self."""
        owner = f"{OWNER}.fit"
        if self.task == "classification":
            p = self._probabilities(owner, pred)
            n, k = p.shape
            labels = _check_labels(owner, y, n, k)
            scores = _scores.true_label_scores(p, labels, self.method,
                                               u=self._uniforms(n), **self.score_kwargs)
            if self.class_conditional:
                quantiles = [self._quantile(owner, scores[labels == c], c)
                             for c in range(k)]
            else:
                quantiles = [self._quantile(owner, scores)]
            self.num_classes = k
        else:
            mean, std, _ = self._moments(owner, pred)
            n = len(mean)
            target = self._targets(owner, y, n)
            scores = _scores.residual_scores(target, mean, std, self.method)
            quantiles = [self._quantile(owner, scores)]
            self.num_classes = None
        self.quantiles = quantiles
        self.n_calibration = int(n)
        return self

    def predict(self, pred):
        """Prediction sets (N, K) bool, or intervals `(lower, upper)`."""
        owner = f"{OWNER}.predict"
        if not self.fitted:
            raise v.invalid_value(owner, "self", "a fitted SplitConformal (call "
                                  "fit(pred, y) on calibration data first)",
                                  v.Shown("an unfitted SplitConformal"))
        if self.task == "classification":
            p = self._probabilities(owner, pred)
            if p.shape[1] != self.num_classes:
                raise v.invalid_value(
                    owner, "pred", f"probabilities of {self.num_classes} classes "
                    "(as in fit)", v.Shown(f"<{p.shape[1]} classes>"))
            scores = _scores.label_scores(p, self.method, u=self._uniforms(len(p)),
                                          **self.score_kwargs)
            return _scores.in_set(scores, np.asarray(self.quantiles))
        mean, std, shape = self._moments(owner, pred)
        lower, upper = _scores.interval(mean, std, self.quantiles[0], self.method)
        return lower.reshape(shape), upper.reshape(shape)

    def _uniforms(self, n):
        return self._rng.uniform(size=n) if self.randomized else None

    def _quantile(self, owner, scores, label=None):
        n = len(scores)
        need = _scores.min_calibration(self.alpha)
        if n < need:
            where = "" if label is None else f" of class {label}"
            raise v.invalid_value(
                owner, "pred",
                f"at least {need} calibration points{where} for alpha={self.alpha} "
                "(the quantile is the ceil((n + 1)(1 - alpha))-th smallest of n "
                "scores)", v.Shown(f"{n} points{where}"))
        return _scores.quantile(scores, self.alpha)

    def _probabilities(self, owner, pred):
        pred = select_output(owner, pred, self.output, who=OWNER)
        if isinstance(pred, MCPrediction):
            if pred.task != "classification":
                raise v.invalid_value(
                    owner, "pred", f"a classification prediction for method="
                    f"{self.method!r}", pred)
            mean = pred.mean
            if pred.activation == "sigmoid" and mean.ndim == 2 and mean.shape[1] > 1:
                raise v.invalid_value(
                    owner, "pred", "one sigmoid unit or softmax rows (multi-label "
                    "sigmoid outputs have no conformal sets here)", pred)
            pred = mean
        elif isinstance(pred, tuple):
            raise v.invalid_type(
                owner, "pred", f"class probabilities for method={self.method!r} "
                "(a pair (mean, std) is for 'absolute' and 'normalized')",
                v.Shown(f"a tuple of {len(pred)}"))
        p = _check_probs(owner, pred, name="pred")
        if p.shape[1] == 1:  # sigmoid: the two classes [1 - p, p]
            p = np.concatenate([1.0 - p, p], axis=1)
        return p

    def _moments(self, owner, pred):
        pred = select_output(owner, pred, self.output, who=OWNER)
        if isinstance(pred, MCPrediction):
            if pred.task != "regression":
                raise v.invalid_value(owner, "pred", "a regression prediction for "
                                      f"method={self.method!r}", pred)
            pred = (pred.mean, pred.std)
        if not isinstance(pred, (tuple, list)) or len(pred) != 2:
            raise v.invalid_type(owner, "pred", _EXPECTED_REGRESSION, v.shown(pred))
        mean = v.numeric_array(owner, "pred", pred[0], _EXPECTED_REGRESSION, "iuf",
                               "float64")
        std = v.numeric_array(owner, "pred", pred[1], _EXPECTED_REGRESSION, "iuf",
                              "float64")

        def bad(why, shown):
            return v.invalid_value(owner, "pred", f"{_EXPECTED_REGRESSION} ({why})",
                                   v.shown(shown))

        if mean.ndim not in (1, 2) or (mean.ndim == 2 and mean.shape[1] != 1):
            raise bad("got a mean of another shape; fit one SplitConformal per "
                      "output column", mean)
        if mean.shape[0] == 0:
            raise bad("got 0 rows", mean)
        if std.shape != mean.shape:
            raise bad(f"got a std of shape {std.shape} and a mean of shape "
                      f"{mean.shape}", std)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise bad("got NaN or inf", mean)
        if np.any(std < 0):
            raise bad("got a negative std", std)
        if self.method == "normalized" and np.any(std == 0):
            raise bad("got a std of 0: method='normalized' divides by it", std)
        return mean.reshape(-1), std.reshape(-1), mean.shape

    def _targets(self, owner, y, n):
        expected = f"{n} finite targets of shape ({n},) or ({n}, 1)"
        arr = v.numeric_array(owner, "y", y, expected, "biuf", "float64")
        if arr.shape not in ((n,), (n, 1)):
            raise v.invalid_value(owner, "y", expected + " (got another shape)",
                                  v.shown(arr))
        if not np.all(np.isfinite(arr)):
            raise v.invalid_value(owner, "y", expected + " (got NaN or inf)",
                                  v.shown(arr))
        return arr.reshape(n)

    def get_config(self):
        """Every constructor argument, and the fitted state (plain values)."""
        return {"alpha": self.alpha, "method": self.method, "k_reg": self.k_reg,
                "lam": self.lam, "randomized": self.randomized,
                "class_conditional": self.class_conditional, "output": self.output,
                "seed": self.seed, "quantiles": self.quantiles,
                "num_classes": self.num_classes, "n_calibration": self.n_calibration}

    @classmethod
    def from_config(cls, config):
        """A SplitConformal from `get_config()`, fitted if that one was."""
        config = dict(config)
        state = {k: config.pop(k, None) for k in ("quantiles", "num_classes",
                                                  "n_calibration")}
        self = cls(**config)
        if state["quantiles"] is not None:
            self._set_state(**state)
        return self

    def _set_state(self, quantiles, num_classes, n_calibration):
        owner = f"{OWNER}.from_config"
        if self.task == "classification":
            num_classes = v.check_int(owner, "num_classes", num_classes, low=2)
        elif num_classes is not None:
            raise v.invalid_value(owner, "num_classes", "None for a regression method",
                                  num_classes)
        length = num_classes if self.class_conditional else 1
        if (not isinstance(quantiles, (list, tuple)) or len(quantiles) != length
                or not all(isinstance(q, numbers.Real) and not isinstance(q, bool)
                           for q in quantiles)):
            raise v.invalid_value(owner, "quantiles", f"a list of {length} float(s)",
                                  quantiles)
        self.n_calibration = v.check_int(owner, "n_calibration", n_calibration, low=1)
        self.quantiles = [float(q) for q in quantiles]
        self.num_classes = num_classes

    def __repr__(self):
        state = "unfitted" if not self.fitted else f"n_calibration={self.n_calibration}"
        return (f"SplitConformal(alpha={self.alpha:g}, method={self.method!r}, "
                f"{state})")
