"""Benchmark: moment propagation (`kreg.MomentPredictor`) vs Monte Carlo.

Speed, interleaved in one run on the active Keras backend: MomentPredictor
vs `kreg.MCPredictor` with T=50 on the MC benchmark's MLP (784-512-512-10,
Dropout(0.5) after each hidden layer, N=256; benchmarks/mc_predict.py).
Targets (issue 29): at least 10x faster; mean probabilities within 0.01
(mean absolute difference) of MC with T=2000, and closer to it than the
deterministic (weight-scaling) pass. The classification head is chosen by
measurement: sampled Gaussian logits with their covariance (kreg's), the same
with a diagonal covariance, the probit approximation and the Laplace bridge.

Accuracy table: mean and std against MC with T=10000 (median std ratio and
its worst decile, NLL, RMSE, ECE side by side) on a regression with Gal &
Ghahramani's Boston protocol (one hidden layer of 50 ReLU, p=0.05) on
scikit-learn's diabetes data, a digits classifier (64-256-256-10, two
Dropout(0.5)), a deeper ReLU regression (five hidden layers, p=0.3: where
the diagonal approximation drifts) and a small CNN with max pooling.

Run: `python benchmarks/moments.py [--quick] [--json PATH]`.
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402
from _common import print_table  # noqa: E402
from _common import timeit  # noqa: E402
from mc_predict import build  # noqa: E402

T, N = 50, 256


def _softmax(z):
    import numpy as np

    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def head_variants(predictor, x):
    """Mean probabilities of the four candidate heads, from the logits' moments."""
    import numpy as np
    from keras import ops

    from kreg.mc import moments

    logits = moments.propagate(predictor.graph, [ops.convert_to_tensor(x)])[0]
    mu = ops.convert_to_numpy(logits.mean).astype("float64")
    var = ops.convert_to_numpy(logits.variance()).astype("float64")
    out = {}
    eps = predictor._draws(mu.shape[-1])
    z = mu[None] + np.sqrt(var)[None] * eps[:, None, :]
    out["sampled logits, diagonal"] = _softmax(z).mean(axis=0)
    out["probit"] = _softmax(mu / np.sqrt(1.0 + math.pi / 8.0 * var))
    k = mu.shape[-1]
    ex = np.exp(-mu).sum(axis=-1, keepdims=True)
    alpha = (1.0 - 2.0 / k + np.exp(mu) / k**2 * ex) / var
    out["Laplace bridge"] = alpha / alpha.sum(axis=-1, keepdims=True)
    out["sampled logits, full covariance (kreg)"] = predictor.predict(x).mean
    return out


def run_speed(repeats):
    import numpy as np

    import kreg

    model = kreg.convert_dropout(build())
    x = np.random.default_rng(0).normal(size=(N, 784)).astype("float32")
    mc = kreg.MCPredictor(model, samples=T, seed=0)
    mp = kreg.MomentPredictor(model)
    for _ in range(2):  # warm both (compile), then interleave
        mc.predict(x, verbose=0)
        mp.predict(x)
    # Back-to-back pairs: on a shared machine the load drifts between
    # seconds, so each pair's ratio is taken and the median reported.
    t_mc, t_mp = [], []
    for _ in range(repeats):
        t_mc.append(timeit(lambda: mc.predict(x, verbose=0), repeats=3, warmup=0))
        t_mp.append(timeit(lambda: mp.predict(x), repeats=3, warmup=0))
    ratio = float(np.median(np.array(t_mc) / np.array(t_mp)))
    ms_mc, ms_mp = float(np.median(t_mc)), float(np.median(t_mp))
    ref = kreg.MCPredictor(model, samples=2000, seed=1).predict(x, verbose=0).mean
    mc50 = mc.predict(x, verbose=0).mean
    weight_scaling = np.asarray(model.predict(x, verbose=0), "float64")  # inference pass
    diffs = {name: float(np.abs(p - ref).mean())
             for name, p in head_variants(mp, x).items()}
    diffs["weight scaling (deterministic pass)"] = float(np.abs(weight_scaling - ref).mean())
    diffs["MC, T=50"] = float(np.abs(mc50 - ref).mean())
    return ms_mc, ms_mp, ratio, diffs


def _fit(model, x, y, loss, epochs, seed):
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _data(name):
    import numpy as np
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if name == "demo_digits":  # the demo's split and scaling (kreg.demo.data)
        from kreg.demo.data import load_data

        d = load_data("digits")
        return d.x_train, d.x_test, d.y_train, d.y_test
    if name == "sin":  # notebook 06's 1-D regression; tested on [-6, 6]
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.uniform(-1.0, -0.2, 20), rng.uniform(0.3, 1.0, 20)])
        x = x.astype("float32")[:, None]
        y = (np.sin(3 * x) + 0.1 * rng.standard_normal(x.shape)).astype("float32")
        grid = np.linspace(-6, 6, 200, dtype="float32")[:, None]
        return x, grid, y.ravel(), np.sin(3 * grid).ravel().astype("float32")
    if name == "digits":
        x, y = datasets.load_digits(return_X_y=True)
        x = (x / 16.0).astype("float32")
    else:
        x, y = datasets.load_diabetes(return_X_y=True)
        x = ((x - x.mean(0)) / x.std(0)).astype("float32")
        y = ((y - y.mean()) / y.std()).astype("float32")
    return [np.asarray(a) for a in train_test_split(x, y, test_size=0.3, random_state=0)]


def _networks(quick):
    """(name, model, data, loss, epochs) of the accuracy table."""
    import keras

    import kreg

    D, drop = keras.layers.Dense, kreg.layers.Dropout
    nets = [
        ("diabetes 1x50 ReLU, p=0.05", keras.Sequential([
            keras.Input((10,)), D(50, activation="relu"), drop(0.05), D(1)]),
         "diabetes", "mse", 40),
        ("digits 64-256-256-10, p=0.5", keras.Sequential([
            keras.Input((64,)), D(256, activation="relu"), drop(0.5),
            D(256, activation="relu"), drop(0.5), D(10, activation="softmax")]),
         "digits", "sparse_categorical_crossentropy", 20),
        ("diabetes 5x64 ReLU, p=0.3 (deep)", keras.Sequential(
            [keras.Input((10,))] + sum([[D(64, activation="relu"), drop(0.3)]
                                        for _ in range(5)], []) + [D(1)]),
         "diabetes", "mse", 40),
        ("digits CNN, max pooling, p=0.3", keras.Sequential([
            keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, padding="same",
                                                        activation="relu"),
            drop(0.3), keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
            D(64, activation="relu"), drop(0.5), D(10, activation="softmax")]),
         "digits", "sparse_categorical_crossentropy", 20),
    ]
    nets.append(("notebook 06 sin regression 1-128-128-1, p=0.2", keras.Sequential([
        keras.Input((1,)), D(128, activation="relu"), drop(0.2),
        D(128, activation="relu"), drop(0.2), D(1)]), "sin", "mse", 300))
    from kreg.demo.config import CONFIGS
    from kreg.demo.config import TECHNIQUES
    from kreg.demo.experiment import build_model

    for tech in TECHNIQUES:
        if tech.dropout or tech.dropconnect:  # the demo's three stochastic networks
            nets.append((f"demo digits: {tech.label}", build_model(
                tech, CONFIGS["digits"], 64, 10), "demo_digits",
                "sparse_categorical_crossentropy", CONFIGS["digits"].quick_epochs))
    if quick:
        nets = [(n, m, d, loss, max(5, e // 4)) for n, m, d, loss, e in nets]
    return nets


def _scores(mean, var, y, task, noise_var):
    import numpy as np

    from kreg.mc import metrics

    if task == "classification":
        s = metrics.classification_scores(mean, y.astype("int64"))
        return {"NLL": s["nll"], "accuracy": s["accuracy"], "ECE": s["ece"]}
    mu, v = mean.ravel(), var.ravel() + noise_var
    nll = 0.5 * np.mean(np.log(2 * math.pi * v) + (y - mu) ** 2 / v)
    return {"NLL": float(nll), "RMSE": float(np.sqrt(np.mean((y - mu) ** 2)))}


def run_accuracy(quick):
    import numpy as np

    import kreg

    rows = []
    for name, model, data, loss, epochs in _networks(quick):
        xtr, xte, ytr, yte = _data(data)
        if len(model.inputs[0].shape) == 4:
            xtr, xte = xtr.reshape(-1, 8, 8, 1), xte.reshape(-1, 8, 8, 1)
        _fit(model, xtr, ytr, loss, epochs, seed=0)
        samples = 1000 if quick else 10000
        mc = kreg.MCPredictor(model, samples=samples, seed=0).predict(xte, verbose=0)
        mp = kreg.MomentPredictor(model).predict(xte)
        task = mp.task
        noise = 0.0
        if task == "regression":  # Gaussian NLL with the training residual variance
            fit = kreg.MCPredictor(model, samples=200, seed=1).predict(xtr, verbose=0)
            noise = float(np.mean((ytr - fit.mean.ravel()) ** 2) - fit.variance.mean())
            noise = max(noise, 1e-3)
        ratio = (mp.std / np.maximum(mc.std, 1e-12)).ravel()
        bad = np.abs(np.log(ratio))
        worst = ratio[bad >= np.quantile(bad, 0.9)]
        row = {"network": name, "|mean diff|": float(np.abs(mp.mean - mc.mean).mean()),
               "std ratio median": float(np.median(ratio)),
               "worst decile": f"{worst.min():.2f}..{worst.max():.2f}"}
        for label, pred in (("MC", mc), ("moments", mp)):
            for key, val in _scores(pred.mean, pred.variance, yte, task, noise).items():
                row[f"{key} {label}"] = val
        if task == "classification":
            row["MI ratio median"] = float(np.median(
                mp.mutual_information / np.maximum(mc.mutual_information, 1e-12)))
        rows.append(row)
    return rows, samples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples")
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    info = machine()
    ms_mc, ms_mp, ratio, diffs = run_speed(repeats=5 if args.quick else 15)
    print(f"Moment propagation vs MC, MLP 784-512-512-10, Dropout(0.5) x2, N={N}; {info}")
    print_table("Time per predict (median, interleaved)",
                [{"method": f"MCPredictor, T={T}", "ms": ms_mc},
                 {"method": "MomentPredictor", "ms": ms_mp}], ["method", "ms"])
    print(f"\nspeed: MomentPredictor {ratio:.1f}x faster than MC T={T} (median of "
          "the interleaved pairs' ratios; target >= 10)")
    # Multiply-adds per input: MC runs the first layer once and the rest T
    # times; moments run the rest twice (mean and variance) plus the head's
    # logits covariance (H C^2) and 64 draws through its Cholesky factor.
    first, rest = 784 * 512, 512 * 512 + 512 * 10
    flops_mc, flops_mp = first + T * rest, first + 2 * rest + 512 * 100 + 64 * 100
    print(f"multiply-add bound of the ratio: {flops_mc / flops_mp:.1f}x "
          f"({flops_mc / 1e6:.1f} M vs {flops_mp / 1e6:.2f} M per input)")
    print_table("Mean |p - p_MC(T=2000)| of the mean probabilities",
                [{"method": k, "mean abs diff": v} for k, v in diffs.items()],
                ["method", "mean abs diff"])
    kreg_diff = diffs["sampled logits, full covariance (kreg)"]
    ws = diffs["weight scaling (deterministic pass)"]
    print(f"\nmoments vs MC T=2000: {kreg_diff:.4f} (target <= 0.01); weight "
          f"scaling {ws:.4f}: moments {'closer' if kreg_diff < ws else 'NOT closer'}")
    result = {"machine": info, "ms": {"mc": ms_mc, "moments": ms_mp},
              "speedup": ratio, "mean_abs_diff": diffs}
    if not args.no_accuracy:
        rows, samples = run_accuracy(args.quick)
        cols = list(dict.fromkeys(k for r in rows for k in r))
        print_table(f"Moments vs MC with T={samples} (test split)", rows, cols)
        result["accuracy"] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
