"""Prechelt's criteria GL, PQ and UP (kreg/callbacks/_prechelt.py), on
hand-computed curves, as step functions and through EarlyStopping."""

import math

import pytest
from early_stopping_helpers import PQ_TRAIN
from early_stopping_helpers import PQ_VAL
from early_stopping_helpers import UP_VAL
from early_stopping_helpers import FakeModel
from early_stopping_helpers import drive
from early_stopping_helpers import restored_epoch

from kreg.callbacks import EarlyStopping
from kreg.callbacks.early_stopping import generalization_loss
from kreg.callbacks.early_stopping import training_progress


# ----------------------------------------------------------------------------
# Prechelt's criteria on hand-computed curves.
def test_gl_and_pk_formulas():
    # GL(t) = 100 (E_va / E_opt - 1); P_k = 1000 (sum / (k min) - 1).
    assert generalization_loss(0.86, 0.8) == pytest.approx(7.5)
    assert generalization_loss(0.8, 0.8) == 0.0
    assert generalization_loss(0.0, 0.0) == 0.0
    assert generalization_loss(0.1, 0.0) == math.inf
    strip = [1.0, 0.99, 0.98]
    paper = 1000 * (sum(strip) / (len(strip) * min(strip)) - 1)
    assert training_progress(strip) == pytest.approx(paper)
    assert training_progress([2.0, 2.0]) == 0.0
    assert training_progress([0.0, 0.0]) == 0.0
    assert training_progress([0.0, 1.0]) == math.inf
    # Negated (maximized) values keep a positive relative loss.
    assert generalization_loss(-0.9, -0.95) == pytest.approx(100 * 0.05 / 0.95)


def test_gl_stops_at_first_epoch_above_alpha():
    # GL: e0 0, e1 0, e2 2.5, e3 7.5 > 5.
    es = EarlyStopping(criterion="gl", alpha=5.0)
    model = drive(es, [1.0, 0.8, 0.82, 0.86, 0.5])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == ("gl", 3, 1)
    assert es.criterion_value == pytest.approx(7.5)
    assert restored_epoch(model) == 1
    # GL_10 does not stop there and reaches the new best.
    es10 = EarlyStopping(criterion="gl", alpha=10.0)
    model = drive(es10, [1.0, 0.8, 0.82, 0.86, 0.5])
    assert es10.stop_reason == "completed"
    assert es10.stopped_epoch == 0
    assert restored_epoch(model) == 4


def test_gl_default_alpha_is_gl5_and_counts_from_start_epoch():
    es = EarlyStopping(criterion="gl", start_from_epoch=2)
    assert es.alpha == 5.0
    # Epochs 0-1 are ignored: E_opt starts at 1.0 (epoch 2).
    drive(es, [0.1, 0.1, 1.0, 1.04, 1.06])
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == ("gl", 4, 2)


def test_pq_only_at_strip_ends():
    # Strips of 3: ends at epochs 2, 5, 8.
    #   e2: GL = 0 -> quotient 0.
    #   e5: GL = 100 (1.5/1.4 - 1) = 7.14; P_3 = 1000 (3.3 / 3 - 1) = 100;
    #       quotient 0.0714 <= 0.5.
    #   e6, e7: GL = 21.4 but not strip ends.
    #   e8: GL = 100 (1.6/1.4 - 1) = 14.29; P_3 = 1000 (2.97/(3*0.98) - 1)
    #       = 10.20; quotient 1.4 > 0.5 -> stop.
    es = EarlyStopping(criterion="pq", alpha=0.5, strip=3)
    model = drive(es, PQ_VAL, PQ_TRAIN)
    gl = 100 * (1.6 / 1.4 - 1)
    pk = 1000 * ((1.0 + 0.99 + 0.98) / (3 * 0.98) - 1)
    assert (es.stop_reason, es.stopped_epoch, es.best_epoch) == ("pq", 8, 3)
    assert es.criterion_value == pytest.approx(gl / pk)
    assert restored_epoch(model) == 3
    # A threshold just above e5's quotient and below e8's stops at e8 too,
    # one just below e5's stops at e5.
    q5 = (100 * (1.5 / 1.4 - 1)) / (1000 * (3.3 / 3 - 1))
    es = EarlyStopping(criterion="pq", alpha=q5 * 0.99, strip=3)
    drive(es, PQ_VAL, PQ_TRAIN)
    assert es.stopped_epoch == 5


def test_pq_reads_train_monitor_and_default_alpha():
    es = EarlyStopping(criterion="pq", strip=3, train_monitor="train_err",
                       strict=True)
    assert es.alpha == 2.0
    model = FakeModel()
    es.set_model(model)
    es.on_train_begin()
    with pytest.raises(ValueError, match="Invalid value for argument "
                       "`train_monitor` of EarlyStopping.*'val_loss', 'loss'"):
        es.on_epoch_end(0, {"val_loss": 1.0, "loss": 1.0})
    # By default (Keras's behaviour) a warning, and the epoch is skipped.
    es = EarlyStopping(criterion="pq", strip=3, train_monitor="train_err")
    with pytest.warns(UserWarning, match="`train_monitor`='train_err' is not "
                      "in the epoch logs"):
        drive(es, [1.0, 0.9])
    assert es.best is None and es.stop_reason == "completed"


def test_pq_zero_progress_stops_when_gl_positive():
    es = EarlyStopping(criterion="pq", alpha=3.0, strip=2)
    drive(es, [1.0, 1.0, 1.0, 1.1], [0.5, 0.5, 0.5, 0.5])
    # e1: GL 0, P 0 -> 0; e3: GL 10, P 0 -> inf.
    assert (es.stop_reason, es.stopped_epoch) == ("pq", 3)


@pytest.mark.parametrize("s,stop", [(1, 5), (2, 7), (3, 9), (4, None)])
def test_up_successive_strips(s, stop):
    # Strips of 2, ends at e1 (4.0), e3 (3.5, down), e5 (3.7, up), e7 (3.9, up),
    # e9 (4.1, up).
    es = EarlyStopping(criterion="up", strip=2, successive_strips=s)
    model = drive(es, UP_VAL)
    assert es.stopped_epoch == (stop or 0)
    assert es.stop_reason == ("up" if stop else "completed")
    assert es.best_epoch == 2
    assert restored_epoch(model) == 2


def test_up_counter_resets_on_a_decrease():
    # Strip ends (k=1): 2 up, 1 down, then 2 up: UP_3 never fires.
    val = [1.0, 1.1, 1.2, 1.15, 1.3, 1.4]
    es = EarlyStopping(criterion="up", strip=1, successive_strips=3)
    drive(es, val)
    assert es.stop_reason == "completed"
    es = EarlyStopping(criterion="up", strip=1, successive_strips=2)
    drive(es, val)
    assert es.stopped_epoch == 2
    assert es.successive_strips == 2
    assert EarlyStopping(criterion="up").successive_strips == 3


def test_prechelt_with_mode_max_negates():
    # Accuracy 0.95 then 0.9: the error rose 5.26% relative.
    es = EarlyStopping(monitor="val_accuracy", criterion="gl", alpha=5.0)
    drive(es, [0.9, 0.95, 0.92, 0.9], monitor="val_accuracy")
    assert (es.stopped_epoch, es.best_epoch, es.best_value) == (3, 1, 0.95)
    es = EarlyStopping(monitor="val_accuracy", criterion="up", strip=1,
                       successive_strips=2)
    drive(es, [0.9, 0.95, 0.92, 0.9], monitor="val_accuracy")
    assert es.stopped_epoch == 3


def test_prechelt_steps_on_hand_computed_curves():
    from kreg.callbacks._prechelt import CurveState
    from kreg.callbacks._prechelt import gl_step
    from kreg.callbacks._prechelt import pq_step
    from kreg.callbacks._prechelt import up_step

    # GL_5 on 1.0, 0.8, 0.82, 0.86: GL = 0, 0, 2.5, 7.5.
    state, got = CurveState(), []
    for error in [1.0, 0.8, 0.82, 0.86]:
        state, value, stop = gl_step(state, error, alpha=5.0)
        got.append((round(value, 9), stop))
    assert got == [(0.0, False), (0.0, False), (2.5, False), (7.5, True)]
    assert state == CurveState(n=4, e_opt=0.8)

    # PQ_0.5, k=3 on the curve of test_pq_only_at_strip_ends.
    state, got = CurveState(), []
    for error, train in zip(PQ_VAL, PQ_TRAIN):
        state, value, stop = pq_step(state, error, train, alpha=0.5, strip=3)
        got.append(None if value is None else (round(value, 6), stop))
    q5 = (100 * (1.5 / 1.4 - 1)) / (1000 * (3.3 / 3 - 1))
    q8 = (100 * (1.6 / 1.4 - 1)) / (1000 * (2.97 / (3 * 0.98) - 1))
    assert got == [None, None, (0.0, False), None, None,
                   (round(q5, 6), False), None, None, (round(q8, 6), True)]
    assert state.train_strip == (1.0, 0.99, 0.98) and state.e_opt == 1.4

    # UP_2, k=2: strip ends 4.0, 3.5 (down), 3.7 (up), 3.9 (up) -> stop.
    state, got = CurveState(), []
    for error in UP_VAL[:8]:
        state, value, stop = up_step(state, error, successive=2, strip=2)
        got.append(None if value is None else (value, stop))
    assert got == [None, (0, False), None, (0, False), None, (1, False),
                   None, (2, True)]
    assert (state.strip_end, state.ups, state.n) == (3.9, 2, 8)

    # The functions are pure: the input state is not changed.
    start = CurveState(n=2, e_opt=1.0, train_strip=(1.0, 1.0))
    pq_step(start, 2.0, 1.0, alpha=0.0, strip=3)
    assert start == CurveState(n=2, e_opt=1.0, train_strip=(1.0, 1.0))
