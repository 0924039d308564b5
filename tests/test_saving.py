"""`.keras` round trips of Sequential, Functional and subclassed models; `kreg.load_model`.

One fresh process loads every file: first without `import kreg` (Keras's own
TypeError), then after it, with `safe_mode=True`.
"""

import importlib.util
import json
import textwrap
import zipfile

import keras
import numpy as np
import pytest

import kreg

# A subclassed model, importable in the test process and in the fresh one.
SUBCLASSED = textwrap.dedent('''
    import keras
    import kreg


    @keras.saving.register_keras_serializable(package="kreg_tests")
    class Net(keras.Model):
        def __init__(self, units=16, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.hidden = keras.layers.Dense(
                units, activation="relu",
                kernel_initializer=kreg.initializers.HeNormal(seed=5),
                kernel_regularizer=kreg.regularizers.ElasticNet(1e-4, 1e-3))
            self.drop = kreg.layers.Dropout(0.3, seed=6, name="drop")
            self.head = keras.layers.Dense(
                3, activation="softmax", kernel_regularizer=kreg.regularizers.L2(1e-3))

        def call(self, x, training=None):
            return self.head(self.drop(self.hidden(x), training=training))
''')


def _sequential():
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(16, activation="relu",
                           kernel_initializer=kreg.initializers.HeNormal(seed=1),
                           kernel_regularizer=kreg.regularizers.L1(1e-3)),
        kreg.layers.Dropout(0.5, seed=2, name="drop"),
        keras.layers.Dense(3, activation="softmax"),
    ])


def _functional():
    inp = keras.Input((12,), name="features")
    h = keras.layers.Dense(16, activation="relu",
                           kernel_initializer=kreg.initializers.HeNormal(
                               seed=3, negative_slope=0.1),
                           bias_regularizer=kreg.regularizers.L2(1e-3))(inp)
    h = keras.layers.BatchNormalization()(h)
    h = kreg.layers.Dropout(keep_prob=0.8, scaling="test_time", seed=4, name="drop")(h)
    skip = keras.layers.Dense(16, kernel_regularizer=kreg.regularizers.ElasticNet(
        1e-4, 1e-4))(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Add()([h, skip]))
    return keras.Model(inp, out)


def _drop_layer(model):
    return [layer for layer in model._flatten_layers()
            if isinstance(layer, kreg.layers.Dropout)][0]


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory, fresh_python):
    """Save three models here, load them in one fresh process; both sides' numbers."""
    tmp = tmp_path_factory.mktemp("saving")
    (tmp / "kreg_saving_models.py").write_text(SUBCLASSED)
    spec = importlib.util.spec_from_file_location("kreg_saving_models",
                                                  tmp / "kreg_saving_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 12)).astype("float32")
    np.save(tmp / "x.npy", x)
    models = {"sequential": _sequential(), "functional": _functional(),
              "subclassed": module.Net(units=16)}
    expected = {}
    ones = np.ones((2, 16), "float32")
    for name, model in models.items():
        for _ in range(3):  # advance the RNG (and BN's moving statistics)
            model(x[:8], training=True)
        model.save(tmp / f"{name}.keras")
        drop = _drop_layer(model)
        expected[name] = {
            "pred": model.predict(x, verbose=0),
            "masks": [keras.ops.convert_to_numpy(drop(ones, training=True)).tolist()
                      for _ in range(2)],
            "losses": len(model.losses),
            "classes": sorted({type(layer).__name__ for layer in model._flatten_layers()}),
        }
    paths = {name: str(tmp / f"{name}.keras") for name in models}
    penalty_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        2, kernel_regularizer=kreg.regularizers.L2(0.25))])
    penalty_only.save(tmp / "penalty_only.keras")
    result = fresh_python(f"""
        import json, sys
        import numpy as np, keras
        out = {{}}
        try:
            keras.models.load_model({paths['sequential']!r})
            out["keras_error"] = None
        except TypeError as err:
            out["keras_error"] = str(err)
        reg = keras.models.load_model({str(tmp / 'penalty_only.keras')!r}).layers[0]
        reg = reg.kernel_regularizer
        out["penalty_only"] = [type(reg).__module__, reg.get_config()]
        out["kreg_imported_by_keras"] = "kreg" in sys.modules
        import kreg
        sys.path.insert(0, {str(tmp)!r})
        import kreg_saving_models  # the subclassed model's class
        x = np.load({str(tmp / 'x.npy')!r})
        ones = np.ones((2, 16), "float32")
        for name, path in {paths!r}.items():
            if name == "functional":
                m = kreg.load_model(path, safe_mode=True)
            else:
                m = keras.models.load_model(path, safe_mode=True)
            drop = [l for l in m._flatten_layers() if isinstance(l, kreg.layers.Dropout)][0]
            masks = [np.asarray(drop(ones, training=True)).tolist() for _ in range(2)]
            out[name] = {{
                "pred": m.predict(x, verbose=0).tolist(), "masks": masks,
                "losses": len(m.losses),
                "classes": sorted({{type(l).__name__ for l in m._flatten_layers()}}),
            }}
        print("JSON:" + json.dumps(out))
    """).result
    return expected, result, paths


@pytest.mark.parametrize("name", ["sequential", "functional", "subclassed"])
def test_keras_file_loads_in_fresh_process_identically(round_trip, name):
    expected, got, _ = round_trip
    np.testing.assert_array_equal(np.array(got[name]["pred"], "float32"),
                                  expected[name]["pred"])
    assert got[name]["masks"] == expected[name]["masks"]  # RNG state restored
    assert got[name]["losses"] == expected[name]["losses"] > 0
    assert got[name]["classes"] == expected[name]["classes"]


def test_loading_without_import_kreg_is_kerass_unhelpful_type_error(round_trip):
    _, got, _ = round_trip
    message = got["keras_error"]
    assert message is not None, "Keras loaded a kreg file without kreg"
    # The first kreg object Keras meets decides the symptom (here the HeNormal
    # initializer, resolved by class name to Keras's own, which lacks `mode`).
    assert "could not be deserialized properly" in message
    assert "HeNormal.__init__() got an unexpected keyword argument" in message
    assert "import kreg" not in message
    assert not got["kreg_imported_by_keras"]


def test_keras_substitutes_its_own_penalty_for_kregs_without_import(round_trip):
    # Documented hazard: a kreg L1/L2 whose config Keras's accepts loads as
    # Keras's class (the same penalty) when kreg is not imported.
    _, got, _ = round_trip
    module, config = got["penalty_only"]
    assert module.startswith("keras.")
    assert config == {"l2": 0.25}


def _rewrite(src, dst, rename):
    """Copy a .keras file, renaming registered classes in its config."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                stack = [config]
                while stack:
                    node = stack.pop()
                    if isinstance(node, dict):
                        if node.get("registered_name") in rename:
                            new = rename[node["registered_name"]]
                            node["registered_name"] = new
                            node["class_name"] = new.split(">")[1]
                            node["module"] = "nowhere"
                        stack.extend(node.values())
                    elif isinstance(node, list):
                        stack.extend(node)
                data = json.dumps(config)
            zout.writestr(item, data)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "m.keras"
    model = keras.Sequential([
        keras.Input((3,)), kreg.layers.Dropout(0.5, seed=1),
        keras.layers.Dense(2, kernel_regularizer=kreg.regularizers.L2(1e-3))])
    model.save(path)
    return path


def test_load_model_imports_and_loads(small_file):
    model = kreg.load_model(small_file, safe_mode=True)
    assert isinstance(model.layers[0], kreg.layers.Dropout)
    assert isinstance(model.layers[1].kernel_regularizer, kreg.regularizers.L2)


def test_load_model_hint_for_a_kreg_class_this_kreg_lacks(small_file, tmp_path):
    path = tmp_path / "nope.keras"
    _rewrite(small_file, path, {"kreg>Dropout": "kreg>Nope"})
    assert kreg.saving.missing_classes(path) == ["kreg>Nope"]
    with pytest.raises(TypeError) as info:
        kreg.load_model(path)
    message = str(info.value)
    assert "'kreg>Nope'" in message and "`import kreg`" in message
    assert f"kreg {kreg.__version__} does not define" in message
    assert len(message) < 400  # short, unlike Keras's
    assert isinstance(info.value.__cause__, TypeError)  # Keras's error, chained
    assert "Could not locate class" in str(info.value.__cause__)


def test_load_model_hint_for_another_packages_class(small_file, tmp_path):
    path = tmp_path / "acme.keras"
    _rewrite(small_file, path, {"kreg>L2": "acme>Widget"})
    with pytest.raises(TypeError, match=r"'acme>Widget'.*Import the package that "
                                        r"defines it.*`import kreg`.*custom_objects"):
        kreg.load_model(path)
    # custom_objects resolves it: no hint, the model loads.
    model = kreg.load_model(path, custom_objects={"acme>Widget": kreg.regularizers.L2})
    assert isinstance(model.layers[1].kernel_regularizer, kreg.regularizers.L2)
    assert kreg.saving.missing_classes(path, {"acme>Widget": object}) == []


def test_load_model_passes_other_errors_through(tmp_path):
    with pytest.raises(ValueError, match="File not found"):
        kreg.load_model(tmp_path / "absent.keras")
    assert kreg.saving.missing_classes(tmp_path / "absent.keras") == []
    with pytest.raises(TypeError, match=r"Invalid value for argument `filepath` of "
                                        r"load_model: expected a str or path-like\. "
                                        r"Received: filepath=3"):
        kreg.load_model(3)
