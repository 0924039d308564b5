"""Benchmark: split conformal coverage and set size on MC dropout models.

Two tasks, each with a model trained once on half of the data and MC dropout
predictions (kreg.MCPredictor) of the other half, the pool. Over 100 random
calibration/test splits of the pool (half and half), every method of
`kreg.conformal.SplitConformal` at alpha = 0.1 is fitted on the calibration
half and scored on the test half:

- digits (scikit-learn `load_digits`, 10 classes): an MLP 64-256-256-10 with
  kreg Dropout(0.5), T=50 samples: mean coverage, the worst split's
  coverage, the mean set size, and the share of empty sets;
- diabetes (`load_diabetes`, regression, targets standardized): an MLP
  10-64-64-1 with Dropout(0.2), T=100: mean coverage, worst split, mean
  interval width (in standard deviations of y), and the coverage on the
  "noisiest" half of the test inputs. The true noise of diabetes is
  unknown, so that half is the one with the larger MC std (the model's own
  difficulty estimate). A synthetic heteroscedastic regression (y = sin(3x)
  + noise, noise sd 0.1 for x < 0 and 1.0 for x > 0) gives the same table
  where the noisy half is known (x > 0), and, as an oracle row, normalized
  intervals with the true noise sd in place of the MC std.

The guarantee is marginal: mean coverage >= 1 - alpha (and <= 1 - alpha +
1/(n + 1) for continuous scores); a single split varies around it.

Run: `python benchmarks/conformal.py [--quick]` (--quick: 30 splits).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402
from _common import print_table  # noqa: E402

ALPHA = 0.1
CLASSIFICATION = [
    ("lac", {}), ("aps", {}), ("raps", {"k_reg": 1, "lam": 0.01}),
    ("aps randomized", {"randomized": True}),
    ("raps randomized", {"randomized": True, "k_reg": 1, "lam": 0.01}),
    ("lac class-conditional", {"class_conditional": True}),
]
REGRESSION = [("absolute", {}), ("normalized", {})]


def _mlp(keras, kreg, inputs, width, rate, out, activation):
    return keras.Sequential([
        keras.Input((inputs,)), keras.layers.Dense(width, activation="relu"),
        kreg.layers.Dropout(rate), keras.layers.Dense(width, activation="relu"),
        kreg.layers.Dropout(rate), keras.layers.Dense(out, activation=activation)])


def _halves(n, seed):
    idx = np.random.default_rng(seed).permutation(n)
    return idx[: n // 2], idx[n // 2:]


def digits_pool(keras, kreg):
    """MC predictions (pool) and labels of a digits MLP trained on the other half."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    train, pool = _halves(len(y), 0)
    keras.utils.set_random_seed(0)
    model = _mlp(keras, kreg, 64, 256, 0.5, 10, "softmax")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[train], y[train], epochs=40, batch_size=64, verbose=0)
    pred = kreg.MCPredictor(model, 50, seed=1).predict(x[pool], verbose=0)
    accuracy = float((pred.mean.argmax(1) == y[pool]).mean())
    return pred, y[pool], accuracy


def regression_pool(keras, kreg, x, y, epochs, seed=0):
    """MC predictions (pool) of a regression MLP trained on the other half."""
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    y = ((y - y.mean()) / y.std()).astype("float32")
    train, pool = _halves(len(y), seed)
    keras.utils.set_random_seed(seed)
    model = _mlp(keras, kreg, x.shape[1], 64, 0.2, 1, None)
    model.compile("adam", "mse")
    model.fit(x[train], y[train], epochs=epochs, batch_size=32, verbose=0)
    pred = kreg.MCPredictor(model, 100, seed=1).predict(x[pool], verbose=0)
    return pred, y[pool], pool


def classification_rows(kreg, pred, y, splits):
    rows = []
    for name, kwargs in CLASSIFICATION:
        method = name.split()[0]
        cover, size, empty = [], [], []
        for s in range(splits):
            cal, test = _halves(len(y), 100 + s)
            cp = kreg.conformal.SplitConformal(ALPHA, method, seed=s, **kwargs)
            sets = cp.fit(pred.mean[cal], y[cal]).predict(pred.mean[test])
            cover.append(sets[np.arange(len(test)), y[test]].mean())
            size.append(sets.sum(1).mean())
            empty.append((sets.sum(1) == 0).mean())
        rows.append({"method": name, "mean coverage": f"{np.mean(cover):.3f}",
                     "worst split": f"{np.min(cover):.3f}",
                     "mean set size": f"{np.mean(size):.2f}",
                     "empty sets": f"{np.mean(empty):.3f}"})
    return rows


def regression_rows(kreg, pred, y, noisy, splits, task, methods=REGRESSION, std=None):
    mean = pred.mean[:, 0]
    std = pred.std[:, 0] if std is None else std
    rows = []
    for method, kwargs in methods:
        cover, width, noisy_cover, calm_cover = [], [], [], []
        for s in range(splits):
            cal, test = _halves(len(y), 100 + s)
            cp = kreg.conformal.SplitConformal(ALPHA, method, **kwargs)
            cp.fit((mean[cal], std[cal]), y[cal])
            lower, upper = cp.predict((mean[test], std[test]))
            inside = (y[test] >= lower) & (y[test] <= upper)
            cover.append(inside.mean())
            width.append((upper - lower).mean())
            noisy_cover.append(inside[noisy[test]].mean())
            calm_cover.append(inside[~noisy[test]].mean())
        rows.append({"task": task, "method": method,
                     "mean coverage": f"{np.mean(cover):.3f}",
                     "worst split": f"{np.min(cover):.3f}",
                     "mean width (sd of y)": f"{np.mean(width):.2f}",
                     "noisy half": f"{np.mean(noisy_cover):.3f}",
                     "calm half": f"{np.mean(calm_cover):.3f}"})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 splits, not 100")
    args = parser.parse_args(argv)
    splits = 30 if args.quick else 100

    import keras
    from sklearn.datasets import load_diabetes

    import kreg

    start = time.perf_counter()
    pred, y, accuracy = digits_pool(keras, kreg)
    cls_rows = classification_rows(kreg, pred, y, splits)
    print_table(f"digits, MC dropout (T=50, pool {len(y)}, MC accuracy "
                f"{accuracy:.3f}), alpha={ALPHA}, {splits} splits", cls_rows,
                ["method", "mean coverage", "worst split", "mean set size", "empty sets"])

    x, target = load_diabetes(return_X_y=True)
    pred, y, _ = regression_pool(keras, kreg, x, target, epochs=100)
    std = pred.std[:, 0]
    reg_rows = regression_rows(kreg, pred, y, std > np.median(std), splits,
                               "diabetes (noisy = MC std above median)")
    rng = np.random.default_rng(5)
    xs = rng.uniform(-1, 1, size=(1000, 1))
    ys = np.sin(3 * xs[:, 0]) + np.where(xs[:, 0] > 0, 1.0, 0.1) * rng.normal(size=1000)
    pred_s, y_s, pool = regression_pool(keras, kreg, xs, ys, epochs=60)
    reg_rows += regression_rows(kreg, pred_s, y_s, xs[pool, 0] > 0, splits,
                                "synthetic (noisy = x > 0, noise sd 1 vs 0.1)")
    # The same data with the true noise sd as `std`: what normalized scores
    # do when the std tracks the noise (an oracle, not available in practice).
    reg_rows += regression_rows(kreg, pred_s, y_s, xs[pool, 0] > 0, splits,
                                "synthetic, true noise sd as std (oracle)",
                                methods=REGRESSION[1:],
                                std=np.where(xs[pool, 0] > 0, 1.0, 0.1) / ys.std())
    corr = np.corrcoef(pred_s.std[:, 0], np.abs(y_s - pred_s.mean[:, 0]))[0, 1]
    print_table(f"regression, MC dropout (T=100), alpha={ALPHA}, {splits} splits",
                reg_rows, ["task", "method", "mean coverage", "worst split",
                           "mean width (sd of y)", "noisy half", "calm half"])
    print(f"\nsynthetic: correlation of the MC std with |residual|: {corr:.2f}")
    seconds = time.perf_counter() - start
    print(f"\n{seconds:.0f} s; {machine()}")
    return {"classification": cls_rows, "regression": reg_rows, "seconds": seconds,
            "splits": splits, "digits_mc_accuracy": accuracy, "machine": machine()}


if __name__ == "__main__":
    main()
