"""EarlyStopping's memory as one frozen state, and its criteria as a table.

`StoppingState` holds everything `EarlyStopping` remembers between epochs:
the patience counter `wait`, the best value and its epoch, and the
`CurveState` of Prechelt's criteria. Each monitored epoch first goes through
`best_step` (Keras's best tracking), then through the chosen criterion's
step, a pure function `(state, epoch, **arguments) -> Step`; nothing is
mutated, so the callback's state is always one value that `get_state` can
save. This is the shape of Optax's `reduce_on_plateau` (the state in one
NamedTuple, `update` pure).

`CRITERIA` is the one place that knows the criteria: for each, its step, the
sentence that says why it stopped, and its own arguments with their
defaults. `EarlyStopping` dispatches through it and `check_arguments`
checks the arguments that belong to one criterion against it.

References:
    Prechelt, "Early Stopping - But When?", in Neural Networks: Tricks of the
    Trade, LNCS 1524, 1998, section 2.2.1; `keras.callbacks.EarlyStopping`
    (Keras 3.15); Optax, `contrib.reduce_on_plateau`.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

from kreg import _validation as v
from kreg.callbacks import _prechelt
from kreg.callbacks._prechelt import CurveState
from kreg.callbacks._prechelt import Step


@dataclasses.dataclass(frozen=True)
class StoppingState:
    """What EarlyStopping remembers between epochs (`get_state` saves it).

    Attributes:
        wait: int, the patience counter: monitored epochs since the last
            improvement that restarted it.
        best: float or None, the best monitored value so far.
        best_epoch: int, its epoch (0 before any).
        curve: CurveState, what Prechelt's criteria remember.
    """

    wait: int = 0
    best: float = None
    best_epoch: int = 0
    curve: CurveState = CurveState()


class Epoch(NamedTuple):
    """One monitored epoch as a criterion sees it.

    `score` and `train_score` are the monitored and training values as errors
    (lower is better: maximized quantities are negated); `improved` says
    whether `best_step` took the epoch as the new best.
    """

    index: int
    score: float
    train_score: float = None
    improved: bool = False


def best_step(state, value, epoch, *, beats, baseline=None):
    """Keras's best tracking for one monitored epoch.

    Counts the epoch in `wait`. A value that beats the best (`beats(value,
    best)`, True when there is no best yet) becomes the best, and restarts the
    count when it also beats `baseline` (always, without one).

    Args:
        state: StoppingState before the epoch.
        value: float, the monitored value.
        epoch: int, the epoch index.
        beats: function `(value, reference) -> bool`, the improvement test
            (with `min_delta`, in the monitored direction).
        baseline: float or None, default None.

    Returns:
        `(state, improved)`: the StoppingState after the epoch and whether
        the epoch improved on the best.

    Example:

    >>> from kreg.callbacks._criteria import StoppingState, best_step
    >>> beats = lambda value, best: best is None or value < best
    >>> state = StoppingState()
    >>> for epoch, loss in enumerate([1.0, 0.8, 0.9]):
    ...     state, improved = best_step(state, loss, epoch, beats=beats)
    >>> state.wait, state.best, state.best_epoch, improved
    (1, 0.8, 1, False)
    """
    wait = state.wait + 1
    if not beats(value, state.best):
        return dataclasses.replace(state, wait=wait), False
    if baseline is None or beats(value, baseline):
        wait = 0  # Keras: restart only when the baseline is beaten too
    return dataclasses.replace(state, wait=wait, best=value,
                               best_epoch=epoch), True


def _with_curve(state, step):
    """Lift a Prechelt step (over a CurveState) to the StoppingState."""
    return Step(dataclasses.replace(state, curve=step.state), step.value,
                step.stop)


def patience_step(state, epoch, *, patience, strip, baseline=None):
    """Keras's patience: stop after `patience` epochs without improvement.

    Stops at an epoch that did not improve once `wait` (counted by
    `best_step`) reaches `patience`, never at epoch 0: so 0 and 1 both stop
    at the first epoch that does not improve, as in Keras.

    Args:
        state: StoppingState after `best_step`.
        epoch: Epoch.
        patience: int >= 0.
        strip: int >= 1, the strip length (only counted here).
        baseline: float or None, default None: not read here (`best_step`
            applies it); a keyword so that every row of `CRITERIA` is called
            with its own arguments.

    Returns:
        Step: the value is None (patience compares no value).

    Example:

    >>> from kreg.callbacks._criteria import Epoch, StoppingState
    >>> from kreg.callbacks._criteria import patience_step
    >>> state = StoppingState(wait=2, best=0.8, best_epoch=1)
    >>> patience_step(state, Epoch(3, 0.85), patience=2, strip=5).stop
    True
    """
    curve = _prechelt.observe(state.curve, epoch.score, strip=strip)
    stop = not epoch.improved and state.wait >= patience and epoch.index > 0
    return Step(dataclasses.replace(state, curve=curve), None, stop)


def crossed_threshold(score, sign, stopping_threshold, divergence_threshold):
    """Lightning's thresholds: which one the epoch's score crossed, if any.

    Args:
        score: float, the monitored value as an error (`sign * value`).
        sign: 1.0 (minimized) or -1.0 (maximized).
        stopping_threshold, divergence_threshold: float or None.

    Returns:
        `"stopping_threshold"` (strictly better than it),
        `"divergence_threshold"` (strictly worse) or None.
    """
    if stopping_threshold is not None and score < sign * stopping_threshold:
        return "stopping_threshold"
    if divergence_threshold is not None and \
            score > sign * divergence_threshold:
        return "divergence_threshold"
    return None


def check_thresholds(owner, monitor, direction, stopping_threshold,
                     divergence_threshold):
    """Refuse a divergence threshold that is not worse than the stopping one
    in the monitored `direction` ("min" or "max")."""
    sign = 1.0 if direction == "min" else -1.0
    if stopping_threshold is None or divergence_threshold is None or \
            sign * stopping_threshold < sign * divergence_threshold:
        return
    worse = "greater" if direction == "min" else "smaller"
    raise v.invalid_value(
        owner, "divergence_threshold",
        f"a value {worse} than stopping_threshold={stopping_threshold!r} "
        f"(monitor={monitor!r} is "
        f"{'minimized' if direction == 'min' else 'maximized'})",
        divergence_threshold)


class Criterion(NamedTuple):
    """One row of `CRITERIA`.

    Attributes:
        step: `(state, epoch, **arguments) -> Step`; `arguments` are the
            criterion's own (the keys of `defaults`) and `strip`.
        detail: `(step, epoch, monitor, **arguments) -> str`, why it stopped.
        defaults: dict, the criterion's own arguments and the value each takes
            when given as None.
        reads_train: bool, whether it reads `train_monitor`.
    """

    step: Callable
    detail: Callable
    defaults: dict
    reads_train: bool = False


def _patience_detail(step, epoch, monitor, *, patience, strip, baseline):
    return (f"no improvement in {monitor} for {step.state.wait} epochs "
            f"(patience={patience})")


def _gl_detail(step, epoch, monitor, *, alpha, strip):
    return f"generalization loss GL={step.value:.4g} > {alpha:g}"


def _pq_detail(step, epoch, monitor, *, alpha, strip):
    curve = step.state.curve
    gl = _prechelt.generalization_loss(epoch.score, curve.e_opt)
    progress = _prechelt.training_progress(curve.train_strip)
    return (f"GL/P_{strip}={step.value:.4g} > {alpha:g} "
            f"(GL={gl:.4g}, P_{strip}={progress:.4g})")


def _up_detail(step, epoch, monitor, *, successive_strips, strip):
    return (f"{monitor} rose over {step.value} successive strips of {strip} "
            f"epochs (UP_{successive_strips})")


# Defaults of Prechelt's criteria, inside the ranges his experiments used
# (GL_1..GL_5, PQ_0.5..PQ_3, UP_2..UP_4).
CRITERIA = {
    "patience": Criterion(
        step=patience_step, detail=_patience_detail,
        defaults={"patience": 0, "baseline": None}),
    "gl": Criterion(
        step=lambda state, epoch, *, alpha, strip: _with_curve(
            state, _prechelt.gl_step(state.curve, epoch.score, alpha=alpha,
                                     strip=strip)),
        detail=_gl_detail, defaults={"alpha": 5.0}),
    "pq": Criterion(
        step=lambda state, epoch, *, alpha, strip: _with_curve(
            state, _prechelt.pq_step(state.curve, epoch.score,
                                     epoch.train_score, alpha=alpha,
                                     strip=strip)),
        detail=_pq_detail, defaults={"alpha": 2.0}, reads_train=True),
    "up": Criterion(
        step=lambda state, epoch, *, successive_strips, strip: _with_curve(
            state, _prechelt.up_step(state.curve, epoch.score,
                                     successive=successive_strips,
                                     strip=strip)),
        detail=_up_detail, defaults={"successive_strips": 3}),
}

# The arguments that belong to one criterion: the value each must keep with
# the other criteria, and its check where it belongs (patience and baseline
# are Keras's arguments, checked with the others).
_UNUSED = {"patience": 0, "baseline": None, "alpha": None,
           "successive_strips": None}
_CHECKS = {
    "alpha": lambda owner, value: v.check_float(
        owner, "alpha", value, low=0.0, expected="a finite float >= 0 or None"),
    "successive_strips": lambda owner, value: v.check_count(
        owner, "successive_strips", value, 1, allow_none=True),
}


def check_arguments(owner, criterion, given):
    """The criterion-specific arguments, checked against the table.

    An argument that belongs to `criterion` is checked and, when None, takes
    the criterion's default; one that belongs to another criterion must keep
    its unused value (0 for `patience`, None otherwise).

    Args:
        owner: str, the class named in errors.
        criterion: str, a key of `CRITERIA`.
        given: dict with `patience`, `baseline`, `alpha` and
            `successive_strips`.

    Returns:
        A dict of the four values to store.
    """
    defaults = CRITERIA[criterion].defaults
    out = {}
    for name, unused in _UNUSED.items():
        value = given[name]
        if name in defaults:
            if value is None:
                value = defaults[name]
            elif name in _CHECKS:
                value = _CHECKS[name](owner, value)
        elif value != unused:
            owners = " or ".join(repr(c) for c, row in CRITERIA.items()
                                 if name in row.defaults)
            raise v.invalid_value(
                owner, name, f"{unused!r} with criterion={criterion!r} "
                f"({name} belongs to criterion {owners})", value)
        out[name] = value
    return out
