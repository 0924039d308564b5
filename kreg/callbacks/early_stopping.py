"""Early stopping with Keras's, Lightning's and Prechelt's stopping rules."""

import contextlib
import math
import os
import re
import tempfile
import warnings

import keras
import numpy as np

from kreg import _validation as v

_OWNER = "EarlyStopping"

CRITERIA = ("patience", "gl", "pq", "up")
MODES = ("auto", "min", "max")
MIN_DELTA_MODES = ("absolute", "relative")
STOP_REASONS = (
    "patience", "gl", "pq", "up", "stopping_threshold", "divergence_threshold",
    "non_finite", "external", "completed",
)
# Defaults of Prechelt's criteria, inside the ranges his experiments used
# (GL_1..GL_5, PQ_0.5..PQ_3, UP_2..UP_4).
DEFAULT_ALPHA = {"gl": 5.0, "pq": 2.0}
DEFAULT_SUCCESSIVE_STRIPS = 3
CHECKPOINT_SUFFIX = ".weights.h5"
STATE_VERSION = 1

# Name tokens (after removing "val_") that decide mode="auto".
_MIN_TOKENS = frozenset({
    "loss", "error", "err", "mse", "mae", "mape", "msle", "rmse", "rmsle",
    "crossentropy", "hinge", "kld", "kl", "divergence", "poisson", "logcosh",
    "huber", "perplexity", "nll",
})
_MAX_TOKENS = frozenset({
    "acc", "accuracy", "auc", "precision", "recall", "f1", "fbeta", "iou",
    "r2", "similarity", "correlation",
})


def direction_from_name(monitor):
    """Infer whether a monitored quantity is minimized or maximized.

    The `val_` prefix is dropped and the name split into words at
    non-alphanumeric characters. A name with the word `loss` is minimized;
    otherwise a name whose words include one of `error, mse, mae, mape, msle,
    rmse, crossentropy, hinge, kld, kl, divergence, poisson, logcosh, huber,
    perplexity, nll` (and none of the maximized words) is minimized, one whose
    words include one of `acc, accuracy, auc, precision, recall, f1, fbeta,
    iou, r2, similarity, correlation` (and none of the minimized words) is
    maximized.

    Args:
        monitor: str, the name of the monitored quantity.

    Returns:
        `"min"`, `"max"`, or None when the name does not decide it.

    Example:

    >>> from kreg.callbacks.early_stopping import direction_from_name
    >>> [direction_from_name(n) for n in
    ...  ["val_loss", "val_mean_squared_error", "val_accuracy", "auc_1", "foo"]]
    ['min', 'min', 'max', 'max', None]
    """
    name = monitor.lower()
    name = name[4:] if name.startswith("val_") else name
    words = set(re.split(r"[^a-z0-9]+", name))
    if "loss" in words:
        return "min"
    is_min = bool(words & _MIN_TOKENS)
    is_max = bool(words & _MAX_TOKENS)
    if is_min and not is_max:
        return "min"
    if is_max and not is_min:
        return "max"
    return None


def generalization_loss(error, best_error):
    """Prechelt's generalization loss GL(t), in percent.

    `GL(t) = 100 * (E_va(t) / E_opt(t) - 1)`, written as
    `100 * (E_va(t) - E_opt(t)) / |E_opt(t)|` so that it stays a relative
    loss for negated (maximized) quantities. `E_opt = 0` gives 0 when the
    error is 0 too and `inf` otherwise.

    Args:
        error: float, the validation error `E_va(t)`.
        best_error: float, `E_opt(t)`, the lowest validation error so far.

    Returns:
        A float >= 0 when `error >= best_error`.

    Example:

    >>> from kreg.callbacks.early_stopping import generalization_loss
    >>> round(generalization_loss(1.1, 1.0), 9)
    10.0

    References:
        Prechelt, "Early Stopping - But When?", 1998, section 2.2.1.
    """
    if best_error == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return 100.0 * (error - best_error) / abs(best_error)


def training_progress(strip_errors):
    """Prechelt's training progress P_k(t), in per mille, over one strip.

    `P_k(t) = 1000 * (sum E_tr / (k * min E_tr) - 1)` over the `k` training
    errors of the strip ending at `t`, written as `1000 * (mean - min) /
    |min|` (the same for positive errors). A zero minimum gives 0 when the
    whole strip is 0 and `inf` otherwise.

    Args:
        strip_errors: sequence of the `k` training errors of the strip.

    Returns:
        A float >= 0.

    Example:

    >>> from kreg.callbacks.early_stopping import training_progress
    >>> round(training_progress([1.2, 1.1, 1.0]), 9)  # 1000 * (3.3/3 - 1)
    100.0

    References:
        Prechelt, "Early Stopping - But When?", 1998, section 2.2.1.
    """
    values = [float(x) for x in strip_errors]
    low = min(values)
    mean = sum(values) / len(values)
    if low == 0.0:
        return 0.0 if mean == 0.0 else math.inf
    return 1000.0 * (mean - low) / abs(low)


def _print(message):
    try:
        from keras.src.utils import io_utils
        io_utils.print_msg(message)
    except ImportError:  # pragma: no cover - Keras internals moved
        print(message)


def _check_name(name, value):
    if not isinstance(value, str):
        raise v.invalid_type(_OWNER, name, "a non-empty string", value)
    if not value:
        raise v.invalid_value(_OWNER, name, "a non-empty string", value)
    return value


def _check_optional_float(name, value):
    if value is None:
        return None
    return v.check_float(_OWNER, name, value, expected="a finite float or None")


def _fsync_path(path):
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) \
        else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@keras.saving.register_keras_serializable(package="kreg")
class EarlyStopping(keras.callbacks.Callback):
    """Stop training when the validation error stops improving; keep the best.

    The textbook's early stopping: watch the validation error, stop when it
    rises, hand back the best model. It has every argument of
    `keras.callbacks.EarlyStopping` with the same meaning (and the same
    `patience` counting, baseline handling and `start_from_epoch`), except
    that `restore_best_weights` is True by default. From PyTorch Lightning it
    takes `check_finite`, `stopping_threshold`, `divergence_threshold` and
    `strict`. It also implements Prechelt's stopping criteria GL, PQ and UP.

    Each epoch at or after `start_from_epoch` whose logs hold the monitored
    value is a *monitored epoch*. At its end, in this order:

    1. a NaN or infinite value stops training (`"non_finite"`) when
       `check_finite` (this also applies during the warm-up epochs);
    2. an improvement on the best value (by more than `min_delta`) makes the
       epoch the best: its weights are kept in memory (when
       `restore_best_weights`) and written to `checkpoint_path` (when given);
    3. a value better than `stopping_threshold` stops (`"stopping_threshold"`),
       a value worse than `divergence_threshold` stops
       (`"divergence_threshold"`);
    4. the criterion decides:

       - `"patience"` (Keras): stop after `patience` monitored epochs without
         improvement (Keras counts such that 0 and 1 both stop at the first
         epoch that does not improve); with `baseline`, the counter restarts
         only on an epoch that improves on both the best and the baseline.
       - `"gl"`: stop when the generalization loss
         `GL(t) = 100 (E_va(t) / E_opt(t) - 1)` exceeds `alpha`
         (`E_opt(t)` the lowest validation error up to `t`).
       - `"pq"`: at the end of each strip of `strip` monitored epochs, stop
         when `GL(t) / P_k(t)` exceeds `alpha`, with the training progress
         `P_k(t) = 1000 (sum E_tr / (k min E_tr) - 1)` over the strip's
         training errors (read from `train_monitor`).
       - `"up"`: at the end of each strip, stop when the validation error at
         the end of the strip is higher than at the end of the previous strip,
         for `successive_strips` strips in a row (Prechelt's UP_s).

    Strips are counted from the first monitored epoch. Prechelt defines his
    criteria on errors (lower is better); with `mode="max"` the values are
    negated, and GL and P_k are computed as `100 (E - E_opt) / |E_opt|` and
    `1000 (mean - min) / |min|`, which equal the paper's formulas for positive
    errors and stay relative losses for negated ones. `train_monitor` is read
    in the same direction as `monitor`. `E_opt` is the lowest monitored value
    (as in the paper); `min_delta` only decides which epoch counts as the best
    one to restore.

    At the end of training (on every exit path that Keras calls back on:
    stopped by this callback, all epochs run, or another callback set
    `model.stop_training`), the best weights are restored when
    `restore_best_weights` and a best epoch exists, as Keras does even when it
    did not stop early. Then `best_epoch`, `best_value`, `stopped_epoch`
    (None when training was not stopped) and `stop_reason` describe the run;
    `summary()` gives a one-line description, printed when `verbose`.
    Epoch indices are 0-based, as in the `epoch` argument of Keras's hooks;
    the printed messages count from 1, as Keras's do.

    `wait` is the patience counter and `criterion_value` the last value the
    criterion compared with its threshold (GL(t) for `"gl"`, GL/P_k at the
    last strip end for `"pq"`, the count of rising strips for `"up"`; None
    for `"patience"`); `best_weights` holds the best weights in memory.

    `stop_reason` is one of `"patience"`, `"gl"`, `"pq"`, `"up"`,
    `"stopping_threshold"`, `"divergence_threshold"`, `"non_finite"`,
    `"external"` (another callback stopped training) and `"completed"` (all
    epochs ran); None before training ends unless this callback stopped it.

    The checkpoint is a Keras `.weights.h5` file (`model.load_weights(path)`
    reads it, without kreg). It is written atomically: to a temporary file in
    the same directory, flushed to disk, then renamed over `checkpoint_path`,
    so a crash or a kill at any moment leaves the previous best intact. (A
    kill during a write may leave a hidden `.<name>.*.tmp.weights.h5` file
    behind; it is never read.)

    One instance serves several `fit` calls: `on_train_begin` resets the
    per-run state, unless `set_state` was called just before (to resume).

    Args:
        monitor: str, default `"val_loss"`. The key of the epoch logs to
            watch.
        min_delta: float >= 0, default 0.0. The smallest change that counts as
            an improvement (see `min_delta_mode`).
        patience: int >= 0, default 0. For `criterion="patience"`: monitored
            epochs without improvement before stopping. Must be 0 with the
            other criteria.
        verbose: int >= 0, default 0. With 1 or more, print a one-line summary
            at the end of training.
        mode: `"auto"` (default), `"min"` or `"max"`. `"auto"` takes the
            direction that the model's compiled metric of that name declares,
            otherwise infers it from the name (see `direction_from_name`:
            min for losses and errors, max for accuracy-like metrics), and
            raises a ValueError when it cannot. As in Keras, the direction is
            decided at the first epoch end (when the compiled metrics exist),
            before the metric is looked up in the logs.
        baseline: float or None, default None. For `criterion="patience"`:
            the patience counter only restarts on epochs better than this
            value (Keras's semantics). Must be None with the other criteria.
        start_from_epoch: int >= 0, default 0. Epochs before this index are
            not monitored (a warm-up), except for `check_finite`.
        restore_best_weights: bool, default True (unlike Keras). Keep the best
            epoch's weights in memory and set them on the model when training
            ends.
        check_finite: bool, default True. Stop when the monitored value (or,
            for `"pq"`, the training value) is NaN or infinite.
        stopping_threshold: float or None, default None. Stop as soon as the
            monitored value is strictly better than this.
        divergence_threshold: float or None, default None. Stop as soon as
            the monitored value is strictly worse than this.
        strict: bool, default True. A monitored key missing from the epoch
            logs is a ValueError listing the available keys; with False, a
            warning (once per run) and the epoch is not monitored.
        criterion: `"patience"` (default), `"gl"`, `"pq"` or `"up"`.
        alpha: float >= 0 or None, default None. The threshold of `"gl"`
            (default 5.0, i.e. GL_5) and `"pq"` (default 2.0, i.e. PQ_2).
            Must be None with `"patience"` and `"up"`.
        strip: int >= 1, default 5. The strip length k of `"pq"` and `"up"`
            (not used by the other criteria).
        successive_strips: int >= 1 or None, default None. The s of UP_s
            (default 3). Must be None with the other criteria.
        train_monitor: str, default `"loss"`. The training error that `"pq"`
            reads (not used by the other criteria).
        min_delta_mode: `"absolute"` (default): an improvement must beat the
            best by more than `min_delta`; `"relative"`: by more than
            `min_delta * |best|`.
        checkpoint_path: str, path-like or None, default None. Where to keep
            the best weights on disk; must end in `.weights.h5`. Parent
            directories are created when needed.

    Call arguments:
        on_train_begin(logs): resets the per-run state.
        on_epoch_end(epoch, logs): resolves `mode="auto"` (first call);
            reads `logs[monitor]` (and, for `"pq"`,
            `logs[train_monitor]`); may set `model.stop_training`. The logs
            are not modified.
        on_train_end(logs): restores the best weights; sets `stop_reason`.

    Returns:
        A Keras callback to pass to `fit`.

    Example:

    Driven by hand with a scripted validation curve (in `fit` the model is
    stopped instead of the loop breaking):

    >>> import kreg
    >>> es = kreg.callbacks.EarlyStopping(patience=2)
    >>> es.on_train_begin()
    >>> for epoch, val_loss in enumerate([1.0, 0.8, 0.9, 0.85, 0.7]):
    ...     es.on_epoch_end(epoch, {"val_loss": val_loss})
    ...     if es.stopped_epoch is not None:
    ...         break
    >>> es.on_train_end()
    >>> es.stop_reason, es.stopped_epoch, es.best_epoch, es.best_value
    ('patience', 3, 1, 0.8)
    >>> print(es.summary())  # doctest: +NORMALIZE_WHITESPACE
    EarlyStopping: stopped at epoch 4: no improvement in val_loss for 2
    epochs (patience=2); best val_loss=0.8 at epoch 2.

    Prechelt's GL_5 stops at the first epoch more than 5% above the best:

    >>> gl = kreg.callbacks.EarlyStopping(criterion="gl", alpha=5.0)
    >>> gl.on_train_begin()
    >>> for epoch, val_loss in enumerate([1.0, 0.9, 0.93, 0.96, 0.8]):
    ...     gl.on_epoch_end(epoch, {"val_loss": val_loss})
    ...     if gl.stopped_epoch is not None:
    ...         break
    >>> gl.stop_reason, gl.stopped_epoch, gl.best_epoch
    ('gl', 3, 1)

    References:
        Prechelt, "Early Stopping - But When?", in Neural Networks: Tricks of
        the Trade, LNCS 1524, 1998: section 2.2.1 "Some classes of stopping
        criteria" (GL, PQ, UP), 2.2.2 (selection rules) and 2.3 (their
        comparison: slower criteria, about 4% better generalization for about
        4x the training time). `keras.callbacks.EarlyStopping` (Keras 3.15);
        `lightning.pytorch.callbacks.EarlyStopping` (check_finite, thresholds,
        strict). Goodfellow, Bengio & Courville, Deep Learning, section 7.8.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0.0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        start_from_epoch=0,
        restore_best_weights=True,
        *,
        check_finite=True,
        stopping_threshold=None,
        divergence_threshold=None,
        strict=True,
        criterion="patience",
        alpha=None,
        strip=5,
        successive_strips=None,
        train_monitor="loss",
        min_delta_mode="absolute",
        checkpoint_path=None,
    ):
        super().__init__()
        self.monitor = _check_name("monitor", monitor)
        self.min_delta = v.check_float(_OWNER, "min_delta", min_delta, low=0.0)
        self.patience = v.check_int(_OWNER, "patience", patience, low=0)
        self.verbose = v.check_int(_OWNER, "verbose", verbose, low=0)
        self.mode = v.check_option(_OWNER, "mode", mode, MODES)
        self.baseline = _check_optional_float("baseline", baseline)
        self.start_from_epoch = v.check_int(
            _OWNER, "start_from_epoch", start_from_epoch, low=0)
        self.restore_best_weights = v.check_bool(
            _OWNER, "restore_best_weights", restore_best_weights)
        self.check_finite = v.check_bool(_OWNER, "check_finite", check_finite)
        self.stopping_threshold = _check_optional_float(
            "stopping_threshold", stopping_threshold)
        self.divergence_threshold = _check_optional_float(
            "divergence_threshold", divergence_threshold)
        self.strict = v.check_bool(_OWNER, "strict", strict)
        self.criterion = v.check_option(_OWNER, "criterion", criterion, CRITERIA)
        self.strip = v.check_int(_OWNER, "strip", strip, low=1)
        self.train_monitor = _check_name("train_monitor", train_monitor)
        self.min_delta_mode = v.check_option(
            _OWNER, "min_delta_mode", min_delta_mode, MIN_DELTA_MODES)

        if criterion in DEFAULT_ALPHA:
            self.alpha = DEFAULT_ALPHA[criterion] if alpha is None else \
                v.check_float(_OWNER, "alpha", alpha, low=0.0,
                              expected="a finite float >= 0 or None")
        else:
            if alpha is not None:
                raise v.invalid_value(
                    _OWNER, "alpha",
                    f"None with criterion={criterion!r} (alpha is the "
                    "threshold of criterion 'gl' or 'pq')", alpha)
            self.alpha = None
        if criterion == "up":
            self.successive_strips = DEFAULT_SUCCESSIVE_STRIPS \
                if successive_strips is None else v.check_int(
                    _OWNER, "successive_strips", successive_strips, low=1,
                    allow_none=True)
        else:
            if successive_strips is not None:
                raise v.invalid_value(
                    _OWNER, "successive_strips",
                    f"None with criterion={criterion!r} (successive_strips is "
                    "the s of criterion 'up')", successive_strips)
            self.successive_strips = None
        if criterion != "patience":
            if self.patience != 0:
                raise v.invalid_value(
                    _OWNER, "patience",
                    f"0 with criterion={criterion!r} (patience belongs to "
                    "criterion 'patience')", patience)
            if self.baseline is not None:
                raise v.invalid_value(
                    _OWNER, "baseline",
                    f"None with criterion={criterion!r} (baseline belongs to "
                    "criterion 'patience')", baseline)

        if checkpoint_path is not None:
            if not isinstance(checkpoint_path, (str, os.PathLike)):
                raise v.invalid_type(
                    _OWNER, "checkpoint_path",
                    "None or a path ending in '.weights.h5'", checkpoint_path)
            checkpoint_path = os.fspath(checkpoint_path)
            if not isinstance(checkpoint_path, str) or \
                    not checkpoint_path.endswith(CHECKPOINT_SUFFIX):
                raise v.invalid_value(
                    _OWNER, "checkpoint_path",
                    "None or a path ending in '.weights.h5'", checkpoint_path)
        self.checkpoint_path = checkpoint_path

        self._sign = None
        self._state_sign = None
        if self.mode != "auto":
            self._set_direction(self.mode)
        self._keep_state_once = False
        self._reset()

    # ------------------------------------------------------------------
    # Direction
    def _set_direction(self, direction):
        self._sign = 1.0 if direction == "min" else -1.0
        if self.stopping_threshold is not None and \
                self.divergence_threshold is not None and \
                self._sign * self.stopping_threshold >= \
                self._sign * self.divergence_threshold:
            worse = "greater" if direction == "min" else "smaller"
            raise v.invalid_value(
                _OWNER, "divergence_threshold",
                f"a value {worse} than stopping_threshold="
                f"{self.stopping_threshold!r} (monitor={self.monitor!r} is "
                f"{'minimized' if direction == 'min' else 'maximized'})",
                self.divergence_threshold)

    def _declared_direction(self):
        model = self.model
        if model is None:
            return None
        name = self.monitor[4:] if self.monitor.startswith("val_") \
            else self.monitor
        stack = list(getattr(model, "metrics", None) or [])
        seen = set()
        while stack:
            metric = stack.pop()
            if id(metric) in seen:
                continue
            seen.add(id(metric))
            direction = getattr(metric, "_direction", None)
            if getattr(metric, "name", None) == name and \
                    direction in ("up", "down"):
                return "max" if direction == "up" else "min"
            sub = getattr(metric, "metrics", None)
            if isinstance(sub, (list, tuple)):
                stack.extend(sub)
        return None

    def _resolve_direction(self):
        if self.mode != "auto":
            self._set_direction(self.mode)
            return
        direction = self._declared_direction() or \
            direction_from_name(self.monitor)
        if direction is None:
            raise v.invalid_value(
                _OWNER, "mode",
                f"'min' or 'max': mode='auto' cannot tell whether "
                f"monitor={self.monitor!r} should be minimized or maximized "
                "(it infers 'min' for names like 'val_loss' or 'mae', 'max' "
                "for names like 'val_accuracy' or 'auc', or takes the "
                "direction a compiled metric declares)", self.mode)
        self._set_direction(direction)
        expected, self._state_sign = self._state_sign, None
        if expected is not None and expected != self._sign:
            raise v.invalid_value(
                "EarlyStopping.set_state", "state",
                f"a state saved with the same direction (monitor="
                f"{self.monitor!r} is now {direction}imized)", "{...}")

    # ------------------------------------------------------------------
    # State
    def _reset(self):
        self.wait = 0
        self.best = None  # best value times the sign: lower is better
        self.best_value = None
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None
        self.stop_reason = None
        self._detail = None
        self._e_opt = None
        self._n_monitored = 0
        self._train_window = []
        self._strip_end_value = None
        self._ups = 0
        self._last_epoch = None
        self._warned_missing = False
        self._restored = False
        self.criterion_value = None

    def get_state(self, include_weights=False):
        """The counters needed to resume a run, as a JSON-able dict.

        Holds the patience counter, the best value and epoch, and what
        Prechelt's criteria need (the lowest error so far, the strip position,
        the training errors of the current strip, the last strip-end value and
        the count of rising strips).

        Args:
            include_weights: bool, default False. Also include the best
                weights in memory, as nested lists (fine for small models;
                otherwise give `checkpoint_path`, from which a resumed run
                reloads them).

        Returns:
            A dict of plain Python values.

        Example:

        >>> import json, kreg
        >>> es = kreg.callbacks.EarlyStopping(patience=3)
        >>> es.on_train_begin()
        >>> es.on_epoch_end(0, {"val_loss": 1.0})
        >>> es.on_epoch_end(1, {"val_loss": 1.5})
        >>> state = json.loads(json.dumps(es.get_state()))
        >>> state["wait"], state["best_value"], state["best_epoch"]
        (1, 1.0, 0)
        """
        v.check_bool("EarlyStopping.get_state", "include_weights",
                     include_weights)
        state = {
            "version": STATE_VERSION,
            "monitor": self.monitor,
            "criterion": self.criterion,
            "strip": self.strip,
            "sign": self._sign,
            "wait": self.wait,
            "best": self.best,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "e_opt": self._e_opt,
            "n_monitored": self._n_monitored,
            "train_window": list(self._train_window),
            "strip_end_value": self._strip_end_value,
            "ups": self._ups,
            "last_epoch": self._last_epoch,
        }
        if include_weights and self.best_weights is not None:
            state["best_weights"] = [np.asarray(w).tolist()
                                     for w in self.best_weights]
            state["best_weights_dtypes"] = [str(np.asarray(w).dtype)
                                            for w in self.best_weights]
        return state

    def set_state(self, state):
        """Load counters saved by `get_state`; the next `fit` continues them.

        The next `on_train_begin` keeps this state instead of resetting it
        (once), so a run resumed with `keras.callbacks.BackupAndRestore`
        continues counting patience from where it was. Without weights in the
        state, the best weights are reloaded from `checkpoint_path` when it
        exists; otherwise only an epoch that improves after the resume can be
        restored (a warning says so at the end).

        Args:
            state: dict, as returned by `get_state` (also after a JSON round
                trip), for the same `monitor`, `criterion` and `strip`.

        Returns:
            None.
        """
        owner = "EarlyStopping.set_state"
        if not isinstance(state, dict):
            raise v.invalid_type(owner, "state", "a dict from get_state()",
                                 state)
        required = ("version", "monitor", "criterion", "strip", "sign", "wait",
                    "best", "best_value", "best_epoch", "e_opt", "n_monitored",
                    "train_window", "strip_end_value", "ups", "last_epoch")
        missing = [k for k in required if k not in state]
        if missing or state["version"] != STATE_VERSION:
            raise v.invalid_value(
                owner, "state",
                f"a dict from get_state() (version {STATE_VERSION}; missing "
                f"keys: {missing})", "{...}")
        for key in ("monitor", "criterion", "strip"):
            if state[key] != getattr(self, key):
                raise v.invalid_value(
                    owner, "state",
                    f"a state of an EarlyStopping with {key}="
                    f"{getattr(self, key)!r} (it has {key}={state[key]!r})",
                    "{...}")
        sign = None if state["sign"] is None else float(state["sign"])
        if self.mode != "auto" and sign is not None and sign != self._sign:
            raise v.invalid_value(
                owner, "state", f"a state saved with the same direction "
                f"(mode={self.mode!r})", "{...}")
        self._reset()
        self.wait = int(state["wait"])
        self.best = state["best"]
        self.best_value = state["best_value"]
        self.best_epoch = state["best_epoch"]
        self._e_opt = state["e_opt"]
        self._n_monitored = int(state["n_monitored"])
        self._train_window = [float(x) for x in state["train_window"]]
        self._strip_end_value = state["strip_end_value"]
        self._ups = int(state["ups"])
        self._last_epoch = state["last_epoch"]
        if state.get("best_weights") is not None:
            self.best_weights = [
                np.asarray(w, dtype=d) for w, d in
                zip(state["best_weights"], state["best_weights_dtypes"])]
        self._keep_state_once = True
        if self.mode == "auto":
            self._sign = None
            self._state_sign = sign

    # ------------------------------------------------------------------
    # Hooks
    def on_train_begin(self, logs=None):
        if self.mode == "auto":
            self._sign = None  # decided at the first epoch end
        if self._keep_state_once:
            self._keep_state_once = False
            self.stopped_epoch = None
            self.stop_reason = None
            self._detail = None
            self._warned_missing = False
            self._restored = False
            if self.best_weights is None and self.best_epoch is not None and \
                    self.restore_best_weights:
                self._reload_checkpoint()
        else:
            self._reset()

    def _reload_checkpoint(self):
        path = self.checkpoint_path
        model = self.model
        if path is None or model is None or not os.path.exists(path):
            return
        current = model.get_weights()
        model.load_weights(path)
        self.best_weights = model.get_weights()
        model.set_weights(current)

    def _lookup(self, logs, key, argument):
        value = logs.get(key) if logs else None
        if value is not None:
            return float(value)
        available = ", ".join(repr(k) for k in (logs or {})) or "none"
        if self.strict:
            raise v.invalid_value(
                _OWNER, argument,
                f"a key of the epoch logs (available: {available}; pass "
                "strict=False to skip epochs without it)", key)
        if not self._warned_missing:
            self._warned_missing = True
            warnings.warn(
                f"EarlyStopping: `{argument}`={key!r} is not in the epoch "
                f"logs (available: {available}); epochs without it are not "
                "monitored.", stacklevel=3)
        return None

    def on_epoch_end(self, epoch, logs=None):
        if self._sign is None:
            self._resolve_direction()
        self._last_epoch = epoch
        value = self._lookup(logs, self.monitor, "monitor")
        if value is None:
            return
        train_value = None
        if self.criterion == "pq":
            train_value = self._lookup(logs, self.train_monitor,
                                       "train_monitor")
            if train_value is None:
                return
        if self.check_finite:
            for key, x in ((self.monitor, value),
                           (self.train_monitor, train_value)):
                if x is not None and not math.isfinite(x):
                    return self._stop(
                        epoch, "non_finite", f"{key}={x} is not finite")
        if epoch < self.start_from_epoch:
            return
        self._monitor(epoch, value, train_value)

    def _improves(self, score):
        if self.best is None:
            return True
        return score + self._delta(self.best) < self.best

    def _monitor(self, epoch, value, train_value):
        score = self._sign * value
        self._n_monitored += 1
        if math.isfinite(score) and (self._e_opt is None or score < self._e_opt):
            self._e_opt = score
        if train_value is not None:
            self._train_window = (self._train_window +
                                  [self._sign * train_value])[-self.strip:]

        improved = self._improves(score)
        self.wait += 1
        if improved:
            self.best = score
            self.best_value = value
            self.best_epoch = epoch
            if self.restore_best_weights and self.model is not None:
                self.best_weights = self.model.get_weights()
            if self.checkpoint_path is not None and self.model is not None:
                self._write_checkpoint()
            # Keras: restart the count only when the baseline is beaten too.
            if self.baseline is None or score + self._delta(
                    self._sign * self.baseline) < self._sign * self.baseline:
                self.wait = 0

        if self.stopping_threshold is not None and \
                score < self._sign * self.stopping_threshold:
            return self._stop(
                epoch, "stopping_threshold",
                f"{self.monitor}={value:.6g} reached stopping_threshold="
                f"{self.stopping_threshold:g}")
        if self.divergence_threshold is not None and \
                score > self._sign * self.divergence_threshold:
            return self._stop(
                epoch, "divergence_threshold",
                f"{self.monitor}={value:.6g} passed divergence_threshold="
                f"{self.divergence_threshold:g}")

        at_strip_end = self._n_monitored % self.strip == 0
        if self.criterion == "patience":
            if not improved and self.wait >= self.patience and epoch > 0:
                self._stop(
                    epoch, "patience",
                    f"no improvement in {self.monitor} for {self.wait} epochs "
                    f"(patience={self.patience})")
        elif self.criterion == "gl":
            gl = generalization_loss(score, self._e_opt)
            self.criterion_value = gl
            if gl > self.alpha:
                self._stop(epoch, "gl",
                           f"generalization loss GL={gl:.4g} > {self.alpha:g}")
        elif self.criterion == "pq":
            if at_strip_end and len(self._train_window) == self.strip:
                gl = generalization_loss(score, self._e_opt)
                progress = training_progress(self._train_window)
                if progress == 0.0:
                    quotient = math.inf if gl > 0.0 else 0.0
                else:
                    quotient = gl / progress
                self.criterion_value = quotient
                if quotient > self.alpha:
                    self._stop(
                        epoch, "pq",
                        f"GL/P_{self.strip}={quotient:.4g} > {self.alpha:g} "
                        f"(GL={gl:.4g}, P_{self.strip}={progress:.4g})")
        elif self.criterion == "up" and at_strip_end:
            if self._strip_end_value is not None:
                self._ups = self._ups + 1 if score > self._strip_end_value \
                    else 0
            self._strip_end_value = score
            self.criterion_value = self._ups
            if self._ups >= self.successive_strips:
                self._stop(
                    epoch, "up",
                    f"{self.monitor} rose over {self._ups} successive strips "
                    f"of {self.strip} epochs (UP_{self.successive_strips})")

    def _delta(self, reference):
        if self.min_delta_mode == "relative":
            return self.min_delta * abs(reference)
        return self.min_delta

    def _stop(self, epoch, reason, detail):
        self.stopped_epoch = epoch
        self.stop_reason = reason
        self._detail = f"stopped at epoch {epoch + 1}: {detail}"
        if self.model is not None:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        model = self.model
        if self.stop_reason is None:
            if model is not None and getattr(model, "stop_training", False):
                self.stopped_epoch = self._last_epoch
                self.stop_reason = "external"
                where = "" if self._last_epoch is None else \
                    f" at epoch {self._last_epoch + 1}"
                self._detail = f"stopped{where} by another callback"
            else:
                self.stop_reason = "completed"
                ran = 0 if self._last_epoch is None else self._last_epoch + 1
                self._detail = f"ran all {ran} epochs"
        self._restored = False
        if self.restore_best_weights and model is not None:
            if self.best_weights is not None:
                model.set_weights(self.best_weights)
                self._restored = True
            elif self.best_epoch is not None:
                warnings.warn(
                    f"EarlyStopping: the weights of the best epoch "
                    f"({self.best_epoch + 1}) were lost with the resumed run "
                    "(no weights in the state and no checkpoint_path); the "
                    "final weights are kept.", stacklevel=2)
        if self.verbose:
            _print(self.summary())

    def summary(self):
        """A one-line human summary of the last run (printed when verbose).

        Returns:
            A str.
        """
        head = self._detail or "has not finished a run"
        if self.best_epoch is None:
            best = "no epoch was monitored"
        else:
            best = (f"best {self.monitor}={self.best_value:.6g} at epoch "
                    f"{self.best_epoch + 1}")
            if self._restored:
                best += ", weights restored"
        return f"EarlyStopping: {head}; {best}."

    # ------------------------------------------------------------------
    def _write_checkpoint(self):
        """Write the model's weights to `checkpoint_path` atomically."""
        path = os.path.abspath(self.checkpoint_path)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix="." + os.path.basename(path)[:-len(CHECKPOINT_SUFFIX)] + ".",
            suffix=".tmp" + CHECKPOINT_SUFFIX, dir=directory)
        os.close(fd)
        try:
            self.model.save_weights(tmp, overwrite=True)
            _fsync_path(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_path(directory)

    def get_config(self):
        return {
            "monitor": self.monitor,
            "min_delta": self.min_delta,
            "patience": self.patience,
            "verbose": self.verbose,
            "mode": self.mode,
            "baseline": self.baseline,
            "start_from_epoch": self.start_from_epoch,
            "restore_best_weights": self.restore_best_weights,
            "check_finite": self.check_finite,
            "stopping_threshold": self.stopping_threshold,
            "divergence_threshold": self.divergence_threshold,
            "strict": self.strict,
            "criterion": self.criterion,
            "alpha": self.alpha,
            "strip": self.strip,
            "successive_strips": self.successive_strips,
            "train_monitor": self.train_monitor,
            "min_delta_mode": self.min_delta_mode,
            "checkpoint_path": self.checkpoint_path,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

