"""Resuming EarlyStopping: get_state / set_state (kreg/callbacks/_resume.py)."""

import json

import pytest
from early_stopping_helpers import PQ_TRAIN
from early_stopping_helpers import PQ_VAL
from early_stopping_helpers import UP_VAL
from early_stopping_helpers import drive
from early_stopping_helpers import restored_epoch

from kreg.callbacks import EarlyStopping


def test_set_state_checks_the_direction():
    es = EarlyStopping(monitor="val_accuracy")
    drive(es, [0.5, 0.6], monitor="val_accuracy")
    state = es.get_state()
    with pytest.raises(ValueError, match="same direction"):
        EarlyStopping(monitor="val_accuracy", mode="min").set_state(state)
    other = EarlyStopping(monitor="val_accuracy")
    other.set_state(state)
    drive(other, [0.7], monitor="val_accuracy", first_epoch=2)
    assert other.best_epoch == 2


# ----------------------------------------------------------------------------
# get_state / set_state.
RESUME_CASES = [
    ("patience", dict(patience=3), [1.0, 0.9, 0.95, 0.96, 0.97, 0.98], None),
    ("patience", dict(patience=2, baseline=0.5),
     [1.0, 0.9, 0.8, 0.85, 0.6], None),
    ("gl", dict(alpha=5.0), [1.0, 0.8, 0.82, 0.83, 0.86, 0.5], None),
    ("pq", dict(alpha=0.5, strip=3), PQ_VAL, PQ_TRAIN),
    ("up", dict(strip=2, successive_strips=2), UP_VAL, None),
]


@pytest.mark.parametrize("criterion,kw,val,train", RESUME_CASES)
@pytest.mark.parametrize("split", [1, 3])
def test_resume_continues_counting(criterion, kw, val, train, split):
    full = EarlyStopping(criterion=criterion, **kw)
    drive(full, val, train)
    assert full.stopped_epoch is not None

    first = EarlyStopping(criterion=criterion, **kw)
    # The first run "crashes" after `split` epochs (no on_train_end).
    drive(first, val[:split], None if train is None else train[:split],
          end=False)
    state = json.loads(json.dumps(first.get_state(include_weights=True)))

    resumed = EarlyStopping(criterion=criterion, **kw)
    resumed.set_state(state)
    model = drive(resumed, val[split:], None if train is None else train[split:],
                  first_epoch=split)
    assert resumed.stopped_epoch == full.stopped_epoch
    assert resumed.stop_reason == full.stop_reason
    assert resumed.best_epoch == full.best_epoch
    assert restored_epoch(model) == full.best_epoch


def test_resume_without_weights_warns_when_best_is_lost():
    first = EarlyStopping(patience=3)
    drive(first, [1.0, 0.5], end=False)
    resumed = EarlyStopping(patience=3)
    resumed.set_state(first.get_state())
    with pytest.warns(UserWarning, match="were lost"):
        model = drive(resumed, [0.7, 0.8], first_epoch=2)
    assert resumed.best_epoch == 1
    assert restored_epoch(model) == 3


def test_set_state_is_used_once_then_runs_reset():
    es = EarlyStopping(patience=3)
    drive(es, [1.0, 0.5, 0.7])
    es.set_state(es.get_state(include_weights=True))
    assert es.wait == 1
    drive(es, [0.9], first_epoch=3)
    assert (es.best_epoch, es.wait) == (1, 2)
    drive(es, [0.9])
    assert (es.best_epoch, es.wait) == (0, 0)


def test_set_state_rejects_other_callbacks_state():
    state = EarlyStopping(patience=3).get_state()
    with pytest.raises(ValueError, match="criterion='gl'"):
        EarlyStopping(criterion="gl").set_state(state)
    with pytest.raises(ValueError, match="missing keys: \\['wait'\\]"):
        EarlyStopping().set_state({k: x for k, x in state.items() if k != "wait"})
    with pytest.raises(TypeError, match="expected a dict from get_state"):
        EarlyStopping().set_state([1, 2])


# ----------------------------------------------------------------------------
# set_state validates at once (issue 17).
def _state(**changes):
    es = EarlyStopping(patience=3)
    drive(es, [1.0, 0.9, 1.1], end=False)
    state = json.loads(json.dumps(es.get_state()))
    state.update(changes)
    return state


@pytest.mark.parametrize("changes,exc,message", [
    (dict(wait=-5), ValueError,
     "Invalid value for argument `state['wait']` of EarlyStopping.set_state: "
     "expected an integer >= 0. Received: state['wait']=-5"),
    (dict(wait=2.5), ValueError, "`state['wait']`"),
    (dict(wait=None), TypeError, "`state['wait']`"),
    (dict(wait=9), ValueError, "expected an integer <= n_monitored=3"),
    (dict(best="abc"), TypeError,
     "Invalid value for argument `state['best']` of EarlyStopping.set_state: "
     "expected a float or None. Received: state['best']='abc'"),
    (dict(best_epoch=-1), ValueError, "`state['best_epoch']`"),
    (dict(best_epoch=None), TypeError, "`state['best_epoch']`"),
    (dict(e_opt=float("nan")), ValueError, "`state['e_opt']`"),
    (dict(n_monitored="3"), TypeError, "`state['n_monitored']`"),
    (dict(train_window=[1.0] * 6), ValueError,
     "expected a list of at most strip=5 floats"),
    (dict(train_window="abc"), TypeError, "`state['train_window']`"),
    (dict(train_window=["x"]), TypeError, "`state['train_window']`"),
    (dict(strip_end_value=[1]), TypeError, "`state['strip_end_value']`"),
    (dict(ups=-1), ValueError, "`state['ups']`"),
    (dict(last_epoch=-3), ValueError, "`state['last_epoch']`"),
    (dict(sign=2.0), ValueError, "expected 1.0, -1.0 or None"),
    (dict(version=7), ValueError, "`state['version']`"),
    (dict(best_weights=[[1.0]], best_weights_dtypes=["nonsense"]), ValueError,
     "`state['best_weights']`"),
    (dict(best_weights=[[1.0]]), ValueError, "`state['best_weights']`"),
])
def test_set_state_validates_every_entry(changes, exc, message):
    es = EarlyStopping(patience=3)
    before = es.get_state()
    with pytest.raises(exc) as info:
        es.set_state(_state(**changes))
    assert message in str(info.value)
    assert str(info.value).startswith("Invalid value for argument `")
    assert es.get_state() == before  # nothing half-loaded


def test_set_state_accepts_a_version_1_state():
    state = _state()
    legacy = dict(state, version=1, best=-7.0, best_value=state["best"],
                  best_epoch=None)
    es = EarlyStopping(patience=3)
    es.set_state(legacy)
    assert (es.best, es.best_epoch, es.wait) == (0.9, 0, 1)
