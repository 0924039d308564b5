"""Early stopping with Keras's, Lightning's and Prechelt's stopping rules.

The callback is assembled from parts that live in their own modules, along
the lines Keras draws: the direction of the monitored quantity
(`kreg.callbacks._monitor`, like Keras's `MonitorCallback`), the state and the
table of criteria (`kreg.callbacks._criteria`: patience and Prechelt's GL, PQ
and UP as pure steps over one frozen `StoppingState`; Prechelt's formulas in
`kreg.callbacks._prechelt`), the atomic checkpoint
(`kreg.callbacks._checkpoint`) and resuming (`kreg.callbacks._resume`).

Prechelt defines his criteria on errors (lower is better); with `mode="max"`
the values are negated, and GL and P_k are computed as
`100 (E - E_opt) / |E_opt|` and `1000 (mean - min) / |min|`, which equal the
paper's formulas for positive errors and stay relative losses for negated
ones. `train_monitor` is read in the same direction as `monitor`.

The checkpoint is a Keras `.weights.h5` file (`model.load_weights(path)`
reads it, without kreg), with the file mode `model.save_weights` gives (0644
under the usual umask). It is written atomically: to a temporary file in the
same directory, flushed to disk, then renamed over `checkpoint_path`, so a
crash or a kill at any moment leaves the previous best intact. A kill during
a write leaves a hidden `.<name>.*.tmp.weights.h5` file; the next run with
the same `checkpoint_path` deletes it at `on_train_begin`.
"""

import inspect
import math
import warnings

import keras
import numpy as np

from kreg import _compat
from kreg import _validation as v
from kreg.callbacks import _checkpoint
from kreg.callbacks import _criteria
from kreg.callbacks import _resume
from kreg.callbacks._monitor import MonitorCallback
from kreg.callbacks._monitor import direction_from_name
from kreg.callbacks._prechelt import generalization_loss
from kreg.callbacks._prechelt import training_progress

__all__ = ["EarlyStopping", "direction_from_name", "generalization_loss",
           "training_progress"]

_OWNER = "EarlyStopping"

CRITERIA = tuple(_criteria.CRITERIA)
STOP_REASONS = CRITERIA + (
    "stopping_threshold", "divergence_threshold", "non_finite", "external",
    "completed",
)
CHECKPOINT_SUFFIX = _checkpoint.SUFFIX
STATE_VERSION = _resume.STATE_VERSION


def _ending(stopped_by_another, last_epoch):
    """`(stopped_epoch, stop_reason, detail)` of a run this callback did not
    stop: another callback stopped it, or all epochs ran."""
    if stopped_by_another:
        where = "" if last_epoch is None else f" at epoch {last_epoch + 1}"
        return last_epoch or 0, "external", f"stopped{where} by another callback"
    ran = 0 if last_epoch is None else last_epoch + 1
    return 0, "completed", f"ran all {ran} epochs"


@keras.saving.register_keras_serializable(package="kreg")
class EarlyStopping(_resume.StateMixin, MonitorCallback):
    """Stop training when the validation error stops improving; keep the best.

    The textbook's early stopping: watch the validation error, stop when it
    rises, hand back the best model. It takes `keras.callbacks.EarlyStopping`'s
    arguments in Keras's positional order with the same meaning (and the same
    `patience` counting, baseline handling and `start_from_epoch`), except
    that `restore_best_weights` is True by default. From PyTorch Lightning it
    takes `check_finite`, `stopping_threshold`, `divergence_threshold` and
    `strict`. It also implements Prechelt's stopping criteria GL, PQ and UP.
    kreg's own arguments are keyword-only.

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

    Strips are counted from the first monitored epoch; with `mode="max"`
    the values are negated (see the module docstring). `E_opt` is the lowest
    monitored value (as in the paper); `min_delta` only decides which epoch
    counts as the best one to restore.

    A monitored key missing from the logs (e.g. `"val_loss"` in a `fit`
    without validation data): as in Keras, a warning (once per run) and the
    epoch is not monitored; with `strict=True`, a ValueError. With
    `mode="auto"` and a name whose direction cannot be told, a missing key is
    a ValueError naming the unknown monitor (a typo such as `"val_los"`).

    At the end of training (on every exit path that Keras calls back on:
    stopped by this callback, all epochs run, or another callback set
    `model.stop_training`), the best weights are restored when
    `restore_best_weights` and a best epoch exists, as Keras does even when it
    did not stop early. Then `summary()` gives a one-line description, printed
    when `verbose`. Epoch indices are 0-based, as in the `epoch` argument of
    Keras's hooks; the printed messages count from 1, as Keras's do.

    Attributes (Keras's meaning; after `on_train_begin`: `best` None, `wait`,
    `stopped_epoch` and `best_epoch` 0, `best_weights` None):

    - `monitor_op`: `keras.ops.less` (minimize) or `keras.ops.greater`
      (maximize), None while `mode="auto"` is undecided;
    - `best`: the best monitored value so far (None before any);
      `best_value` is the same value;
    - `best_epoch`: its epoch; `best_weights`: its weights (in memory);
    - `wait`: the patience counter;
    - `stopped_epoch`: the epoch at which training stopped (by this callback
      or, with `stop_reason="external"`, by another), 0 when it was not
      stopped, so that Keras's `if es.stopped_epoch > 0:` works (a stop at
      epoch 0, e.g. a NaN there, also reads 0: `stop_reason` tells);
    - `stop_reason`: one of `STOP_REASONS`: a criterion's name,
      `"stopping_threshold"`, `"divergence_threshold"`, `"non_finite"`,
      `"external"` (another callback stopped training), `"completed"`;
      None before training ends unless this callback stopped it;
    - `criterion_value`: the last value the criterion compared with its
      threshold (GL(t) for `"gl"`, GL/P_k at the last strip end for `"pq"`,
      the count of rising strips for `"up"`; None for `"patience"`).

    The checkpoint is a Keras `.weights.h5` file, written atomically (see
    the module docstring): a crash or a kill at any moment leaves the
    previous best intact.

    One instance serves several `fit` calls: `on_train_begin` resets the
    per-run state, unless `set_state` was called just before (to resume).

    Args:
        monitor: str, default `"val_loss"`. The key of the epoch logs to
            watch.
        min_delta: float, default 0.0. The smallest change that counts as an
            improvement (see `min_delta_mode`); a negative value is taken as
            its absolute value, as Keras does.
        patience: int >= 0, default 0 (a whole-number float such as 5.0 is
            accepted). For `criterion="patience"`: monitored epochs without
            improvement before stopping. Must be 0 with the other criteria.
        verbose: int >= 0 or bool, default 0. With 1 or more, print a
            one-line summary at the end of training.
        mode: `"auto"` (default), `"min"` or `"max"` (exactly; Keras falls
            back to "auto" on any other string, kreg raises). `"auto"` takes
            the direction that the model's compiled metric of that name
            declares, otherwise infers it from the name (see
            `direction_from_name`: min for losses and errors, max for
            accuracy-like metrics), and raises a ValueError when it cannot.
            As in Keras, the direction is decided at the first epoch end
            (when the compiled metrics exist).
        baseline: float or None, default None. For `criterion="patience"`:
            the patience counter only restarts on epochs better than this
            value (Keras's semantics). Must be None with the other criteria.
        restore_best_weights: bool, default True (unlike Keras). Keep the best
            epoch's weights in memory and set them on the model when training
            ends.
        start_from_epoch: int >= 0, default 0. Epochs before this index are
            not monitored (a warm-up), except for `check_finite`.
        check_finite: bool, default True. Stop when the monitored value (or,
            for `"pq"`, the training value) is NaN or infinite.
        stopping_threshold: float or None, default None. Stop as soon as the
            monitored value is strictly better than this.
        divergence_threshold: float or None, default None. Stop as soon as
            the monitored value is strictly worse than this.
        strict: bool, default False. With True, a monitored key missing from
            the epoch logs is a ValueError listing the available keys; with
            False (Keras's behaviour), a warning once per run and the epoch is
            not monitored.
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
            directories are created when needed. One writer per path.

    Call arguments:
        on_train_begin(logs): resets the per-run state; deletes stale
            temporary files of `checkpoint_path`.
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
    ...     if es.stop_reason is not None:
    ...         break
    >>> es.on_train_end()
    >>> es.stop_reason, es.stopped_epoch, es.best_epoch, es.best
    ('patience', 3, 1, 0.8)
    >>> print(es.summary())  # doctest: +NORMALIZE_WHITESPACE
    EarlyStopping: stopped at epoch 4: no improvement in val_loss for 2
    epochs (patience=2); best val_loss=0.8 at epoch 2.

    Keras's positional order works as in Keras:

    >>> es = kreg.callbacks.EarlyStopping("val_loss", 0, 5, 0, "auto", None,
    ...                                   True, 2)
    >>> es.patience, es.restore_best_weights, es.start_from_epoch
    (5, True, 2)

    Prechelt's GL_5 stops at the first epoch more than 5% above the best:

    >>> gl = kreg.callbacks.EarlyStopping(criterion="gl", alpha=5.0)
    >>> gl.on_train_begin()
    >>> for epoch, val_loss in enumerate([1.0, 0.9, 0.93, 0.96, 0.8]):
    ...     gl.on_epoch_end(epoch, {"val_loss": val_loss})
    ...     if gl.stop_reason is not None:
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

    _OWNER = _OWNER

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0.0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=True,
        start_from_epoch=0,
        *,
        check_finite=True,
        stopping_threshold=None,
        divergence_threshold=None,
        strict=False,
        criterion="patience",
        alpha=None,
        strip=5,
        successive_strips=None,
        train_monitor="loss",
        min_delta_mode="absolute",
        checkpoint_path=None,
    ):
        # Checked before the direction is set (explicit modes set it now).
        self.stopping_threshold = v.check_optional_float(
            _OWNER, "stopping_threshold", stopping_threshold)
        self.divergence_threshold = v.check_optional_float(
            _OWNER, "divergence_threshold", divergence_threshold)
        super().__init__(monitor, mode, min_delta, min_delta_mode, strict)
        patience = v.check_count(_OWNER, "patience", patience, 0)
        if isinstance(verbose, (bool, np.bool_)):
            verbose = int(verbose)
        self.verbose = v.check_count(_OWNER, "verbose", verbose, 0)
        baseline = v.check_optional_float(_OWNER, "baseline", baseline)
        self.restore_best_weights = v.check_flag(
            _OWNER, "restore_best_weights", restore_best_weights)
        self.start_from_epoch = v.check_count(
            _OWNER, "start_from_epoch", start_from_epoch, 0)
        self.check_finite = v.check_flag(_OWNER, "check_finite", check_finite)
        self.criterion = v.check_option(_OWNER, "criterion", criterion, CRITERIA)
        self.strip = v.check_count(_OWNER, "strip", strip, 1)
        self.train_monitor = v.check_name(_OWNER, "train_monitor", train_monitor)
        # The arguments that belong to one criterion: per the criteria table.
        own = _criteria.check_arguments(_OWNER, criterion, {
            "patience": patience, "baseline": baseline, "alpha": alpha,
            "successive_strips": successive_strips})
        self.patience, self.baseline = own["patience"], own["baseline"]
        self.alpha, self.successive_strips = own["alpha"], own["successive_strips"]
        self.checkpoint_path = _checkpoint.check_path(_OWNER, checkpoint_path)

        self._state_sign = None
        self._keep_state_once = False
        self._reset()

    # Direction (the rest is in MonitorCallback) ---------------------------
    def _set_direction(self, direction):
        _criteria.check_thresholds(_OWNER, self.monitor, direction,
                                   self.stopping_threshold,
                                   self.divergence_threshold)
        super()._set_direction(direction)

    def _resolve_direction(self, logs=None):
        super()._resolve_direction(logs)
        expected, self._state_sign = self._state_sign, None
        if expected is not None and expected != self._sign:
            raise v.invalid_value(
                "EarlyStopping.set_state", "state",
                f"a state saved with the same direction (monitor="
                f"{self.monitor!r} is now {self.direction}imized)", "{...}")

    # Hooks -----------------------------------------------------------------
    def on_train_begin(self, logs=None):
        v.check_logs("EarlyStopping.on_train_begin", logs)
        if self.mode == "auto":
            self._sign = None  # decided at the first epoch end
        if self.checkpoint_path is not None:
            _checkpoint.remove_stale_temp_files(self.checkpoint_path)
        self._warned_missing = False
        if self._keep_state_once:
            self._resume_run()  # after set_state: keep the counters, once
        else:
            self._reset()

    def on_epoch_end(self, epoch, logs=None):
        owner = "EarlyStopping.on_epoch_end"
        epoch = v.check_epoch(owner, epoch)
        logs = v.check_logs(owner, logs)
        if self._sign is None:
            self._resolve_direction(logs)
        self._last_epoch = epoch
        value = self._lookup(logs, self.monitor, "monitor")
        if value is None:
            return
        train_value = None
        if _criteria.CRITERIA[self.criterion].reads_train:
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

    def _monitor(self, epoch, value, train_value):
        state, improved = _criteria.best_step(
            self._state, value, epoch, beats=self._is_improvement,
            baseline=self.baseline)
        row = _criteria.CRITERIA[self.criterion]
        arguments = {name: getattr(self, name) for name in row.defaults}
        arguments["strip"] = self.strip
        seen = _criteria.Epoch(
            epoch, self._score(value),
            None if train_value is None else self._score(train_value),
            improved)
        step = row.step(state, seen, **arguments)
        self._state = step.state
        if step.value is not None:
            self.criterion_value = step.value
        if improved:
            if self.restore_best_weights and self.model is not None:
                self.best_weights = self.model.get_weights()
            if self.checkpoint_path is not None and self.model is not None:
                _checkpoint.save_weights_atomically(self.model,
                                                    self.checkpoint_path)

        crossed = _criteria.crossed_threshold(
            seen.score, self._sign, self.stopping_threshold,
            self.divergence_threshold)
        if crossed is not None:
            verb = "reached" if crossed == "stopping_threshold" else "passed"
            return self._stop(
                epoch, crossed, f"{self.monitor}={value:.6g} {verb} {crossed}="
                f"{getattr(self, crossed):g}")
        if step.stop:
            self._stop(epoch, self.criterion,
                       row.detail(step, seen, self.monitor, **arguments))

    def _stop(self, epoch, reason, detail):
        self.stopped_epoch = epoch
        self.stop_reason = reason
        self._detail = f"stopped at epoch {epoch + 1}: {detail}"
        if self.model is not None:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        v.check_logs("EarlyStopping.on_train_end", logs)
        model = self.model
        if self.stop_reason is None:  # not stopped by this callback
            self.stopped_epoch, self.stop_reason, self._detail = _ending(
                model is not None and getattr(model, "stop_training", False),
                self._last_epoch)
        self._restored = False
        if self.restore_best_weights and model is not None:
            if self.best_weights is not None:
                model.set_weights(self.best_weights)
                self._restored = True
            elif self.best is not None:
                warnings.warn(
                    f"EarlyStopping: the weights of the best epoch "
                    f"({self.best_epoch + 1}) were lost with the resumed run "
                    "(no weights in the state and no checkpoint_path); the "
                    "final weights are kept.", stacklevel=2)
        if self.verbose:
            _compat.print_msg(self.summary())

    def summary(self):
        """A one-line human summary of the last run (printed when verbose).

        Returns:
            A str.
        """
        head = self._detail or "has not finished a run"
        if self.best is None:
            best = "no epoch was monitored"
        else:
            best = (f"best {self.monitor}={self.best:.6g} at epoch "
                    f"{self.best_epoch + 1}")
            if self._restored:
                best += ", weights restored"
        return f"EarlyStopping: {head}; {best}."

    def get_config(self):
        return {name: getattr(self, name) for name in
                inspect.signature(EarlyStopping.__init__).parameters
                if name != "self"}

    @classmethod
    def from_config(cls, config):
        return cls(**v.check_config(cls, config))
