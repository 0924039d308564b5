"""`kreg.demo.run`: the whole demo job, from the data to the written outputs."""

import dataclasses
import json
import os
import sys
import time

from kreg import _validation as v
from kreg._extras import require
from kreg.demo.config import CONFIGS
from kreg.demo.config import DATASETS
from kreg.demo.config import OUTPUT_FILES
from kreg.demo.config import TECHNIQUES
from kreg.demo.data import load_data
from kreg.demo.experiment import summarize_uncertainty
from kreg.demo.experiment import train_technique
from kreg.demo.plots import plot_learning_curves
from kreg.demo.plots import plot_reliability
from kreg.demo.plots import plot_uncertainty
from kreg.demo.plots import plot_weight_histograms
from kreg.demo.report import ensure_writable_dir
from kreg.demo.report import format_table
from kreg.demo.report import markdown

#: The packages of the `demo` extra (import name, distribution name).
DEMO_PACKAGES = (("sklearn", "scikit-learn"), ("matplotlib", "matplotlib"))


def require_demo_extra():
    """Raise a one-line `MissingExtraError` unless the demo's packages import.

    The demo needs scikit-learn (its datasets) and matplotlib (its plots),
    kreg's `demo` extra; the library itself does not.

    Raises:
        MissingExtraError (a ModuleNotFoundError): naming the missing
            packages and `pip install "kreg[demo]"`.
    """
    require("kreg demo", "demo", DEMO_PACKAGES)


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
        `seconds` and `machine`. Classification rows add temperature
        scaling (`kreg.demo.experiment.temperature_scores`, T fitted on the
        validation split): `temperature`, `test_ece_ts`, `test_nll_ts`,
        `val_nll`, `val_nll_ts` for the deterministic network, and in `mc`
        `temperature`, `ece_ts`, `nll_ts`, `val_nll`, `val_nll_ts` for the
        MC mean.

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
    if stream is not None and not callable(getattr(stream, "write", None)):
        raise v.invalid_type(owner, "stream", "a text stream (with write) or None",
                             stream)
    if not isinstance(out, (str, os.PathLike)):
        raise v.invalid_type(owner, "out", "a non-empty str or path-like", out)
    if not os.fspath(out):
        raise v.invalid_value(owner, "out", "a non-empty str or path-like (the "
                              "output directory; '.' for the current one)", out)
    require_demo_extra()
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
        "uncertainty": {k: summarize_uncertainty(u) for k, u in uncertainty.items()},
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
        f.write(markdown(results))
    say()
    say(format_table(results))
    say()
    say(f"wrote {', '.join(OUTPUT_FILES)} to {out} ({results['seconds']:.1f} s)")
    return results
