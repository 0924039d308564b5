"""Prechelt's stopping criteria GL, PQ and UP as pure step functions.

Each criterion is a function `(state, error, ...) -> Step(state, value, stop)`
over an explicit, immutable `CurveState`: it returns the next state, the value
the criterion compared with its threshold (None where it did not look, e.g.
between strip ends) and whether it says stop. Nothing here knows about Keras:
`EarlyStopping` feeds in errors (lower is better; it negates maximized
quantities) and keeps the state, which is what `get_state` saves.

References:
    Prechelt, "Early Stopping - But When?", in Neural Networks: Tricks of the
    Trade, LNCS 1524, 1998, section 2.2.1.
"""

import dataclasses
import math
from typing import NamedTuple


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


@dataclasses.dataclass(frozen=True)
class CurveState:
    """What Prechelt's criteria remember between epochs.

    Attributes:
        n: int, the number of monitored epochs so far (strips are counted
            from the first one: a strip ends when `n % k == 0`).
        e_opt: float or None, the lowest finite validation error so far.
        train_strip: tuple of the last (at most k) training errors.
        strip_end: float or None, the validation error at the end of the
            previous strip (UP).
        ups: int, the number of successive strips whose end error rose (UP).
    """

    n: int = 0
    e_opt: float = None
    train_strip: tuple = ()
    strip_end: float = None
    ups: int = 0


class Step(NamedTuple):
    """The result of one criterion step: the next state, the value compared
    with the threshold (None when not evaluated this epoch), and the verdict."""

    state: CurveState
    value: float
    stop: bool


def observe(state, error, train_error=None, *, strip):
    """Advance the bookkeeping shared by the criteria by one monitored epoch.

    Counts the epoch, lowers `e_opt` when `error` is a finite new minimum and,
    when `train_error` is given, appends it to the strip of training errors
    (keeping the last `strip`).

    Args:
        state: CurveState before the epoch.
        error: float, the epoch's validation error.
        train_error: float or None, default None, the epoch's training error.
        strip: int >= 1, the strip length k.

    Returns:
        The CurveState after the epoch.
    """
    e_opt = state.e_opt
    if math.isfinite(error) and (e_opt is None or error < e_opt):
        e_opt = error
    train_strip = state.train_strip
    if train_error is not None:
        train_strip = (train_strip + (train_error,))[-strip:]
    return dataclasses.replace(state, n=state.n + 1, e_opt=e_opt,
                               train_strip=train_strip)


def gl_step(state, error, *, alpha, strip=5):
    """GL_alpha: stop at the first epoch with GL(t) > alpha.

    Args:
        state: CurveState before the epoch.
        error: float, the epoch's validation error.
        alpha: float >= 0, the threshold in percent.
        strip: int >= 1, default 5, the strip length (only counted here).

    Returns:
        Step: the value is GL(t), computed every epoch.

    Example:

    >>> from kreg.callbacks._prechelt import CurveState, gl_step
    >>> state = CurveState()
    >>> for error in [1.0, 0.9, 0.93, 0.96]:
    ...     state, value, stop = gl_step(state, error, alpha=5.0)
    >>> round(value, 6), stop   # 100 * (0.96 / 0.9 - 1)
    (6.666667, True)
    """
    state = observe(state, error, strip=strip)
    value = generalization_loss(error, state.e_opt)
    return Step(state, value, value > alpha)


def pq_step(state, error, train_error, *, alpha, strip):
    """PQ_alpha: at a strip end, stop when GL(t) / P_k(t) > alpha.

    Evaluated at the end of each strip of `strip` monitored epochs once the
    strip holds `strip` training errors. A zero training progress gives an
    infinite quotient when GL > 0 and 0 otherwise.

    Args:
        state: CurveState before the epoch.
        error: float, the epoch's validation error.
        train_error: float, the epoch's training error.
        alpha: float >= 0, the threshold.
        strip: int >= 1, the strip length k.

    Returns:
        Step: the value is GL/P_k at a strip end, None between strip ends.

    Example:

    >>> from kreg.callbacks._prechelt import CurveState, pq_step
    >>> state = CurveState()
    >>> for error, train in [(1.0, 1.2), (0.9, 1.1), (0.99, 1.0)]:
    ...     state, value, stop = pq_step(state, error, train, alpha=0.5,
    ...                                  strip=3)
    >>> # GL = 100 (0.99/0.9 - 1) = 10; P_3 = 1000 (1.1/1.0 - 1) = 100
    >>> round(value, 6), stop
    (0.1, False)
    """
    state = observe(state, error, train_error, strip=strip)
    if state.n % strip != 0 or len(state.train_strip) < strip:
        return Step(state, None, False)
    gl = generalization_loss(error, state.e_opt)
    progress = training_progress(state.train_strip)
    if progress == 0.0:
        quotient = math.inf if gl > 0.0 else 0.0
    else:
        quotient = gl / progress
    return Step(state, quotient, quotient > alpha)


def up_step(state, error, *, successive, strip):
    """UP_s: stop after `successive` strips in a row whose end error rose.

    At the end of each strip the validation error is compared with the one
    at the end of the previous strip: higher counts one more rising strip,
    otherwise the count restarts at 0.

    Args:
        state: CurveState before the epoch.
        error: float, the epoch's validation error.
        successive: int >= 1, Prechelt's s.
        strip: int >= 1, the strip length k.

    Returns:
        Step: the value is the count of rising strips at a strip end, None
        between strip ends.

    Example:

    >>> from kreg.callbacks._prechelt import CurveState, up_step
    >>> state = CurveState()
    >>> for error in [1.0, 0.8, 0.9, 0.85, 0.95, 1.0]:
    ...     state, value, stop = up_step(state, error, successive=2, strip=2)
    >>> value, stop   # strip ends 0.8 -> 0.85 -> 1.0: two rises
    (2, True)
    """
    state = observe(state, error, strip=strip)
    if state.n % strip != 0:
        return Step(state, None, False)
    ups = state.ups
    if state.strip_end is not None:
        ups = ups + 1 if error > state.strip_end else 0
    state = dataclasses.replace(state, strip_end=error, ups=ups)
    return Step(state, ups, ups >= successive)
