"""Every public callable of kreg.callbacks against every class of bad value.

One row per (callable, argument, class of bad value): wrong type, None, NaN,
inf, negative, zero, out of range, unknown string. Each row expects either a
clear error in kreg's wording ("Invalid value for argument `x` of Owner:
expected ... Received: x=..."), TypeError for a wrong type and ValueError for
a wrong value, or a documented right result, checked. No row may pass
silently: `test_every_public_callable_has_rows` fails when a public method is
added without rows.
"""

import math

import keras
import numpy as np
import pytest

from kreg.callbacks import EarlyStopping
from kreg.callbacks import RegularizationMonitor
from kreg.errors import ArgumentTypeError

NAN = float("nan")
INF = float("inf")
CLASSES = ("wrong_type", "none", "nan", "inf", "negative", "zero",
           "out_of_range", "unknown_string")


class FakeModel:
    def __init__(self):
        self.stop_training = False
        self.metrics = []

    def get_weights(self):
        return [np.zeros(1)]

    def set_weights(self, weights):
        pass


@pytest.fixture(scope="module")
def dense_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
        1, name="d", kernel_regularizer=keras.regularizers.L2(0.1))])
    return model


def _es(**kw):
    es = EarlyStopping(**kw)
    es.set_model(FakeModel())
    es.on_train_begin()
    return es


def _state(**changes):
    es = _es(patience=3)
    for epoch, value in enumerate([1.0, 0.9, 1.1]):
        es.on_epoch_end(epoch, {"val_loss": value})
    state = es.get_state()
    state.update(changes)
    return state


def _rm(model, **kw):
    mon = RegularizationMonitor(**kw)
    mon.set_model(model)
    return mon


def err(exc, argument, owner):
    """Expect `exc` in kreg's wording, naming `argument` and `owner`."""
    return ("error", exc, f"Invalid value for argument `{argument}` of {owner}:")


def ok(check, warns=None):
    """Expect a documented right result: `check(result)` is True."""
    return ("ok", check, warns)


ES = "EarlyStopping"
ES_INIT = f"{ES}.__init__"
BAD_ES_INIT = [
    # (argument, class, value, expected); other arguments at their defaults.
    ("monitor", "wrong_type", 3, err(TypeError, "monitor", ES)),
    ("monitor", "none", None, err(TypeError, "monitor", ES)),
    ("monitor", "nan", NAN, err(TypeError, "monitor", ES)),
    ("monitor", "unknown_string", "", err(ValueError, "monitor", ES)),
    ("min_delta", "wrong_type", "0", err(TypeError, "min_delta", ES)),
    ("min_delta", "none", None, err(TypeError, "min_delta", ES)),
    ("min_delta", "nan", NAN, err(ValueError, "min_delta", ES)),
    ("min_delta", "inf", INF, err(ValueError, "min_delta", ES)),
    # Keras uses abs(min_delta); so does kreg (documented).
    ("min_delta", "negative", -0.1, ok(lambda es: es.min_delta == 0.1)),
    ("min_delta", "zero", 0, ok(lambda es: es.min_delta == 0.0)),
    ("patience", "wrong_type", "3", err(TypeError, "patience", ES)),
    ("patience", "none", None, err(TypeError, "patience", ES)),
    ("patience", "nan", NAN, err(ValueError, "patience", ES)),
    ("patience", "inf", INF, err(ValueError, "patience", ES)),
    ("patience", "negative", -1, err(ValueError, "patience", ES)),
    ("patience", "zero", 0, ok(lambda es: es.patience == 0)),
    ("patience", "out_of_range", 2.5, err(ValueError, "patience", ES)),
    ("verbose", "wrong_type", "1", err(TypeError, "verbose", ES)),
    ("verbose", "none", None, err(TypeError, "verbose", ES)),
    ("verbose", "nan", NAN, err(ValueError, "verbose", ES)),
    ("verbose", "negative", -1, err(ValueError, "verbose", ES)),
    ("mode", "wrong_type", 3, err(TypeError, "mode", ES)),
    ("mode", "none", None, err(TypeError, "mode", ES)),
    ("mode", "unknown_string", "MIN", err(ValueError, "mode", ES)),
    ("baseline", "wrong_type", "1", err(TypeError, "baseline", ES)),
    ("baseline", "none", None, ok(lambda es: es.baseline is None)),
    ("baseline", "nan", NAN, err(ValueError, "baseline", ES)),
    ("baseline", "inf", INF, err(ValueError, "baseline", ES)),
    ("baseline", "negative", -1.0, ok(lambda es: es.baseline == -1.0)),
    ("restore_best_weights", "wrong_type", 1,
     err(TypeError, "restore_best_weights", ES)),
    ("restore_best_weights", "none", None,
     err(TypeError, "restore_best_weights", ES)),
    ("restore_best_weights", "unknown_string", "yes",
     err(TypeError, "restore_best_weights", ES)),
    ("start_from_epoch", "wrong_type", "1",
     err(TypeError, "start_from_epoch", ES)),
    ("start_from_epoch", "none", None, err(TypeError, "start_from_epoch", ES)),
    ("start_from_epoch", "nan", NAN, err(ValueError, "start_from_epoch", ES)),
    ("start_from_epoch", "inf", INF, err(ValueError, "start_from_epoch", ES)),
    ("start_from_epoch", "negative", -1,
     err(ValueError, "start_from_epoch", ES)),
    ("check_finite", "none", None, err(TypeError, "check_finite", ES)),
    ("check_finite", "unknown_string", "yes",
     err(TypeError, "check_finite", ES)),
    ("stopping_threshold", "wrong_type", "1",
     err(TypeError, "stopping_threshold", ES)),
    ("stopping_threshold", "nan", NAN,
     err(ValueError, "stopping_threshold", ES)),
    ("stopping_threshold", "inf", INF,
     err(ValueError, "stopping_threshold", ES)),
    ("divergence_threshold", "wrong_type", [1.0],
     err(TypeError, "divergence_threshold", ES)),
    ("divergence_threshold", "nan", NAN,
     err(ValueError, "divergence_threshold", ES)),
    ("divergence_threshold", "inf", -INF,
     err(ValueError, "divergence_threshold", ES)),
    ("strict", "wrong_type", 1, err(TypeError, "strict", ES)),
    ("strict", "none", None, err(TypeError, "strict", ES)),
    ("criterion", "wrong_type", 3, err(TypeError, "criterion", ES)),
    ("criterion", "none", None, err(TypeError, "criterion", ES)),
    ("criterion", "unknown_string", "GL", err(ValueError, "criterion", ES)),
    ("alpha", "out_of_range", 1.0, err(ValueError, "alpha", ES)),  # patience
    ("strip", "wrong_type", "5", err(TypeError, "strip", ES)),
    ("strip", "none", None, err(TypeError, "strip", ES)),
    ("strip", "nan", NAN, err(ValueError, "strip", ES)),
    ("strip", "inf", INF, err(ValueError, "strip", ES)),
    ("strip", "negative", -1, err(ValueError, "strip", ES)),
    ("strip", "zero", 0, err(ValueError, "strip", ES)),
    ("successive_strips", "out_of_range", 2,
     err(ValueError, "successive_strips", ES)),  # criterion="patience"
    ("train_monitor", "wrong_type", 3, err(TypeError, "train_monitor", ES)),
    ("train_monitor", "none", None, err(TypeError, "train_monitor", ES)),
    ("train_monitor", "unknown_string", "", err(ValueError, "train_monitor",
                                                 ES)),
    ("min_delta_mode", "none", None, err(TypeError, "min_delta_mode", ES)),
    ("min_delta_mode", "unknown_string", "percent",
     err(ValueError, "min_delta_mode", ES)),
    ("checkpoint_path", "wrong_type", 3, err(TypeError, "checkpoint_path", ES)),
    ("checkpoint_path", "nan", NAN, err(TypeError, "checkpoint_path", ES)),
    ("checkpoint_path", "none", None,
     ok(lambda es: es.checkpoint_path is None)),
    ("checkpoint_path", "unknown_string", "best.h5",
     err(ValueError, "checkpoint_path", ES)),
    ("checkpoint_path", "zero", "", err(ValueError, "checkpoint_path", ES)),
    ("checkpoint_path", "out_of_range", "dir/.weights.h5",
     err(ValueError, "checkpoint_path", ES)),
]
# Arguments that depend on another one: (kwargs, class, expected).
BAD_ES_INIT_COMBINED = [
    (dict(criterion="gl", alpha="5"), "wrong_type", err(TypeError, "alpha", ES)),
    (dict(criterion="gl", alpha=NAN), "nan", err(ValueError, "alpha", ES)),
    (dict(criterion="pq", alpha=INF), "inf", err(ValueError, "alpha", ES)),
    (dict(criterion="gl", alpha=-1.0), "negative",
     err(ValueError, "alpha", ES)),
    # GL_0 stops at the first rise: a valid (if eager) criterion.
    (dict(criterion="gl", alpha=0), "zero", ok(lambda es: es.alpha == 0.0)),
    (dict(criterion="up", successive_strips="2"), "wrong_type",
     err(TypeError, "successive_strips", ES)),
    (dict(criterion="up", successive_strips=0), "zero",
     err(ValueError, "successive_strips", ES)),
    (dict(criterion="up", successive_strips=-1), "negative",
     err(ValueError, "successive_strips", ES)),
    (dict(criterion="up", successive_strips=NAN), "nan",
     err(ValueError, "successive_strips", ES)),
    (dict(criterion="up", successive_strips=None), "none",
     ok(lambda es: es.successive_strips == 3)),
    (dict(mode="min", stopping_threshold=2.0, divergence_threshold=1.0),
     "out_of_range", err(ValueError, "divergence_threshold", ES)),
    (dict(criterion="gl", patience=2), "out_of_range",
     err(ValueError, "patience", ES)),
    (dict(criterion="up", baseline=0.5), "out_of_range",
     err(ValueError, "baseline", ES)),
]

ON_EPOCH_END = f"{ES}.on_epoch_end"
SET_STATE = f"{ES}.set_state"
# (callable name, class, call(es), expected)
BAD_ES_METHODS = [
    ("get_state", "wrong_type", lambda es: es.get_state(1),
     err(TypeError, "include_weights", f"{ES}.get_state")),
    ("get_state", "none", lambda es: es.get_state(None),
     err(TypeError, "include_weights", f"{ES}.get_state")),
    ("get_state", "unknown_string", lambda es: es.get_state("yes"),
     err(TypeError, "include_weights", f"{ES}.get_state")),
    ("set_state", "wrong_type", lambda es: es.set_state([1]),
     err(TypeError, "state", SET_STATE)),
    ("set_state", "none", lambda es: es.set_state(None),
     err(TypeError, "state", SET_STATE)),
    ("set_state", "zero", lambda es: es.set_state({}),
     err(ValueError, "state['version']", SET_STATE)),
    ("set_state", "negative", lambda es: es.set_state(_state(wait=-5)),
     err(ValueError, "state['wait']", SET_STATE)),
    ("set_state", "unknown_string", lambda es: es.set_state(_state(best="abc")),
     err(TypeError, "state['best']", SET_STATE)),
    ("set_state", "nan", lambda es: es.set_state(_state(e_opt=NAN)),
     err(ValueError, "state['e_opt']", SET_STATE)),
    ("set_state", "inf", lambda es: es.set_state(_state(n_monitored=INF)),
     err(ValueError, "state['n_monitored']", SET_STATE)),
    ("set_state", "out_of_range", lambda es: es.set_state(_state(strip=7)),
     err(ValueError, "state", SET_STATE)),
    ("on_epoch_end", "wrong_type", lambda es: es.on_epoch_end("0", {}),
     err(TypeError, "epoch", ON_EPOCH_END)),
    ("on_epoch_end", "none", lambda es: es.on_epoch_end(None, {}),
     err(TypeError, "epoch", ON_EPOCH_END)),
    ("on_epoch_end", "nan", lambda es: es.on_epoch_end(NAN, {}),
     err(TypeError, "epoch", ON_EPOCH_END)),
    ("on_epoch_end", "negative", lambda es: es.on_epoch_end(-1, {}),
     err(ValueError, "epoch", ON_EPOCH_END)),
    ("on_epoch_end", "wrong_type", lambda es: es.on_epoch_end(0, "logs"),
     err(TypeError, "logs", ON_EPOCH_END)),
    ("on_epoch_end", "unknown_string",
     lambda es: es.on_epoch_end(0, {"val_loss": "low"}),
     err(TypeError, "logs", ON_EPOCH_END)),
    ("on_epoch_end", "out_of_range",
     lambda es: es.on_epoch_end(0, {"val_loss": np.ones(3)}),
     err(TypeError, "logs", ON_EPOCH_END)),
    # A NaN or infinite monitored value stops training (check_finite).
    ("on_epoch_end", "nan",
     lambda es: (es.on_epoch_end(0, {"val_loss": NAN}), es)[1],
     ok(lambda es: es.stop_reason == "non_finite" and
        es.model.stop_training)),
    ("on_epoch_end", "inf",
     lambda es: (es.on_epoch_end(0, {"val_loss": INF}), es)[1],
     ok(lambda es: es.stop_reason == "non_finite")),
    # None logs / a missing monitor: Keras's warning, the epoch not counted.
    ("on_epoch_end", "none",
     lambda es: (es.on_epoch_end(0, None), es)[1],
     ok(lambda es: es.best is None, warns="not in the epoch logs")),
    # A misspelt monitor whose direction cannot be told: named at once.
    ("on_epoch_end", "unknown_string",
     lambda es: _es(monitor="val_los").on_epoch_end(0, {"val_loss": 1.0}),
     err(ValueError, "monitor", ES)),
    ("get_monitor_value", "wrong_type", lambda es: es.get_monitor_value([1]),
     err(TypeError, "logs", f"{ES}.get_monitor_value")),
    ("get_monitor_value", "none", lambda es: es.get_monitor_value(None),
     ok(lambda value: value is None, warns="not in the epoch logs")),
    ("get_monitor_value", "unknown_string",
     lambda es: es.get_monitor_value({"val_loss": "x"}),
     err(TypeError, "logs", f"{ES}.get_monitor_value")),
    ("get_monitor_value", "zero", lambda es: es.get_monitor_value(
        {"val_loss": np.float32(0.0)}), ok(lambda value: value == 0.0)),
    ("on_train_begin", "wrong_type", lambda es: es.on_train_begin(3),
     err(TypeError, "logs", f"{ES}.on_train_begin")),
    ("on_train_end", "wrong_type", lambda es: es.on_train_end("x"),
     err(TypeError, "logs", f"{ES}.on_train_end")),
    ("on_train_end", "none", lambda es: (es.on_train_end(None), es)[1],
     ok(lambda es: es.stop_reason == "completed")),
    ("from_config", "wrong_type", lambda es: EarlyStopping.from_config([1]),
     err(TypeError, "config", f"{ES}.from_config")),
    ("from_config", "none", lambda es: EarlyStopping.from_config(None),
     err(TypeError, "config", f"{ES}.from_config")),
    ("from_config", "unknown_string",
     lambda es: EarlyStopping.from_config({"patients": 3}),
     err(ValueError, "config", f"{ES}.from_config")),
    ("from_config", "negative",
     lambda es: EarlyStopping.from_config({"patience": -1}),
     err(ValueError, "patience", ES)),
    # No arguments: the documented result before any run.
    ("summary", "none", lambda es: es.summary(),
     ok(lambda s: s == "EarlyStopping: has not finished a run; no epoch was "
        "monitored.")),
    ("get_config", "none", lambda es: es.get_config(),
     ok(lambda c: EarlyStopping.from_config(c).get_config() == c)),
]

RM = "RegularizationMonitor"
BAD_RM_INIT = [
    ("layers", "wrong_type", 3, err(TypeError, "layers", RM)),
    ("layers", "nan", NAN, err(TypeError, "layers", RM)),
    ("layers", "unknown_string", "d", err(TypeError, "layers", RM)),
    ("layers", "out_of_range", ["d", "d"], err(ValueError, "layers", RM)),
    ("layers", "none", None, ok(lambda m: m.layers is None)),
    ("layers", "zero", [], ok(lambda m: m.layers == ())),
    ("stats", "wrong_type", 3, err(TypeError, "stats", RM)),
    ("stats", "none", None, err(TypeError, "stats", RM)),
    ("stats", "nan", [NAN], err(TypeError, "stats", RM)),
    ("stats", "zero", [], err(ValueError, "stats", RM)),
    ("stats", "unknown_string", ["l3"], err(ValueError, "stats", RM)),
    ("stats", "out_of_range", ["l1", "l1"], err(ValueError, "stats", RM)),
    ("tolerance", "wrong_type", "a", err(TypeError, "tolerance", RM)),
    ("tolerance", "none", None, err(TypeError, "tolerance", RM)),
    ("tolerance", "nan", NAN, err(ValueError, "tolerance", RM)),
    ("tolerance", "inf", INF, err(ValueError, "tolerance", RM)),
    ("tolerance", "negative", -1.0, err(ValueError, "tolerance", RM)),
    ("tolerance", "zero", 0.0, err(ValueError, "tolerance", RM)),
    ("tolerance", "out_of_range", True, err(TypeError, "tolerance", RM)),
    ("prefix", "wrong_type", 3, err(TypeError, "prefix", RM)),
    ("prefix", "none", None, err(TypeError, "prefix", RM)),
    ("prefix", "nan", NAN, err(TypeError, "prefix", RM)),
    ("prefix", "zero", "", ok(lambda m: m.prefix == "")),
]

RM_EPOCH = f"{RM}.on_epoch_end"
RM_STATS = f"{RM}.statistics"
NO_MODEL = ("error", RuntimeError, "no model is set")


def _share(stats):
    return stats["reg/penalty_share"]


# (callable name, class, call(model), expected)
BAD_RM_METHODS = [
    ("statistics", "wrong_type", lambda m: _rm(m).statistics("a"),
     err(TypeError, "loss", RM_STATS)),
    ("statistics", "out_of_range", lambda m: _rm(m).statistics(True),
     err(TypeError, "loss", RM_STATS)),
    ("statistics", "none", lambda m: _rm(m).statistics(None),
     ok(lambda s: math.isnan(_share(s)))),
    ("statistics", "nan", lambda m: _rm(m).statistics(NAN),
     ok(lambda s: math.isnan(_share(s)))),
    ("statistics", "inf", lambda m: _rm(m).statistics(INF),
     ok(lambda s: math.isnan(_share(s)))),
    ("statistics", "zero", lambda m: _rm(m).statistics(0.0),
     ok(lambda s: math.isnan(_share(s)))),
    ("statistics", "negative", lambda m: _rm(m).statistics(-2.0),
     ok(lambda s: _share(s) == s["reg/penalty"] / -2.0)),
    ("statistics", "unknown_string",
     lambda m: RegularizationMonitor().statistics(), NO_MODEL),
    ("on_train_begin", "none",
     lambda m: RegularizationMonitor().on_train_begin(), NO_MODEL),
    ("on_train_begin", "wrong_type", lambda m: _rm(m).on_train_begin("x"),
     err(TypeError, "logs", f"{RM}.on_train_begin")),
    ("on_train_begin", "unknown_string",
     lambda m: _rm(m, layers=["nope"]).on_train_begin(),
     err(ValueError, "layers", RM)),
    ("on_epoch_end", "wrong_type", lambda m: _rm(m).on_epoch_end("a", {}),
     err(TypeError, "epoch", RM_EPOCH)),
    ("on_epoch_end", "none", lambda m: _rm(m).on_epoch_end(None, {}),
     err(TypeError, "epoch", RM_EPOCH)),
    ("on_epoch_end", "nan", lambda m: _rm(m).on_epoch_end(NAN, {}),
     err(TypeError, "epoch", RM_EPOCH)),
    ("on_epoch_end", "negative", lambda m: _rm(m).on_epoch_end(-1, {}),
     err(ValueError, "epoch", RM_EPOCH)),
    ("on_epoch_end", "out_of_range", lambda m: _rm(m).on_epoch_end(0, [1]),
     err(TypeError, "logs", RM_EPOCH)),
    ("on_epoch_end", "unknown_string",
     lambda m: _rm(m).on_epoch_end(0, {"loss": "x"}),
     err(TypeError, "logs", RM_EPOCH)),
    ("on_epoch_end", "inf",
     lambda m: (lambda logs: (_rm(m).on_epoch_end(0, logs), logs)[1])(
         {"loss": INF}),
     ok(lambda logs: math.isnan(_share(logs)))),
    ("on_epoch_end", "zero",
     lambda m: (lambda logs: (_rm(m).on_epoch_end(0, logs), logs)[1])({}),
     ok(lambda logs: math.isnan(_share(logs)) and "reg/d/l2" in logs)),
    ("from_config", "wrong_type",
     lambda m: RegularizationMonitor.from_config("x"),
     err(TypeError, "config", f"{RM}.from_config")),
    ("from_config", "none", lambda m: RegularizationMonitor.from_config(None),
     err(TypeError, "config", f"{RM}.from_config")),
    ("from_config", "unknown_string",
     lambda m: RegularizationMonitor.from_config({"bad": 1}),
     err(ValueError, "config", f"{RM}.from_config")),
    ("get_config", "none", lambda m: RegularizationMonitor().get_config(),
     ok(lambda c: RegularizationMonitor.from_config(c).get_config() == c)),
]


def _check(call, expected):
    kind = expected[0]
    if kind == "error":
        _, exc, fragment = expected
        with pytest.raises(Exception) as info:
            call()
        # A wrong type is kreg.errors.ArgumentTypeError (a TypeError that is
        # also a ValueError, as Keras raises); a wrong value is a plain ValueError.
        wanted = ArgumentTypeError if exc is TypeError else exc
        assert type(info.value) is wanted, (type(info.value), info.value)
        text = str(info.value)
        assert fragment in text, text
        if exc is not RuntimeError:
            assert text.startswith("Invalid value for argument `"), text
            assert "Received: " in text, text
        return
    _, check, warns = expected
    if warns is None:
        result = call()
    else:
        with pytest.warns(UserWarning, match=warns):
            result = call()
    assert check(result), result


def _ids(rows, *head):
    return [f"{'.'.join(head)}-{r[0] if isinstance(r[0], str) else 'kw'}-"
            f"{r[1]}-{i}" for i, r in enumerate(rows)]


@pytest.mark.parametrize("argument,cls,value,expected", BAD_ES_INIT,
                         ids=_ids(BAD_ES_INIT, "es"))
def test_early_stopping_constructor(argument, cls, value, expected):
    assert cls in CLASSES
    _check(lambda: EarlyStopping(**{argument: value}), expected)


@pytest.mark.parametrize("kwargs,cls,expected", BAD_ES_INIT_COMBINED)
def test_early_stopping_constructor_combined(kwargs, cls, expected):
    assert cls in CLASSES
    _check(lambda: EarlyStopping(**kwargs), expected)


@pytest.mark.parametrize("method,cls,call,expected", BAD_ES_METHODS,
                         ids=_ids(BAD_ES_METHODS, "es"))
def test_early_stopping_methods(method, cls, call, expected):
    assert cls in CLASSES
    es = _es()
    _check(lambda: call(es), expected)


@pytest.mark.parametrize("argument,cls,value,expected", BAD_RM_INIT,
                         ids=_ids(BAD_RM_INIT, "rm"))
def test_regularization_monitor_constructor(argument, cls, value, expected):
    assert cls in CLASSES
    _check(lambda: RegularizationMonitor(**{argument: value}), expected)


@pytest.mark.parametrize("method,cls,call,expected", BAD_RM_METHODS,
                         ids=_ids(BAD_RM_METHODS, "rm"))
def test_regularization_monitor_methods(method, cls, call, expected,
                                        dense_model):
    assert cls in CLASSES
    _check(lambda: call(dense_model), expected)


def _public_methods(cls):
    """Public methods defined by kreg (on the class or a kreg base)."""
    names = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("kreg."):
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_") or isinstance(attr, property):
                continue
            if callable(attr) or isinstance(attr, classmethod):
                names.add(name)
    return names


@pytest.mark.parametrize("cls,init_rows,method_rows", [
    (EarlyStopping, BAD_ES_INIT, BAD_ES_METHODS),
    (RegularizationMonitor, BAD_RM_INIT, BAD_RM_METHODS)])
def test_every_public_callable_has_rows(cls, init_rows, method_rows):
    import inspect
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    covered = {row[0] for row in init_rows}
    if cls is EarlyStopping:
        covered |= {k for row in BAD_ES_INIT_COMBINED for k in row[0]}
    assert params == covered
    assert _public_methods(cls) == {row[0] for row in method_rows}
