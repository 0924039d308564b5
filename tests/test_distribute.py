"""tf.distribute: replica masks, MirroredStrategy parity, MultiWorkerMirroredStrategy.

Every check runs in fresh processes: two logical CPU devices must be set up
before TensorFlow initializes, and multi-worker training needs two worker
processes talking over 127.0.0.1.
"""

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import kreg

pytestmark = pytest.mark.tf_only

# Shared by the subprocesses: the data and a model with every kreg layer,
# penalty and initializer (DropConnect layers when the installed kreg has them).
COMMON = """
import json, os, sys
import numpy as np
import tensorflow as tf
if os.environ.get("KREG_TEST_DEVICES"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import kreg

rng = np.random.default_rng(0)
X = rng.normal(size=(96, 8)).astype("float32")
W_TRUE = rng.normal(size=(8, 1))
Y = (X @ W_TRUE + 0.5 * rng.normal(size=(96, 1))).astype("float32")
XV = rng.normal(size=(32, 8)).astype("float32")
YV = (XV @ W_TRUE + 0.5 * rng.normal(size=(32, 1))).astype("float32")
BATCH, EPOCHS, LR = 16, 12, 0.05


def build(rate=0.0):
    R = kreg.regularizers
    he = kreg.initializers.HeNormal
    layers = [
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", kernel_initializer=he(seed=1),
                           kernel_regularizer=R.ElasticNet(1e-3, 1e-2),
                           bias_regularizer=R.L1(1e-2)),
        kreg.layers.Dropout(rate, seed=2),
    ]
    if hasattr(kreg.layers, "DropConnectDense"):
        layers.append(kreg.layers.DropConnectDense(
            16, rate, seed=4, activation="relu", kernel_initializer=he(seed=5),
            kernel_regularizer=R.L2(1e-2)))
    if hasattr(kreg.layers, "DropConnectConv2D"):
        layers += [keras.layers.Reshape((4, 4, 1)),
                   kreg.layers.DropConnectConv2D(2, 3, rate, seed=6, padding="same",
                                                 kernel_initializer=he(seed=7)),
                   keras.layers.Flatten()]
    layers.append(keras.layers.Dense(1, kernel_initializer=he(seed=3),
                                     kernel_regularizer=R.L2(1e-2)))
    return keras.Sequential(layers)


def callbacks():
    return [kreg.callbacks.RegularizationMonitor(),
            kreg.callbacks.EarlyStopping("val_loss", min_delta=0.03, patience=1)]


def dataset(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True)


def summary(model, history, es):
    return {"weights": [w.tolist() for w in model.get_weights()],
            "loss": [float(v) for v in history.history["loss"]],
            "val_loss": [float(v) for v in history.history["val_loss"]],
            "penalty": [float(v) for v in history.history.get("reg/penalty", [])],
            "stopped_epoch": es.stopped_epoch, "best_epoch": es.best_epoch,
            "stop_reason": es.stop_reason}
"""


def _script(body):
    return textwrap.dedent(COMMON) + "\n" + textwrap.dedent(body)


def _close(a, b, atol=1e-5):
    return all(np.allclose(np.array(u), np.array(w), atol=atol, rtol=1e-4)
               for u, w in zip(a, b, strict=True))


# ----------------------------------------------------------------------------
# Masks per replica
# ----------------------------------------------------------------------------
MASKS = """
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
N = 20000


def masks(make, calls=2):
    with strategy.scope():
        layer = make()
    ones = tf.ones((1, N))

    @tf.function
    def step():
        return strategy.run(lambda: layer(ones, training=True))

    return [[np.asarray(t).ravel() for t in strategy.experimental_local_results(step())]
            for _ in range(calls)]


out = {}
for name, make in [("kreg", lambda: kreg.layers.Dropout(0.5, seed=3)),
                   ("keras", lambda: keras.layers.Dropout(0.5, seed=3))]:
    first, again = masks(make), masks(make)
    (a0, a1), (b0, b1) = [[m != 0 for m in call] for call in first]
    out[name] = {
        "agreement": float((a0 == a1).mean()),
        "keep": [float(a0.mean()), float(a1.mean())],
        "next_call_agreement": float((a0 == b0).mean()),
        "reproducible": all(np.array_equal(u, w) for c, d in zip(first, again)
                            for u, w in zip(c, d)),
    }
if hasattr(kreg.layers, "DropConnectDense"):
    def make():
        layer = kreg.layers.DropConnectDense(64, 0.5, seed=3, use_bias=False,
                                             kernel_initializer="ones")
        layer.build((None, N))
        return layer
    first, again = masks(make), masks(make)
    out["dropconnect"] = {
        "replicas_differ": not np.array_equal(*first[0]),
        "reproducible": all(np.array_equal(u, w) for c, d in zip(first, again)
                            for u, w in zip(c, d)),
    }
print("JSON:" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def replica_masks(fresh_python):
    return fresh_python(_script(MASKS), env={"KREG_TEST_DEVICES": "1"}).result


def test_keras_dropout_draws_the_same_mask_on_every_replica(replica_masks):
    # The problem kreg fixes: Keras's own Dropout correlates the replicas.
    assert replica_masks["keras"]["agreement"] == 1.0


def test_kreg_dropout_draws_independent_masks_per_replica(replica_masks):
    res = replica_masks["kreg"]
    n = 20000
    se = math.sqrt(0.25 / n)  # two independent Bernoulli(0.5) masks agree w.p. 0.5
    assert abs(res["agreement"] - 0.5) < 5 * se
    for keep in res["keep"]:
        assert abs(keep - 0.5) < 5 * se
    assert abs(res["next_call_agreement"] - 0.5) < 5 * se  # fresh mask per call


def test_replica_masks_are_reproducible_for_a_seed(replica_masks):
    assert replica_masks["kreg"]["reproducible"]
    assert replica_masks["keras"]["reproducible"]


def test_dropconnect_masks_per_replica(replica_masks):
    if "dropconnect" not in replica_masks:
        pytest.skip("kreg.layers.DropConnectDense is not in this kreg")
    assert replica_masks["dropconnect"]["replicas_differ"]
    assert replica_masks["dropconnect"]["reproducible"]


# ----------------------------------------------------------------------------
# MirroredStrategy with fit (and kreg.distribute.train) vs one device
# ----------------------------------------------------------------------------
MIRRORED = """
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def run(strategy, how, rate=0.0, lr=LR):
    with strategy.scope():
        model = build(rate)
        model.compile(keras.optimizers.SGD(lr), "mse")
    cbs = callbacks()
    if how == "fit":
        history = model.fit(X, Y, batch_size=BATCH, epochs=EPOCHS, shuffle=False,
                            validation_data=(XV, YV), callbacks=cbs, verbose=0)
    else:
        history = kreg.distribute.train(model, dataset(X, Y), epochs=EPOCHS,
                                        validation_data=dataset(XV, YV), callbacks=cbs)
    return model, summary(model, history, cbs[1])


single_model, out_single = run(tf.distribute.get_strategy(), "fit")
mirrored_model, out_mirrored = run(mirrored, "fit")
_, out_train = run(mirrored, "train")
_, out_dropout = run(mirrored, "fit", rate=0.5, lr=LR / 5)  # noisier: a smaller step

# The MC predictor on the mirrored model equals it on the one-device model.
mc = {}
for name, strategy, trained in [("single", tf.distribute.get_strategy(), single_model),
                                ("mirrored", mirrored, mirrored_model)]:
    with strategy.scope():
        sampled = build(0.5)
    sampled.set_weights(trained.get_weights())
    pred = kreg.MCPredictor(sampled, samples=20, seed=0).predict(XV, verbose=0)
    mc[name] = {"mean": pred.mean.tolist(), "var": pred.variance.tolist()}

# Negative control: without tf.nn.scale_regularization_loss each of the two
# replicas adds the whole penalty, and training no longer matches one device.
tf.nn.scale_regularization_loss = lambda loss: loss
_, out_unscaled = run(mirrored, "train")
print("JSON:" + json.dumps({"single": out_single, "mirrored": out_mirrored,
                            "train": out_train, "dropout": out_dropout, "mc": mc,
                            "unscaled": out_unscaled}))
"""


@pytest.fixture(scope="module")
def mirrored(fresh_python):
    return fresh_python(_script(MIRRORED), env={"KREG_TEST_DEVICES": "1"},
                        timeout=600).result


def test_mirrored_fit_with_dropout_off_matches_one_device(mirrored):
    one, two = mirrored["single"], mirrored["mirrored"]
    assert _close(two["weights"], one["weights"])
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4)
    np.testing.assert_allclose(two["penalty"], one["penalty"], rtol=1e-4)
    assert one["loss"][-1] < 0.5 * one["loss"][0]


def test_mirrored_early_stopping_stops_and_restores_identically(mirrored):
    one, two = mirrored["single"], mirrored["mirrored"]
    assert one["stop_reason"] == "patience"  # the run really stops early
    assert len(one["loss"]) < 12
    for key in ("stopped_epoch", "best_epoch", "stop_reason"):
        assert two[key] == one[key]
    assert len(two["loss"]) == len(one["loss"])


def test_mirrored_custom_loop_matches_fit(mirrored):
    one, loop = mirrored["single"], mirrored["train"]
    assert _close(loop["weights"], one["weights"])
    np.testing.assert_allclose(loop["loss"], one["loss"], rtol=1e-4)
    np.testing.assert_allclose(loop["val_loss"], one["val_loss"], rtol=1e-4)
    assert loop["stopped_epoch"] == one["stopped_epoch"]


def test_unscaled_penalty_would_break_the_match(mirrored):
    # The check above is sensitive to penalty scaling: counting the penalty
    # once per replica changes the weights well beyond the tolerance.
    assert not _close(mirrored["unscaled"]["weights"], mirrored["single"]["weights"],
                      atol=1e-3)


def test_mirrored_fit_with_dropout_on_trains(mirrored):
    loss = mirrored["dropout"]["loss"]
    assert all(math.isfinite(v) for v in loss) and loss[-1] < loss[0]


def test_mc_predictor_on_a_mirrored_model(mirrored):
    mc = mirrored["mc"]
    np.testing.assert_allclose(mc["mirrored"]["mean"], mc["single"]["mean"],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mc["mirrored"]["var"], mc["single"]["var"],
                               rtol=1e-3, atol=1e-6)
    assert np.all(np.array(mc["mirrored"]["var"]) > 0)


# ----------------------------------------------------------------------------
# MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1
# ----------------------------------------------------------------------------
WORKER = """
strategy = tf.distribute.MultiWorkerMirroredStrategy()
task = strategy.cluster_resolver.task_id
with strategy.scope():
    model = build(0.0)
    model.compile(keras.optimizers.SGD(LR), "mse")
    probe = kreg.layers.Dropout(0.5, seed=3)
cbs = callbacks()
history = kreg.distribute.train(model, dataset(X, Y), epochs=EPOCHS,
                                validation_data=dataset(XV, YV), callbacks=cbs)
out = summary(model, history, cbs[1])


# What one replica minimises: its share of the data loss plus penalty / 2.
@tf.function
def check_loss(x, y):
    def step(x, y):
        pred = model(x, training=False)
        got = kreg.distribute.replica_loss(model, y, pred)
        data = tf.reduce_sum(tf.reduce_mean(tf.square(y - pred), axis=-1)) / (
            2.0 * tf.cast(tf.shape(x)[0], "float32"))
        return got, data + tf.add_n(model.losses) / 2.0
    return strategy.run(step, args=(x, y))


out["replica_loss"] = [float(v) for v in check_loss(X[:8], Y[:8])]


@tf.function
def mask():
    return strategy.run(lambda: probe(tf.ones((1, 20000)), training=True))


out["mask"] = (np.asarray(mask()).ravel() != 0).astype(int).tolist()
out["num_replicas"] = strategy.num_replicas_in_sync
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_workers(tmp_path, timeout=300):
    script = tmp_path / "worker.py"
    script.write_text(_script(WORKER))
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for index in range(2):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            env.pop("KREG_TEST_DEVICES", None)
            procs.append(subprocess.Popen(
                [sys.executable, str(script), str(tmp_path / f"out{index}.json")],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + timeout
        outputs = []
        for proc in procs:
            left = max(1.0, deadline - time.monotonic())
            outputs.append(proc.communicate(timeout=left)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"multi-worker training did not finish in {timeout} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for index, proc in enumerate(procs):
        assert proc.returncode == 0, f"worker {index} failed:\n{outputs[index][-4000:]}"
    return [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    workers = _run_workers(tmp_path_factory.mktemp("mwms"))
    # The reference: the same loop on one device, in this process.
    ns = {"__name__": "kreg_mwms_reference"}
    exec(textwrap.dedent(COMMON), ns)
    with ns["tf"].distribute.get_strategy().scope():
        model = ns["build"](0.0)
        model.compile(keras.optimizers.SGD(ns["LR"]), "mse")
    cbs = ns["callbacks"]()
    history = kreg.distribute.train(
        model, ns["dataset"](ns["X"], ns["Y"]), epochs=ns["EPOCHS"],
        validation_data=ns["dataset"](ns["XV"], ns["YV"]), callbacks=cbs)
    return workers, json.loads(json.dumps(ns["summary"](model, history, cbs[1])))


def test_multi_worker_training_matches_one_device(multi_worker):
    (w0, w1), ref = multi_worker
    assert w0["num_replicas"] == w1["num_replicas"] == 2
    # Both workers end with the same weights, equal to one-device training.
    assert _close(w0["weights"], w1["weights"], atol=0.0)
    assert _close(w0["weights"], ref["weights"])
    np.testing.assert_allclose(w0["loss"], ref["loss"], rtol=1e-4)
    assert w0["loss"] == w1["loss"] and w0["val_loss"] == w1["val_loss"]
    assert w0["loss"][-1] < 0.5 * w0["loss"][0]


def test_multi_worker_regularization_loss_is_scaled(multi_worker):
    (w0, w1), _ = multi_worker
    for worker in (w0, w1):
        got, expected = worker["replica_loss"]
        assert got == pytest.approx(expected, rel=1e-5)


def test_multi_worker_early_stopping_is_identical_on_all_workers(multi_worker):
    (w0, w1), ref = multi_worker
    assert w0["stop_reason"] == "patience"
    for key in ("stopped_epoch", "best_epoch", "stop_reason"):
        assert w0[key] == w1[key] == ref[key]
    assert len(w0["loss"]) == len(w1["loss"]) < 12


def test_multi_worker_replicas_draw_independent_masks(multi_worker):
    (w0, w1), _ = multi_worker
    a, b = np.array(w0["mask"]), np.array(w1["mask"])
    assert abs((a == b).mean() - 0.5) < 5 * math.sqrt(0.25 / a.size)


# ----------------------------------------------------------------------------
# The helper's errors (in process)
# ----------------------------------------------------------------------------
def test_train_needs_a_compiled_model_and_a_dataset():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    ds = tf.data.Dataset.from_tensor_slices((np.ones((4, 2)), np.ones((4, 1)))).batch(2)
    with pytest.raises(ValueError, match=r"`model` of replica_loss|`model` of train"):
        kreg.distribute.train(model, ds)
    model.compile("sgd", "mse")
    with pytest.raises(TypeError, match=r"`dataset` of train: expected a tf.data.Dataset"):
        kreg.distribute.train(model, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"`epochs` of train"):
        kreg.distribute.train(model, ds, epochs=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with pytest.raises(ValueError, match=r"created under \(create and compile the model "
                                         r"inside strategy.scope\(\)\)"):
        kreg.distribute.train(model, ds, strategy=strategy)


def test_train_runs_on_the_default_strategy_and_returns_history():
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), kreg.layers.Dropout(0.2, seed=1),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.random.default_rng(0).normal(size=(32, 2)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(8)
    history = kreg.distribute.train(model, ds, epochs=3)
    assert history is model.history
    assert len(history.history["loss"]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
