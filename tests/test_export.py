"""`kreg.export`: a SavedModel with `serve`, `serve_mc` and `serve_mc_seeded`.

The exported files are loaded with `tf.saved_model.load` in two fresh processes
at once, in which kreg (and Keras) cannot be imported; one of them also runs
`saved_model_cli show`.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kreg
from kreg.mc._graph import split_model
from kreg.serving import _endpoints
from kreg.serving import _summary

# A TensorFlow-only module: skipped where TensorFlow is not installed.
tf = pytest.importorskip("tensorflow", reason="a TensorFlow-only module")

pytestmark = pytest.mark.tf_only(
    reason="SavedModel export is TensorFlow's")

T = 200  # Monte Carlo samples of the exported classifier
N = 8

# Runs with kreg and Keras unimportable; writes every result to an .npz file.
LOADER = textwrap.dedent('''
    import sys
    sys.modules["kreg"] = None   # import kreg -> ImportError
    sys.modules["keras"] = None
    import json
    import numpy as np
    import tensorflow as tf

    out_path, x_path, cls_path, reg_path, full = sys.argv[1:6]
    try:
        import kreg  # noqa: F401
        importable = True
    except ImportError:
        importable = False
    x = np.load(x_path)
    res = {"kreg_importable": np.array(importable)}
    served = tf.saved_model.load(cls_path)
    seven = tf.constant(7, tf.int64)
    for key, value in served.serve_mc(x).items():
        res["mc1_" + key] = value.numpy()
    for key, value in served.serve_mc_seeded(x, seven).items():
        res["s7_" + key] = value.numpy()
    if full == "1":
        bn = [v for v in served.variables if "moving" in v.name]
        before = [v.numpy() for v in bn]
        res["serve"] = served.serve(x).numpy()
        res["mc2_mean"] = served.serve_mc(x)["mean"].numpy()
        res["s7b_mean"] = served.serve_mc_seeded(x, seven)["mean"].numpy()
        res["s8_mean"] = served.serve_mc_seeded(x, tf.constant(8, tf.int64))["mean"].numpy()
        replay = served.serve_mc_seeded(x, tf.constant(res["mc1_seed"][0]))
        res["replay_mean"] = replay["mean"].numpy()
        # The signatures as TensorFlow Serving calls them (named inputs).
        sig = served.signatures["serve_mc_seeded"]
        res["sig7_mean"] = sig(features=tf.constant(x), seed=seven)["mean"].numpy()
        res["sig_serve"] = served.signatures["serve"](features=tf.constant(x))["output_0"].numpy()
        res["bn_unchanged"] = np.array(all(
            np.array_equal(b, v.numpy()) for b, v in zip(before, bn)) and len(bn) == 4)
        again = tf.saved_model.load(cls_path)
        res["reload_mean"] = again.serve_mc(x)["mean"].numpy()
        reg = tf.saved_model.load(reg_path)
        res["reg_serve"] = reg.serve(x).numpy()
        out = reg.serve_mc_seeded(x, seven)
        res["reg_keys"] = np.array(sorted(out))
        res["reg_s7_mean"] = out["mean"].numpy()
        res["reg_s7_std"] = out["std"].numpy()
    np.savez(out_path, **res)
    if full == "0":
        # `saved_model_cli show --dir ... --all`: the console script's main
        # (bin/saved_model_cli runs exactly this), here to spare a TF import.
        from tensorflow.python.tools.saved_model_cli import main
        sys.argv = ["saved_model_cli", "show", "--dir", cls_path, "--all"]
        main()
''')


def _classifier():
    """Dense -> BN -> Dropout -> Dense -> BN -> softmax, BN statistics set."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((6,), name="features")
    h = keras.layers.Dense(16, activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = kreg.layers.Dropout(0.5)(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)
    out = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(2)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Moving statistics far from any batch's: batch statistics would show.
            layer.moving_mean.assign(rng.uniform(0.5, 1.5, 16).astype("float32"))
            layer.moving_variance.assign(rng.uniform(2.0, 4.0, 16).astype("float32"))
    return model


@keras.saving.register_keras_serializable(package="kreg_tests")
class Regressor(keras.Model):
    """A subclassed regression model: no prefix/suffix split."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.drop = kreg.layers.Dropout(0.2, scaling="test_time")
        self.head = keras.layers.Dense(1)

    def call(self, x, training=None):
        return self.head(self.drop(self.hidden(x), training=training))


def _x():
    return np.random.default_rng(3).normal(size=(N, 6)).astype("float32")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Export two models; load them in two processes at once (one runs saved_model_cli)."""
    tmp = tmp_path_factory.mktemp("export")
    x = _x()
    np.save(tmp / "x.npy", x)
    cls = _classifier()
    keras.utils.set_random_seed(4)
    reg = Regressor()
    reg(x)
    kreg.export(cls, tmp / "cls", mc_samples=T)
    kreg.export(reg, tmp / "reg", mc_samples=20)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    procs = {}
    for name, full in (("a", "1"), ("b", "0")):
        args = [str(tmp / f"{name}.npz"), str(tmp / "x.npy"), str(tmp / "cls"),
                str(tmp / "reg"), full]
        procs[name] = subprocess.Popen([sys.executable, "-c", LOADER, *args], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    # The parent's numbers, computed while the children load TensorFlow.
    parent = {
        "cls_predict": cls.predict(x, verbose=0),
        "reg_predict": reg.predict(x, verbose=0),
        "mcp7": kreg.MCPredictor(cls, T, seed=7).predict(x, batch_size=N, verbose=0),
        "mcp_free": kreg.MCPredictor(cls, T).predict(x, verbose=0),
        "reg_mcp7": kreg.MCPredictor(reg, 20, seed=7).predict(x, batch_size=N, verbose=0),
    }
    outputs = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} failed:\n{stdout}\n{stderr[-4000:]}"
        outputs[name] = stdout
    a = dict(np.load(tmp / "a.npz"))
    b = dict(np.load(tmp / "b.npz"))
    return parent, a, b, outputs["b"]


def test_loads_without_kreg(served):
    _, a, b, _ = served
    assert not a["kreg_importable"] and not b["kreg_importable"]


def test_serve_equals_model_predict(served):
    parent, a, _, _ = served
    np.testing.assert_allclose(a["serve"], parent["cls_predict"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a["sig_serve"], parent["cls_predict"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a["reg_serve"], parent["reg_predict"], rtol=1e-6, atol=1e-6)


def test_serve_mc_mean_matches_mc_predictor_within_standard_error(served):
    parent, a, _, _ = served
    ref = parent["mcp_free"]
    se = np.sqrt((a["mc1_std"] ** 2 + ref.std ** 2) / T)
    assert np.all(np.abs(a["mc1_mean"] - ref.mean) <= 5 * se + 1e-6)
    assert np.all(a["mc1_std"].max(axis=1) > 0.01)
    assert np.all(a["mc1_mutual_information"] >= 0)
    assert np.all(a["mc1_entropy"] >= a["mc1_mutual_information"])
    np.testing.assert_allclose(a["mc1_mean"].sum(axis=1), 1.0, rtol=1e-5)


def test_seeded_signature_is_mc_predictor_with_that_seed(served):
    # Same samples as MCPredictor(model, T, seed=7), which keeps BN in
    # inference mode and computes the prefix once: so does the SavedModel.
    parent, a, _, _ = served
    ref = parent["mcp7"]
    for key, want in (("mean", ref.mean), ("std", ref.std), ("entropy", ref.entropy),
                      ("mutual_information", ref.mutual_information)):
        np.testing.assert_allclose(a["s7_" + key], want, rtol=1e-4, atol=1e-6, err_msg=key)
    assert np.all(a["s7_seed"] == 7)
    np.testing.assert_allclose(a["reg_s7_mean"], parent["reg_mcp7"].mean, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(a["reg_s7_std"], parent["reg_mcp7"].std, rtol=1e-4,
                               atol=1e-6)


def test_same_seed_same_result_across_calls_and_processes(served):
    _, a, b, _ = served
    np.testing.assert_array_equal(a["s7_mean"], a["s7b_mean"])
    np.testing.assert_array_equal(a["s7_mean"], b["s7_mean"])  # another process
    np.testing.assert_array_equal(a["s7_mean"], a["sig7_mean"])  # the signature
    assert not np.array_equal(a["s7_mean"], a["s8_mean"])


def test_unseeded_signature_differs_per_call_load_and_process(served):
    _, a, b, _ = served
    assert not np.array_equal(a["mc1_mean"], a["mc2_mean"])  # per call
    assert not np.array_equal(a["mc1_mean"], a["reload_mean"])  # per load
    assert not np.array_equal(a["mc1_mean"], b["mc1_mean"])  # per process
    assert a["mc1_seed"][0] != b["mc1_seed"][0]
    assert np.all(a["mc1_seed"] == a["mc1_seed"][0]) and a["mc1_seed"].shape == (N,)
    # The seed it reports replays the call through the seeded signature.
    np.testing.assert_array_equal(a["replay_mean"], a["mc1_mean"])


def test_serve_mc_keeps_batch_norm_statistics(served):
    _, a, _, _ = served
    assert a["bn_unchanged"]


def test_regression_outputs(served):
    _, a, _, _ = served
    assert a["reg_keys"].tolist() == ["mean", "seed", "std"]
    assert a["reg_s7_mean"].shape == (N, 1)


def test_saved_model_cli_lists_the_signatures(served):
    *_, cli = served
    for name in ("serve", "serve_mc", "serve_mc_seeded", "serving_default"):
        assert f"signature_def['{name}']" in cli
    assert "outputs['mutual_information']" in cli
    assert "inputs['seed']" in cli


def _tiled_matmuls(fn, spec):
    """(untiled, tiled) counts of MatMul ops by whether a Tile op feeds them."""
    graph = tf.function(fn, autograph=False).get_concrete_function(spec).graph
    tiled = {}

    def after_tile(op):
        if op.name not in tiled:
            tiled[op.name] = False
            tiled[op.name] = op.type == "Tile" or any(
                after_tile(t.op) for t in op.inputs)
        return tiled[op.name]

    matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
    flags = [after_tile(op) for op in matmuls]
    return flags.count(False), flags.count(True)


def test_prefix_runs_once_per_input():
    model = _classifier()
    assert split_model(model).prefix is not None
    endpoints, specs = _endpoints(model, 5, "auto")
    # The first Dense (before the dropout) is not tiled; the other two are.
    assert _tiled_matmuls(endpoints["serve_mc"], specs[0]) == (1, 2)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", None])
def test_in_graph_summary_matches_mc_prediction(activation):
    rng = np.random.default_rng(5)
    if activation == "softmax":
        s = rng.dirichlet(np.ones(4), size=(9, 5)).astype("float32")
    elif activation == "sigmoid":
        s = rng.uniform(size=(9, 5, 2)).astype("float32")
        s[0, 0] = 0.0  # entropy of a certain output
    else:
        s = rng.normal(size=(9, 5, 1)).astype("float32")
    task = "regression" if activation is None else "classification"
    got = {k: v.numpy() for k, v in
           _summary(tf.constant(s), task, activation or "softmax").items()}
    ref = kreg.MCPrediction(s, task, activation=activation or "softmax")
    np.testing.assert_allclose(got["mean"], ref.mean, rtol=1e-6)
    np.testing.assert_allclose(got["std"], ref.std, rtol=1e-5, atol=1e-7)
    if task == "classification":
        np.testing.assert_allclose(got["entropy"], ref.entropy, rtol=1e-5)
        np.testing.assert_allclose(got["mutual_information"], ref.mutual_information,
                                   rtol=1e-4, atol=1e-6)
    else:
        assert sorted(got) == ["mean", "std"]


def _tiny():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                             kreg.layers.Dropout(0.5), keras.layers.Dense(2)])


@pytest.mark.parametrize("kwargs, match", [
    ({"mc_samples": 0}, r"argument `mc_samples` of export: expected an integer >= 1\. "
                        r"Received: mc_samples=0"),
    ({"task": "ranking"}, r"argument `task` of export: expected one of 'auto', "
                          r"'classification', 'regression'\. Received: task='ranking'"),
    ({"verbose": "yes"}, r"argument `verbose` of export: expected a bool"),
])
def test_argument_errors(tmp_path, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        kreg.export(_tiny(), tmp_path / "m", **kwargs)


def test_model_errors(tmp_path):
    with pytest.raises(TypeError, match=r"argument `path` of export: expected a str "
                                        r"or path-like\. Received: path=3"):
        kreg.export(_tiny(), 3)
    with pytest.raises(TypeError, match=r"argument `model` of export: expected a Keras "
                                        r"model"):
        kreg.export(keras.layers.Dense(2), tmp_path / "m")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.Dropout(0.0), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"at least one layer that samples with a "
                                         r"rate above 0"):
        kreg.export(plain, tmp_path / "m")
    unbuilt = keras.Sequential([keras.layers.Dense(2), kreg.layers.Dropout(0.5)])
    with pytest.raises(ValueError, match=r"expected a built model"):
        kreg.export(unbuilt, tmp_path / "m")
    inp = keras.Input((4,))
    h = kreg.layers.Dropout(0.5)(inp)
    # Several outputs export (tests/test_export_mc.py, issue 14), but their
    # names become signature keys: `seed` is taken, and keys must stay distinct.
    two = keras.Model(inp, {"seed": keras.layers.Dense(1)(h), "b": keras.layers.Dense(2)(h)})
    with pytest.raises(ValueError, match=r"argument `model` of export: expected outputs "
                                         r"whose names stay distinct as signature keys.*"
                                         r"Received: model=\['b', 'seed'\]"):
        kreg.export(two, tmp_path / "m")
    named_seed = keras.Sequential([keras.Input((4,), name="seed"), kreg.layers.Dropout(0.5)])
    with pytest.raises(ValueError, match=r"argument `input_signature` of export: expected "
                                         r"inputs not named 'seed'.*Received: "
                                         r"input_signature=\['seed'\]"):
        kreg.export(named_seed, tmp_path / "m")
    assert not os.path.exists(tmp_path / "m")


def test_other_backend_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match=r"Invalid value for argument `backend` of "
                                         r"export: expected the TensorFlow backend "
                                         r"\(SavedModel export is TensorFlow-only.*\)\. "
                                         r"Received: backend='jax'"):
        kreg.export(_tiny(), tmp_path / "m")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # Keras's tf2onnx numpy patch
def test_onnx_deterministic_route_and_why_mc_cannot_go_there(tmp_path, caplog):
    ort = pytest.importorskip("onnxruntime", reason="optional extra kreg[onnx]")
    tf2onnx = pytest.importorskip("tf2onnx", reason="optional extra kreg[onnx]")
    model = _classifier()
    x = _x()
    expected = model.predict(x, verbose=0)  # a model must be called before ONNX export
    model.export(tmp_path / "m.onnx", format="onnx", verbose=False)
    session = ort.InferenceSession(tmp_path / "m.onnx")
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # The Monte Carlo graph: tf2onnx has no conversion for the stateless random
    # ops; it logs them as unsupported and writes a graph onnxruntime rejects.
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    patch_tf2onnx()
    endpoints, specs = _endpoints(model, 4, "auto")

    def mc_mean(x):  # the Monte Carlo graph with a fixed seed
        return endpoints["serve_mc_seeded"](x, tf.constant(7, tf.int64))["mean"]

    fn = tf.function(mc_mean, input_signature=specs, autograph=False)
    tf2onnx.convert.from_function(fn, specs, output_path=str(tmp_path / "mc.onnx"))
    # (kreg's masks come from random bits: StatelessRandomUniformFullIntV2.)
    assert "Unsupported ops: Counter({'StatelessRandom" in caplog.text
    with pytest.raises(Exception, match=r"INVALID_GRAPH.*StatelessRandom"):
        ort.InferenceSession(tmp_path / "mc.onnx")


def test_import_kreg_on_another_backend_and_the_export_error(fresh_python):
    # A real non-TensorFlow backend (Keras's numpy backend needs no extra
    # package): importing kreg does not import TensorFlow; export says why not.
    result = fresh_python("""
        import json, sys
        import keras, kreg
        model = keras.Sequential([keras.Input((4,)), kreg.layers.Dropout(0.5),
                                  keras.layers.Dense(2)])
        try:
            kreg.export(model, "unused")
            error = None
        except ValueError as err:
            error = str(err)
        print("JSON:" + json.dumps({"backend": keras.backend.backend(), "error": error,
                                    "tf": "tensorflow" in sys.modules}))
    """, env={"KERAS_BACKEND": "numpy"}).result
    assert result["backend"] == "numpy"
    assert not result["tf"]
    assert result["error"].startswith("Invalid value for argument `backend` of export: "
                                      "expected the TensorFlow backend")
    assert result["error"].endswith("Received: backend='numpy'")


def test_multi_input_functional_model(tmp_path):
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(a), b])
    out = keras.layers.Dense(2, activation="softmax")(kreg.layers.Dropout(0.5)(h))
    model = keras.Model({"a": a, "b": b}, out)
    rng = np.random.default_rng(6)
    x = {"a": rng.normal(size=(5, 3)).astype("float32"),
         "b": rng.normal(size=(5, 2)).astype("float32")}
    kreg.export(model, tmp_path / "m", mc_samples=10)
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.serve(x), model.predict(x, verbose=0), rtol=1e-6)
    seed = tf.constant(3, tf.int64)
    first, second = loaded.serve_mc_seeded(x, seed), loaded.serve_mc_seeded(x, seed)
    np.testing.assert_array_equal(first["mean"], second["mean"])
    assert first["mean"].shape == (5, 2) and first["seed"].shape == (5,)
    assert float(tf.reduce_max(first["std"])) > 0
    # Seeds are taken modulo 2**52, and the high bits count.
    wrapped = loaded.serve_mc_seeded(x, tf.constant(3 + (1 << 52), tf.int64))
    np.testing.assert_array_equal(wrapped["mean"], first["mean"])
    high = loaded.serve_mc_seeded(x, tf.constant(3 + (1 << 24), tf.int64))
    assert not np.array_equal(high["mean"], first["mean"])
    drawn = loaded.serve_mc(x)["seed"].numpy()
    assert 0 <= drawn[0] < 1 << 52
