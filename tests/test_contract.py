"""The serialization contract of every public kreg class, from one table.

For every public class (found by walking the `__all__` of kreg and of its
public modules) the table `CONTRACT` holds example constructor arguments
(non-default wherever the class allows it). From that one row:

(a) the class is registered with Keras under "kreg>Name";
(b) every `__init__` argument is in `get_config()` (deliberate exceptions
    are listed in the row, with the reason);
(c) `from_config(get_config())` gives an equal config (also after JSON);
(d) `keras.saving.serialize_keras_object` / `deserialize_keras_object`
    round trips to the same class and config;
(e) a `.keras` file holding the object in a small model, saved here and loaded
    in ONE fresh Python process for the whole table, gives identical
    predictions (layers), penalty (regularizers) or draws (initializers), and
    an identical config. Callbacks: their serialized config is rebuilt in the
    fresh process, and `get_state` / `set_state` round trips here.

A public class without a row (and not in `NOT_KERAS_OBJECTS`, with a reason)
fails `test_every_public_class_has_a_row`, so no class ships without the
contract. Checks specific to one class (the seed state continuing after a
load, mask continuation, Keras aliases) stay in that class's test module.
"""

import inspect
import json
import types

import keras
import numpy as np
import pytest

import kreg
import kreg.mc

LAYER, REGULARIZER, INITIALIZER, CALLBACK = "layer", "regularizer", "initializer", "callback"
_KERAS_BASES = {LAYER: keras.layers.Layer, REGULARIZER: keras.regularizers.Regularizer,
                INITIALIZER: keras.initializers.Initializer,
                CALLBACK: keras.callbacks.Callback}
# A registered plain object (no Keras base; saved as JSON beside a model, e.g.
# kreg.conformal.SplitConformal): (a)-(d), and (e) as callbacks are.
OBJECT = "object"


def _row(make, kind, input_shape=None, *, inherits=(), not_in_config=None,
         drive=None):
    """One row: `make()` builds the example; `inherits` are the Keras classes
    whose arguments the class forwards through **kwargs (they must be in the
    config too); `not_in_config` maps an argument to why it may be absent;
    `drive(obj)` puts a callback into a non-trivial state."""
    return types.SimpleNamespace(make=make, kind=kind, input_shape=input_shape,
                                 inherits=inherits, not_in_config=not_in_config or {},
                                 drive=drive)


def _drive_early_stopping(es):
    es.on_train_begin()
    for epoch, (val, train) in enumerate([(1.0, 0.9), (0.8, 0.7), (0.9, 0.6),
                                          (0.85, 0.55), (0.95, 0.5)]):
        es.on_epoch_end(epoch, {"val_mae": val, "mae": train})


CONTRACT = {
    # -- layers --------------------------------------------------------------
    "Dropout": _row(lambda: kreg.layers.Dropout(
        keep_prob=0.7, scaling="test_time", noise_shape=(None, 1), seed=3, name="dr"),
        LAYER, (5, 3)),
    "DropConnectDense": _row(lambda: kreg.layers.DropConnectDense(
        7, rate=0.3, mask="example", inference="gaussian", inference_samples=17,
        drop_bias=False, example_chunk=3, seed=5, activation="relu",
        kernel_initializer="he_normal", bias_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(0.01), bias_regularizer="l1",
        activity_regularizer="l2", kernel_constraint="non_neg",
        bias_constraint=keras.constraints.MaxNorm(2.0), name="dc"),
        LAYER, (6,), inherits=(keras.layers.Dense,),
        not_in_config={"lora_rank": "Keras saves it only when LoRA is on",
                       "lora_alpha": "Keras saves it only when LoRA is on"}),
    "DropConnectConv2D": _row(lambda: kreg.layers.DropConnectConv2D(
        3, (2, 3), rate=0.2, inference="sample", inference_samples=9,
        drop_bias=False, seed=7, strides=(1, 2), padding="same",
        activation="tanh", kernel_initializer="he_uniform", bias_initializer="ones",
        kernel_regularizer="l2", bias_regularizer="l1", activity_regularizer="l2",
        kernel_constraint="unit_norm", bias_constraint="non_neg", name="dcc"),
        LAYER, (6, 6, 2), inherits=(keras.layers.Conv2D,),
        not_in_config={"lora_rank": "Keras saves it only when LoRA is on",
                       "lora_alpha": "Keras saves it only when LoRA is on"}),
    "GaussianDropout": _row(lambda: kreg.layers.GaussianDropout(
        keep_prob=0.7, seed=3, name="gd"), LAYER, (4, 3)),
    "GaussianNoise": _row(lambda: kreg.layers.GaussianNoise(0.25, seed=4, name="gn"),
                          LAYER, (5,)),
    "StochasticPooling2D": _row(lambda: kreg.layers.StochasticPooling2D(
        (3, 2), strides=(1, 2), padding="same", data_format="channels_first", seed=5),
        LAYER, (2, 6, 6)),
    "FractionalMaxPooling2D": _row(lambda: kreg.layers.FractionalMaxPooling2D(
        (1.3, 1.7), pseudo_random=False, overlapping=False,
        data_format="channels_first", seed=6), LAYER, (2, 9, 9)),
    "DropBlock2D": _row(lambda: kreg.layers.DropBlock2D(
        0.3, block_size=3, data_format="channels_first", seed=8, name="db"),
        LAYER, (2, 6, 5)),
    "StochasticDepth": _row(lambda: kreg.layers.StochasticDepth(0.4, seed=9, name="sd"),
                            LAYER, (3, 2)),
    "ConcreteDropout": _row(lambda: kreg.layers.ConcreteDropout(
        keras.layers.Conv2D(2, 3, padding="same", activation="relu"),
        weight_regularizer=1e-3, dropout_regularizer=1e-2, init_rate=0.3,
        temperature=0.2, seed=10, name="cdo"), LAYER, (5, 5, 2)),
    # -- regularizers --------------------------------------------------------
    "L1": _row(lambda: kreg.regularizers.L1(0.2), REGULARIZER),
    "L2": _row(lambda: kreg.regularizers.L2(0.3), REGULARIZER),
    "ElasticNet": _row(lambda: kreg.regularizers.ElasticNet(0.1, 0.4), REGULARIZER,
                       not_in_config={"alpha": "scikit-learn's names, saved as l1 and l2",
                                      "l1_ratio": "scikit-learn's names, saved as l1 and l2"}),
    "L1L2": _row(lambda: kreg.regularizers.L1L2(0.1, 0.4), REGULARIZER),
    # -- initializers --------------------------------------------------------
    "HeNormal": _row(lambda: kreg.initializers.HeNormal(
        seed=4, mode="fan_avg", negative_slope=0.1, distribution="uniform",
        keep_prob=0.9), INITIALIZER),
    # -- callbacks -----------------------------------------------------------
    "EarlyStopping": _row(lambda: kreg.callbacks.EarlyStopping(
        monitor="val_mae", min_delta=0.1, verbose=1, mode="min",
        start_from_epoch=0, restore_best_weights=False,
        check_finite=False, stopping_threshold=0.1, divergence_threshold=9.0,
        strict=False, criterion="pq", alpha=1.5, strip=2, train_monitor="mae",
        min_delta_mode="relative", checkpoint_path="best.weights.h5"),
        CALLBACK, drive=_drive_early_stopping),
    "LinearRateRamp": _row(lambda: kreg.callbacks.LinearRateRamp(
        4, layers=["db", "sd"]), CALLBACK),
    "RegularizationMonitor": _row(lambda: kreg.callbacks.RegularizationMonitor(
        layers=("a", "b"), stats=["l1"], tolerance=0.1, prefix="x/"), CALLBACK),
    # -- plain registered objects ---------------------------------------------
    "SplitConformal": _row(lambda: kreg.conformal.SplitConformal(
        alpha=0.2, method="raps", k_reg=2, lam=0.05, randomized=True,
        class_conditional=True, output="cls", seed=3).fit(
            np.tile(np.eye(3) * 0.7 + 0.1, (10, 1)), np.arange(30) % 3), OBJECT),
}

# Public classes that are not Keras objects (no config, nothing to save).
NOT_KERAS_OBJECTS = {
    "MCPredictor": "wraps a live model for sampling; the model is what is saved",
    "MCPrediction": "a result (arrays of samples and their statistics), not a "
                    "model component",
    "MomentPredictor": "wraps a live model for moment propagation; the model is "
                       "what is saved",
    "MomentPrediction": "a result (the propagated moments and their statistics), "
                        "not a model component",
    "ArgumentTypeError": "an exception class",
    "SklearnAdapter": "wraps a live model for scikit-learn tools; the model is "
                      "what is saved",
    "WeightDecayChange": "a result (what decoupled_weight_decay changed), not a "
                         "model component",
}


def _public_classes():
    """Every class named in the `__all__` of kreg and its public modules.

    Keyed by the class's own name: Keras's lower-case aliases (`l1 = L1`) are
    the same class and share its row."""
    found, seen, todo = {}, set(), [kreg, kreg.mc]
    while todo:
        module = todo.pop()
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                todo.append(obj)
            elif inspect.isclass(obj):
                found.setdefault(obj.__name__, obj)
    return found


PUBLIC = _public_classes()


def test_every_public_class_has_a_row():
    missing = sorted(set(PUBLIC) - set(CONTRACT) - set(NOT_KERAS_OBJECTS))
    assert not missing, (
        f"public classes without a row in tests/test_contract.py CONTRACT: {missing}")
    stale = sorted((set(CONTRACT) | set(NOT_KERAS_OBJECTS)) - set(PUBLIC))
    assert not stale, f"rows for classes that are not public: {stale}"
    assert not set(CONTRACT) & set(NOT_KERAS_OBJECTS)


@pytest.mark.parametrize("name", sorted(NOT_KERAS_OBJECTS))
def test_exempt_classes_are_not_keras_objects(name):
    cls = PUBLIC[name]
    assert not issubclass(cls, tuple(_KERAS_BASES.values()))
    assert not keras.saving.get_registered_name(cls).startswith("kreg>")


def _plain(value):
    """`value` after a JSON round trip (tuples become lists)."""
    return json.loads(json.dumps(value))


def _ctor_args(row, cls):
    names = set()
    for klass in (cls, *row.inherits):
        for arg, p in inspect.signature(klass.__init__).parameters.items():
            if arg != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                names.add(arg)
    return names - set(row.not_in_config)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_registered_config_complete_and_round_trips(name):
    row = CONTRACT[name]
    obj = row.make()
    cls = PUBLIC[name]
    assert type(obj) is cls and isinstance(obj, _KERAS_BASES.get(row.kind, object))
    # (a) registration
    assert keras.saving.get_registered_name(cls) == f"kreg>{name}"
    assert keras.saving.get_registered_object(f"kreg>{name}") is cls
    # (b) every constructor argument in the config, as plain JSON values
    config = obj.get_config()
    missing = _ctor_args(row, cls) - set(config)
    assert not missing, f"{name}: constructor arguments not in get_config: {missing}"
    if row.kind in (CALLBACK, REGULARIZER, INITIALIZER):  # no base-class extras
        assert set(config) == _ctor_args(row, cls)
    if row.kind != LAYER:  # Keras's own layer configs hold tuples
        assert _plain(config) == config
    # (c) from_config, also of the config after JSON (as a .keras file holds it)
    assert cls.from_config(config).get_config() == config
    assert _plain(cls.from_config(_plain(config)).get_config()) == _plain(config)
    # (d) Keras's serialize / deserialize, through JSON
    ser = keras.saving.serialize_keras_object(obj)
    assert ser["registered_name"] == f"kreg>{name}"
    again = keras.saving.deserialize_keras_object(_plain(ser))
    assert type(again) is cls
    assert _plain(again.get_config()) == _plain(config)


@pytest.mark.parametrize("name", sorted(n for n, r in CONTRACT.items() if r.drive))
def test_callback_state_round_trips_through_config(name):
    row = CONTRACT[name]
    obj = row.make()
    row.drive(obj)
    state = json.loads(json.dumps(obj.get_state()))
    twin = type(obj).from_config(obj.get_config())
    twin.set_state(state)
    assert twin.get_state() == state


# -- (e) one fresh process for the whole table -------------------------------
def _holder(name, row):
    """A small built model holding the row's object."""
    obj = row.make()
    if row.kind == LAYER:
        return keras.Sequential([keras.Input(row.input_shape), obj])
    dense = ({"kernel_regularizer": obj} if row.kind == REGULARIZER
             else {"kernel_initializer": obj})
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, **dense)])


def _object_of(model, kind):
    layer = model.layers[-1]
    return {LAYER: layer, REGULARIZER: getattr(layer, "kernel_regularizer", None),
            INITIALIZER: getattr(layer, "kernel_initializer", None)}[kind]


_FRESH = """
import json, sys
import numpy as np, keras, kreg
KINDS = {kinds!r}
out = {{}}
for name, kind in KINDS.items():
    if kind in ("callback", "object"):
        ser = json.load(open(f"{tmp}/{{name}}.json"))
        obj = keras.saving.deserialize_keras_object(ser)
        out[name] = {{"class": type(obj).__name__, "config": obj.get_config()}}
        continue
    model = keras.models.load_model(f"{tmp}/{{name}}.keras", safe_mode=True)
    layer = model.layers[-1]
    obj = {{"layer": layer, "regularizer": getattr(layer, "kernel_regularizer", None),
           "initializer": getattr(layer, "kernel_initializer", None)}}[kind]
    x = np.load(f"{tmp}/{{name}}.npy")
    got = {{"class": type(obj).__name__, "config": obj.get_config(),
           "pred": model.predict(x, verbose=0).tolist()}}
    if kind == "regularizer":
        got["penalty"] = float(keras.ops.convert_to_numpy(obj(layer.kernel)))
        got["losses"] = len(model.losses)
    if kind == "initializer":
        got["draw"] = keras.ops.convert_to_numpy(obj((5, 4))).tolist()
    out[name] = got
print("JSON:" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def fresh_load(tmp_path_factory, fresh_python):
    """Save every row here; load all of them in one fresh process."""
    tmp = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(0)
    expected, kinds = {}, {}
    for name, row in sorted(CONTRACT.items()):
        kinds[name] = row.kind
        if row.kind in (CALLBACK, OBJECT):
            obj = row.make()
            (tmp / f"{name}.json").write_text(
                json.dumps(keras.saving.serialize_keras_object(obj)))
            expected[name] = {"class": name, "config": obj.get_config()}
            continue
        keras.utils.set_random_seed(0)
        model = _holder(name, row)
        shape = row.input_shape or (4,)
        x = rng.normal(size=(3, *shape)).astype("float32")
        np.save(tmp / f"{name}.npy", x)
        model.save(tmp / f"{name}.keras")
        obj = _object_of(model, row.kind)
        # Predict right after saving: the loaded model starts from this state.
        want = {"class": name, "config": obj.get_config(),
                "pred": model.predict(x, verbose=0)}
        if row.kind == REGULARIZER:
            layer = model.layers[-1]
            want["penalty"] = float(keras.ops.convert_to_numpy(obj(layer.kernel)))
            want["losses"] = len(model.losses)
        if row.kind == INITIALIZER:
            want["draw"] = keras.ops.convert_to_numpy(obj((5, 4)))
        expected[name] = want
    got = fresh_python(_FRESH.format(kinds=kinds, tmp=str(tmp))).result
    return expected, got


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_keras_file_in_a_fresh_process(fresh_load, name):
    expected, got = fresh_load
    want, have = expected[name], got[name]
    assert have["class"] == want["class"]
    assert have["config"] == _plain(want["config"])
    if "pred" in want:
        np.testing.assert_array_equal(np.asarray(have["pred"], "float32"), want["pred"])
    if "penalty" in want:
        assert want["penalty"] > 0
        assert have["penalty"] == want["penalty"]
        assert have["losses"] == want["losses"] == 1
    if "draw" in want:
        np.testing.assert_array_equal(np.asarray(have["draw"], "float32"), want["draw"])
