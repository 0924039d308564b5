"""Resuming a run: the state `EarlyStopping.get_state` saves, and its check.

Keras keeps resuming apart too (`BackupAndRestore`); `get_state()` returns a
JSON-able dict of these entries and `set_state()` loads one after checking
every entry here, so a corrupt or hand-edited state is an error at once, in
kreg's wording, naming the entry (`state['wait']`), not one epoch later.
"""

import collections.abc
import math

import numpy as np

from kreg import _validation as v
from kreg.callbacks._args import check_count
from kreg.callbacks._args import is_real

STATE_VERSION = 2
STATE_KEYS = ("version", "monitor", "criterion", "strip", "sign", "wait",
              "best", "best_epoch", "e_opt", "n_monitored", "train_window",
              "strip_end_value", "ups", "last_epoch")


def parse_state(state, *, owner, expect):
    """Check a `get_state` dict and return its values, parsed.

    Args:
        state: the dict to check.
        owner: str, the method named in errors.
        expect: dict with the `monitor`, `criterion`, `strip`, `mode` and
            `sign` (None while undecided) of the callback loading it.

    Returns:
        A dict of the parsed entries (`best_weights` as arrays when given).
    """
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
                f"{expect[key]!r} (it has {key}={state[key]!r})",
                "{...}")

    def real(key, value, *, finite=False, allow_none=True):
        name = f"state[{key!r}]"
        expected = ("a finite float" if finite else "a float") + \
            (" or None" if allow_none else "")
        if value is None and allow_none:
            return None
        if not is_real(value):
            raise v.invalid_type(owner, name, expected, value)
        value = float(value)
        if finite and not math.isfinite(value):
            raise v.invalid_value(owner, name, expected, value)
        return value

    def count(key, low=0, allow_none=False):
        return check_count(owner, f"state[{key!r}]", state[key], low,
                            allow_none=allow_none)

    out = {}
    sign = state["sign"]
    if sign is not None and (not is_real(sign) or float(sign) not in
                             (1.0, -1.0)):
        raise v.invalid_value(owner, "state['sign']", "1.0, -1.0 or None",
                              sign)
    out["sign"] = None if sign is None else float(sign)
    if expect["mode"] != "auto" and sign is not None and \
            out["sign"] != expect["sign"]:
        raise v.invalid_value(
            owner, "state", f"a state saved with the same direction "
            f"(mode={expect['mode']!r})", "{...}")
    out["wait"] = count("wait")
    if version == 1:  # kreg 0.x: `best` was signed, `best_value` the value
        out["best"] = real("best_value", state["best_value"])
        out["best_epoch"] = count("best_epoch", allow_none=True) or 0
    else:
        out["best"] = real("best", state["best"])
        out["best_epoch"] = count("best_epoch")
    out["e_opt"] = real("e_opt", state["e_opt"], finite=True)
    out["n_monitored"] = count("n_monitored")
    window = state["train_window"]
    expected = f"a list of at most strip={expect['strip']} floats"
    if not isinstance(window, (list, tuple)):
        raise v.invalid_type(owner, "state['train_window']", expected, window)
    if len(window) > expect['strip']:
        raise v.invalid_value(owner, "state['train_window']", expected,
                              window)
    out["train_window"] = [real("train_window", x, allow_none=False)
                           for x in window]
    out["strip_end_value"] = real("strip_end_value", state["strip_end_value"])
    out["ups"] = count("ups")
    out["last_epoch"] = count("last_epoch", allow_none=True)
    if out["wait"] > out["n_monitored"]:
        raise v.invalid_value(
            owner, "state['wait']",
            f"an integer <= n_monitored={out['n_monitored']} (the patience "
            "counter counts monitored epochs)", out["wait"])
    if state.get("best_weights") is not None:
        weights = state["best_weights"]
        dtypes = state.get("best_weights_dtypes")
        expected = ("a list of arrays with best_weights_dtypes, a list of "
                    "dtype names of the same length")
        if not isinstance(weights, (list, tuple)) or \
                not isinstance(dtypes, (list, tuple)) or \
                len(dtypes) != len(weights):
            raise v.invalid_value(owner, "state['best_weights']", expected,
                                  "[...]")
        try:
            out["best_weights"] = [np.asarray(w, dtype=d)
                                   for w, d in zip(weights, dtypes)]
        except (TypeError, ValueError) as error:
            raise v.invalid_value(
                owner, "state['best_weights']",
                f"{expected} ({error})", "[...]") from None
    return out
