"""The demo's outputs: the output directory, the table and the Markdown report."""

import os
import tempfile

from kreg.demo.config import ECE_BINS
from kreg.demo.config import SPARSITY_TOLERANCE

_PROBE_NAME = ".kreg-demo-write-probe"


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
                "test NLL", "MC NLL", "test ECE", "MC ECE", "test ECE (TS)",
                "MC ECE (TS)", "T", "MC T", "CP cov.", "CP size", "time (s)"]
    else:
        head = ["technique", "train RMSE", "test RMSE", "gap", "epochs", "sparsity",
                "test NLL", "MC NLL", "test cal. err", "MC cal. err", "CP cov.",
                "CP width", "time (s)"]
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
                 _fmt(r["test_ece"]), _fmt(mc.get("ece"))]
        if classification:
            cells += [_fmt(r["test_ece_ts"]), _fmt(mc.get("ece_ts")),
                      _fmt(r["temperature"], 2), _fmt(mc.get("temperature"), 2),
                      _fmt(mc.get("cp_coverage")), _fmt(mc.get("cp_set_size"), 2)]
        else:
            cells += [_fmt(mc.get("cp_coverage")), _fmt(mc.get("cp_width"), 1)]
        cells.append(f"{r['seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results):
    """The whole `results.md` text: settings, the table and its definitions."""
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
        text.append(
            "- (TS): after temperature scaling (Guo et al., ICML 2017), "
            "`softmax(log(p) / T)`, with T fitted on the validation split "
            "(`kreg.calibration.fit_temperature`, minimum validation NLL): T on "
            "the deterministic network's validation probabilities for test ECE "
            "(TS), MC T on the validation MC mean (the same joint samples) for "
            "MC ECE (TS). T > 1 softens overconfident predictions, T < 1 "
            "sharpens underconfident ones; the argmax, and so the accuracy, "
            "does not change.")
    else:
        text.append(
            f"- test NLL: Gaussian NLL with the model precision tau chosen on the "
            f"validation split; MC NLL: Gal & Ghahramani's mixture NLL of "
            f"{results['mc_samples']} Monte Carlo samples (stochastic models only), "
            f"tau chosen the same way. Calibration error: mean |observed - nominal| "
            f"coverage of the central prediction intervals at levels 5%..95%.")
    text.append(
        "- CP: split conformal prediction (`kreg.conformal.SplitConformal`, "
        "alpha = 0.1) fitted on the validation split's MC prediction: the "
        "coverage of the test targets (at least 0.9 on average over random "
        "splits; one split's coverage varies by a few hundredths) and "
        + ("the mean size of the LAC prediction sets." if classification else
           "the mean width of the intervals normalized by MC's std, in the "
           "target's units."))
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


