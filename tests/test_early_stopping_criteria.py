"""EarlyStopping's state and criteria table (kreg/callbacks/_criteria.py), and
the log reading it shares with MonitorCallback (kreg/callbacks/_monitor.py)."""

import dataclasses
import inspect

import keras
import numpy as np
import pytest
from early_stopping_helpers import drive

import kreg
from kreg.callbacks import EarlyStopping
from kreg.callbacks import _criteria
from kreg.callbacks import _prechelt
from kreg.callbacks._criteria import CRITERIA
from kreg.callbacks._criteria import Epoch
from kreg.callbacks._criteria import StoppingState
from kreg.callbacks._criteria import best_step
from kreg.callbacks._criteria import patience_step


def _beats(value, reference):
    return reference is None or value < reference


def test_the_state_is_frozen_and_the_steps_do_not_mutate_it():
    state = StoppingState()
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.wait = 3
    after, improved = best_step(state, 1.0, 0, beats=_beats)
    assert state == StoppingState() and improved
    assert (after.wait, after.best, after.best_epoch) == (0, 1.0, 0)
    step = patience_step(after, Epoch(0, 1.0, None, True), patience=1, strip=5)
    assert after.curve.n == 0 and step.state.curve.n == 1


def test_best_step_is_keras_counting_with_a_baseline():
    # Keras: an improvement restarts the count only when it beats the baseline.
    state = StoppingState()
    waits = []
    for epoch, value in enumerate([1.0, 0.9, 0.8, 0.4, 0.5]):
        state, _ = best_step(state, value, epoch, beats=_beats, baseline=0.5)
        waits.append(state.wait)
    assert waits == [1, 2, 3, 0, 1]
    assert (state.best, state.best_epoch) == (0.4, 3)


def test_patience_never_stops_at_epoch_zero_or_on_an_improvement():
    state = StoppingState(wait=5, best=1.0)
    assert not patience_step(state, Epoch(0, 2.0), patience=0, strip=5).stop
    assert not patience_step(state, Epoch(4, 0.5, None, True), patience=0,
                             strip=5).stop
    assert patience_step(state, Epoch(4, 2.0), patience=5, strip=5).stop
    assert not patience_step(state, Epoch(4, 2.0), patience=6, strip=5).stop


def test_every_criterion_row_is_complete():
    assert tuple(CRITERIA) == kreg.callbacks.early_stopping.CRITERIA
    for name, row in CRITERIA.items():
        arguments = set(row.defaults) | {"strip"}
        step_args = set(inspect.signature(row.step).parameters) - {"state", "epoch"}
        detail_args = set(inspect.signature(row.detail).parameters) - {
            "step", "epoch", "monitor"}
        assert step_args == arguments == detail_args, name
        assert name in kreg.callbacks.early_stopping.STOP_REASONS
    assert [n for n, row in CRITERIA.items() if row.reads_train] == ["pq"]


@pytest.mark.parametrize("criterion,prechelt", [
    ("gl", lambda curve, e: _prechelt.gl_step(curve, e.score, alpha=5.0, strip=2)),
    ("pq", lambda curve, e: _prechelt.pq_step(curve, e.score, e.train_score,
                                              alpha=2.0, strip=2)),
    ("up", lambda curve, e: _prechelt.up_step(curve, e.score, successive=3,
                                              strip=2)),
])
def test_table_rows_are_prechelts_steps_on_the_curve(criterion, prechelt):
    row = CRITERIA[criterion]
    state, curve = StoppingState(wait=1), _prechelt.CurveState()
    for index, (error, train) in enumerate([(1.0, 2.0), (0.9, 1.5), (1.2, 1.4),
                                            (1.3, 1.4)]):
        epoch = Epoch(index, error, train)
        step = row.step(state, epoch, strip=2, **row.defaults)
        expected = prechelt(curve, epoch)
        assert (step.state.curve, step.value, step.stop) == tuple(expected)
        assert step.state.wait == 1  # only best_step touches the counter
        state, curve = step.state, expected.state


def test_check_arguments_fills_defaults_and_refuses_the_others():
    given = {"patience": 0, "baseline": None, "alpha": None,
             "successive_strips": None}
    assert _criteria.check_arguments("X", "pq", given)["alpha"] == 2.0
    assert _criteria.check_arguments("X", "up", given)["successive_strips"] == 3
    with pytest.raises(ValueError, match=r"`alpha` of X: expected None with "
                       r"criterion='up' \(alpha belongs to criterion 'gl' or "
                       r"'pq'\)\. Received: alpha=1\.0"):
        _criteria.check_arguments("X", "up", dict(given, alpha=1.0))
    with pytest.raises(ValueError, match="`baseline` of X: expected None"):
        _criteria.check_arguments("X", "gl", dict(given, baseline=0.0))


def test_thresholds_are_read_in_the_monitored_direction():
    assert _criteria.crossed_threshold(-0.95, -1.0, 0.9, None) == \
        "stopping_threshold"
    assert _criteria.crossed_threshold(0.5, 1.0, None, 0.4) == \
        "divergence_threshold"
    assert _criteria.crossed_threshold(0.5, 1.0, 0.1, 0.9) is None


def test_keras_attributes_write_through_to_the_state():
    es = EarlyStopping(patience=2)
    es.wait, es.best, es.best_epoch = 3, 0.5, 7
    assert es._state == StoppingState(wait=3, best=0.5, best_epoch=7)
    drive(es, [1.0, 0.9])  # on_train_begin resets it
    assert (es.wait, es.best, es.best_epoch) == (0, 0.9, 1)


# -- A monitored key that a later callback writes --------------------------------
def _penalized_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
        1, name="d", kernel_regularizer=kreg.regularizers.L1(0.1))])
    model.compile("sgd", "mse")
    return model


def _fit(model, callbacks):
    x = np.ones((8, 2), "float32")
    model.fit(x, np.zeros((8, 1)), epochs=2, verbose=0, callbacks=callbacks)


def test_a_reg_key_missing_because_of_the_callback_order_says_so():
    es = EarlyStopping(monitor="reg/penalty", mode="min")
    with pytest.warns(UserWarning, match=r"'reg/penalty' is not in the epoch "
                      r"logs.*list it before EarlyStopping in `callbacks=\[\.\.\.\]`"):
        _fit(_penalized_model(), [es, kreg.callbacks.RegularizationMonitor()])
    assert es.best is None
    # mode="auto" cannot tell the direction of "reg/penalty": an error, with
    # the same hint; strict=True too.
    for es in (EarlyStopping(monitor="reg/penalty"),
               EarlyStopping(monitor="reg/penalty", mode="min", strict=True)):
        with pytest.raises(ValueError, match="list it before EarlyStopping"):
            _fit(_penalized_model(), [es, kreg.callbacks.RegularizationMonitor()])


def test_the_right_callback_order_monitors_the_reg_key(recwarn):
    es = EarlyStopping(monitor="reg/penalty", mode="min")
    _fit(_penalized_model(), [kreg.callbacks.RegularizationMonitor(), es])
    assert es.best is not None and es.best > 0
    assert not [w for w in recwarn if "not in the epoch logs" in str(w.message)]


def test_other_missing_keys_get_no_order_hint():
    es = EarlyStopping(monitor="val_loss")
    with pytest.warns(UserWarning) as record:
        drive(es, [None])
    assert "callbacks=[...]" not in str(record[0].message)
