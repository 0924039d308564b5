"""DropBlock2D, StochasticDepth and ConcreteDropout in kreg's machinery: Monte
Carlo sampling by `MCPredictor` (independent and joint), `kreg.export`'s
`serve_mc`, and `.keras` files loaded in a fresh process with the seed state
and the learned rate (their config contract is in tests/test_contract.py)."""

import math

import keras
import numpy as np
import pytest
from export_helpers import serve_mc_like_predictor

import kreg
from kreg.layers import ConcreteDropout
from kreg.layers import DropBlock2D
from kreg.layers import StochasticDepth


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _model():
    """Conv -> DropBlock -> residual block with stochastic depth -> concrete dense."""
    keras.utils.set_random_seed(0)
    x_in = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x_in)
    h = DropBlock2D(0.2, block_size=3, seed=1, name="db")(h)
    branch = keras.layers.Conv2D(4, 3, padding="same")(h)
    h = keras.layers.Add()([h, StochasticDepth(0.3, seed=2, name="sd")(branch)])
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = ConcreteDropout(keras.layers.Dense(3, activation="softmax"), init_rate=0.2,
                          seed=3, name="cd")(h)
    return keras.Model(x_in, out)


NAMES = ("db", "sd", "cd")
X = np.random.default_rng(0).uniform(size=(12, 8, 8, 2)).astype("float32")


def _layer_inputs():
    rng = np.random.default_rng(1)
    return {"db": rng.uniform(size=(2, 8, 8, 4)).astype("float32"),
            "sd": rng.uniform(size=(16, 4)).astype("float32"),
            "cd": rng.uniform(size=(2, 4)).astype("float32")}


def test_keras_file_in_a_fresh_process_keeps_rates_predictions_and_seed_state(
        tmp_path, fresh_python):
    model = _model()
    # A rate as training leaves it (learned, not init_rate), advanced generators.
    model.get_layer("cd").p_logit.assign(math.log(0.37 / 0.63) + 1e-3)
    for _ in range(3):
        model(X, training=True)
    rate = model.get_layer("cd").rate
    assert abs(rate - 0.37) < 1e-3
    path = tmp_path / "family.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", X)
    inputs = _layer_inputs()
    np.savez(tmp_path / "inputs.npz", **inputs)
    draws = {name: [_np(model.get_layer(name)(inputs[name], training=True)).tolist()
                    for _ in range(2)] for name in NAMES}
    pred = model.predict(X, verbose=0)
    losses = [float(_np(loss)) for loss in model.losses]
    result = fresh_python(f"""
        import json, numpy as np, keras, kreg
        m = keras.models.load_model({str(path)!r}, safe_mode=True)
        x = np.load({str(tmp_path / 'x.npy')!r})
        inputs = np.load({str(tmp_path / 'inputs.npz')!r})
        draws = {{name: [np.asarray(keras.ops.convert_to_numpy(
                     m.get_layer(name)(inputs[name], training=True))).tolist()
                     for _ in range(2)] for name in {NAMES!r}}}
        print("JSON:" + json.dumps({{
            "pred": m.predict(x, verbose=0).tolist(), "draws": draws,
            "rate": m.get_layer("cd").rate,
            "losses": [float(keras.ops.convert_to_numpy(l)) for l in m.losses]}}))
    """).result
    assert result["rate"] == rate
    np.testing.assert_array_equal(np.array(result["pred"], "float32"), pred)
    np.testing.assert_allclose(result["losses"], losses, rtol=1e-6)
    for name in NAMES:
        assert result["draws"][name] == draws[name], name
        assert draws[name][0] != draws[name][1], name  # the generator advances


# -- Monte Carlo sampling ----------------------------------------------------
def _single(name):
    """A model whose only stochastic layer is `name`'s, output flattened."""
    if name == "cd":
        dense = keras.layers.Dense(6, kernel_initializer="identity", use_bias=False)
        layer = ConcreteDropout(dense, init_rate=0.4, seed=3)
        return keras.Sequential([keras.Input((6,)), layer])
    layer = {"db": DropBlock2D(0.4, block_size=2, seed=1),
             "sd": StochasticDepth(0.4, seed=2)}[name]
    return keras.Sequential([keras.Input((4, 4, 2)), layer, keras.layers.Flatten()])


def _inputs(name):
    shape = (3, 6) if name == "cd" else (3, 4, 4, 2)
    x = np.random.default_rng(2).uniform(0.1, 1.0, size=shape).astype("float32")
    return np.concatenate([x, x])  # rows i and i + 3 are the same input


@pytest.mark.parametrize("name", NAMES)
def test_mc_predictor_samples_each_layer_and_changes_nothing(name):
    model = _single(name)
    layer = model.layers[0]
    x = _inputs(name)
    state = _np(layer.seed_generator.state).copy()
    det = model.predict(x, verbose=0)
    indep = kreg.MCPredictor(model, samples=8, seed=5).predict(
        x, verbose=0, return_samples=True).samples
    again = kreg.MCPredictor(model, samples=8, seed=5).predict(
        x, verbose=0, return_samples=True).samples
    np.testing.assert_array_equal(indep, again)  # seeded: reproducible
    assert len({s.tobytes() for s in indep}) >= 6
    assert not np.array_equal(indep[:, :3], indep[:, 3:])  # every row its own draw
    joint = kreg.MCPredictor(model, samples=8, seed=5, joint=True)
    full = joint.predict(x, verbose=0, return_samples=True).samples
    chunked = joint.predict(x, batch_size=2, verbose=0, return_samples=True).samples
    np.testing.assert_array_equal(full, chunked)  # a function of (seed, t) only
    np.testing.assert_array_equal(full[:, :3], full[:, 3:])  # one network per sample
    # Stochastic depth alone: a joint sample is the network with the branch
    # or without it, so two distinct samples.
    assert len({s.tobytes() for s in full}) == 2 if name == "sd" else 6 <= len(
        {s.tobytes() for s in full})
    np.testing.assert_array_equal(_np(layer.seed_generator.state), state)
    np.testing.assert_array_equal(model.predict(x, verbose=0), det)


@pytest.mark.parametrize("name, joint", [("sd", False), ("sd", True), ("cd", False),
                                         ("cd", True)])
def test_mc_mean_converges_to_the_inference_output(name, joint):
    # Inverted scaling: E[sample] is the inference output for these two (a
    # linear layer after the mask). DropBlock's per-example rescaling keeps
    # the mean of each example, not of each unit (blocks drop edges less).
    t = 1000
    model = _single(name)
    x = _inputs(name)[:3]
    pred = kreg.MCPredictor(model, samples=t, seed=1, joint=joint).predict(
        x, verbose=0, return_samples=True)
    det = model.predict(x, verbose=0)
    se = pred.samples.astype("float64").std(axis=0) / math.sqrt(t)
    assert np.all(np.abs(pred.mean - det) <= 5 * se + 1e-6)
    assert se.max() > 0


def test_dropblock_mc_samples_keep_each_examples_mean():
    model = _single("db")
    x = np.ones((4, 4, 4, 2), "float32")
    samples = kreg.MCPredictor(model, samples=20, seed=3).predict(
        x, verbose=0, return_samples=True).samples
    np.testing.assert_allclose(samples.mean(axis=-1), 1.0, rtol=1e-5)
    assert (samples == 0).any()


@pytest.mark.tf_only(reason="SavedModel export is TensorFlow-only")
def test_export_serve_mc_samples_the_three_layers(tmp_path):
    import tensorflow as tf

    model = _model()
    x = X[:4]
    served, out, ref = serve_mc_like_predictor(model, x, tmp_path / "sm")
    assert ref.std.max() > 1e-4
    # Each layer alone is sampled by serve_mc (not only one of them).
    for name in NAMES:
        single = _single(name)
        xs = _inputs(name)
        kreg.export(single, tmp_path / name, mc_samples=8)
        loaded = tf.saved_model.load(str(tmp_path / name))  # kept: it owns the variables
        got = loaded.serve_mc_seeded(xs, tf.constant(3, tf.int64))
        want = kreg.MCPredictor(single, 8, seed=3).predict(xs, batch_size=len(xs),
                                                           verbose=0)
        np.testing.assert_allclose(got["std"].numpy(), want.std, rtol=1e-4, atol=1e-6)
        assert want.std.max() > 1e-3, name


def test_the_guide_examples_run():
    """Every Python block of docs/dropout_family.md runs, in order."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "dropout_family.md"
            ).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 5
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/dropout_family.md", "exec"), namespace)  # noqa: S102
    assert namespace["history"].history["rate/dropblock"] == pytest.approx(
        [0.0, 0.05, 0.1, 0.1])
    assert namespace["change"].weight_decay == pytest.approx(2e-4)
    assert namespace["l2"] == pytest.approx(2 * 0.9 * 1e-4 / (2 * 1000 * 10.0))
