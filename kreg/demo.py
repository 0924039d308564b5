"""`kreg demo`: one network, eight regularization techniques, one table.

On a dataset that ships with scikit-learn (digits by default, breast cancer, or
diabetes for regression), with a fixed seed and a fixed train/validation/test
split, the same multilayer perceptron (two hidden ReLU layers of 256 units with
He initialization) is trained eight times:

==================  ===========================================================
no regularization   the plain network
L2                  `kreg.regularizers.L2` on every kernel
L1                  `kreg.regularizers.L1` on every kernel
elastic net         `kreg.regularizers.ElasticNet` (half of each) on every kernel
inverted dropout    `kreg.layers.Dropout` after both hidden layers
DropConnect         `kreg.layers.DropConnectDense` as both hidden layers
early stopping      `kreg.callbacks.EarlyStopping` on the validation data term
dropout + L2 + ES   the three together
==================  ===========================================================

For each it reports train and test accuracy (RMSE for regression), the
generalization gap, the epochs run, the kernel sparsity and the deterministic
test NLL and calibration error; for the stochastic models (dropout, DropConnect,
dropout + L2 + ES) also the Monte Carlo averaged ones (`kreg.MCPredictor`). It
writes the table as Markdown and JSON and four PNG plots (learning curves,
kernel weight histograms, reliability diagrams, predictive uncertainty on
in-distribution vs corrupted inputs) into the output directory.

Definitions (also written into `results.md`):

- gap: train accuracy - test accuracy (classification), test RMSE - train
  RMSE (regression); both evaluated deterministically (inference mode).
- sparsity: the fraction of kernel entries, over all kernels, with
  `|w| < 1e-3` (`SPARSITY_TOLERANCE`).
- NLL: mean negative log-likelihood of the test labels. ECE: expected
  calibration error over 15 equal-width confidence bins. Regression: Gal &
  Ghahramani's Gaussian NLL with the model precision `tau` chosen on the
  validation split (separately for the deterministic and the MC predictions,
  as in their paper), and the calibration error of the central prediction
  intervals (`interval_calibration_error`); RMSE and NLL in the target's
  original units.
- MC: `samples` (100; 30 with `--quick`) stochastic passes with the predictor's
  own seed; the uncertainty plot uses joint samples (one network per sample
  for every input: `MCPredictor(..., joint=True)`).
"""

import dataclasses
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

from kreg import _validation as v

DATASETS = ("digits", "breast_cancer", "diabetes")

#: |w| below this counts as zero in the kernel sparsity.
SPARSITY_TOLERANCE = 1e-3

#: Number of equal-width confidence bins of the ECE and reliability diagrams.
ECE_BINS = 15

#: File names written into the output directory.
OUTPUT_FILES = (
    "results.md",
    "results.json",
    "learning_curves.png",
    "weight_histograms.png",
    "reliability.png",
    "uncertainty.png",
)

_PROBE_NAME = ".kreg-demo-write-probe"


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Training settings of one dataset (shared by all eight techniques)."""

    task: str
    hidden: tuple = (256, 256)
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 60
    quick_epochs: int = 12
    l2: float = 1e-3
    l1: float = 1e-4
    # No input dropout by default: on these small inputs (an 8x8 image, 30 or
    # 10 measurements) each Monte Carlo sample would lose much of the input,
    # and the MC average came out underconfident (digits: MC NLL 0.16 vs 0.10
    # deterministic with 0.2 on the inputs; 0.10 vs 0.15 without).
    input_dropout: float = 0.0
    dropout: float = 0.5
    dropconnect: float = 0.5
    patience: int = 10
    quick_patience: int = 4
    scaling: str = "feature"  # "feature": per feature; "global": one mean/std


CONFIGS = {
    # Pixels share one unit: per-pixel standardization would blow rare pixels
    # (nearly always 0 in the training split) up to values in the hundreds.
    "digits": DatasetConfig("classification", learning_rate=3e-3, scaling="global"),
    "breast_cancer": DatasetConfig("classification", batch_size=32),
    "diabetes": DatasetConfig(
        "regression", batch_size=32, epochs=100, quick_epochs=20,
        dropout=0.2, dropconnect=0.2, l1=1e-4, l2=1e-3,
    ),
}


@dataclasses.dataclass(frozen=True)
class Technique:
    """One row of the demo: which regularizers the network gets."""

    key: str
    label: str
    penalty: str = None  # None, "l2", "l1" or "elastic_net"
    dropout: bool = False
    dropconnect: bool = False
    early_stopping: bool = False

    @property
    def stochastic(self):
        return self.dropout or self.dropconnect


TECHNIQUES = (
    Technique("none", "no regularization"),
    Technique("l2", "L2", penalty="l2"),
    Technique("l1", "L1", penalty="l1"),
    Technique("elastic_net", "elastic net", penalty="elastic_net"),
    Technique("dropout", "inverted dropout", dropout=True),
    Technique("dropconnect", "DropConnect", dropconnect=True),
    Technique("early_stopping", "early stopping", early_stopping=True),
    Technique("dropout_l2_es", "dropout + L2 + early stopping", penalty="l2",
              dropout=True, early_stopping=True),
)


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class Data:
    """Standardized splits of one dataset."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = None
    y_mean: float = 0.0
    y_scale: float = 1.0


def load_data(name, seed=0):
    """Load a scikit-learn dataset, split 60/20/20 and standardize it.

    The split is stratified for classification and fixed by `seed`. Features
    are standardized with the training split's mean and standard deviation,
    per feature (breast cancer, diabetes) or with one mean and standard
    deviation for all pixels (digits: per-pixel scaling would turn a rare
    stroke in a pixel that is almost always blank into a value in the
    hundreds); regression targets too (predictions are mapped back to the
    original units for RMSE and NLL).

    Args:
        name: `"digits"`, `"breast_cancer"` or `"diabetes"`.
        seed: int >= 0, default 0. The seed of the split.

    Returns:
        A `Data` with float32 inputs.
    """
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    v.check_option("load_data", "name", name, DATASETS)
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    task = CONFIGS[name].task
    strat = y if task == "classification" else None
    idx = np.arange(len(x))
    rest, test = train_test_split(idx, test_size=0.2, random_state=seed,
                                  stratify=strat)
    train, val = train_test_split(
        rest, test_size=0.25, random_state=seed,
        stratify=None if strat is None else strat[rest])
    if CONFIGS[name].scaling == "global":
        xs = ((x - x[train].mean()) / x[train].std()).astype("float32")
    else:
        xs = StandardScaler().fit(x[train]).transform(x).astype("float32")
    data = Data(name, task, xs[train], y[train], xs[val], y[val], xs[test], y[test])
    if task == "classification":
        data.num_classes = int(y.max()) + 1
        for split in ("train", "val", "test"):
            setattr(data, f"y_{split}", getattr(data, f"y_{split}").astype("int64"))
    else:
        data.y_mean = float(y[train].mean())
        data.y_scale = float(y[train].std())
        for split in ("train", "val", "test"):
            raw = getattr(data, f"y_{split}")
            setattr(data, f"y_{split}",
                    ((raw - data.y_mean) / data.y_scale).astype("float32"))
    return data


def corrupt(x, kind, seed=0):
    """Corrupted copies of standardized inputs for the uncertainty plot.

    Args:
        x: array (N, D) of standardized inputs.
        kind: `"noise"` (add standard Gaussian noise: the signal-to-noise
            ratio of each feature becomes 1) or `"shuffled"` (permute the
            features of every row independently: the values of a real input in
            a meaningless arrangement).
        seed: int, default 0.

    Returns:
        A float32 array of the same shape.

    Example:

    >>> import numpy as np
    >>> from kreg.demo import corrupt
    >>> x = np.arange(6, dtype="float32").reshape(2, 3)
    >>> np.sort(corrupt(x, "shuffled"), axis=1).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    v.check_option("corrupt", "kind", kind, ("noise", "shuffled"))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return (x + rng.standard_normal(x.shape)).astype("float32")
    return rng.permuted(x, axis=1).astype("float32")


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------
def _penalty(cfg, kind):
    from kreg import regularizers

    if kind is None:
        return None
    if kind == "l2":
        return regularizers.L2(cfg.l2)
    if kind == "l1":
        return regularizers.L1(cfg.l1)
    return regularizers.ElasticNet(l1=cfg.l1 / 2, l2=cfg.l2 / 2)


def build_model(technique, cfg, input_dim, outputs, seed=0):
    """The demo's network with `technique`'s regularizers.

    `input_dim - 256 - 256 - outputs`, ReLU hidden layers with
    `kreg.initializers.HeNormal` (the same initial weights for every
    technique, DropConnect included), softmax output for classification and a
    linear one for regression; the penalty (if any) on every kernel; dropout
    after each hidden layer (and on the inputs if `cfg.input_dropout` > 0), or
    DropConnect on the hidden layers' weights (and biases).

    Args:
        technique: a `Technique`.
        cfg: a `DatasetConfig`.
        input_dim: int, the number of features.
        outputs: int, classes (classification) or 1 (regression).
        seed: int, default 0. Seeds the initializers and the masks.

    Returns:
        An uncompiled `keras.Sequential`.
    """
    import keras

    from kreg import initializers
    from kreg import layers

    layer_list = [keras.Input((input_dim,))]
    if technique.dropout and cfg.input_dropout > 0:
        layer_list.append(layers.Dropout(cfg.input_dropout, seed=seed + 100,
                                         name="input_dropout"))
    for i, units in enumerate(cfg.hidden):
        common = dict(
            activation="relu",
            kernel_initializer=initializers.HeNormal(seed=seed + 10 + i),
            kernel_regularizer=_penalty(cfg, technique.penalty),
            name=f"hidden_{i + 1}",
        )
        if technique.dropconnect:
            layer_list.append(layers.DropConnectDense(
                units, rate=cfg.dropconnect, seed=seed + 200 + i, **common))
        else:
            layer_list.append(keras.layers.Dense(units, **common))
        if technique.dropout:
            layer_list.append(layers.Dropout(cfg.dropout, seed=seed + 101 + i,
                                             name=f"dropout_{i + 1}"))
    layer_list.append(keras.layers.Dense(
        outputs, activation="softmax" if outputs > 1 else None,
        kernel_initializer=initializers.HeNormal(seed=seed + 20),
        kernel_regularizer=_penalty(cfg, technique.penalty), name="output"))
    return keras.Sequential(layer_list, name=technique.key)


def kernel_sparsity(model, tolerance=SPARSITY_TOLERANCE):
    """Fraction of kernel entries, over all kernels, with `|w| < tolerance`.

    Args:
        model: a built Keras model.
        tolerance: float > 0, default 1e-3.

    Returns:
        A float in [0, 1].

    Example:

    >>> import keras
    >>> from kreg.demo import kernel_sparsity
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     2, kernel_initializer=keras.initializers.Constant([[0, 1], [0, 0]]))])
    >>> kernel_sparsity(m)
    0.75
    """
    weights = _kernels(model)
    if weights.size == 0:
        return 0.0
    return float(np.mean(np.abs(weights) < tolerance))


def _kernels(model):
    import keras

    out = []
    for layer in model._flatten_layers(include_self=False):
        kernel = getattr(layer, "kernel", None)
        if isinstance(kernel, keras.Variable):
            out.append(np.asarray(kernel.numpy()).ravel())
    return np.concatenate(out) if out else np.zeros(0)


# ----------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------
def interval_calibration_error(mean, variance, y, levels=None):
    """Calibration error of Gaussian central prediction intervals.

    For each nominal level q in `levels` the interval
    `mean +- z_q * sqrt(variance)` should contain a fraction q of the targets;
    the error is the mean over levels of |observed fraction - q| (the
    regression analogue of the ECE; Kuleshov et al. 2018 use the same
    comparison of nominal and observed frequencies).

    Args:
        mean, variance, y: arrays (N,).
        levels: nominal levels, default `0.05, 0.10, ..., 0.95`.

    Returns:
        `(error, levels, observed)`.

    Example:

    >>> import numpy as np
    >>> from kreg.demo import interval_calibration_error
    >>> y = np.random.default_rng(0).standard_normal(20000)
    >>> err, _, _ = interval_calibration_error(np.zeros_like(y), np.ones_like(y), y)
    >>> err < 0.01
    True

    References:
        Kuleshov, Fenner & Ermon, "Accurate Uncertainties for Deep Learning
        Using Calibrated Regression", ICML 2018.
    """
    from scipy.stats import norm

    if levels is None:
        levels = np.round(np.arange(0.05, 1.0, 0.05), 2)
    levels = np.asarray(levels, "float64")
    mean = np.asarray(mean, "float64").ravel()
    std = np.sqrt(np.asarray(variance, "float64").ravel())
    y = np.asarray(y, "float64").ravel()
    z = norm.ppf(0.5 + levels / 2)
    inside = np.abs(y - mean)[None, :] <= z[:, None] * std[None, :]
    observed = inside.mean(axis=1)
    return float(np.mean(np.abs(observed - levels))), levels, observed


def _best_tau(samples, y):
    """Gal & Ghahramani's tau chosen on validation data (grid search)."""
    from kreg.mc.metrics import gaussian_log_likelihood

    taus = np.geomspace(1e-2, 1e3, 241)
    ll = [gaussian_log_likelihood(samples, y, t).mean() for t in taus]
    return float(taus[int(np.argmax(ll))])


def _regression_scores(samples_val, y_val, samples_test, y_test, scale):
    """RMSE, NLL (tau on validation) and interval calibration error."""
    from kreg.mc.metrics import regression_scores

    tau = _best_tau(samples_val, y_val)
    scores = regression_scores(samples_test, y_test, tau)
    mean = samples_test.mean(axis=0).ravel()
    var = samples_test.var(axis=0).ravel() + 1.0 / tau
    ece, levels, observed = interval_calibration_error(mean, var, y_test)
    return {
        "rmse": scores["rmse"] * scale,
        # The density of y = mean + scale * z: subtract log(scale) per point.
        "nll": scores["nll"] + math.log(scale),
        "ece": ece,
        "tau": tau,
        "_curve": (levels, observed),
    }


# ----------------------------------------------------------------------------
# Training one technique
# ----------------------------------------------------------------------------
def _compile(model, cfg, task, steps):
    import keras

    if task == "classification":
        loss = "sparse_categorical_crossentropy"
        metrics = ["accuracy", keras.metrics.SparseCategoricalCrossentropy(name="nll")]
    else:
        loss = "mse"
        metrics = [keras.metrics.MeanSquaredError(name="mse")]
    # One compiled call per epoch: the per-step Python overhead of `fit`
    # dominates such a small network on a CPU.
    model.compile(keras.optimizers.Adam(cfg.learning_rate), loss, metrics=metrics,
                  jit_compile=False, steps_per_execution=steps)


def train_technique(technique, data, cfg, *, epochs, patience, mc_samples, seed=0):
    """Train and score one technique.

    Args:
        technique: a `Technique`.
        data: a `Data`.
        cfg: the dataset's `DatasetConfig`.
        epochs: int, the most epochs to train.
        patience: int, the early-stopping patience (epochs).
        mc_samples: int, Monte Carlo samples for the stochastic models.
        seed: int, default 0.

    Returns:
        `(row, extras)`: `row` is the JSON-ready dict of scores (see
        `run`); `extras` holds the model, history and curves for the plots.
    """
    import keras

    from kreg import callbacks
    from kreg import regularizers
    from kreg.mc import metrics as mcm

    classification = data.task == "classification"
    keras.utils.set_random_seed(seed)
    outputs = data.num_classes if classification else 1
    model = build_model(technique, cfg, data.x_train.shape[1], outputs, seed=seed)
    steps = math.ceil(len(data.x_train) / cfg.batch_size)
    _compile(model, cfg, data.task, steps)
    cbs = []
    stopper = None
    monitor = "val_nll" if classification else "val_mse"
    if technique.early_stopping:
        # The validation data term: `val_loss` would include the penalty.
        stopper = callbacks.EarlyStopping(monitor=monitor, patience=patience)
        cbs.append(stopper)
    history = model.fit(
        data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
        epochs=epochs, batch_size=cfg.batch_size, verbose=0, callbacks=cbs)
    hist = {k: [float(x) for x in vals] for k, vals in history.history.items()}

    def predict(x):
        # An eager call: no traced predict function for a model used once.
        return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))

    row = {"key": technique.key, "technique": technique.label,
           "stochastic": technique.stochastic}
    extras = {"model": model, "history": hist}
    sizes = np.cumsum([len(data.x_train), len(data.x_val)])
    p_train, p_val, p_test = np.split(
        predict(np.concatenate([data.x_train, data.x_val, data.x_test])), sizes)
    if classification:
        tr = mcm.classification_scores(p_train, data.y_train, bins=ECE_BINS)
        te = mcm.classification_scores(p_test, data.y_test, bins=ECE_BINS)
        row.update(train_accuracy=tr["accuracy"], test_accuracy=te["accuracy"],
                   gap=tr["accuracy"] - te["accuracy"],
                   test_nll=te["nll"], test_ece=te["ece"])
        extras["det_probs"] = p_test
    else:
        scale = data.y_scale
        rmse_train = float(np.sqrt(np.mean((p_train.ravel() - data.y_train) ** 2))) * scale
        det = _regression_scores(p_val[None], data.y_val, p_test[None], data.y_test, scale)
        row.update(train_rmse=rmse_train, test_rmse=det["rmse"],
                   gap=det["rmse"] - rmse_train, test_nll=det["nll"],
                   test_ece=det["ece"], tau=det["tau"])
        extras["det_curve"] = det["_curve"]
    row.update(
        epochs=len(hist["loss"]),
        best_epoch=None if stopper is None or stopper.best_epoch is None
        else stopper.best_epoch + 1,
        sparsity=kernel_sparsity(model),
        penalty=regularizers.penalty(model)[0],
        mc=None,
    )
    if technique.stochastic:
        mc, extra = mc_scores(model, data, samples=mc_samples, seed=seed)
        row["mc"] = mc
        extras.update(extra)
    return row, extras


def mc_scores(model, data, *, samples, seed=0):
    """Monte Carlo scores and uncertainty from one set of joint samples.

    One `MCPredictor(model, samples, seed=seed, joint=True)` pass over the
    validation inputs, the test inputs and two corrupted copies of them
    (`corrupt`): sample t is one network (one set of masks) applied to every
    input, so the per-input marginals are those of independent sampling and
    the test scores are the ones `MCPredictor.evaluate` computes
    (`kreg.mc.metrics.classification_scores` of the mean probabilities;
    regression: Gal & Ghahramani's NLL with tau chosen on the validation
    split).

    Args:
        model: a trained model with kreg stochastic layers.
        data: a `Data`.
        samples: int, the number T of Monte Carlo samples.
        seed: int, default 0.

    Returns:
        `(scores, extras)`: `scores` is the JSON-ready `mc` dict of a row;
        `extras["uncertainty"]` maps `"in_distribution"`, `"noise"` and
        `"shuffled"` to per-input arrays, `"entropy"` and
        `"mutual_information"` (classification) or `"std"` (regression, in
        the target's units); classification adds `extras["mc_probs"]`,
        regression `extras["mc_curve"]`.
    """
    from kreg.mc import MCPrediction
    from kreg.mc import MCPredictor
    from kreg.mc import metrics as mcm

    parts = {
        "val": data.x_val,
        "in_distribution": data.x_test,
        "noise": corrupt(data.x_test, "noise", seed),
        "shuffled": corrupt(data.x_test, "shuffled", seed),
    }
    x = np.concatenate(list(parts.values()))
    predictor = MCPredictor(model, samples=samples, seed=seed, joint=True)
    # One chunk: one traced function per model.
    all_samples = predictor.predict(x, batch_size=len(x), verbose=0,
                                    return_samples=True).samples
    split, start = {}, 0
    for name, part in parts.items():
        split[name] = all_samples[:, start:start + len(part)]
        start += len(part)
    classification = data.task == "classification"
    uncertainty = {}
    for name in ("in_distribution", "noise", "shuffled"):
        pred = MCPrediction(split[name], predictor.resolved_task,
                            activation=predictor.activation, joint=True,
                            keep_samples=False)
        if classification:
            uncertainty[name] = {"entropy": pred.entropy,
                                 "mutual_information": pred.mutual_information}
        else:
            uncertainty[name] = {"std": pred.std.ravel() * data.y_scale}
    test = split["in_distribution"]
    if classification:
        probs = test.mean(axis=0)
        sc = mcm.classification_scores(probs, data.y_test, bins=ECE_BINS)
        scores = {"nll": sc["nll"], "ece": sc["ece"], "accuracy": sc["accuracy"],
                  "brier": sc["brier"], "samples": samples}
        extras = {"mc_probs": probs}
    else:
        sc = _regression_scores(split["val"], data.y_val, test, data.y_test,
                                data.y_scale)
        scores = {"rmse": sc["rmse"], "nll": sc["nll"], "ece": sc["ece"],
                  "tau": sc["tau"], "samples": samples}
        extras = {"mc_curve": sc["_curve"]}
    extras["uncertainty"] = uncertainty
    return scores, extras


def _auroc(clean, corrupted):
    """P(score of a corrupted input > score of a clean one) (ties count 1/2)."""
    from scipy.stats import rankdata

    scores = np.concatenate([clean, corrupted])
    ranks = rankdata(scores)
    n0, n1 = len(clean), len(corrupted)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def _summarize_uncertainty(unc):
    summary = {}
    for name, arrays in unc.items():
        summary[name] = {f"mean_{k}": float(np.mean(a)) for k, a in arrays.items()}
        if name != "in_distribution":
            key = "mutual_information" if "mutual_information" in arrays else "std"
            summary[name][f"auroc_{key}"] = _auroc(unc["in_distribution"][key],
                                                   arrays[key])
    return summary


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------
def ensure_writable_dir(path):
    """Create `path` (and parents) and check that a file can be written in it.

    Args:
        path: str or path-like.

    Returns:
        The absolute path.

    Raises:
        OSError: when the directory cannot be created or written to.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(20, "it exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=_PROBE_NAME, dir=path)
    os.close(fd)
    os.remove(probe)
    return path


def _fmt(x, digits=3):
    if x is None:
        return "—"
    return f"{x:.{digits}f}"


def format_table(results):
    """The results table as Markdown (the same text goes to stdout).

    Args:
        results: the dict `run` returns.

    Returns:
        str, a Markdown table (no trailing newline).
    """
    classification = results["task"] == "classification"
    if classification:
        head = ["technique", "train acc", "test acc", "gap", "epochs", "sparsity",
                "test NLL", "MC NLL", "test ECE", "MC ECE", "time (s)"]
    else:
        head = ["technique", "train RMSE", "test RMSE", "gap", "epochs", "sparsity",
                "test NLL", "MC NLL", "test cal. err", "MC cal. err", "time (s)"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":--"] + ["--:"] * (len(head) - 1)) + "|"]
    for r in results["techniques"]:
        mc = r["mc"] or {}
        epochs = str(r["epochs"])
        if r["best_epoch"] is not None:
            epochs += f" (best {r['best_epoch']})"
        if classification:
            fit = [_fmt(r["train_accuracy"]), _fmt(r["test_accuracy"]), _fmt(r["gap"])]
        else:
            fit = [_fmt(r["train_rmse"], 1), _fmt(r["test_rmse"], 1), _fmt(r["gap"], 1)]
        cells = [r["technique"], *fit, epochs, _fmt(r["sparsity"]),
                 _fmt(r["test_nll"]), _fmt(mc.get("nll")),
                 _fmt(r["test_ece"]), _fmt(mc.get("ece")), f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(results):
    cfg = results["config"]
    split = results["split"]
    classification = results["task"] == "classification"
    fit = "accuracy" if classification else "RMSE"
    text = [
        f"# kreg demo: {results['dataset']}",
        "",
        f"Network {results['network']}; Adam (learning rate {cfg['learning_rate']}), "
        f"batch {cfg['batch_size']}, at most {results['epochs']} epochs, seed "
        f"{results['seed']}; split {split['train']} train / {split['val']} validation "
        f"/ {split['test']} test ("
        + ("pixels standardized with one mean and standard deviation"
           if cfg["scaling"] == "global" else "each feature standardized")
        + " from the training split).",
        "",
        format_table(results),
        "",
        f"- train/test {fit} and gap (" + (
            "train - test" if classification else "test - train") +
        ") from the deterministic network (inference mode)"
        + ("" if classification else ", in the target's original units") + ".",
        f"- epochs: epochs run; early stopping monitors the validation data term "
        f"(`{'val_nll' if classification else 'val_mse'}`, not `val_loss`, which "
        f"includes the penalty) with patience {results['patience']} and restores "
        f"the best epoch's weights.",
        f"- sparsity: fraction of all kernel entries with |w| < {SPARSITY_TOLERANCE:g}. "
        "With Adam an L2 penalty is not weight decay: its gradient is normalized "
        "like the data term's, so weights that get no data gradient (those of "
        "dead ReLU units, say) are driven to about zero under L2 too "
        "(Loshchilov & Hutter).",
    ]
    if classification:
        text.append(
            f"- test NLL / ECE: deterministic network; MC NLL / ECE: mean of "
            f"{results['mc_samples']} Monte Carlo samples (stochastic models "
            f"only). ECE over {ECE_BINS} equal-width confidence bins.")
    else:
        text.append(
            f"- test NLL: Gaussian NLL with the model precision tau chosen on the "
            f"validation split; MC NLL: Gal & Ghahramani's mixture NLL of "
            f"{results['mc_samples']} Monte Carlo samples (stochastic models only), "
            f"tau chosen the same way. Calibration error: mean |observed - nominal| "
            f"coverage of the central prediction intervals at levels 5%..95%.")
    text.append(
        f"- L2 {cfg['l2']:g}, L1 {cfg['l1']:g}, elastic net L1 {cfg['l1'] / 2:g} + "
        f"L2 {cfg['l2'] / 2:g} on every kernel; dropout {cfg['dropout']:g} after "
        f"each hidden layer" + (f" and {cfg['input_dropout']:g} on the inputs"
                                if cfg["input_dropout"] else "") + "; DropConnect "
        f"{cfg['dropconnect']:g} on both hidden layers' weights and biases.")
    if results.get("uncertainty"):
        text += ["", "Predictive uncertainty (joint MC samples) on the test inputs and "
                 "corrupted copies (Gaussian noise of the features' scale; features "
                 "shuffled within each input). AUROC: the probability that a corrupted "
                 "input gets a higher score than a clean one (0.5: the score cannot "
                 "tell them apart; 1: it separates them perfectly).", ""]
        key = "mutual_information" if classification else "std"
        head = "mean mutual information" if classification else "mean predictive std"
        text.append(f"| model | {head}: clean | noise | shuffled | AUROC noise | "
                    f"AUROC shuffled |")
        text.append("|:--|--:|--:|--:|--:|--:|")
        for name, u in results["uncertainty"].items():
            text.append(
                f"| {name} | {u['in_distribution']['mean_' + key]:.3f} | "
                f"{u['noise']['mean_' + key]:.3f} | {u['shuffled']['mean_' + key]:.3f} | "
                f"{u['noise']['auroc_' + key]:.3f} | {u['shuffled']['auroc_' + key]:.3f} |")
    text += ["", f"Wall time {results['seconds']:.1f} s ({results['machine']})."]
    return "\n".join(text) + "\n"


# ----------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------
def _figure(rows, cols, width, height, top=0.9):
    """A Figure (no pyplot: the global backend is left alone) and its axes."""
    from matplotlib.figure import Figure

    # Fixed margins: a constrained layout costs more than drawing the figure.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=top,
                        wspace=0.25, hspace=0.45)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def plot_learning_curves(results, extras, path):
    """Train and validation data term per epoch, one panel per technique."""
    classification = results["task"] == "classification"
    key = "nll" if classification else "mse"
    n = len(results["techniques"])
    cols = 4
    fig, axes = _figure(math.ceil(n / cols), cols, 16, 3.6 * math.ceil(n / cols), top=0.9)
    scale = results["y_scale"]
    for ax, row in zip(axes.flat, results["techniques"]):
        hist = extras[row["key"]]["history"]
        train, val = np.array(hist[key]), np.array(hist["val_" + key])
        if not classification:
            train, val = np.sqrt(train) * scale, np.sqrt(val) * scale
        epochs = np.arange(1, len(train) + 1)
        ax.plot(epochs, train, label="train")
        ax.plot(epochs, val, label="validation")
        if row["best_epoch"] is not None:
            ax.axvline(row["best_epoch"], color="k", ls="--", lw=1,
                       label=f"best epoch ({row['best_epoch']})")
        ax.set_title(row["technique"])
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy" if classification else "RMSE")
        if classification:
            from matplotlib.ticker import NullFormatter

            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Learning curves ({results['dataset']}; training curves measured "
                 "with dropout/DropConnect active)")
    fig.savefig(path, dpi=100)


def plot_weight_histograms(results, extras, path):
    """Kernel weights of the penalty techniques: values and log10 |w|."""
    fig, axes = _figure(1, 2, 13, 4.5)
    keys = ("none", "l2", "l1", "elastic_net")
    rows = {r["key"]: r for r in results["techniques"]}
    weights = {k: _kernels(extras[k]["model"]) for k in keys if k in extras}
    lim = max(np.quantile(np.abs(w), 0.999) for w in weights.values())
    bins = np.linspace(-lim, lim, 121)
    log_bins = np.linspace(-8, math.log10(lim) + 0.2, 121)
    for k, w in weights.items():
        label = f"{rows[k]['technique']} (sparsity {rows[k]['sparsity']:.2f})"
        axes[0, 0].hist(w, bins=bins, histtype="step", lw=1.5, label=label)
        axes[0, 1].hist(np.log10(np.maximum(np.abs(w), 1e-8)), bins=log_bins,
                        histtype="step", lw=1.5, label=label)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_xlabel("kernel weight w")
    axes[0, 0].set_ylabel("count (log scale)")
    axes[0, 0].set_title("Kernel weights, all layers")
    axes[0, 0].legend(fontsize=8)
    axes[0, 1].axvline(math.log10(SPARSITY_TOLERANCE), color="k", ls="--", lw=1,
                       label=f"|w| = {SPARSITY_TOLERANCE:g}")
    axes[0, 1].set_xlabel("log10 |w| (values below 1e-8 at -8)")
    axes[0, 1].set_ylabel("count")
    axes[0, 1].set_title("log10 |w| (dashed: the sparsity threshold)")
    axes[0, 1].legend(fontsize=8)
    fig.savefig(path, dpi=100)


def plot_reliability(results, extras, path):
    """Reliability diagrams (regression: interval coverage), det vs MC."""
    from kreg.mc.metrics import reliability_curve

    classification = results["task"] == "classification"
    rows = [r for r in results["techniques"] if r["key"] == "none" or r["stochastic"]]
    fig, axes = _figure(1, len(rows), 4.2 * len(rows), 4.4, top=0.84)
    y = extras["_data"].y_test
    for ax, row in zip(axes.flat, rows):
        ex = extras[row["key"]]
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="perfect")
        if classification:
            curves = [("deterministic", ex["det_probs"], row["test_ece"])]
            if row["mc"]:
                curves.append((f"MC ({row['mc']['samples']})", ex["mc_probs"],
                               row["mc"]["ece"]))
            for label, probs, ece in curves:
                conf, acc, count = reliability_curve(
                    probs.max(axis=1), probs.argmax(axis=1) == y, bins=ECE_BINS)
                sel = count > 0
                line, = ax.plot(conf[sel], acc[sel], lw=1, alpha=0.7,
                                label=f"{label}, ECE {ece:.3f}")
                # Marker area proportional to the number of inputs in the bin.
                ax.scatter(conf[sel], acc[sel], s=300 * count[sel] / count.sum(),
                           color=line.get_color(), alpha=0.7)
            ax.set_xlabel("confidence (marker area: share of test inputs)")
            ax.set_ylabel("accuracy")
        else:
            curves = [("deterministic", ex["det_curve"], row["test_ece"])]
            if row["mc"]:
                curves.append((f"MC ({row['mc']['samples']})", ex["mc_curve"],
                               row["mc"]["ece"]))
            for label, (levels, observed), err in curves:
                ax.plot(levels, observed, marker="o", ms=4,
                        label=f"{label}, error {err:.3f}")
            ax.set_xlabel("nominal coverage of the central interval")
            ax.set_ylabel("observed coverage")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(row["technique"])
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Reliability on the test split" if classification
                 else "Calibration of the prediction intervals on the test split")
    fig.savefig(path, dpi=100)


def plot_uncertainty(results, uncertainty, path):
    """Histograms of predictive uncertainty, clean vs corrupted test inputs."""
    classification = results["task"] == "classification"
    stats = (("entropy", "predictive entropy (nats)"),
             ("mutual_information", "mutual information (epistemic, nats)")) \
        if classification else (("std", "predictive std of the MC mean"),)
    names = list(uncertainty)
    fig, axes = _figure(len(names), len(stats), 6 * len(stats), 3.3 * len(names), top=0.92)
    labels = {"in_distribution": "test inputs", "noise": "Gaussian noise added",
              "shuffled": "features shuffled"}
    summary = results["uncertainty"]
    for i, name in enumerate(names):
        for j, (key, xlabel) in enumerate(stats):
            ax = axes[i, j]
            hi = max(float(np.max(a[key])) for a in uncertainty[name].values())
            bins = np.linspace(0, max(hi, 1e-6), 40)
            for kind, arrays in uncertainty[name].items():
                label = labels[kind]
                auroc = summary[name][kind].get(f"auroc_{key}")
                if auroc is not None:
                    label += f" (AUROC {auroc:.2f})"
                ax.hist(arrays[key], bins=bins, histtype="step", lw=1.5, label=label)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test inputs")
            ax.set_title(name)
            ax.legend(fontsize=8)
    fig.suptitle("Predictive uncertainty from joint MC samples "
                 f"({results['mc_samples']} networks)")
    fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------------
# The whole job
# ----------------------------------------------------------------------------
def _machine():
    import platform

    import keras

    return (f"{keras.backend.backend()} backend, Keras {keras.__version__}, "
            f"{os.cpu_count()} CPUs, {platform.machine()}")


def run(dataset="digits", out="kreg-demo", *, quick=False, seed=0, epochs=None,
        stream=None):
    """Train the eight techniques, print the table and write the outputs.

    Args:
        dataset: `"digits"` (default), `"breast_cancer"` or `"diabetes"`.
        out: str or path-like, default `"kreg-demo"`. The output directory
            (created if needed).
        quick: bool, default False. Fewer epochs (12; 20 for diabetes) and 30
            instead of 100 Monte Carlo samples: the whole run in under a
            minute.
        seed: int >= 0, default 0. Seeds the split, the initial weights, the
            masks, the data order and the Monte Carlo samples.
        epochs: int >= 1 or None, default None. The most epochs per technique
            (None: 60 for digits and breast cancer, 100 for diabetes; see
            `quick`).
        stream: a text stream for the progress lines and the table, default
            `sys.stdout`.

    Returns:
        The results dict written to `results.json`: `dataset`, `task`,
        `seed`, `quick`, `epochs`, `patience`, `mc_samples`, `split`,
        `network`, `config`, `y_scale`, `techniques` (one dict per technique
        in `TECHNIQUES` order with `key`, `technique`, `stochastic`,
        `train_accuracy`/`test_accuracy` or `train_rmse`/`test_rmse`, `gap`,
        `epochs`, `best_epoch`, `sparsity`, `penalty`, `test_nll`,
        `test_ece`, `mc` (None for deterministic models, else a dict with
        `nll`, `ece`, `samples` and `accuracy`/`brier` or `rmse`/`tau`),
        `seconds`, and `tau` for regression), `uncertainty`, `files`,
        `seconds` and `machine`.

    Example (a shell command; it trains for about a minute)::

        python -m kreg demo --quick --out /tmp/kreg-demo

    References:
        Srivastava et al., JMLR 2014 (dropout); Wan et al., ICML 2013
        (DropConnect); Prechelt 1998 (early stopping); Gal & Ghahramani,
        ICML 2016 (MC dropout); Guo et al., ICML 2017 (ECE, reliability
        diagrams).
    """
    owner = "kreg.demo.run"
    v.check_option(owner, "dataset", dataset, DATASETS)
    quick = v.check_bool(owner, "quick", quick)
    seed = v.check_int(owner, "seed", seed, low=0)
    epochs = v.check_int(owner, "epochs", epochs, low=1, allow_none=True)
    stream = sys.stdout if stream is None else stream
    out = ensure_writable_dir(out)
    start = time.perf_counter()

    def say(text="", end="\n"):
        stream.write(text + end)
        stream.flush()

    cfg = CONFIGS[dataset]
    if epochs is None:
        epochs = cfg.quick_epochs if quick else cfg.epochs
    patience = cfg.quick_patience if quick else cfg.patience
    mc_samples = 30 if quick else 100
    data = load_data(dataset, seed)
    outputs = data.num_classes if data.task == "classification" else 1
    network = "-".join(str(n) for n in (data.x_train.shape[1], *cfg.hidden, outputs))
    network += (" MLP, ReLU, He normal init, " +
                ("softmax" if data.task == "classification" else "linear") + " output")
    say(f"kreg demo: {dataset} ({data.task}; {len(data.x_train)} train / "
        f"{len(data.x_val)} validation / {len(data.x_test)} test), "
        f"{len(TECHNIQUES)} techniques, up to {epochs} epochs each, seed {seed}")

    rows, extras = [], {"_data": data}
    for i, technique in enumerate(TECHNIQUES, 1):
        say(f"[{i}/{len(TECHNIQUES)}] {technique.label} ...", end="")
        t0 = time.perf_counter()
        row, extra = train_technique(technique, data, cfg, epochs=epochs,
                                     patience=patience, mc_samples=mc_samples,
                                     seed=seed)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        extras[technique.key] = extra
        if data.task == "classification":
            score = f"test acc {row['test_accuracy']:.3f}"
        else:
            score = f"test RMSE {row['test_rmse']:.1f}"
        if row["mc"]:
            score += f", MC NLL {row['mc']['nll']:.3f}"
        say(f" {row['seconds']:.1f} s ({row['epochs']} epochs, {score})")

    uncertainty = {row["technique"]: extras[row["key"]]["uncertainty"]
                   for row in rows if row["stochastic"]}

    results = {
        "dataset": dataset,
        "task": data.task,
        "seed": seed,
        "quick": quick,
        "epochs": epochs,
        "patience": patience,
        "mc_samples": mc_samples,
        "split": {"train": len(data.x_train), "val": len(data.x_val),
                  "test": len(data.x_test)},
        "network": network,
        "config": dataclasses.asdict(cfg),
        "y_scale": data.y_scale,
        "techniques": rows,
        "uncertainty": {k: _summarize_uncertainty(u) for k, u in uncertainty.items()},
        "files": list(OUTPUT_FILES),
        "machine": _machine(),
    }

    say("writing plots ...", end="")
    t0 = time.perf_counter()
    plot_learning_curves(results, extras, os.path.join(out, "learning_curves.png"))
    plot_weight_histograms(results, extras, os.path.join(out, "weight_histograms.png"))
    plot_reliability(results, extras, os.path.join(out, "reliability.png"))
    plot_uncertainty(results, uncertainty, os.path.join(out, "uncertainty.png"))
    say(f" {time.perf_counter() - t0:.1f} s")

    results["seconds"] = time.perf_counter() - start
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(_markdown(results))
    say()
    say(format_table(results))
    say()
    say(f"wrote {', '.join(OUTPUT_FILES)} to {out} ({results['seconds']:.1f} s)")
    return results
