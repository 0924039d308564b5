"""The demo's four plots (matplotlib's object API; the global backend is left alone)."""

import math

import numpy as np

from kreg.demo.config import SPARSITY_TOLERANCE
from kreg.demo.experiment import kernel_weights


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
    weights = {k: kernel_weights(extras[k]["model"]) for k in keys if k in extras}
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


#: Bins of the reliability plot: equal counts, so that every point averages
#: as many test inputs (equal-width bins over a few hundred confident
#: predictions leave most bins nearly empty and the curve zigzags).
RELIABILITY_BINS = 10


def equal_count_reliability(confidence, correct, bins):
    """Mean confidence, accuracy and count of `bins` bins of equal counts.

    The inputs sorted by confidence and split into `bins` consecutive groups
    whose sizes differ by at most one.

    Args:
        confidence: array (N,), the predicted probability of the chosen class.
        correct: array (N,) of bool, whether the chosen class is right.
        bins: int >= 1, at most N.

    Returns:
        `(confidence, accuracy, count)`, three arrays of length `bins`.

    Example:

    >>> import numpy as np
    >>> conf, acc, count = equal_count_reliability(
    ...     np.array([0.9, 0.6, 0.8, 0.7]), np.array([1, 0, 1, 1], bool), 2)
    >>> conf.round(2).tolist(), acc.tolist(), count.tolist()
    ([0.65, 0.85], [0.5, 1.0], [2, 2])
    """
    confidence = np.asarray(confidence, "float64")
    correct = np.asarray(correct, bool)
    order = np.argsort(confidence, kind="stable")
    groups = np.array_split(order, bins)
    return (np.array([confidence[g].mean() for g in groups]),
            np.array([correct[g].mean() for g in groups]),
            np.array([len(g) for g in groups]))


def plot_reliability(results, extras, path):
    """Reliability diagrams (regression: interval coverage), det vs MC.

    Classification: bins of equal counts (`RELIABILITY_BINS`), each point
    the mean confidence and the accuracy of its bin; the ECE in the legend
    is the table's (equal-width bins).
    """
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
                conf, acc, count = equal_count_reliability(
                    probs.max(axis=1), probs.argmax(axis=1) == y, RELIABILITY_BINS)
                ax.plot(conf, acc, marker="o", ms=4, lw=1, alpha=0.8,
                        label=f"{label}, ECE {ece:.3f}")
            ax.set_xlabel(f"confidence ({len(count)} bins of {count.min()}-{count.max()} "
                          "test inputs each)" if count.min() != count.max() else
                          f"confidence ({len(count)} bins of {count.min()} test inputs each)")
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


