"""Argument validation with one error wording used everywhere in kreg.

Every bad argument is reported as::

    Invalid value for argument `rate` of Dropout: expected a float in [0, 1).
    Received: rate=1.5

A wrong *type* raises `ArgumentTypeError`, a wrong *value* raises `ValueError`;
both use this wording, naming the argument, what was expected and what was
received.

`ArgumentTypeError` derives from both `TypeError` (kreg's convention: a wrong
type is a type error) and `ValueError` (what Keras raises for the same
arguments, e.g. `Dropout(0.5, noise_shape="abc")`), so code written against
Keras that catches `ValueError` keeps working with kreg's classes. NumPy does
the same with `numpy.exceptions.AxisError(ValueError, IndexError)`. The public
name is `kreg.errors.ArgumentTypeError`.
"""

import collections.abc
import inspect
import math
import numbers

import keras
import numpy as np


def error_message(owner, name, expected, value, *, received=None):
    """Return kreg's standard message for a bad argument.

    `received` replaces the default `name=repr(value)` (e.g. `x.dtype=int32`
    for a tensor, whose repr would be long).
    """
    if received is None:
        received = f"{name}={value!r}"
    return (
        f"Invalid value for argument `{name}` of {owner}: expected {expected}. "
        f"Received: {received}"
    )


class ArgumentTypeError(TypeError, ValueError):
    """A public kreg argument has the wrong type.

    Catchable as `TypeError` (kreg's convention) and as `ValueError` (what
    Keras raises for the same bad arguments), so that a script written for
    the Keras class kreg stands in for still catches it.
    """

    __module__ = "kreg.errors"  # its public home (tracebacks, pickling)


def invalid_value(owner, name, expected, value):
    return ValueError(error_message(owner, name, expected, value))


_WHOLE = object()


def invalid_type(owner, name, expected, value, *, element=_WHOLE):
    """The wrong-type error; `element` names the bad item of a sequence."""
    if isinstance(value, Shown):  # already a description, not the value
        suffix = ""
    elif element is _WHOLE:
        suffix = f" (of type {type(value).__name__})"
    else:
        suffix = f" (element {element!r} of type {type(element).__name__})"
    return ArgumentTypeError(error_message(owner, name, expected, value) + suffix)


def is_real(value):
    """A real number that is not a bool (NumPy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_float(
    owner, name, value, *, low=None, high=None, low_open=False,
    high_open=False, expected=None,
):
    """Validate a finite real number in an interval and return it as float.

    `low`/`high` bound the interval (None for unbounded); `*_open` makes that
    end exclusive. `expected` overrides the generated description.
    """
    if expected is None:
        if low is None and high is None:
            expected = "a finite float"
        else:
            left = "(" if (low_open or low is None) else "["
            right = ")" if (high_open or high is None) else "]"
            lo = "-inf" if low is None else _fmt(low)
            hi = "inf" if high is None else _fmt(high)
            expected = f"a float in {left}{lo}, {hi}{right}"
    if not is_real(value):
        raise invalid_type(owner, name, expected, value)
    value = float(value)
    if not math.isfinite(value):
        raise invalid_value(owner, name, expected, value)
    if low is not None and (value < low or (low_open and value == low)):
        raise invalid_value(owner, name, expected, value)
    if high is not None and (value > high or (high_open and value == high)):
        raise invalid_value(owner, name, expected, value)
    return value


def check_int(owner, name, value, *, low=None, high=None, allow_none=False):
    """Validate an integer (not a bool) in [low, high] and return it as int."""
    if allow_none and value is None:
        return None
    if low is not None and high is not None:
        expected = f"an integer in [{low}, {high}]"
    elif low is not None:
        expected = f"an integer >= {low}"
    else:
        expected = "an integer"
    if allow_none:
        expected += " or None"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid_type(owner, name, expected, value)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid_value(owner, name, expected, value)
    return value


def check_count(owner, name, value, low, *, allow_none=False):
    """An integer >= low; a whole-number float (5.0) is accepted, as Keras
    accepts it; 5.5 is refused (Keras would silently round it up)."""
    if allow_none and value is None:
        return None
    expected = f"an integer >= {low}" + (" or None" if allow_none else "")
    if is_real(value) and not isinstance(value, numbers.Integral):
        value = float(value)
        if not value.is_integer():
            raise invalid_value(
                owner, name, expected + " (a whole-number float such as 5.0 "
                "is accepted)", value)
    elif not isinstance(value, numbers.Integral) or \
            isinstance(value, (bool, np.bool_)):
        raise invalid_type(owner, name, expected, value)
    value = int(value)
    if value < low:
        raise invalid_value(owner, name, expected, value)
    return value


def check_optional_float(owner, name, value):
    """None, or a finite real number (returned as float)."""
    if value is None:
        return None
    return check_float(owner, name, value, expected="a finite float or None")


def check_name(owner, name, value):
    """A non-empty string (a metric or log key)."""
    if not isinstance(value, str):
        raise invalid_type(owner, name, "a non-empty string", value)
    if not value:
        raise invalid_value(owner, name, "a non-empty string", value)
    return value


def check_option(owner, name, value, options):
    """Validate that `value` is one of the accepted option strings."""
    expected = "one of " + ", ".join(repr(o) for o in options)
    if not isinstance(value, str):
        raise invalid_type(owner, name, expected, value)
    if value not in options:
        raise invalid_value(owner, name, expected, value)
    return value


def check_bool(owner, name, value):
    if not isinstance(value, bool):
        raise invalid_type(owner, name, "a bool", value)
    return value


def check_flag(owner, name, value):
    """A bool (a NumPy bool is accepted and converted)."""
    if isinstance(value, np.bool_):
        return bool(value)
    return check_bool(owner, name, value)


# The hooks Keras calls (`on_epoch_end(epoch, logs)` ...) are public methods
# too: scripts and tests drive them by hand, so they check `epoch` and `logs`
# like any other argument.
def check_logs(owner, logs):
    """None (read as {}) or a mapping of epoch logs."""
    if logs is None:
        return {}
    if not isinstance(logs, collections.abc.Mapping):
        raise invalid_type(owner, "logs", "None or a dict of epoch logs", logs)
    return logs


def check_epoch(owner, epoch):
    """An epoch index: an integer >= 0."""
    if isinstance(epoch, (bool, np.bool_)) or \
            not isinstance(epoch, numbers.Integral):
        raise invalid_type(owner, "epoch", "an integer >= 0", epoch)
    if epoch < 0:
        raise invalid_value(owner, "epoch", "an integer >= 0", epoch)
    return int(epoch)


def check_config(cls, config):
    """A `get_config()` dict for `cls`: a mapping whose keys are arguments
    of `cls.__init__`. Returns it as a dict."""
    owner = f"{cls.__name__}.from_config"
    if not isinstance(config, collections.abc.Mapping):
        raise invalid_type(owner, "config", "a dict from get_config()", config)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD
               for p in params.values()):
        unknown = sorted(map(str, set(config) - set(params) - {"self"}))
        if unknown:
            raise invalid_value(
                owner, "config",
                f"a dict from get_config() (unknown keys: {unknown})",
                dict(config))
    return dict(config)


def check_seed(owner, value):
    """Validate a layer/initializer seed: None or a non-negative int."""
    if value is None:
        return None
    expected = "None or a non-negative integer"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid_type(owner, "seed", expected, value)
    if value < 0:
        raise invalid_value(owner, "seed", expected, value)
    return int(value)


def check_float_tensor(owner, name, value, expected="a floating-point tensor"):
    """Validate a tensor (or array) of a floating dtype; return its dtype name.

    An object without a dtype, or with an integer/bool/string dtype, is an
    `ArgumentTypeError` in kreg's wording (the message names the dtype).
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        raise invalid_type(owner, name, expected, value)
    try:
        dtype = keras.backend.standardize_dtype(dtype)
    except ValueError:
        dtype = str(dtype)
    if not keras.backend.is_float_dtype(dtype):
        raise ArgumentTypeError(error_message(
            owner, name, expected, value, received=f"{name}.dtype={dtype}"))
    return dtype


class Shown:
    """Shows a short description, unquoted, in an error message."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def shown(value):
    """`value` as an error message shows it: an array or tensor as its shape
    and dtype (`<array of shape (2, 3), dtype float32>`), anything else as is."""
    if isinstance(value, np.ndarray) or hasattr(value, "shape"):
        shape = tuple(getattr(value, "shape", ()))
        return Shown(f"<array of shape {shape}, dtype {getattr(value, 'dtype', '?')}>")
    return value


def numeric_array(owner, name, value, expected, kinds="biuf", dtype=None):
    """An array-like argument (array, tensor, nested lists) as a NumPy array.

    Its dtype kind must be one of `kinds` (NumPy's letters: "b" bool, "i"
    int, "u" unsigned, "f" float), else an `ArgumentTypeError` in kreg's
    wording; `dtype` (e.g. "float64") casts the result. None, strings, bytes
    and dicts are refused, and so are ragged lists (the message says why).
    Arrays are shown in messages by `shown`.
    """
    if value is None or isinstance(value, (str, bytes, dict)):
        raise invalid_type(owner, name, expected, value)
    try:
        if hasattr(value, "shape") and not isinstance(value, np.ndarray):
            value = keras.ops.convert_to_numpy(value)
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise invalid_type(owner, name, f"{expected} ({err})", shown(value)) from None
    if arr.dtype.kind not in kinds:
        raise invalid_type(owner, name, expected, shown(arr))
    return arr if dtype is None else arr.astype(dtype)


def _fmt(x):
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)
