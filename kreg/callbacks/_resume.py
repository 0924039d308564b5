"""Resuming a run: the state `EarlyStopping.get_state` saves, and its check.

Keras keeps resuming apart too (`BackupAndRestore`); `get_state()` returns a
JSON-able dict and `set_state()` loads one after checking every entry here,
so a corrupt or hand-edited state is an error at once, in kreg's wording,
naming the entry (`state['wait']`), not one epoch later.

The dict is the callback's `StoppingState` written out through one table,
`FIELDS` (entry name, attribute, check), and a header naming the callback it
belongs to (`version`, `monitor`, `criterion`, `strip`, `sign`) and the last
epoch seen. `StateMixin` gives `EarlyStopping` its state attributes, `get_state` and
`set_state`.
"""

import collections.abc
import dataclasses
import math
import os

import numpy as np

from kreg import _validation as v
from kreg.callbacks._criteria import StoppingState
from kreg.callbacks._prechelt import CurveState

STATE_VERSION = 2


def _count(*, allow_none=False):
    def check(owner, name, value, strip):
        return v.check_count(owner, name, value, 0, allow_none=allow_none)
    return check


def _real(*, finite=False, allow_none=True):
    expected = ("a finite float" if finite else "a float") + \
        (" or None" if allow_none else "")

    def check(owner, name, value, strip):
        if value is None and allow_none:
            return None
        if not v.is_real(value):
            raise v.invalid_type(owner, name, expected, value)
        value = float(value)
        if finite and not math.isfinite(value):
            raise v.invalid_value(owner, name, expected, value)
        return value
    return check


def _window(owner, name, value, strip):
    expected = f"a list of at most strip={strip} floats"
    if not isinstance(value, (list, tuple)):
        raise v.invalid_type(owner, name, expected, value)
    if len(value) > strip:
        raise v.invalid_value(owner, name, expected, value)
    item = _real(allow_none=False)
    return tuple(item(owner, name, x, strip) for x in value)


#: The saved entries of a StoppingState: (key, attribute, check).
FIELDS = (
    ("wait", "wait", _count()),
    ("best", "best", _real()),
    ("best_epoch", "best_epoch", _count()),
    ("e_opt", "curve.e_opt", _real(finite=True)),
    ("n_monitored", "curve.n", _count()),
    ("train_window", "curve.train_strip", _window),
    ("strip_end_value", "curve.strip_end", _real()),
    ("ups", "curve.ups", _count()),
)
#: Version 1 (kreg 0.x) kept the value as `best_value` (`best` was signed)
#: and allowed a None `best_epoch`.
_VERSION_1 = {
    "best": ("best_value", _real()),
    "best_epoch": ("best_epoch",
                   lambda *args: _count(allow_none=True)(*args) or 0),
}
HEADER = ("version", "monitor", "criterion", "strip", "sign")
STATE_KEYS = HEADER + ("wait", "best", "best_epoch", "e_opt", "n_monitored",
                       "train_window", "strip_end_value", "ups", "last_epoch")


def _get(state, attribute):
    for part in attribute.split("."):
        state = getattr(state, part)
    return state


def state_to_dict(state):
    """The FIELDS entries of a StoppingState, as plain Python values."""
    out = {}
    for key, attribute, _ in FIELDS:
        value = _get(state, attribute)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _state_from(values):
    """A StoppingState from `{attribute: value}` (FIELDS' attributes)."""
    curve = {a.split(".")[1]: x for a, x in values.items() if "." in a}
    top = {a: x for a, x in values.items() if "." not in a}
    return StoppingState(curve=CurveState(**curve), **top)


def _check_header(state, owner, expect):
    if not isinstance(state, collections.abc.Mapping):
        raise v.invalid_type(owner, "state", "a dict from get_state()", state)
    version = state.get("version")
    if isinstance(version, bool) or version not in (1, STATE_VERSION):
        raise v.invalid_value(
            owner, "state['version']",
            f"{STATE_VERSION} (or 1), from get_state()", version)
    required = STATE_KEYS if version == STATE_VERSION else \
        STATE_KEYS + ("best_value",)
    missing = [k for k in required if k not in state]
    if missing:
        raise v.invalid_value(
            owner, "state",
            f"a dict from get_state() (version {STATE_VERSION}; missing "
            f"keys: {missing})", "{...}")
    for key in ("monitor", "criterion", "strip"):
        if state[key] != expect[key]:
            raise v.invalid_value(
                owner, "state",
                f"a state of an EarlyStopping with {key}="
                f"{expect[key]!r} (it has {key}={state[key]!r})", "{...}")
    sign = state["sign"]
    if sign is not None and (not v.is_real(sign) or
                             float(sign) not in (1.0, -1.0)):
        raise v.invalid_value(owner, "state['sign']", "1.0, -1.0 or None",
                              sign)
    sign = None if sign is None else float(sign)
    if expect["mode"] != "auto" and sign is not None and \
            sign != expect["sign"]:
        raise v.invalid_value(
            owner, "state", f"a state saved with the same direction "
            f"(mode={expect['mode']!r})", "{...}")
    return version, sign


def _best_weights(state, owner):
    weights = state.get("best_weights")
    if weights is None:
        return None
    dtypes = state.get("best_weights_dtypes")
    expected = ("a list of arrays with best_weights_dtypes, a list of "
                "dtype names of the same length")
    if not isinstance(weights, (list, tuple)) or \
            not isinstance(dtypes, (list, tuple)) or len(dtypes) != len(weights):
        raise v.invalid_value(owner, "state['best_weights']", expected, "[...]")
    try:
        return [np.asarray(w, dtype=d) for w, d in zip(weights, dtypes)]
    except (TypeError, ValueError) as error:
        raise v.invalid_value(owner, "state['best_weights']",
                              f"{expected} ({error})", "[...]") from None


def parse_state(state, *, owner, expect):
    """Check a `get_state` dict and return its values, parsed.

    Args:
        state: the dict to check.
        owner: str, the method named in errors.
        expect: dict with the `monitor`, `criterion`, `strip`, `mode` and
            `sign` (None while undecided) of the callback loading it.

    Returns:
        A dict: `state` (a StoppingState), `sign`, `last_epoch` and
        `best_weights` (arrays, or None).
    """
    version, sign = _check_header(state, owner, expect)
    values = {}
    for key, attribute, check in FIELDS:
        if version == 1:
            key, check = _VERSION_1.get(key, (key, check))
        values[attribute] = check(owner, f"state[{key!r}]", state[key],
                                  expect["strip"])
    parsed = _state_from(values)
    last_epoch = v.check_count(owner, "state['last_epoch']",
                               state["last_epoch"], 0, allow_none=True)
    if parsed.wait > parsed.curve.n:
        raise v.invalid_value(
            owner, "state['wait']",
            f"an integer <= n_monitored={parsed.curve.n} (the patience "
            "counter counts monitored epochs)", parsed.wait)
    return {"state": parsed, "sign": sign, "last_epoch": last_epoch,
            "best_weights": _best_weights(state, owner)}


def _state_attribute(name):
    """A Keras attribute (`wait`, `best`, `best_epoch`) kept in the state."""
    def get(self):
        return getattr(self._state, name)

    def set_(self, value):
        self._state = dataclasses.replace(self._state, **{name: value})

    return property(get, set_, doc=f"`{name}` of the StoppingState.")


class StateMixin:
    """EarlyStopping's state: Keras's attributes `wait`, `best` and
    `best_epoch` over the frozen `StoppingState` (in `_state`), its reset,
    and `get_state` / `set_state` to resume a run."""

    # Keras's attributes, kept in the one frozen state.
    wait = _state_attribute("wait")
    best = _state_attribute("best")
    best_epoch = _state_attribute("best_epoch")

    @property
    def best_value(self):
        """The best monitored value so far (the same as `best`)."""
        return self.best

    def _reset(self):
        self._state = StoppingState()
        self.best_weights = None
        self.stopped_epoch = 0
        self.stop_reason = None
        self.criterion_value = None
        self._detail = None
        self._last_epoch = None
        self._restored = False

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
        >>> state["wait"], state["best"], state["best_epoch"]
        (1, 1.0, 0)
        """
        include_weights = v.check_flag(f"{self._OWNER}.get_state",
                                       "include_weights", include_weights)
        state = {"version": STATE_VERSION, "monitor": self.monitor,
                 "criterion": self.criterion, "strip": self.strip,
                 "sign": self._sign}
        state.update(state_to_dict(self._state))
        state["last_epoch"] = self._last_epoch
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
        restored (a warning says so at the end). Every entry is checked here:
        a wrong one is an error now, not one epoch later. States of version 1
        (kreg 0.x, with `best_value`) are accepted.

        Args:
            state: dict, as returned by `get_state` (also after a JSON round
                trip), for the same `monitor`, `criterion` and `strip`.

        Returns:
            None.
        """
        parsed = parse_state(state, owner=f"{self._OWNER}.set_state", expect={
            "monitor": self.monitor, "criterion": self.criterion,
            "strip": self.strip, "mode": self.mode, "sign": self._sign})
        self._reset()
        self._state = parsed["state"]
        self._last_epoch = parsed["last_epoch"]
        self.best_weights = parsed["best_weights"]
        self._keep_state_once = True
        if self.mode == "auto":
            self._sign = None
            self._state_sign = parsed["sign"]

    def _resume_run(self):
        """`on_train_begin` after `set_state`: keep the counters (once)."""
        self._keep_state_once = False
        self.stopped_epoch = 0
        self.stop_reason = None
        self._detail = None
        self._restored = False
        if self.best_weights is None and self.best is not None and \
                self.restore_best_weights:
            self._reload_checkpoint()

    def _reload_checkpoint(self):
        path, model = self.checkpoint_path, self.model
        if path is None or model is None or not os.path.exists(path):
            return
        current = model.get_weights()
        model.load_weights(path)
        self.best_weights = model.get_weights()
        model.set_weights(current)
