"""Tests of kreg.callbacks.RegularizationMonitor against NumPy."""

import csv
import inspect
import json
import math

import keras
import numpy as np
import pytest

import kreg
from kreg.callbacks import RegularizationMonitor


def _model():
    keras.utils.set_random_seed(3)
    inner = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(3, kernel_regularizer=kreg.regularizers.L1(0.01),
                           name="inner_dense")], name="inner")
    return keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.02),
                           bias_regularizer=kreg.regularizers.L2(0.5),
                           name="hidden"),
        keras.layers.Dropout(0.1),
        inner,
        keras.layers.Dense(1, name="out"),
    ])


def _numpy_penalty(model):
    hidden = model.get_layer("hidden")
    inner = model.get_layer("inner").get_layer("inner_dense")
    return (0.02 * np.sum(np.square(np.asarray(hidden.kernel), dtype=np.float64))
            + 0.5 * np.sum(np.square(np.asarray(hidden.bias), dtype=np.float64))
            + 0.01 * np.sum(np.abs(np.asarray(inner.kernel), dtype=np.float64)))


def _kernel_stats(kernel, tolerance):
    w = np.asarray(kernel, dtype=np.float64)
    return (np.abs(w).sum(), np.sqrt(np.square(w).sum()),
            np.mean(np.abs(w) < tolerance))


def test_fit_logs_match_numpy_on_final_weights(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    model = _model()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    csv_path = tmp_path / "log.csv"
    monitor = RegularizationMonitor(tolerance=0.2)
    history = model.fit(
        x, y, epochs=3, batch_size=32, verbose=0,
        callbacks=[monitor, keras.callbacks.CSVLogger(str(csv_path))])
    h = history.history
    names = ("hidden", "inner_dense", "out")
    expected_keys = {"reg/penalty", "reg/penalty_share"} | {
        f"reg/{n}/{s}" for n in names for s in ("l1", "l2", "sparsity")}
    assert expected_keys <= set(h)
    for key in expected_keys:
        assert len(h[key]) == 3
        assert all(isinstance(v, float) for v in h[key])

    # The last epoch's values describe the final weights.
    pen = _numpy_penalty(model)
    assert h["reg/penalty"][-1] == pytest.approx(pen, rel=1e-5)
    assert h["reg/penalty_share"][-1] == pytest.approx(pen / h["loss"][-1],
                                                       rel=1e-5)
    for name in names:
        layer = model.get_layer("inner").get_layer(name) \
            if name == "inner_dense" else model.get_layer(name)
        l1, l2, sparsity = _kernel_stats(layer.kernel, 0.2)
        assert h[f"reg/{name}/l1"][-1] == pytest.approx(l1, rel=1e-6)
        assert h[f"reg/{name}/l2"][-1] == pytest.approx(l2, rel=1e-6)
        assert h[f"reg/{name}/l2"][-1] == pytest.approx(
            np.linalg.norm(np.asarray(layer.kernel)), rel=1e-6)
        assert h[f"reg/{name}/sparsity"][-1] == sparsity
    # The tolerance matters: some but not all weights are below it.
    assert any(0.0 < h[f"reg/{n}/sparsity"][-1] < 1.0 for n in names)

    # CSVLogger (listed after it) recorded the same keys and values.
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert expected_keys <= set(rows[0])
    assert float(rows[-1]["reg/penalty"]) == pytest.approx(h["reg/penalty"][-1])


def _built(monitor, model):
    monitor.set_model(model)
    monitor.on_train_begin()
    return monitor


def test_statistics_on_known_weights_and_zero_kernel():
    model = keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(3, name="a",
                           kernel_regularizer=kreg.regularizers.L1(0.5)),
        keras.layers.Dense(1, name="b")])
    a = np.array([[0.0, 1e-4, -2.0], [3.0, -1e-3, 0.5]], "float32")
    model.get_layer("a").kernel.assign(a)
    model.get_layer("b").kernel.assign(np.zeros((3, 1), "float32"))
    mon = _built(RegularizationMonitor(tolerance=1e-3), model)
    logs = {"loss": 4.0}
    mon.on_epoch_end(0, logs)
    l1 = float(np.abs(a.astype(np.float64)).sum())
    assert logs["reg/a/l1"] == pytest.approx(l1)
    assert logs["reg/a/l2"] == pytest.approx(math.sqrt(4 + 9 + 0.25 + 1e-8 + 1e-6))
    # |w| < 1e-3: 0 and 1e-4 (1e-3 itself is not below the tolerance).
    assert logs["reg/a/sparsity"] == pytest.approx(2 / 6)
    assert logs["reg/penalty"] == pytest.approx(0.5 * l1)
    assert logs["reg/penalty_share"] == pytest.approx(0.5 * l1 / 4.0)
    assert (logs["reg/b/l1"], logs["reg/b/l2"], logs["reg/b/sparsity"]) == \
        (0.0, 0.0, 1.0)
    assert logs["loss"] == 4.0


def test_no_penalty_and_missing_or_zero_loss():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    mon = _built(RegularizationMonitor(stats=["penalty", "share"]), model)
    logs = {}
    mon.on_epoch_end(0, logs)
    assert logs["reg/penalty"] == 0.0
    assert math.isnan(logs["reg/penalty_share"])
    logs = {"loss": 0.0}
    mon.on_epoch_end(0, logs)
    assert math.isnan(logs["reg/penalty_share"])


def test_layers_stats_and_prefix_select_keys():
    model = _model()
    mon = _built(RegularizationMonitor(layers=["out", "hidden"],
                                       stats=("l2", "sparsity"), prefix="r_"),
                 model)
    logs = {"loss": 1.0}
    mon.on_epoch_end(0, logs)
    assert sorted(logs) == ["loss", "r_hidden/l2", "r_hidden/sparsity",
                            "r_out/l2", "r_out/sparsity"]
    mon = _built(RegularizationMonitor(stats=["penalty"], prefix=""), model)
    logs = {"loss": 1.0}
    mon.on_epoch_end(0, logs)
    assert sorted(logs) == ["loss", "penalty"]
    assert logs["penalty"] == pytest.approx(_numpy_penalty(model), rel=1e-5)


def test_unknown_layer_lists_available_names():
    mon = RegularizationMonitor(layers=["hidden", "dropout"])
    mon.set_model(_model())
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `layers` of RegularizationMonitor: "
            r"expected names of layers with a kernel \(available: 'hidden', "
            r"'inner_dense', 'out'\)\. Received: layers=\['hidden', 'dropout'\]")):
        mon.on_train_begin()


def test_existing_key_is_an_error_not_overwritten():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    mon = _built(RegularizationMonitor(stats=["penalty"], prefix=""), model)
    logs = {"loss": 1.0, "penalty": 7.0}
    with pytest.raises(ValueError, match="clash: 'penalty'"):
        mon.on_epoch_end(0, logs)
    assert logs["penalty"] == 7.0


ERRORS = [
    (dict(layers="hidden"), TypeError,
     "`layers` of RegularizationMonitor: expected None or a list/tuple of "
     "layer names. Received: layers='hidden' (of type str)"),
    (dict(layers=[1]), TypeError, "`layers`"),
    (dict(layers=["a", "a"]), ValueError, "without repeats"),
    (dict(stats=("l1", "l3")), ValueError,
     "`stats` of RegularizationMonitor: expected a non-empty list/tuple of "
     "distinct statistics from 'penalty', 'share', 'l1', 'l2', 'sparsity'. "
     "Received: stats=('l1', 'l3')"),
    (dict(stats="l1"), TypeError, "`stats`"),
    (dict(stats=()), ValueError, "`stats`"),
    (dict(stats=["l1", "l1"]), ValueError, "`stats`"),
    (dict(tolerance=0.0), ValueError,
     "`tolerance` of RegularizationMonitor: expected a float in (0, inf). "
     "Received: tolerance=0.0"),
    (dict(tolerance=float("nan")), ValueError, "`tolerance`"),
    (dict(tolerance="1e-3"), TypeError, "`tolerance`"),
    (dict(prefix=None), TypeError,
     "`prefix` of RegularizationMonitor: expected a string"),
]


@pytest.mark.parametrize("kwargs,exc,message", ERRORS)
def test_bad_arguments(kwargs, exc, message):
    with pytest.raises(exc) as info:
        RegularizationMonitor(**kwargs)
    assert str(info.value).startswith("Invalid value for argument `")
    assert message in str(info.value)


def test_config_has_every_argument_and_round_trips():
    mon = RegularizationMonitor(layers=("a", "b"), stats=["l1"], tolerance=0.1,
                                prefix="x/")
    config = mon.get_config()
    params = set(inspect.signature(RegularizationMonitor.__init__).parameters)
    assert set(config) == params - {"self"}
    assert json.loads(json.dumps(config)) == config
    assert RegularizationMonitor.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(mon))
    assert type(restored) is RegularizationMonitor
    assert restored.get_config() == config
    default = RegularizationMonitor().get_config()
    assert default == {"layers": None,
                       "stats": ["penalty", "share", "l1", "l2", "sparsity"],
                       "tolerance": 1e-3, "prefix": "reg/"}
