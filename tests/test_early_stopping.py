"""Tests of kreg.callbacks.EarlyStopping: Keras parity, Lightning's additions,
exit paths, arguments, a few small real `fit` runs.

Most tests drive the hooks with scripted curves and a stand-in model
(early_stopping_helpers.py). Prechelt's criteria: test_prechelt.py; resuming:
test_early_stopping_resume.py; the checkpoint: test_early_stopping_checkpoint.py;
the state and the criteria table: test_early_stopping_criteria.py.
"""

import inspect
import json

import keras
import numpy as np
import pytest
from early_stopping_helpers import NAN
from early_stopping_helpers import FakeModel
from early_stopping_helpers import compiled_model as _compiled_model
from early_stopping_helpers import drive
from early_stopping_helpers import restored_epoch

import kreg
from kreg.callbacks import EarlyStopping
from kreg.callbacks.early_stopping import STOP_REASONS
from kreg.callbacks.early_stopping import direction_from_name

# ----------------------------------------------------------------------------
# Keras parity: the same curves through keras.callbacks.EarlyStopping.
KERAS_CASES = [
    dict(val=[1.0, 0.8, 0.9, 0.85, 0.7, 0.75], kw=dict(patience=0)),
    dict(val=[1.0, 0.8, 0.9, 0.85, 0.7, 0.75], kw=dict(patience=1)),
    dict(val=[1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.8, 0.9], kw=dict(patience=2)),
    dict(val=[1.0, 0.95, 0.94, 0.93, 0.9, 0.85],
         kw=dict(patience=1, min_delta=0.02)),
    dict(val=[0.5, 0.6, 0.55, 0.7, 0.65, 0.6],
         kw=dict(patience=1, mode="max", min_delta=0.01), monitor="val_acc"),
    dict(val=[1.0, 0.9, 0.8, 0.7, 0.6, 0.65, 0.7],
         kw=dict(patience=2, baseline=0.5)),
    dict(val=[1.0, 0.9, 0.8, 0.4, 0.5, 0.6, 0.7],
         kw=dict(patience=2, baseline=0.5)),
    dict(val=[0.5, 0.4, 1.0, 0.9, 1.1, 1.2, 1.3],
         kw=dict(patience=1, start_from_epoch=2)),
    dict(val=[1.0, 1.0, 1.0, 1.0], kw=dict(patience=2)),
    dict(val=[0.3, 0.2, 0.1], kw=dict(patience=0)),
]


@pytest.mark.parametrize("case", KERAS_CASES)
def test_patience_matches_keras(case):
    monitor = case.get("monitor", "val_loss")
    ours = EarlyStopping(monitor=monitor, **case["kw"])
    theirs = keras.callbacks.EarlyStopping(
        monitor=monitor, restore_best_weights=True, **case["kw"])
    m1 = drive(ours, case["val"], monitor=monitor)
    m2 = drive(theirs, case["val"], monitor=monitor)
    # Keras's attributes, with Keras's meaning (stopped_epoch 0: not stopped).
    for name in ("stopped_epoch", "best_epoch", "best", "wait", "monitor_op"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert restored_epoch(m1) == restored_epoch(m2) == ours.best_epoch
    assert ours.stop_reason == (
        "patience" if theirs.stopped_epoch > 0 else "completed")


def test_patience_matches_keras_on_random_curves():
    rng = np.random.default_rng(42)
    for _ in range(150):
        n = int(rng.integers(1, 12))
        mode = str(rng.choice(["min", "max"]))
        walk = np.cumsum(rng.normal(0.0, 0.1, n)) + 1.0
        curve = [float(x) for x in walk]
        kw = dict(patience=int(rng.integers(0, 4)), mode=mode,
                  min_delta=float(rng.choice([0.0, rng.uniform(0, 0.1)])),
                  start_from_epoch=int(rng.integers(0, 3)))
        if rng.random() < 0.3:
            kw["baseline"] = float(rng.uniform(0.7, 1.3))
        ours = EarlyStopping(monitor="m", **kw)
        theirs = keras.callbacks.EarlyStopping(
            monitor="m", restore_best_weights=True, **kw)
        m1 = drive(ours, curve, monitor="m")
        m2 = drive(theirs, curve, monitor="m")
        for name in ("stopped_epoch", "best_epoch", "best", "wait",
                     "monitor_op"):
            assert getattr(ours, name) == getattr(theirs, name), \
                (name, curve, kw)
        assert restored_epoch(m1) == restored_epoch(m2), (curve, kw)


def test_patience_hand_computed():
    es = EarlyStopping(patience=2)
    model = drive(es, [1.0, 0.8, 0.9, 0.85, 0.7])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == ("patience", 3, 1)
    assert es.best_value == 0.8
    assert restored_epoch(model) == 1
    assert model.stop_training


# ----------------------------------------------------------------------------
# Lightning's additions, relative min_delta, baseline, start_from_epoch.
@pytest.mark.parametrize("criterion,kw", [
    ("patience", dict(patience=5)), ("gl", {}),
    ("pq", dict(strip=1)), ("up", dict(strip=1))])
@pytest.mark.parametrize("bad", [NAN, float("inf")])
def test_non_finite_stops_and_restores_best(criterion, kw, bad):
    es = EarlyStopping(criterion=criterion, **kw)
    model = drive(es, [1.0, 0.9, bad, 0.8], [2.0, 1.9, 1.8, 1.7])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == \
        ("non_finite", 2, 1)
    assert restored_epoch(model) == 1
    assert "is not finite" in es.summary()


def test_non_finite_training_value_stops_pq():
    es = EarlyStopping(criterion="pq", strip=2)
    drive(es, [1.0, 0.9, 0.8], [1.0, NAN, 0.5])
    assert (es.stop_reason, es.stopped_epoch) == ("non_finite", 1)


def test_nan_in_the_middle_without_check_finite_continues():
    es = EarlyStopping(patience=5, check_finite=False)
    model = drive(es, [1.0, 0.9, NAN, 0.8, 0.85])
    assert es.stop_reason == "completed"
    assert es.best_epoch == 3
    assert restored_epoch(model) == 3
    es = EarlyStopping(patience=1, check_finite=False)
    drive(es, [1.0, 0.9, NAN, 0.8])
    assert es.stopped_epoch == 2  # NaN is not an improvement (as in Keras)


def test_check_finite_applies_during_warm_up():
    es = EarlyStopping(start_from_epoch=3)
    drive(es, [1.0, NAN, 0.5])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch, es.best) == \
        ("non_finite", 1, 0, None)
    assert "no epoch was monitored" in es.summary()


def test_start_from_epoch_ignores_warm_up():
    es = EarlyStopping(patience=1, start_from_epoch=2)
    model = drive(es, [0.5, 0.4, 1.0, 0.9, 1.1, 1.2])
    assert (es.stopped_epoch, es.best_epoch, es.best_value) == (4, 3, 0.9)
    assert restored_epoch(model) == 3


def test_baseline_restarts_patience_only_when_beaten():
    # Never beats 0.5: improvements do not reset the count; stops at the
    # first non-improving epoch once wait >= patience (Keras).
    es = EarlyStopping(patience=2, baseline=0.5)
    drive(es, [1.0, 0.9, 0.8, 0.85, 0.6])
    assert (es.stopped_epoch, es.best_epoch) == (3, 2)
    # Beats it at e2: counting restarts there.
    es = EarlyStopping(patience=2, baseline=0.5)
    drive(es, [1.0, 0.9, 0.4, 0.45, 0.41, 0.42])
    assert (es.stopped_epoch, es.best_epoch) == (4, 2)


def test_relative_min_delta():
    # Relative 1%: 0.995 is not an improvement on 1.0, 0.985 is (< 0.99);
    # then 0.98 and 0.976 are not (>= 0.985 * 0.99 = 0.97515).
    es = EarlyStopping(patience=2, min_delta=0.01, min_delta_mode="relative")
    model = drive(es, [1.0, 0.995, 0.985, 0.98, 0.976, 0.9])
    assert (es.stopped_epoch, es.best_epoch) == (4, 2)
    assert restored_epoch(model) == 2
    # The same curve with absolute min_delta=0.001 improves at every epoch.
    es = EarlyStopping(patience=2, min_delta=0.001)
    drive(es, [1.0, 0.995, 0.985, 0.98, 0.976, 0.9])
    assert (es.stop_reason, es.best_epoch) == ("completed", 5)
    # Maximized, negative values: relative to |best|.
    es = EarlyStopping(monitor="score", mode="max", patience=0, min_delta=0.1,
                       min_delta_mode="relative")
    drive(es, [-10.0, -9.5, -8.5], monitor="score")
    assert (es.stopped_epoch, es.best_epoch) == (1, 0)
    es = EarlyStopping(monitor="score", mode="max", patience=5, min_delta=0.1,
                       min_delta_mode="relative")
    drive(es, [-10.0, -9.5, -8.9], monitor="score")
    assert es.best_epoch == 2


def test_stopping_and_divergence_thresholds():
    es = EarlyStopping(patience=10, stopping_threshold=0.5)
    model = drive(es, [1.0, 0.7, 0.5, 0.45, 0.3])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == \
        ("stopping_threshold", 3, 3)
    assert restored_epoch(model) == 3
    es = EarlyStopping(patience=10, divergence_threshold=2.0)
    model = drive(es, [1.0, 0.7, 2.0, 2.5, 0.3])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == \
        ("divergence_threshold", 3, 1)
    assert restored_epoch(model) == 1
    es = EarlyStopping(monitor="val_accuracy", stopping_threshold=0.9,
                       divergence_threshold=0.2, patience=10)
    drive(es, [0.5, 0.8, 0.91], monitor="val_accuracy")
    assert es.stop_reason == "stopping_threshold"
    es = EarlyStopping(monitor="val_accuracy", stopping_threshold=0.9,
                       divergence_threshold=0.2, patience=10)
    drive(es, [0.5, 0.1, 0.91], monitor="val_accuracy")
    assert (es.stop_reason, es.stopped_epoch) == ("divergence_threshold", 1)


def test_thresholds_must_be_ordered_for_the_direction():
    with pytest.raises(ValueError, match=r"Invalid value for argument "
                       r"`divergence_threshold` of EarlyStopping: expected a "
                       r"value greater than stopping_threshold=1\.0"):
        EarlyStopping(mode="min", stopping_threshold=1.0,
                      divergence_threshold=0.5)
    es = EarlyStopping(monitor="val_auc", stopping_threshold=0.5,
                       divergence_threshold=0.9)
    es.on_train_begin()
    with pytest.raises(ValueError, match="a value smaller than"):
        es.on_epoch_end(0, {"val_auc": 0.7})


# ----------------------------------------------------------------------------
# Exit paths, reuse, strict, mode.
def test_restores_when_all_epochs_ran():
    es = EarlyStopping(patience=10)
    model = drive(es, [1.0, 0.5, 0.7, 0.8])
    assert (es.stop_reason, es.stopped_epoch) == ("completed", 0)
    assert restored_epoch(model) == 1


def test_restores_when_another_callback_stopped():
    es = EarlyStopping(patience=10)
    model = drive(es, [1.0, 0.5, 0.7, 0.8, 0.2], stop_at=2)
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == \
        ("external", 2, 1)
    assert restored_epoch(model) == 1
    assert "by another callback" in es.summary()


def test_restore_best_weights_false_keeps_last():
    es = EarlyStopping(patience=0, restore_best_weights=False)
    model = drive(es, [1.0, 0.5, 0.7])
    assert es.best_weights is None
    assert restored_epoch(model) == 2


def test_stop_reasons_documented():
    assert set(STOP_REASONS) == {
        "patience", "gl", "pq", "up", "stopping_threshold",
        "divergence_threshold", "non_finite", "external", "completed"}
    for reason in STOP_REASONS:
        assert f'`"{reason}"`' in EarlyStopping.__doc__


def test_instance_reused_across_runs():
    es = EarlyStopping(patience=1)
    drive(es, [1.0, 0.5, 0.7, 0.8])
    assert (es.stopped_epoch, es.best_epoch) == (2, 1)
    model = drive(es, [3.0, 2.0, 1.0])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch, es.best_value) == \
        ("completed", 0, 2, 1.0)
    assert es.wait == 0
    assert restored_epoch(model) == 2


def test_verbose_prints_one_line(capsys):
    es = EarlyStopping(patience=1, verbose=1)
    drive(es, [1.0, 0.5, 0.7, 0.8])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.strip() == (
        "EarlyStopping: stopped at epoch 3: no improvement in val_loss for 1 "
        "epochs (patience=1); best val_loss=0.5 at epoch 2, weights restored.")
    drive(EarlyStopping(patience=1), [1.0, 0.5, 0.7])
    assert capsys.readouterr().out == ""


def test_strict_missing_metric_lists_available_keys():
    es = EarlyStopping(strict=True)
    es.set_model(FakeModel())
    es.on_train_begin()
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `monitor` of EarlyStopping: expected "
            r"a key of the epoch logs \(available: 'loss', 'mae'; pass "
            r"strict=False to skip epochs without it\)\. "
            r"Received: monitor='val_loss'")):
        es.on_epoch_end(0, {"loss": 1.0, "mae": 0.5})


def test_not_strict_warns_once_and_does_nothing():
    es = EarlyStopping(strict=False, patience=0)
    with pytest.warns(UserWarning, match="not in the epoch logs") as record:
        model = drive(es, [None, None, None])
    assert len([w for w in record if "epoch logs" in str(w.message)]) == 1
    assert es.best is None and es.best_epoch == 0
    assert es.stop_reason == "completed"
    assert not model.stop_training
    # Missing on some epochs only (e.g. validation_freq=2): the others count.
    es = EarlyStopping(strict=False, patience=0)
    with pytest.warns(UserWarning):
        drive(es, [None, 1.0, None, 1.2])
    assert (es.best_epoch, es.stopped_epoch) == (1, 3)


@pytest.mark.parametrize("name,direction", [
    ("val_loss", "min"), ("loss", "min"), ("val_mae", "min"),
    ("val_mean_squared_error", "min"), ("output_1_loss", "min"),
    ("val_sparse_categorical_crossentropy", "min"), ("kl_divergence", "min"),
    ("val_accuracy", "max"), ("val_acc", "max"), ("auc_1", "max"),
    ("val_precision", "max"), ("recall", "max"), ("f1_score", "max"),
    ("val_top_k_categorical_accuracy", "max"), ("mean_iou", "max"),
    ("val_accuracy_loss", "min"), ("foo", None), ("val_lr", None),
    ("accuracy_error", None)])
def test_direction_from_name(name, direction):
    assert direction_from_name(name) == direction


class _Metric:
    def __init__(self, name, direction):
        self.name = name
        self._direction = direction


class _Container:  # like Keras's CompileMetrics
    name = "compile_metrics"

    def __init__(self, metrics):
        self.metrics = metrics


@pytest.mark.parametrize("strict", [False, True])
def test_mode_auto_unknown_name_error_at_first_epoch_end(strict):
    es = EarlyStopping(monitor="val_lr", strict=strict)  # construction is fine
    es.set_model(FakeModel())
    es.on_train_begin()
    # Present in the logs: the direction is what cannot be told.
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `mode` of EarlyStopping: expected "
            r"'min' or 'max': mode='auto' cannot tell whether "
            r"monitor='val_lr' should be minimized or maximized .*"
            r"Received: mode='auto'")):
        es.on_epoch_end(0, {"loss": 1.0, "val_lr": 0.1})


@pytest.mark.parametrize("mode", ["auto", "min", "max"])
def test_misspelt_monitor_is_reported_as_unknown_whatever_the_mode(mode):
    # Issue 17: "val_los" was reported as a problem with `mode`.
    logs = {"loss": 1.0, "val_loss": 0.9}
    message = (r"Invalid value for argument `monitor` of EarlyStopping: "
               r"expected a key of the epoch logs \(available: 'loss', "
               r"'val_loss'.*\)\. Received: monitor='val_los'")
    es = EarlyStopping(monitor="val_los", mode=mode, strict=True)
    es.set_model(FakeModel())
    es.on_train_begin()
    with pytest.raises(ValueError, match=message):
        es.on_epoch_end(0, logs)
    es = EarlyStopping(monitor="val_los", mode=mode)
    es.set_model(FakeModel())
    es.on_train_begin()
    if mode == "auto":
        # No direction can be had from a missing, unknown name: an error
        # (a ValueError, as Keras raises), naming the monitor.
        with pytest.raises(ValueError, match=message):
            es.on_epoch_end(0, logs)
    else:
        with pytest.warns(UserWarning, match=(
                r"`monitor`='val_los' is not in the epoch logs \(available: "
                r"'loss', 'val_loss'\)")):
            es.on_epoch_end(0, logs)


def test_missing_validation_data_warns_and_trains_on_like_keras():
    # Issue 16: one callback list for several fits, some without validation.
    x, y, xv, yv = _tiny_regression()
    model = _compiled_model()
    es = EarlyStopping(patience=1)
    with pytest.warns(UserWarning, match="`monitor`='val_loss' is not in the "
                      "epoch logs"):
        history = model.fit(x, y, epochs=3, batch_size=32, verbose=0,
                            callbacks=[es])
    assert len(history.history["loss"]) == 3
    assert (es.stop_reason, es.stopped_epoch, es.best) == ("completed", 0, None)
    with pytest.raises(ValueError, match="`monitor` of EarlyStopping"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[EarlyStopping(strict=True)])
    # The same instance then serves a fit with validation data.
    _fit(model, x, y, xv, yv, [es])
    assert es.best is not None and es.stop_reason == "patience"


def test_mode_auto_uses_the_declared_metric_direction():
    model = FakeModel(metrics=[_Container([_Metric("my_score", "up")])])
    es = EarlyStopping(monitor="val_my_score", patience=0)
    drive(es, [0.5, 0.6, 0.55], monitor="val_my_score", model=model)
    assert (es.best_epoch, es.stopped_epoch) == (1, 2)
    # Declared direction wins over the name.
    model = FakeModel(metrics=[_Metric("error_rate", "up")])
    es = EarlyStopping(monitor="error_rate", patience=0)
    drive(es, [0.5, 0.6, 0.55], monitor="error_rate", model=model)
    assert es.best_epoch == 1


class Goodness(keras.metrics.Mean):
    """Minus the mean squared error: a custom metric to maximize."""

    def __init__(self, name="goodness", **kwargs):
        super().__init__(name=name, **kwargs)
        self._direction = "up"

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(
            -keras.ops.mean(keras.ops.square(y_true - y_pred)))


def test_mode_auto_with_a_compiled_custom_metric_in_fit():
    x, y, xv, yv = _tiny_regression()
    model = _compiled_model(metrics=[Goodness()])
    es = EarlyStopping(monitor="val_goodness", patience=2)
    history = _fit(model, x, y, xv, yv, [es])
    assert es._sign == -1.0
    val = history.history["val_goodness"]
    assert es.best_epoch == int(np.argmax(val))
    assert es.stop_reason == "patience"


# ----------------------------------------------------------------------------
# Construction errors, config.
ERRORS = [
    (dict(monitor=3), TypeError,
     "`monitor` of EarlyStopping: expected a non-empty string. Received: "
     "monitor=3 (of type int)"),
    (dict(monitor=""), ValueError, "expected a non-empty string"),
    (dict(min_delta=NAN), ValueError, "Received: min_delta=nan"),
    (dict(min_delta="0"), TypeError, "Received: min_delta='0'"),
    (dict(patience=-1), ValueError,
     "`patience` of EarlyStopping: expected an integer >= 0. Received: "
     "patience=-1"),
    (dict(patience=1.5), ValueError,
     "`patience` of EarlyStopping: expected an integer >= 0 (a whole-number "
     "float such as 5.0 is accepted). Received: patience=1.5"),
    (dict(patience=True), TypeError, "expected an integer >= 0"),
    (dict(verbose=-1), ValueError, "`verbose` of EarlyStopping"),
    (dict(mode="minimize"), ValueError,
     "`mode` of EarlyStopping: expected one of 'auto', 'min', 'max'. "
     "Received: mode='minimize'"),
    (dict(baseline=float("inf")), ValueError,
     "`baseline` of EarlyStopping: expected a finite float or None"),
    (dict(start_from_epoch=-2), ValueError, "`start_from_epoch`"),
    (dict(restore_best_weights=1), TypeError,
     "`restore_best_weights` of EarlyStopping: expected a bool"),
    (dict(check_finite="yes"), TypeError, "`check_finite`"),
    (dict(strict=None), TypeError, "`strict`"),
    (dict(stopping_threshold=NAN), ValueError, "`stopping_threshold`"),
    (dict(divergence_threshold="1"), TypeError, "`divergence_threshold`"),
    (dict(criterion="GL"), ValueError,
     "`criterion` of EarlyStopping: expected one of 'patience', 'gl', 'pq', "
     "'up'. Received: criterion='GL'"),
    (dict(criterion="gl", alpha=-1.0), ValueError,
     "`alpha` of EarlyStopping: expected a finite float >= 0 or None"),
    (dict(criterion="pq", alpha=NAN), ValueError, "`alpha`"),
    (dict(alpha=1.0), ValueError,
     "`alpha` of EarlyStopping: expected None with criterion='patience'"),
    (dict(criterion="up", alpha=1.0), ValueError, "None with criterion='up'"),
    (dict(strip=0), ValueError, "`strip` of EarlyStopping: expected an "
     "integer >= 1"),
    (dict(criterion="up", successive_strips=0), ValueError,
     "`successive_strips` of EarlyStopping: expected an integer >= 1"),
    (dict(criterion="gl", successive_strips=2), ValueError,
     "`successive_strips` of EarlyStopping: expected None with "
     "criterion='gl'"),
    (dict(criterion="gl", patience=3), ValueError,
     "`patience` of EarlyStopping: expected 0 with criterion='gl'"),
    (dict(criterion="up", baseline=0.5), ValueError,
     "`baseline` of EarlyStopping: expected None with criterion='up'"),
    (dict(train_monitor=None), TypeError, "`train_monitor`"),
    (dict(min_delta_mode="percent"), ValueError,
     "`min_delta_mode` of EarlyStopping: expected one of 'absolute', "
     "'relative'. Received: min_delta_mode='percent'"),
    (dict(checkpoint_path="best.h5"), ValueError,
     "`checkpoint_path` of EarlyStopping: expected None or a path ending in "
     "'.weights.h5'. Received: checkpoint_path='best.h5'"),
    (dict(checkpoint_path=3), TypeError, "`checkpoint_path`"),
]


@pytest.mark.parametrize("kwargs,exc,message", ERRORS)
def test_bad_arguments(kwargs, exc, message):
    with pytest.raises(exc) as info:
        EarlyStopping(**kwargs)
    text = str(info.value)
    assert text.startswith("Invalid value for argument `")
    assert message in text


def test_config_keeps_the_checkpoint_path_as_text_and_the_defaults(tmp_path):
    # Registration, every argument in the config and the round trips are
    # checked by tests/test_contract.py (row "EarlyStopping").
    es = EarlyStopping(checkpoint_path=tmp_path / "best.weights.h5")
    config = es.get_config()
    assert config["checkpoint_path"] == str(tmp_path / "best.weights.h5")
    assert EarlyStopping.from_config(config).get_config() == config
    default = EarlyStopping().get_config()
    assert default["restore_best_weights"] is True
    assert EarlyStopping.from_config(default).get_config() == default


def test_public_names():
    assert {"EarlyStopping", "RegularizationMonitor"} <= set(kreg.callbacks.__all__)
    for name in kreg.callbacks.__all__:
        assert getattr(kreg.callbacks, name).__name__ == name
    assert "callbacks" in kreg.__all__


def _tiny_regression(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 2)).astype("float32")
    xv = rng.normal(size=(32, 2)).astype("float32")
    # Training target y = x.w; validation target half of it, so the
    # validation loss falls, bottoms out halfway, then rises.
    w = np.array([[1.0], [-1.0]], "float32")
    return x, x @ w, xv, 0.5 * (xv @ w)


class WeightsRecorder(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = self.model.get_weights()


def _fit(model, x, y, xv, yv, callbacks):
    return model.fit(x, y, validation_data=(xv, yv), epochs=40, batch_size=32,
                     shuffle=False, verbose=0, callbacks=callbacks)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted fit with patience=2 and a checkpoint."""
    path = tmp_path_factory.mktemp("reference") / "best.weights.h5"
    x, y, xv, yv = _tiny_regression()
    model = _compiled_model()
    es = EarlyStopping(patience=2, checkpoint_path=path)
    rec = WeightsRecorder()
    history = _fit(model, x, y, xv, yv, [rec, es])
    return model, es, rec, history.history["val_loss"], path


def test_fit_restores_best_epoch_weights_exactly(reference_run):
    model, es, rec, val, path = reference_run
    assert es.stop_reason == "patience"
    assert es.stopped_epoch == len(val) - 1
    assert es.best_epoch == int(np.argmin(val)) > 0
    assert es.best_value == min(val)
    assert es.best_epoch < es.stopped_epoch
    for got, want in zip(model.get_weights(), rec.weights[es.best_epoch]):
        np.testing.assert_array_equal(got, want)
    # The checkpoint holds the same weights and loads without kreg.
    other = _compiled_model()
    other.load_weights(path)
    for got, want in zip(other.get_weights(), rec.weights[es.best_epoch]):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.weights.h5"]


class StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


def test_fit_external_stop_and_resume_with_backup_and_restore(
        tmp_path, reference_run):
    x, y, xv, yv = _tiny_regression()
    _, ref, _, ref_val, _ = reference_run
    n_ref = len(ref_val)
    assert ref.stop_reason == "patience" and n_ref > 4

    # Another callback stops training (listed after ours): still restored.
    model = _compiled_model()
    es = EarlyStopping(patience=10)
    rec = WeightsRecorder()
    _fit(model, x, y, xv, yv, [rec, es, StopAt(1)])
    assert (es.stop_reason, es.stopped_epoch) == ("external", 1)
    for got, want in zip(model.get_weights(), rec.weights[es.best_epoch]):
        np.testing.assert_array_equal(got, want)

    # A run interrupted after epoch ref.best_epoch + 1, resumed with
    # BackupAndRestore and the saved state, stops where the reference did.
    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == ref.best_epoch + 2:
                raise RuntimeError("crash")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model = _compiled_model()
    es = EarlyStopping(patience=2, checkpoint_path=tmp_path / "b.weights.h5")
    with pytest.raises(RuntimeError, match="crash"):
        _fit(model, x, y, xv, yv, [backup, es, Crash()])
    state = json.loads(json.dumps(es.get_state()))  # weights come from disk
    model = _compiled_model()
    es = EarlyStopping(patience=2, checkpoint_path=tmp_path / "b.weights.h5")
    es.set_state(state)
    rec = WeightsRecorder()
    hist = _fit(model, x, y, xv, yv, [backup, rec, es])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == \
        (ref.stop_reason, ref.stopped_epoch, ref.best_epoch)
    assert len(hist.history["val_loss"]) == n_ref - (ref.best_epoch + 2)
    assert es.best_epoch not in rec.weights  # best came before the resume
    ref_model_weights = model.get_weights()
    other = _compiled_model()
    other.load_weights(tmp_path / "b.weights.h5")
    for got, want in zip(ref_model_weights, other.get_weights()):
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------
# Drop-in: Keras's signature, values and attributes (issues 16 and 17).
KERAS_ARGS = ["monitor", "min_delta", "patience", "verbose", "mode", "baseline",
              "restore_best_weights", "start_from_epoch"]


def test_keras_positional_order_then_keyword_only():
    theirs = list(inspect.signature(
        keras.callbacks.EarlyStopping.__init__).parameters)[1:]
    params = inspect.signature(EarlyStopping.__init__).parameters
    ours = [n for n, p in params.items()
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD][1:]
    assert theirs == KERAS_ARGS == ours
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY
               for n, p in params.items() if n not in KERAS_ARGS + ["self"])
    args = ("val_loss", 0, 5, 0, "auto", None, True, 2)
    es = EarlyStopping(*args)
    ref = keras.callbacks.EarlyStopping(*args)
    for name in KERAS_ARGS:
        assert getattr(es, name) == getattr(ref, name), name
    val = [1.0, 0.9, 1.2, 0.8] + [0.85 + 0.01 * i for i in range(8)]
    drive(es, val)
    drive(ref, val)
    assert (es.stopped_epoch, es.best_epoch) == (ref.stopped_epoch,
                                                 ref.best_epoch) == (8, 3)


def test_values_keras_accepts():
    # min_delta: Keras uses the absolute value.
    es = EarlyStopping(min_delta=-0.01, patience=1)
    assert es.min_delta == 0.01 and es.get_config()["min_delta"] == 0.01
    ref = keras.callbacks.EarlyStopping(min_delta=-0.01, patience=1,
                                        restore_best_weights=True)
    val = [1.0, 0.98, 0.975, 0.96]  # e2 improves by 0.005 < 0.01: stop
    drive(es, val)
    drive(ref, val)
    assert (es.stopped_epoch, es.best_epoch) == (ref.stopped_epoch,
                                                 ref.best_epoch) == (2, 1)
    # Whole-number floats and NumPy scalars for the counts, bool verbose.
    es = EarlyStopping(patience=5.0, start_from_epoch=np.int64(2),
                       verbose=True, min_delta=np.float32(0.5),
                       baseline=np.float64(0.3),
                       restore_best_weights=np.bool_(False))
    assert (es.patience, es.start_from_epoch, es.verbose) == (5, 2, 1)
    assert all(type(getattr(es, n)) is int
               for n in ("patience", "start_from_epoch", "verbose"))
    assert es.restore_best_weights is False
    assert json.loads(json.dumps(es.get_config())) == es.get_config()
    # Refused on purpose, each with one line that says why.
    with pytest.raises(ValueError, match=r"`mode` of EarlyStopping: expected "
                       r"one of 'auto', 'min', 'max'\. Received: mode='MIN'"):
        EarlyStopping(mode="MIN")
    with pytest.raises(ValueError, match="whole-number float"):
        EarlyStopping(patience=5.5)


def test_keras_attributes_after_on_train_begin():
    # Keras's test_state_reset_across_fit_calls, plus stopped_epoch > 0.
    es = EarlyStopping(monitor="loss", patience=3)
    es.set_model(FakeModel())
    es.on_train_begin()
    es.best, es.wait, es.stopped_epoch, es.best_epoch = 0.1, 3, 5, 5
    es.best_weights = object()
    es.on_train_begin()
    assert es.best is None and es.best_weights is None
    assert (es.wait, es.stopped_epoch, es.best_epoch) == (0, 0, 0)
    assert not es.stopped_epoch > 0
    drive(es, [1.0, 1.1, 1.2, 1.3, 1.4], monitor="loss")
    assert es.stopped_epoch > 0 and es.stopped_epoch == 3
    assert es.best == es.best_value == 1.0


def test_monitor_op_is_keras_ops():
    assert EarlyStopping(mode="min").monitor_op is keras.ops.less
    assert EarlyStopping(mode="max").monitor_op is keras.ops.greater
    es = EarlyStopping(monitor="val_auc")
    assert es.monitor_op is None  # decided at the first epoch end
    drive(es, [0.5, 0.6], monitor="val_auc")
    assert es.monitor_op is keras.ops.greater and es.direction == "max"
    es.monitor_op = keras.ops.less
    assert es.direction == "min"
    with pytest.raises(ValueError, match="`monitor_op` of EarlyStopping: "
                       "expected keras.ops.less, keras.ops.greater or None"):
        es.monitor_op = max
    # Keras's _is_improvement(value, reference) with min_delta.
    es = EarlyStopping(mode="max", min_delta=0.1)
    assert es._is_improvement(0.5, None)
    assert es._is_improvement(0.71, 0.6) and not es._is_improvement(0.69, 0.6)


# ----------------------------------------------------------------------------
# The hooks and from_config check their arguments.
@pytest.mark.parametrize("call,exc,message", [
    (lambda es: es.on_epoch_end("0", {"val_loss": 1.0}), TypeError,
     "`epoch` of EarlyStopping.on_epoch_end: expected an integer >= 0"),
    (lambda es: es.on_epoch_end(-1, {"val_loss": 1.0}), ValueError, "`epoch`"),
    (lambda es: es.on_epoch_end(0, [1.0]), TypeError,
     "`logs` of EarlyStopping.on_epoch_end: expected None or a dict"),
    (lambda es: es.on_epoch_end(0, {"val_loss": "x"}), TypeError,
     "expected a number (or a one-element array) at logs['val_loss']"),
    (lambda es: es.on_epoch_end(0, {"val_loss": np.ones(2)}), TypeError,
     "at logs['val_loss']"),
    (lambda es: es.on_train_begin(3), TypeError, "`logs`"),
    (lambda es: es.on_train_end("x"), TypeError, "`logs`"),
    (lambda es: es.get_state(include_weights="yes"), TypeError,
     "`include_weights` of EarlyStopping.get_state: expected a bool"),
    (lambda es: EarlyStopping.from_config(None), TypeError,
     "`config` of EarlyStopping.from_config: expected a dict"),
    (lambda es: EarlyStopping.from_config({"patients": 3}), ValueError,
     "unknown keys: ['patients']"),
])
def test_hooks_check_their_arguments(call, exc, message):
    es = EarlyStopping()
    es.set_model(FakeModel())
    with pytest.raises(exc) as info:
        call(es)
    assert message in str(info.value)


def test_tensor_and_numpy_log_values_are_read():
    es = EarlyStopping(patience=0)
    drive(es, [np.float32(1.0), keras.ops.convert_to_tensor([0.5]),
               np.array([0.7], "float32")])
    assert (es.best_epoch, es.stopped_epoch, es.best) == (1, 2, 0.5)


# ----------------------------------------------------------------------------
# The parts: direction, Prechelt's step functions, the checkpoint.
def test_monitor_callback_resolves_direction_like_keras():
    from kreg.callbacks._monitor import declared_direction
    model = FakeModel(metrics=[_Container([_Metric("f1_score", "up"),
                                           _Metric("hinge", "down")])])
    assert declared_direction(model, "val_f1_score") == "max"
    assert declared_direction(model, "hinge") == "min"
    assert declared_direction(model, "other") is None
    assert declared_direction(None, "loss") is None
