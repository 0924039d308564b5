"""`kreg.export` of every model shape: temperature, several inputs/outputs,
logits heads, `max_batch` chunking inside the graph, joint samples.

Every SavedModel is loaded and served in one fresh process in which kreg and
Keras cannot be imported; the parent compares with `MCPredictor`.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kreg

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                 reason="SavedModel export is TensorFlow-only")

TEMP = 2.5
SEED = 5
ROWS = 4  # max_batch // mc_samples of the multi-IO export (40 // 10)
N = 11    # two full chunks of ROWS and one of 3

LOADER = textwrap.dedent('''
    import sys
    sys.modules["kreg"] = None   # import kreg -> ImportError
    sys.modules["keras"] = None
    import numpy as np
    import tensorflow as tf

    tmp = sys.argv[1]
    x = dict(np.load(tmp + "/x.npz"))
    res = {}
    for name in ("a", "b"):
        res["x_" + name] = x[name]

    def seeded(served, inputs, seed, prefix):
        # The signature as TensorFlow Serving calls it (named inputs).
        for key, value in served.signatures["serve_mc_seeded"](
                **inputs, seed=tf.constant(seed, tf.int64)).items():
            res[prefix + key] = value.numpy()

    # 1. One softmax output, tempered.
    cls = tf.saved_model.load(tmp + "/cls")
    seeded(cls, {"a": x["a"]}, 7, "cls_")
    # 2. Dict inputs, logits + regression outputs, chunked (ROWS rows a pass).
    multi = tf.saved_model.load(tmp + "/multi")
    inputs = {"a": x["a"], "b": x["b"]}
    seeded(multi, inputs, 5, "big_")
    for i, (lo, hi) in enumerate(((0, 4), (4, 8), (8, 11))):
        part = {k: v[lo:hi] for k, v in inputs.items()}
        seeded(multi, part, 5 + i * 2**32, f"part{i}_")
    res["serve_keys"] = np.array(sorted(multi.signatures["serve"].structured_outputs))
    for key, value in multi.signatures["serve"](**inputs).items():
        res["serve_" + key] = value.numpy()
    res["multi_inputs"] = np.array(sorted(
        multi.signatures["serve_mc"].structured_input_signature[1]))
    graph = multi.signatures["serve_mc_seeded"].graph.as_graph_def()
    ops = {n.op for f in graph.library.function for n in f.node_def}
    ops |= {n.op for n in graph.node}
    res["has_while"] = np.array(bool(ops & {"While", "StatelessWhile"}))
    res["mc_keys"] = np.array(sorted(multi.signatures["serve_mc"](**inputs)))
    # 3. List inputs, joint samples, chunked and unchunked.
    for name in ("joint", "joint_whole"):
        served = tf.saved_model.load(tmp + "/" + name)
        seeded(served, {"a": x["a"], "b": x["b"]}, 3, name + "_")
    np.savez(tmp + "/out.npz", **res)
''')


def _two_input(structure):
    keras.utils.set_random_seed(0)
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), name="b")
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([a, b]))
    h = kreg.layers.Dropout(0.4)(h)
    cls = keras.layers.Dense(3, name="cls")(h)  # logits
    reg = keras.layers.Dense(2, name="reg")(h)
    if structure == "dict":
        bin_ = keras.layers.Dense(1, name="bin")(h)  # logits of a sigmoid
        return keras.Model({"a": a, "b": b}, {"cls": cls, "reg": reg, "bin": bin_})
    return keras.Model([a, b], [cls, reg])


def _classifier():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((4,), name="a"), keras.layers.Dense(16),
                             kreg.layers.Dropout(0.5),
                             keras.layers.Dense(3, activation="softmax")])


LOGITS = {"cls": True, "reg": None, "bin": True}
TEMPS = {"cls": TEMP, "reg": None, "bin": 0.5}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_mc")
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(N, 4)).astype("float32"),
         "b": rng.normal(size=(N, 3)).astype("float32")}
    np.savez(tmp / "x.npz", **x)
    cls, multi, joint = _classifier(), _two_input("dict"), _two_input("list")
    kreg.export(cls, tmp / "cls", mc_samples=30, temperature=TEMP)
    kreg.export(multi, tmp / "multi", mc_samples=10, max_batch=10 * ROWS,
                from_logits=LOGITS, temperature=TEMPS)
    kreg.export(joint, tmp / "joint", mc_samples=10, max_batch=30, joint=True,
                from_logits=[True, None])
    kreg.export(joint, tmp / "joint_whole", mc_samples=10, max_batch=None, joint=True,
                from_logits=[True, None])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", LOADER, str(tmp)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = dict(np.load(tmp / "out.npz"))
    models = {"cls": cls, "multi": multi, "joint": joint}
    return models, x, out


def test_tempered_signature_is_mc_predictor_with_that_temperature(served):
    models, x, out = served
    pred = kreg.MCPredictor(models["cls"], 30, seed=7, temperature=TEMP).predict(
        x["a"], batch_size=N, verbose=0)
    raw = kreg.MCPredictor(models["cls"], 30, seed=7).predict(
        x["a"], batch_size=N, verbose=0)
    np.testing.assert_allclose(out["cls_mean"], pred.mean, rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["cls_std"], pred.std, rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["cls_entropy"], pred.entropy, rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["cls_mutual_information"], pred.mutual_information,
                               rtol=0, atol=2e-6)
    assert np.all(out["cls_mutual_information"] >= 0)
    np.testing.assert_array_equal(out["cls_mean"].argmax(1), raw.mean.argmax(1))
    assert not np.allclose(out["cls_mean"], raw.mean, atol=1e-3)  # T did something


def test_multi_input_multi_output_signature(served):
    models, x, out = served
    assert sorted(out["multi_inputs"]) == ["a", "b"]
    assert list(out["mc_keys"]) == sorted(
        ["cls_mean", "cls_std", "cls_entropy", "cls_mutual_information",
         "bin_mean", "bin_std", "bin_entropy", "bin_mutual_information",
         "reg_mean", "reg_std", "seed"])
    expected = models["multi"].predict(x, verbose=0)
    assert list(out["serve_keys"]) == ["bin", "cls", "reg"]
    for name in ("bin", "cls", "reg"):  # serve is model.predict (logits included)
        np.testing.assert_allclose(out["serve_" + name], expected[name], rtol=1e-5,
                                   atol=1e-6)
    # serve_mc: the probabilities of the logits head, tempered; MCPredictor's
    # numbers for the full chunks (its chunk i is pass i of seed 5).
    pred = kreg.MCPredictor(models["multi"], 10, seed=SEED, from_logits=LOGITS,
                            temperature=TEMPS).predict(
        x, batch_size=ROWS, verbose=0)
    full = 2 * ROWS
    np.testing.assert_allclose(out["big_cls_mean"][:full], pred["cls"].mean[:full],
                               rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["big_cls_mutual_information"][:full],
                               pred["cls"].mutual_information[:full], rtol=0, atol=2e-6)
    for stat in ("mean", "std", "entropy", "mutual_information"):  # sigmoid, T = 0.5
        np.testing.assert_allclose(out["big_bin_" + stat][:full],
                                   getattr(pred["bin"], stat)[:full], rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["big_reg_mean"][:full], pred["reg"].mean[:full],
                               rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["big_reg_std"][:full], pred["reg"].std[:full],
                               rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["big_cls_mean"].sum(1), 1.0, atol=1e-5)
    assert out["big_cls_mean"].shape == (N, 3) and out["big_reg_mean"].shape == (N, 2)
    assert out["big_seed"].shape == (N,)


def test_big_request_is_processed_in_chunks_inside_the_graph(served):
    _, _, out = served
    assert out["has_while"]
    # Rows [4i, 4i + 4) of the big request with seed 5 are exactly a request
    # of those rows alone with seed 5 + i * 2**32 (the last chunk has 3 rows).
    for key in ("cls_mean", "cls_std", "cls_entropy", "cls_mutual_information",
                "bin_mean", "bin_mutual_information", "reg_mean", "reg_std"):
        parts = np.concatenate([out[f"part{i}_{key}"] for i in range(3)])
        np.testing.assert_array_equal(out["big_" + key], parts, err_msg=key)


def test_joint_export(served):
    models, x, out = served
    pred = kreg.MCPredictor(models["joint"], 10, seed=3, joint=True,
                            from_logits=[True, None]).predict([x["a"], x["b"]], verbose=0)
    for k, name in enumerate(("cls", "reg")):  # model.output_names
        for stat in ("mean", "std"):
            np.testing.assert_allclose(out[f"joint_{name}_{stat}"], getattr(pred[k], stat),
                                       rtol=0, atol=2e-6)
            # Joint samples do not depend on the chunking (3 rows a pass).
            np.testing.assert_allclose(out[f"joint_{name}_{stat}"],
                                       out[f"joint_whole_{name}_{stat}"], rtol=0, atol=1e-6)


def test_export_argument_errors(tmp_path):
    model = _two_input("dict")
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `temperature` of export: expected None for "
            r"output 'reg': .*regression\. Received: temperature=2\.0")):
        kreg.export(model, tmp_path / "m", mc_samples=5, temperature=2.0,
                    from_logits=LOGITS)
    with pytest.raises(TypeError, match=(
            r"Invalid value for argument `temperature` of export: expected a float > 0")):
        kreg.export(model, tmp_path / "m", mc_samples=5, temperature="hot")
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `temperature` of export: expected a float in "
            r"\(0, inf\)\. Received: temperature=-1\.0")):
        kreg.export(model, tmp_path / "m", mc_samples=5,
                    temperature={"cls": -1.0, "reg": None, "bin": None}, from_logits=LOGITS)
    with pytest.raises(ValueError, match=(
            r"Invalid value for argument `max_batch` of export: expected an int >= "
            r"mc_samples \(5\) or None.*Received: max_batch=4")):
        kreg.export(model, tmp_path / "m", mc_samples=5, max_batch=4)
    with pytest.raises(TypeError, match="argument `joint` of export"):
        kreg.export(model, tmp_path / "m", mc_samples=5, joint="yes")
    assert not os.path.exists(tmp_path / "m")
