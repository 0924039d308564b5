"""Training and scoring one technique of the demo.

The network (`build_model`), one training run (`train_technique`) and the
Monte Carlo scores of a stochastic model (`mc_scores`). The scores come from
the library: `kreg.MCPredictor` (its `evaluate` for the test scores),
`kreg.callbacks.RegularizationMonitor` (penalty and kernel sparsity) and
`kreg.mc.metrics` (scores, tau on the validation split, interval
calibration, the AUROC of clean vs corrupted inputs) and `kreg.calibration`
(temperature scaling, T fitted on the validation split: `temperature_scores`).
"""

import math

import numpy as np

from kreg.demo.config import ECE_BINS
from kreg.demo.config import SPARSITY_TOLERANCE
from kreg.demo.data import corrupt


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




def _monitor(model, tolerance):
    """A RegularizationMonitor over every kernel of `model` (no `fit` needed)."""
    from kreg.callbacks import RegularizationMonitor

    monitor = RegularizationMonitor(stats=("penalty", "sparsity"),
                                    tolerance=tolerance, prefix="")
    monitor.set_model(model)
    return monitor


def _kernel_names(stats):
    suffix = "/sparsity"
    return [k[:-len(suffix)] for k in stats if k.endswith(suffix)]


def kernel_statistics(model, tolerance=SPARSITY_TOLERANCE):
    """Penalty and kernel sparsity of a model, from `RegularizationMonitor`.

    The monitor's per-kernel sparsity (the fraction of entries with
    `|w| < tolerance`) is combined into the fraction over all kernels,
    weighting each kernel by its number of entries.

    Args:
        model: a built Keras model whose layers with a kernel are at its top
            level (the demo's networks).
        tolerance: float > 0, default 1e-3 (`SPARSITY_TOLERANCE`).

    Returns:
        dict: `penalty` (the total weight penalty, `kreg.regularizers.penalty`),
        `sparsity` (a float in [0, 1]; 0 without kernels) and `kernels`
        (layer name -> kernel as a NumPy array).

    Example:

    >>> import keras
    >>> from kreg.demo import kernel_statistics
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     2, kernel_initializer=keras.initializers.Constant([[0, 1], [0, 0]]))])
    >>> kernel_statistics(m)["sparsity"]
    0.75
    """
    import keras

    stats = _monitor(model, tolerance).statistics()
    names = _kernel_names(stats)
    kernels = {name: np.asarray(keras.ops.convert_to_numpy(model.get_layer(name).kernel))
               for name in names}
    sizes = np.array([kernels[n].size for n in names], "float64")
    sparsity = 0.0
    if sizes.sum() > 0:
        per_kernel = np.array([stats[f"{n}/sparsity"] for n in names])
        sparsity = float(np.sum(per_kernel * sizes) / sizes.sum())
    return {"penalty": stats["penalty"], "sparsity": sparsity, "kernels": kernels}


def kernel_sparsity(model, tolerance=SPARSITY_TOLERANCE):
    """Fraction of kernel entries, over all kernels, with `|w| < tolerance`.

    `kernel_statistics(model, tolerance)["sparsity"]`.

    Args:
        model: a built Keras model (see `kernel_statistics`).
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
    return kernel_statistics(model, tolerance)["sparsity"]


def kernel_weights(model):
    """Every kernel entry of the model as one flat NumPy array (for histograms)."""
    kernels = kernel_statistics(model)["kernels"]
    if not kernels:
        return np.zeros(0)
    return np.concatenate([k.ravel() for k in kernels.values()])


def _regression_scores(tau, scores, samples_test, y_test, scale):
    """Scores in the target's units and the interval calibration error.

    `scores` holds `rmse` and `nll` of the standardized targets with model
    precision `tau` (`kreg.mc.metrics.regression_scores`, or the `"mc"` part
    of `MCPredictor.evaluate`).
    """
    from kreg.mc.metrics import interval_calibration_error

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



CONFORMAL_ALPHA = 0.1


def conformal_scores(val, y_val, test, y_test, scale=1.0):
    """Split conformal sets (or intervals) at level 1 - `CONFORMAL_ALPHA`.

    `kreg.conformal.SplitConformal` fitted on the validation split's MC
    prediction, scored on the test split: the coverage (fraction of test
    targets inside their set or interval) and the mean set size (LAC) or the
    mean interval width (normalized by MC's std, in the target's units).

    Args:
        val, test: classification: the MC mean probabilities (N, C);
            regression: `(mean, std)` pairs of the MC prediction.
        y_val, y_test: the targets.
        scale: the target's scale (regression widths in original units).
    """
    from kreg.conformal import SplitConformal

    if isinstance(val, tuple):
        cp = SplitConformal(CONFORMAL_ALPHA, "normalized").fit(val, y_val)
        lower, upper = cp.predict(test)
        y = np.asarray(y_test).reshape(lower.shape)
        return {"cp_coverage": float(np.mean((lower <= y) & (y <= upper))),
                "cp_width": float(np.mean(upper - lower)) * scale}
    cp = SplitConformal(CONFORMAL_ALPHA, "lac").fit(val, y_val)
    sets = cp.predict(test)
    labels = np.asarray(y_test).astype(int)
    return {"cp_coverage": float(np.mean(sets[np.arange(len(labels)), labels])),
            "cp_set_size": float(np.mean(sets.sum(axis=1)))}


def temperature_scores(p_val, y_val, p_test, y_test):
    """Temperature scaling of one classifier's probabilities (Guo et al.).

    T = `kreg.calibration.fit_temperature(p_val, y_val)` (it minimizes the
    validation NLL of `apply_temperature(p_val, T)`); the test split is then
    scored with `apply_temperature(p_test, T)` (ECE over `ECE_BINS` bins, as
    the untempered column). The validation NLL before and after is reported
    too: the fit cannot raise it (T = 1 is a candidate).

    Args:
        p_val: (N_val, C) validation probabilities (the deterministic
            network's, or the MC mean).
        y_val: integer labels (N_val,).
        p_test: (N_test, C) test probabilities of the same predictor.
        y_test: integer labels (N_test,).

    Returns:
        dict: `temperature`, `ece_ts` and `nll_ts` (test, after scaling),
        `val_nll` and `val_nll_ts` (validation NLL at T = 1 and at T).

    Example:

    >>> import numpy as np
    >>> from kreg.demo.experiment import temperature_scores
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> y = np.array([0, 1, 1, 0])
    >>> s = temperature_scores(p, y, p, y)
    >>> bool(s["temperature"] > 1 and s["val_nll_ts"] <= s["val_nll"])
    True

    References:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017,
        section 4.2.
    """
    from kreg.calibration import apply_temperature
    from kreg.calibration import fit_temperature
    from kreg.mc import metrics as mcm

    t = fit_temperature(p_val, y_val)
    val = mcm.classification_scores(p_val, y_val, bins=ECE_BINS)
    val_ts = mcm.classification_scores(apply_temperature(p_val, t), y_val, bins=ECE_BINS)
    test_ts = mcm.classification_scores(apply_temperature(p_test, t), y_test,
                                        bins=ECE_BINS)
    return {"temperature": t, "ece_ts": test_ts["ece"], "nll_ts": test_ts["nll"],
            "val_nll": val["nll"], "val_nll_ts": val_ts["nll"]}


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
        ts = temperature_scores(p_val, data.y_val, p_test, data.y_test)
        row.update(train_accuracy=tr["accuracy"], test_accuracy=te["accuracy"],
                   gap=tr["accuracy"] - te["accuracy"],
                   test_nll=te["nll"], test_ece=te["ece"],
                   temperature=ts["temperature"], test_ece_ts=ts["ece_ts"],
                   test_nll_ts=ts["nll_ts"], val_nll=ts["val_nll"],
                   val_nll_ts=ts["val_nll_ts"])
        extras["det_probs"] = p_test
        extras["det_val_probs"] = p_val
    else:
        scale = data.y_scale
        rmse_train = float(np.sqrt(np.mean((p_train.ravel() - data.y_train) ** 2))) * scale
        tau = mcm.select_tau(p_val[None], data.y_val)
        det = _regression_scores(tau, mcm.regression_scores(p_test[None], data.y_test, tau),
                                 p_test[None], data.y_test, scale)
        row.update(train_rmse=rmse_train, test_rmse=det["rmse"],
                   gap=det["rmse"] - rmse_train, test_nll=det["nll"],
                   test_ece=det["ece"], tau=det["tau"])
        extras["det_curve"] = det["_curve"]
    stats = kernel_statistics(model)
    row.update(
        epochs=len(hist["loss"]),
        best_epoch=None if stopper is None or stopper.best is None
        else stopper.best_epoch + 1,
        sparsity=stats["sparsity"],
        penalty=stats["penalty"],
        mc=None,
    )
    if technique.stochastic:
        mc, extra = mc_scores(model, data, samples=mc_samples, seed=seed)
        row["mc"] = mc
        extras.update(extra)
    return row, extras




def mc_scores(model, data, *, samples, seed=0):
    """Monte Carlo scores and uncertainty of a stochastic model.

    `MCPredictor(model, samples, seed=seed, joint=True)`: sample t is one
    network (one set of masks) applied to every input, and the masks depend
    only on the seed and t. One pass over the validation inputs, the test
    inputs and two corrupted copies of them (`corrupt`) gives the
    uncertainty of every input and the validation samples: for regression
    they choose tau (`kreg.mc.metrics.select_tau`, as Gal & Ghahramani do),
    for classification their mean fits the temperature of the MC mean
    (`temperature_scores`); the test scores are `MCPredictor.evaluate`'s
    (the same joint samples of the test inputs).

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
        the target's units); classification adds `extras["mc_probs"]` and
        `extras["mc_val_probs"]` (the MC mean on the test and validation
        inputs) and the scores of `temperature_scores` on them, regression
        `extras["mc_curve"]`.
    """
    from kreg.mc import MCPrediction
    from kreg.mc import MCPredictor
    from kreg.mc.metrics import select_tau

    parts = {
        "in_distribution": data.x_test,
        "noise": corrupt(data.x_test, "noise", seed),
        "shuffled": corrupt(data.x_test, "shuffled", seed),
        "val": data.x_val,
    }
    x = np.concatenate(list(parts.values()))
    predictor = MCPredictor(model, samples=samples, seed=seed, joint=True)
    # Chunks of the test split's size (joint samples do not depend on the
    # chunking): with a validation split of that size too (60/20/20), every
    # pass here and in `evaluate` below has one shape, so one trace per model.
    chunk = len(data.x_test)
    all_samples = predictor.predict(x, batch_size=chunk, verbose=0,
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
    tau = None if classification else select_tau(split["val"], data.y_val)
    sc = predictor.evaluate(data.x_test, data.y_test, tau=tau,
                            batch_size=chunk, verbose=0,
                            bins=ECE_BINS)["mc"]
    if classification:
        # Temperature scaling of the MC mean, T fitted on the validation
        # split's MC mean (the samples drawn above: no further pass).
        mean_test, mean_val = test.mean(axis=0), split["val"].mean(axis=0)
        ts = temperature_scores(mean_val, data.y_val, mean_test, data.y_test)
        scores = {"nll": sc["nll"], "ece": sc["ece"], "accuracy": sc["accuracy"],
                  "brier": sc["brier"], "samples": samples,
                  "temperature": ts["temperature"], "ece_ts": ts["ece_ts"],
                  "nll_ts": ts["nll_ts"], "val_nll": ts["val_nll"],
                  "val_nll_ts": ts["val_nll_ts"],
                  **conformal_scores(mean_val, data.y_val, mean_test, data.y_test)}
        extras = {"mc_probs": mean_test, "mc_val_probs": mean_val}
    else:
        sc = _regression_scores(tau, sc, test, data.y_test, data.y_scale)
        def mean_std(part):
            return part.mean(axis=0).ravel(), part.std(axis=0).ravel()

        scores = {"rmse": sc["rmse"], "nll": sc["nll"], "ece": sc["ece"],
                  "tau": sc["tau"], "samples": samples,
                  **conformal_scores(mean_std(split["val"]), data.y_val,
                                     mean_std(test), data.y_test, data.y_scale)}
        extras = {"mc_curve": sc["_curve"]}
    extras["uncertainty"] = uncertainty
    return scores, extras


def summarize_uncertainty(unc):
    """Mean uncertainty per kind of input and the AUROC of clean vs corrupted.

    The AUROC is `kreg.mc.metrics.ood_scores(clean, corrupted)["auroc"]`:
    P(score of a corrupted input > score of a clean one), ties counting 1/2.
    """
    from kreg.mc.metrics import ood_scores

    summary = {}
    for name, arrays in unc.items():
        summary[name] = {f"mean_{k}": float(np.mean(a)) for k, a in arrays.items()}
        if name != "in_distribution":
            key = "mutual_information" if "mutual_information" in arrays else "std"
            summary[name][f"auroc_{key}"] = ood_scores(
                unc["in_distribution"][key], arrays[key])["auroc"]
    return summary

