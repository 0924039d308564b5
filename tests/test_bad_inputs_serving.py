"""Bad inputs at every public entry point of serving, distribution, loading and the demo.

A table: each row calls one public callable (`kreg.export`,
`kreg.distribute.train`, `kreg.distribute.replica_loss`, `kreg.load_model`,
`kreg.demo.run`) with one bad value of one class (wrong type, None, NaN, inf,
negative, zero, out of range, an unknown string, the wrong shape or rank, 0
rows, a wrong label range) and states the error it must give: the exception
class and kreg's wording ("Invalid value for argument `x` of owner: expected
... Received: x=..."), or, where kreg hands the value to Keras or TensorFlow
unchanged, their error that names the bad value. No row may pass silently.
"""

import math
import os
import warnings

import keras
import numpy as np
import pytest

import kreg
from kreg import demo

pytestmark = pytest.mark.tf_only(reason="SavedModel export and tf.distribute")

NAN, INF = math.nan, math.inf


def kreg_error(owner, arg):
    """The start of kreg's message for argument `arg` of `owner`."""
    return rf"^Invalid value for argument `{arg}` of {owner}: expected "


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    import tensorflow as tf

    root = tmp_path_factory.mktemp("bad")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              kreg.layers.Dropout(0.5, seed=1),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.arange(16) % 3

    def dataset(x=x, y=y, batch=4):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)

    (root / "a-file").write_text("not a directory")
    (root / "full").mkdir()
    (root / "full" / "notes.txt").write_text("keep me")
    (root / "text.keras").write_text("not a zip file")
    model.save(root / "ok.keras")
    return {"tf": tf, "root": root, "model": model, "x": x, "y": y,
            "dataset": dataset, "ds": dataset()}


def export(ctx, **kw):
    args = {"model": ctx["model"], "path": ctx["root"] / "new"}
    args.update(kw)
    model, path = args.pop("model"), args.pop("path")
    kreg.export(model, path, **args)


def train(ctx, **kw):
    args = {"model": ctx["model"], "dataset": ctx["ds"]}
    args.update(kw)
    model, dataset = args.pop("model"), args.pop("dataset")
    kreg.distribute.train(model, dataset, **args)


def replica_loss(ctx, **kw):
    args = {"model": ctx["model"], "y": ctx["y"], "y_pred": ctx["model"](ctx["x"])}
    args.update(kw)
    kreg.distribute.replica_loss(args.pop("model"), args.pop("y"), args.pop("y_pred"),
                                 **args)


def run_demo(ctx, **kw):
    args = {"dataset": "digits", "out": ctx["root"] / "demo-out"}
    args.update(kw)
    demo.run(args.pop("dataset"), args.pop("out"), **args)


def uncompiled(ctx):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def unbuilt(ctx):
    return keras.Sequential([keras.layers.Dense(2), kreg.layers.Dropout(0.5)])


def no_kreg_layer(ctx):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                             keras.layers.Dropout(0.0), keras.layers.Dense(2)])


def spec(shape, dtype="float32"):
    return [keras.InputSpec(shape=shape, dtype=dtype)]


E = "export"
T = "train"
R = "replica_loss"
D = "kreg.demo.run"

# (id, call(ctx), exception, message regex)
ROWS = [
    # kreg.export --------------------------------------------------------------
    ("export-model-None", lambda c: export(c, model=None), TypeError, kreg_error(E, "model")),
    ("export-model-int", lambda c: export(c, model=3), TypeError, kreg_error(E, "model")),
    ("export-model-layer", lambda c: export(c, model=keras.layers.Dense(2)), TypeError,
     kreg_error(E, "model")),
    ("export-model-unbuilt", lambda c: export(c, model=unbuilt(c)), ValueError,
     kreg_error(E, "model") + "a built model"),
    ("export-model-no-kreg-layer", lambda c: export(c, model=no_kreg_layer(c)), ValueError,
     kreg_error(E, "model") + "a model with at least one layer that samples"),
    ("export-path-None", lambda c: export(c, path=None), TypeError, kreg_error(E, "path")),
    ("export-path-int", lambda c: export(c, path=3), TypeError, kreg_error(E, "path")),
    ("export-path-nan", lambda c: export(c, path=NAN), TypeError, kreg_error(E, "path")),
    ("export-path-empty", lambda c: export(c, path=""), ValueError,
     kreg_error(E, "path") + "a non-empty path"),
    ("export-path-a-file", lambda c: export(c, path=c["root"] / "a-file"), ValueError,
     kreg_error(E, "path") + r"a directory path \(a file exists there\)"),
    ("export-path-non-empty-dir", lambda c: export(c, path=c["root"] / "full"), ValueError,
     kreg_error(E, "path") + r"a new or empty directory .*overwrite=True"),
    ("export-path-non-empty-not-savedmodel-overwrite",
     lambda c: export(c, path=c["root"] / "full", overwrite=True), ValueError,
     kreg_error(E, "path") + r".*no saved_model\.pb: kreg does not delete it"),
    ("export-mc_samples-zero", lambda c: export(c, mc_samples=0), ValueError,
     kreg_error(E, "mc_samples") + r"an integer >= 1\. Received: mc_samples=0$"),
    ("export-mc_samples-negative", lambda c: export(c, mc_samples=-5), ValueError,
     kreg_error(E, "mc_samples")),
    ("export-mc_samples-float", lambda c: export(c, mc_samples=2.5), TypeError,
     kreg_error(E, "mc_samples")),
    ("export-mc_samples-nan", lambda c: export(c, mc_samples=NAN), TypeError,
     kreg_error(E, "mc_samples")),
    ("export-mc_samples-inf", lambda c: export(c, mc_samples=INF), TypeError,
     kreg_error(E, "mc_samples")),
    ("export-mc_samples-None", lambda c: export(c, mc_samples=None), TypeError,
     kreg_error(E, "mc_samples")),
    ("export-mc_samples-str", lambda c: export(c, mc_samples="5"), TypeError,
     kreg_error(E, "mc_samples")),
    ("export-mc_samples-bool", lambda c: export(c, mc_samples=True), TypeError,
     kreg_error(E, "mc_samples")),
    ("export-task-unknown", lambda c: export(c, task="ranking"), ValueError,
     kreg_error(E, "task") + "one of 'auto', 'classification', 'regression'"),
    ("export-task-None", lambda c: export(c, task=None), TypeError, kreg_error(E, "task")),
    ("export-verbose-str", lambda c: export(c, verbose="yes"), TypeError,
     kreg_error(E, "verbose")),
    ("export-verbose-None", lambda c: export(c, verbose=None), TypeError,
     kreg_error(E, "verbose")),
    ("export-overwrite-int", lambda c: export(c, overwrite=1), TypeError,
     kreg_error(E, "overwrite")),
    ("export-input_signature-int", lambda c: export(c, input_signature=3), TypeError,
     kreg_error(E, "input_signature")),
    ("export-input_signature-str", lambda c: export(c, input_signature="x"), TypeError,
     kreg_error(E, "input_signature")),
    ("export-input_signature-no-dtype",
     lambda c: export(c, input_signature=[keras.InputSpec(shape=(None, 4))]), ValueError,
     kreg_error(E, "input_signature")),
    ("export-input_signature-wrong-shape",
     lambda c: export(c, input_signature=spec((None, 5))), ValueError,
     kreg_error(E, "input_signature") + r"specs of the shapes the model's inputs accept "
     r"\(\(None, 4\)\)"),
    ("export-input_signature-wrong-rank",
     lambda c: export(c, input_signature=spec((None, 2, 4))), ValueError,
     kreg_error(E, "input_signature") + r"specs of the shapes the model's inputs accept "
     r"\(\(None, 4\)\)"),
    # kreg.distribute.train ---------------------------------------------------
    ("train-model-None", lambda c: train(c, model=None), TypeError,
     kreg_error(T, "model") + r"a compiled Keras model\. Received: model=None"),
    ("train-model-int", lambda c: train(c, model=3), TypeError, kreg_error(T, "model")),
    ("train-model-uncompiled", lambda c: train(c, model=uncompiled(c)), ValueError,
     kreg_error(T, "model") + "a model compiled with a loss and an optimizer"),
    ("train-dataset-None", lambda c: train(c, dataset=None), TypeError,
     kreg_error(T, "dataset") + "a tf.data.Dataset"),
    ("train-dataset-array", lambda c: train(c, dataset=c["x"]), TypeError,
     kreg_error(T, "dataset")),
    ("train-dataset-x-only",
     lambda c: train(c, dataset=c["tf"].data.Dataset.from_tensor_slices(c["x"]).batch(4)),
     ValueError, kreg_error(T, "dataset") + r"a tf.data.Dataset of \(x, y\)"),
    ("train-dataset-wrong-shape",
     lambda c: train(c, dataset=c["dataset"](x=np.ones((16, 5), "float32"))), ValueError,
     kreg_error(T, "dataset") + r"batches whose x has the model's input shape \(None, 4\)"),
    ("train-dataset-wrong-rank",
     lambda c: train(c, dataset=c["dataset"](x=np.ones((16, 2, 4), "float32"))), ValueError,
     kreg_error(T, "dataset") + r".*Received: dataset='x of shape \(None, 2, 4\)'"),
    ("train-dataset-label-out-of-range",
     lambda c: train(c, dataset=c["dataset"](y=np.full(16, 7))), Exception,
     r"label value of 7 which is outside the valid range of \[0, 3\)"),
    ("train-validation_data-array", lambda c: train(c, validation_data=c["x"]), TypeError,
     kreg_error(T, "validation_data")),
    ("train-validation_data-wrong-shape",
     lambda c: train(c, validation_data=c["dataset"](x=np.ones((16, 5), "float32"))),
     ValueError, kreg_error(T, "validation_data")),
    ("train-epochs-zero", lambda c: train(c, epochs=0), ValueError, kreg_error(T, "epochs")),
    ("train-epochs-negative", lambda c: train(c, epochs=-1), ValueError,
     kreg_error(T, "epochs")),
    ("train-epochs-float", lambda c: train(c, epochs=2.5), TypeError, kreg_error(T, "epochs")),
    ("train-epochs-nan", lambda c: train(c, epochs=NAN), TypeError, kreg_error(T, "epochs")),
    ("train-epochs-inf", lambda c: train(c, epochs=INF), TypeError, kreg_error(T, "epochs")),
    ("train-epochs-None", lambda c: train(c, epochs=None), TypeError, kreg_error(T, "epochs")),
    ("train-epochs-str", lambda c: train(c, epochs="2"), TypeError, kreg_error(T, "epochs")),
    ("train-initial_epoch-negative", lambda c: train(c, initial_epoch=-1), ValueError,
     kreg_error(T, "initial_epoch")),
    ("train-initial_epoch-None", lambda c: train(c, initial_epoch=None), TypeError,
     kreg_error(T, "initial_epoch")),
    ("train-verbose-out-of-range", lambda c: train(c, verbose=2), ValueError,
     kreg_error(T, "verbose")),
    ("train-verbose-str", lambda c: train(c, verbose="yes"), ValueError,
     kreg_error(T, "verbose")),
    ("train-callbacks-str", lambda c: train(c, callbacks="early"), TypeError,
     kreg_error(T, "callbacks")),
    ("train-callbacks-not-callbacks", lambda c: train(c, callbacks=[3]), TypeError,
     kreg_error(T, "callbacks")),
    ("train-strategy-int", lambda c: train(c, strategy=3), TypeError,
     kreg_error(T, "strategy")),
    ("train-strategy-other",
     lambda c: train(c, strategy=c["tf"].distribute.MirroredStrategy(["/cpu:0"])),
     ValueError, kreg_error(T, "strategy") + "the strategy the model was created under"),
    # kreg.distribute.replica_loss --------------------------------------------
    ("replica_loss-model-None", lambda c: replica_loss(c, model=None), TypeError,
     kreg_error(R, "model")),
    ("replica_loss-model-uncompiled", lambda c: replica_loss(c, model=uncompiled(c)),
     ValueError, kreg_error(R, "model")),
    # kreg.load_model: kreg checks the type; Keras names the bad file ---------
    ("load_model-None", lambda c: kreg.load_model(None), TypeError,
     kreg_error("load_model", "filepath")),
    ("load_model-int", lambda c: kreg.load_model(3), TypeError,
     kreg_error("load_model", "filepath")),
    ("load_model-nan", lambda c: kreg.load_model(NAN), TypeError,
     kreg_error("load_model", "filepath")),
    ("load_model-empty", lambda c: kreg.load_model(""), ValueError,
     r"^File format not supported: filepath=\. "),
    ("load_model-missing", lambda c: kreg.load_model(c["root"] / "missing.keras"),
     ValueError, r"^File not found: filepath=.*missing\.keras"),
    ("load_model-directory", lambda c: kreg.load_model(c["root"] / "full"), ValueError,
     r"^File format not supported: filepath=.*full\. "),
    ("load_model-not-a-model", lambda c: kreg.load_model(c["root"] / "a-file"), ValueError,
     r"^File format not supported: filepath=.*a-file\. "),
    ("load_model-unknown-keyword", lambda c: kreg.load_model(c["root"] / "ok.keras", bogus=1),
     TypeError, kreg_error("load_model", "bogus") + "one of the keyword arguments"),
    ("load_model-compile-str", lambda c: kreg.load_model(c["root"] / "ok.keras",
                                                         compile="yes"),
     TypeError, kreg_error("load_model", "compile") + "a bool"),
    ("load_model-safe_mode-None", lambda c: kreg.load_model(c["root"] / "ok.keras",
                                                            safe_mode=None),
     TypeError, kreg_error("load_model", "safe_mode") + "a bool"),
    ("load_model-custom_objects-list", lambda c: kreg.load_model(
        c["root"] / "ok.keras", custom_objects=[1]),
     TypeError, kreg_error("load_model", "custom_objects") + "a dict or None"),
    # kreg.demo.run (checked before any training) -----------------------------
    ("demo-dataset-unknown", lambda c: run_demo(c, dataset="iris"), ValueError,
     kreg_error(D, "dataset") + "one of 'digits', 'breast_cancer', 'diabetes'"),
    ("demo-dataset-None", lambda c: run_demo(c, dataset=None), TypeError,
     kreg_error(D, "dataset")),
    ("demo-out-None", lambda c: run_demo(c, out=None), TypeError, kreg_error(D, "out")),
    ("demo-out-int", lambda c: run_demo(c, out=3), TypeError, kreg_error(D, "out")),
    ("demo-out-empty", lambda c: run_demo(c, out=""), ValueError,
     kreg_error(D, "out") + "a non-empty str"),
    ("demo-out-under-a-file", lambda c: run_demo(c, out=c["root"] / "a-file" / "x"),
     NotADirectoryError, r"Not a directory"),
    ("demo-quick-int", lambda c: run_demo(c, quick=1), TypeError, kreg_error(D, "quick")),
    ("demo-quick-None", lambda c: run_demo(c, quick=None), TypeError, kreg_error(D, "quick")),
    ("demo-seed-negative", lambda c: run_demo(c, seed=-1), ValueError, kreg_error(D, "seed")),
    ("demo-seed-None", lambda c: run_demo(c, seed=None), TypeError, kreg_error(D, "seed")),
    ("demo-seed-nan", lambda c: run_demo(c, seed=NAN), TypeError, kreg_error(D, "seed")),
    ("demo-seed-str", lambda c: run_demo(c, seed="0"), TypeError, kreg_error(D, "seed")),
    ("demo-epochs-zero", lambda c: run_demo(c, epochs=0), ValueError,
     kreg_error(D, "epochs")),
    ("demo-epochs-float", lambda c: run_demo(c, epochs=2.5), TypeError,
     kreg_error(D, "epochs")),
    ("demo-epochs-inf", lambda c: run_demo(c, epochs=INF), TypeError,
     kreg_error(D, "epochs")),
    ("demo-stream-int", lambda c: run_demo(c, stream=3), TypeError,
     kreg_error(D, "stream")),
]


@pytest.mark.parametrize("call, exc, match", [pytest.param(*row[1:], id=row[0])
                                              for row in ROWS])
def test_bad_input_is_a_clear_error(ctx, call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call(ctx)
    text = str(info.value)
    if text.startswith("Invalid value"):  # kreg's: one line up to the received value
        assert "\n" not in text.split(". Received: ")[0], text
    assert not os.path.exists(ctx["root"] / "new")  # export wrote nothing
    assert not os.path.exists(ctx["root"] / "demo-out")  # the demo wrote nothing


def test_ids_are_unique_and_every_entry_point_is_covered():
    ids = [row[0] for row in ROWS]
    assert len(ids) == len(set(ids))
    covered = {i.split("-")[0] for i in ids}
    assert covered == {"export", "train", "replica_loss", "load_model", "demo"}


def test_export_refuses_a_non_empty_directory_and_replaces_a_saved_model(ctx, tmp_path):
    import tensorflow as tf

    path = tmp_path / "served"
    kreg.export(ctx["model"], path, mc_samples=2)
    with pytest.raises(ValueError, match=kreg_error(E, "path") + r"a new or empty dir"):
        kreg.export(ctx["model"], path, mc_samples=2)
    (path / "stale.txt").write_text("from the old export")
    kreg.export(ctx["model"], path, mc_samples=3, overwrite=True)
    assert not (path / "stale.txt").exists()  # replaced, not mixed
    served = tf.saved_model.load(str(path))
    assert served.serve_mc(ctx["x"][:2])["mean"].shape == (2, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    kreg.export(ctx["model"], empty, mc_samples=2)  # an empty directory is fine
    assert (empty / "saved_model.pb").is_file()


def test_train_on_an_empty_dataset_warns_like_keras(ctx):
    tf = ctx["tf"]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    empty = tf.data.Dataset.from_tensor_slices(
        (np.ones((0, 4), "float32"), np.ones((0, 1), "float32"))).batch(4)
    with pytest.warns(UserWarning, match=r"`dataset` gave no batch in epoch 1, so its "
                                         r"loss is not in the logs"):
        history = kreg.distribute.train(model, empty, epochs=1)
    assert history.history == {}  # as Keras's fit: nothing recorded, not NaN
    full = ctx["dataset"](x=ctx["x"], y=np.ones((16, 1), "float32"))
    with pytest.warns(UserWarning, match=r"`validation_data` gave no batch in epoch") as w:
        history = kreg.distribute.train(model, full, epochs=2, validation_data=empty)
    assert [str(x.message).split(",")[0] for x in w] == [
        f"kreg.distribute.train: `validation_data` gave no batch in epoch {e}"
        for e in (1, 2)]
    assert list(history.history) == ["loss"] and len(history.history["loss"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a non-empty dataset: no warning
        kreg.distribute.train(model, full, epochs=1)
