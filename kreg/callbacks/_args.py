"""Argument checks shared by kreg's callbacks (in kreg's one wording).

The hooks Keras calls (`on_epoch_end(epoch, logs)` ...) are public methods
too: scripts and tests drive them by hand, so they check `epoch` and `logs`
like any other argument.
"""

import collections.abc
import inspect
import numbers

import numpy as np

from kreg import _validation as v


def is_real(x):
    """A real number that is not a bool (NumPy scalars included)."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def check_count(owner, name, value, low, *, allow_none=False):
    """An integer >= low; a whole-number float (5.0) is accepted, as Keras
    accepts it; 5.5 is refused (Keras would silently round it up)."""
    if allow_none and value is None:
        return None
    expected = f"an integer >= {low}" + (" or None" if allow_none else "")
    if is_real(value) and not isinstance(value, numbers.Integral):
        value = float(value)
        if not value.is_integer():
            raise v.invalid_value(
                owner, name, expected + " (a whole-number float such as 5.0 "
                "is accepted)", value)
    elif not isinstance(value, numbers.Integral) or \
            isinstance(value, (bool, np.bool_)):
        raise v.invalid_type(owner, name, expected, value)
    value = int(value)
    if value < low:
        raise v.invalid_value(owner, name, expected, value)
    return value


def check_flag(owner, name, value):
    """A bool (a NumPy bool is accepted and converted)."""
    if isinstance(value, np.bool_):
        return bool(value)
    return v.check_bool(owner, name, value)


def check_logs(owner, logs):
    """None (read as {}) or a mapping of epoch logs."""
    if logs is None:
        return {}
    if not isinstance(logs, collections.abc.Mapping):
        raise v.invalid_type(owner, "logs", "None or a dict of epoch logs",
                             logs)
    return logs


def check_epoch(owner, epoch):
    """An epoch index: an integer >= 0."""
    if isinstance(epoch, (bool, np.bool_)) or \
            not isinstance(epoch, numbers.Integral):
        raise v.invalid_type(owner, "epoch", "an integer >= 0", epoch)
    if epoch < 0:
        raise v.invalid_value(owner, "epoch", "an integer >= 0", epoch)
    return int(epoch)


def check_config(cls, config):
    """A `get_config()` dict for `cls`: a mapping whose keys are arguments
    of `cls.__init__`. Returns it as a dict."""
    owner = f"{cls.__name__}.from_config"
    if not isinstance(config, collections.abc.Mapping):
        raise v.invalid_type(owner, "config", "a dict from get_config()",
                             config)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD
               for p in params.values()):
        unknown = sorted(map(str, set(config) - set(params) - {"self"}))
        if unknown:
            raise v.invalid_value(
                owner, "config",
                f"a dict from get_config() (unknown keys: {unknown})",
                dict(config))
    return dict(config)
