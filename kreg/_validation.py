"""Argument validation with one error wording used everywhere in kreg.

Every bad argument is reported as::

    Invalid value for argument `rate` of Dropout: expected a float in [0, 1).
    Received: rate=1.5

A wrong *type* raises `TypeError`, a wrong *value* raises `ValueError`; both use
this wording, naming the argument, what was expected and what was received.
"""

import math
import numbers


def error_message(owner, name, expected, value):
    """Return kreg's standard message for a bad argument."""
    return (
        f"Invalid value for argument `{name}` of {owner}: expected {expected}. "
        f"Received: {name}={value!r}"
    )


def invalid_value(owner, name, expected, value):
    return ValueError(error_message(owner, name, expected, value))


def invalid_type(owner, name, expected, value):
    return TypeError(
        error_message(owner, name, expected, value)
        + f" (of type {type(value).__name__})"
    )


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
    if not _is_real(value):
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


def _fmt(x):
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)
