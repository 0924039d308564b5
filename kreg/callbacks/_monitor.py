"""The direction of a monitored quantity, as Keras's `MonitorCallback` keeps it.

`mode` ("auto", "min", "max") becomes a direction, exposed as Keras does as
`monitor_op` (`keras.ops.less` for a quantity to minimize, `keras.ops.greater`
for one to maximize), and `_is_improvement(value, reference)` applies
`min_delta` in that direction. Internally a value is turned into a *score*,
`sign * value` with sign +1 for "min" and -1 for "max", so that lower is
always better. The monitored value is read from the epoch logs here too: a
number or a one-element array; a missing key is a warning once per run (a
ValueError with `strict`), which says when the callback order is the cause.
"""

import re
import warnings

import keras
import numpy as np

from kreg import _compat
from kreg import _validation as v

MODES = ("auto", "min", "max")
MIN_DELTA_MODES = ("absolute", "relative")

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
    if not isinstance(monitor, str):
        raise v.invalid_type("direction_from_name", "monitor", "a string",
                             monitor)
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


def declared_direction(model, monitor):
    """The direction that a compiled metric named like `monitor` declares.

    Keras metrics carry `_direction` ("up" or "down"); Keras's own
    `MonitorCallback` reads it the same way. Nested metric containers
    (Keras's `CompileMetrics`) are searched too.

    Returns:
        `"min"`, `"max"` or None (no model, or no such metric).
    """
    if model is None:
        return None
    name = monitor[4:] if monitor.startswith("val_") else monitor
    stack = list(getattr(model, "metrics", None) or [])
    seen = set()
    while stack:
        metric = stack.pop()
        if id(metric) in seen:
            continue
        seen.add(id(metric))
        direction = _compat.metric_direction(metric)
        if getattr(metric, "name", None) == name and \
                direction in ("up", "down"):
            return "max" if direction == "up" else "min"
        sub = getattr(metric, "metrics", None)
        if isinstance(sub, (list, tuple)):
            stack.extend(sub)
    return None


def order_hint(key, owner):
    """A sentence for a missing key that another callback writes (""
    otherwise): Keras runs callbacks in list order, so the writer must come
    first."""
    if not key.startswith("reg/"):  # RegularizationMonitor's default prefix
        return ""
    return (" The `reg/` keys are written by kreg.callbacks."
            f"RegularizationMonitor: list it before {owner} in "
            "`callbacks=[...]` (Keras calls callbacks in that order, so a "
            "later one has not written its keys yet).")


def available_keys(logs):
    """The keys of an epoch's logs, quoted, for an error message."""
    return ", ".join(repr(k) for k in (logs or {})) or "none"


def _log_number(value, key, argument, owner):
    """A log value as a float: a number, or a one-element array or tensor
    (Keras's F1Score logs an array of shape (1,); Keras compares it too)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        array = np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # noqa: BLE001 - any unconvertible object
        array = None
    if array is not None and array.size == 1 and \
            np.issubdtype(array.dtype, np.number):
        return float(array.reshape(()))
    raise v.invalid_type(
        owner, "logs",
        f"a number (or a one-element array) at logs[{key!r}] (the "
        f"`{argument}`)", value)


class MonitorCallback(keras.callbacks.Callback):
    """Base of kreg's callbacks that watch one quantity of the epoch logs.

    Keeps `monitor`, `mode`, `min_delta` (>= 0; a negative value is taken as
    its absolute value, as Keras does) and `min_delta_mode`, and the direction
    once known: `monitor_op` is `keras.ops.less` (minimize) or
    `keras.ops.greater` (maximize), None while `mode="auto"` is undecided.
    Subclasses call `_resolve_direction(logs)` at the first epoch end, and
    read the logs with `_lookup` (a missing key: a warning once per run, reset
    `_warned_missing` at the start of a run; a ValueError when `strict`).
    """

    _OWNER = "MonitorCallback"

    def __init__(self, monitor="val_loss", mode="auto", min_delta=0.0,
                 min_delta_mode="absolute", strict=False):
        super().__init__()
        owner = self._OWNER
        self.monitor = v.check_name(owner, "monitor", monitor)
        self.mode = v.check_option(owner, "mode", mode, MODES)
        # Keras's MonitorCallback stores abs(min_delta).
        self.min_delta = abs(v.check_float(
            owner, "min_delta", min_delta,
            expected="a finite float (its absolute value is used)"))
        self.min_delta_mode = v.check_option(
            owner, "min_delta_mode", min_delta_mode, MIN_DELTA_MODES)
        self.strict = v.check_flag(owner, "strict", strict)
        self._warned_missing = False
        self._sign = None
        if self.mode != "auto":
            self._set_direction(self.mode)

    # The direction -------------------------------------------------------
    @property
    def monitor_op(self):
        """`keras.ops.less` (minimize), `keras.ops.greater` (maximize) or
        None (not decided yet), as in Keras's `MonitorCallback`."""
        if self._sign is None:
            return None
        return keras.ops.less if self._sign > 0 else keras.ops.greater

    @monitor_op.setter
    def monitor_op(self, op):
        if op is None:
            self._sign = None
        elif op is keras.ops.less:
            self._set_direction("min")
        elif op is keras.ops.greater:
            self._set_direction("max")
        else:
            raise v.invalid_value(
                self._OWNER, "monitor_op",
                "keras.ops.less, keras.ops.greater or None", op)

    @property
    def direction(self):
        """`"min"`, `"max"`, or None while `mode="auto"` is undecided."""
        if self._sign is None:
            return None
        return "min" if self._sign > 0 else "max"

    def _set_direction(self, direction):
        self._sign = 1.0 if direction == "min" else -1.0

    def _resolve_direction(self, logs=None):
        """Decide the direction (at the first epoch end, as Keras does).

        `mode="auto"` takes the direction of the compiled metric of that
        name, else infers it from the name. When neither decides: a monitor
        missing from `logs` is reported as unknown (listing the available
        keys); a present one as a `mode` that must be given.
        """
        if self.mode != "auto":
            self._set_direction(self.mode)
            return
        direction = declared_direction(self.model, self.monitor) or \
            direction_from_name(self.monitor)
        if direction is not None:
            self._set_direction(direction)
            return
        if logs is not None and self.monitor not in logs:
            raise v.invalid_value(
                self._OWNER, "monitor",
                f"a key of the epoch logs (available: {available_keys(logs)})"
                f"{order_hint(self.monitor, self._OWNER)}", self.monitor)
        raise v.invalid_value(
            self._OWNER, "mode",
            f"'min' or 'max': mode='auto' cannot tell whether "
            f"monitor={self.monitor!r} should be minimized or maximized "
            "(it infers 'min' for names like 'val_loss' or 'mae', 'max' "
            "for names like 'val_accuracy' or 'auc', or takes the "
            "direction a compiled metric declares)", self.mode)

    # Improvement ---------------------------------------------------------
    def _margin(self, reference_score):
        if self.min_delta_mode == "relative":
            return self.min_delta * abs(reference_score)
        return self.min_delta

    def _score(self, value):
        return self._sign * value

    def _improves_score(self, score, reference_score):
        if reference_score is None:
            return True
        return score + self._margin(reference_score) < reference_score

    def _is_improvement(self, monitor_value, reference_value):
        """Whether `monitor_value` beats `reference_value` by more than
        `min_delta` in the monitored direction (Keras's signature; a None
        reference is always beaten)."""
        if reference_value is None:
            return True
        return self._improves_score(self._score(monitor_value),
                                    self._score(reference_value))

    # Reading the epoch logs ----------------------------------------------
    def _lookup(self, logs, key, argument, owner=None):
        value = logs.get(key)
        if value is not None:
            return _log_number(value, key, argument,
                               owner or f"{self._OWNER}.on_epoch_end")
        if self.strict:
            raise v.invalid_value(
                self._OWNER, argument,
                f"a key of the epoch logs (available: {available_keys(logs)}; "
                "pass strict=False to skip epochs without it)"
                f"{order_hint(key, self._OWNER)}", key)
        if not self._warned_missing:
            self._warned_missing = True
            warnings.warn(self._missing_key_message(logs, key, argument),
                          stacklevel=3)
        return None

    def _missing_key_message(self, logs, key, argument):
        message = (f"{self._OWNER}: `{argument}`={key!r} is not in the epoch "
                   f"logs (available: {available_keys(logs)}); epochs without "
                   "it are not monitored (pass strict=True to make this an "
                   "error).")
        return message + order_hint(key, self._OWNER)

    def get_monitor_value(self, logs):
        """The monitored value in `logs`, as Keras's method of that name.

        Args:
            logs: dict or None, an epoch's logs.

        Returns:
            `logs[monitor]` as a float, or None when it is missing (with a
            warning once per run; a ValueError when `strict`).
        """
        owner = f"{self._OWNER}.get_monitor_value"
        return self._lookup(v.check_logs(owner, logs), self.monitor, "monitor",
                            owner)
