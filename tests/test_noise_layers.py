"""What kreg's noise layers (GaussianDropout, GaussianNoise, StochasticPooling2D,
FractionalMaxPooling2D) share with Dropout: `.keras` files that keep the seed
state in a fresh process (their config contract is in tests/test_contract.py),
Monte Carlo sampling (independent and joint) through `MCPredictor`, and
`kreg.export`'s Monte Carlo signatures."""

import math

import keras
import numpy as np
import pytest
from export_helpers import serve_mc_like_predictor

import kreg
from kreg.layers import FractionalMaxPooling2D
from kreg.layers import GaussianDropout
from kreg.layers import GaussianNoise
from kreg.layers import StochasticPooling2D


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _model():
    """Conv -> stochastic pooling -> Gaussian dropout -> FMP -> Gaussian noise -> softmax."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((12, 12, 2)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        StochasticPooling2D(2, seed=1, name="sp"),
        GaussianDropout(0.3, seed=2, name="gd"),
        # 6 x 6 -> 4 x 4. Unseeded: its inference regions come from the saved state.
        FractionalMaxPooling2D(1.414, name="fmp"),
        keras.layers.Flatten(),
        GaussianNoise(0.1, seed=4, name="gn"),
        keras.layers.Dense(3, activation="softmax"),
    ])


NAMES = ("sp", "gd", "fmp", "gn")


def _layer_inputs():
    rng = np.random.default_rng(1)
    # FMP on 16 rows (11 out): many possible regions (4 rows -> 2 have one).
    return {"sp": rng.uniform(size=(2, 12, 12, 4)), "gd": rng.uniform(size=(2, 6, 6, 4)),
            "fmp": rng.normal(size=(2, 16, 16, 4)), "gn": rng.normal(size=(2, 64))}


def test_keras_file_in_a_fresh_process_keeps_predictions_and_seed_state(
        tmp_path, fresh_python):
    model = _model()
    x = np.random.default_rng(0).uniform(size=(6, 12, 12, 2)).astype("float32")
    for _ in range(3):  # advance every generator
        model(x, training=True)
    path = tmp_path / "noise.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    inputs = {k: v.astype("float32") for k, v in _layer_inputs().items()}
    np.savez(tmp_path / "inputs.npz", **inputs)
    draws = {name: [_np(model.get_layer(name)(inputs[name], training=True)).tolist()
                    for _ in range(2)] for name in NAMES}
    pred = model.predict(x, verbose=0)
    result = fresh_python(f"""
        import json, numpy as np, keras, kreg
        m = keras.models.load_model({str(path)!r}, safe_mode=True)
        x = np.load({str(tmp_path / 'x.npy')!r})
        inputs = np.load({str(tmp_path / 'inputs.npz')!r})
        draws = {{name: [np.asarray(keras.ops.convert_to_numpy(
                     m.get_layer(name)(inputs[name], training=True))).tolist()
                     for _ in range(2)] for name in {NAMES!r}}}
        print("JSON:" + json.dumps({{"pred": m.predict(x, verbose=0).tolist(),
                                    "draws": draws}}))
    """).result
    np.testing.assert_array_equal(np.array(result["pred"], "float32"), pred)
    for name in NAMES:
        assert result["draws"][name] == draws[name], name
        assert draws[name][0] != draws[name][1], name  # the generator advances


# -- Monte Carlo sampling ----------------------------------------------------
def _single(name):
    """A model whose only stochastic layer is `name`'s, output flattened."""
    layer = {"sp": StochasticPooling2D(2, seed=1), "gd": GaussianDropout(0.4, seed=2),
             "fmp": FractionalMaxPooling2D(1.5, seed=3), "gn": GaussianNoise(0.5, seed=4)
             }[name]
    return keras.Sequential([keras.Input((6, 6, 2)), layer, keras.layers.Flatten()])


X = np.random.default_rng(2).uniform(0.1, 1.0, size=(3, 6, 6, 2)).astype("float32")
X_TWINS = np.concatenate([X, X])  # rows i and i + 3 are the same input


@pytest.mark.parametrize("name", NAMES)
def test_mc_predictor_samples_each_layer_and_changes_nothing(name):
    model = _single(name)
    layer = model.layers[0]
    state = _np(layer.seed_generator.state).copy()
    det = model.predict(X_TWINS, verbose=0)
    indep = kreg.MCPredictor(model, samples=8, seed=5).predict(
        X_TWINS, verbose=0, return_samples=True).samples
    again = kreg.MCPredictor(model, samples=8, seed=5).predict(
        X_TWINS, verbose=0, return_samples=True).samples
    np.testing.assert_array_equal(indep, again)  # seeded: reproducible
    # Every sample draws its own noise (FMP: 6 x 6 pseudo-random sequences of a
    # 6-row input at ratio 1.5, so some of 8 samples may share their regions).
    distinct = 4 if name == "fmp" else 8
    assert len({s.tobytes() for s in indep}) >= distinct
    if name == "fmp":  # one set of regions per sample, shared by its inputs
        np.testing.assert_array_equal(indep[:, :3], indep[:, 3:])
    else:  # every row its own draw
        assert not np.array_equal(indep[:, :3], indep[:, 3:])
    joint = kreg.MCPredictor(model, samples=8, seed=5, joint=True)
    full = joint.predict(X_TWINS, verbose=0).samples
    chunked = joint.predict(X_TWINS, batch_size=2, verbose=0).samples
    np.testing.assert_array_equal(full, chunked)  # a function of (seed, t) only
    np.testing.assert_array_equal(full[:, :3], full[:, 3:])  # one network per sample
    assert len({s.tobytes() for s in full}) >= distinct
    np.testing.assert_array_equal(_np(layer.seed_generator.state), state)
    np.testing.assert_array_equal(model.predict(X_TWINS, verbose=0), det)


@pytest.mark.parametrize("name, joint", [("sp", False), ("sp", True), ("gd", False),
                                         ("gd", True), ("gn", True)])
def test_mc_mean_converges_to_the_inference_output(name, joint):
    t = 1500
    model = _single(name)
    pred = kreg.MCPredictor(model, samples=t, seed=1, joint=joint).predict(
        X, verbose=0, return_samples=True)
    det = model.predict(X, verbose=0)
    se = pred.samples.astype("float64").std(axis=0) / math.sqrt(t)
    assert np.all(np.abs(pred.mean - det) <= 5 * se + 1e-6)
    assert se.max() > 0


@pytest.mark.tf_only(reason="SavedModel export is TensorFlow-only")
def test_export_serve_mc_samples_the_noise_layers(tmp_path):

    model = _model()
    x = np.random.default_rng(3).uniform(size=(4, 12, 12, 2)).astype("float32")
    served, out, ref = serve_mc_like_predictor(model, x, tmp_path / "sm")
    assert ref.std.max() > 1e-4
    fresh = served.serve_mc(x)["mean"].numpy()
    assert not np.array_equal(fresh, out["mean"].numpy())
