"""`kreg demo` end to end (`--quick`), its outputs, and its argument errors."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from kreg import cli
from kreg import demo

pytestmark = pytest.mark.tf_only(
    reason="the demo (make demo) runs on TensorFlow")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TECHNIQUE_KEYS = [t.key for t in demo.TECHNIQUES]
STOCHASTIC = {"dropout", "dropconnect", "dropout_l2_es"}
EARLY_STOPPING = {"early_stopping", "dropout_l2_es"}
PENALIZED = {"l2", "l1", "elastic_net", "dropout_l2_es"}
COMMON_KEYS = {"key", "technique", "stochastic", "gap", "epochs", "best_epoch",
               "sparsity", "penalty", "test_nll", "test_ece", "mc", "seconds"}
# Temperature scaling (T fitted on the validation split), classification only.
DET_TS_KEYS = {"temperature", "test_ece_ts", "test_nll_ts", "val_nll", "val_nll_ts"}
MC_TS_KEYS = {"temperature", "ece_ts", "nll_ts", "val_nll", "val_nll_ts"}
# Split conformal prediction (alpha = 0.1, fitted on the validation split).
CP_CLASSIFICATION_KEYS = {"cp_coverage", "cp_set_size"}
CP_REGRESSION_KEYS = {"cp_coverage", "cp_width"}


def kreg_lines(stderr):
    """The lines of a subprocess's stderr that kreg wrote (they start with "kreg")."""
    return [line for line in stderr.splitlines() if line.startswith("kreg")]


def _run_cli(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "kreg", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "nested" / "out"
    start = time.perf_counter()
    proc = _run_cli("demo", "--quick", "--out", str(out))
    proc.elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"STDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr[-4000:]}"
    with open(out / "results.json") as f:
        results = json.load(f)
    return proc, out, results


def test_quick_demo_writes_every_file(quick_run):
    _, out, _ = quick_run
    for name in demo.OUTPUT_FILES:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            data = path.read_bytes()
            assert data[:8] == PNG_SIGNATURE and len(data) > 10_000, name
    # The write probe is gone.
    assert sorted(os.listdir(out)) == sorted(demo.OUTPUT_FILES)


def test_quick_demo_prints_progress_and_table(quick_run):
    proc, _, results = quick_run
    lines = proc.stdout.splitlines()
    n = len(demo.TECHNIQUES)
    for i, technique in enumerate(demo.TECHNIQUES, 1):
        pattern = rf"^\[{i}/{n}\] {re.escape(technique.label)} \.\.\. \d+\.\d s \("
        assert any(re.match(pattern, line) for line in lines), (pattern, proc.stdout)
    assert demo.format_table(results) in proc.stdout
    assert "Traceback" not in proc.stderr
    # Well inside the one-minute budget of an unloaded machine; the bound
    # here is loose because the test machine is shared.
    assert results["seconds"] < 600
    print(f"quick demo: {proc.elapsed:.1f} s wall, {results['seconds']:.1f} s in run()")


def test_quick_demo_json_rows(quick_run):
    _, _, results = quick_run
    assert results["dataset"] == "digits" and results["task"] == "classification"
    assert results["quick"] is True and results["seed"] == 0
    assert results["epochs"] == demo.CONFIGS["digits"].quick_epochs
    rows = results["techniques"]
    assert [r["key"] for r in rows] == TECHNIQUE_KEYS
    for r in rows:
        assert COMMON_KEYS | {"train_accuracy", "test_accuracy"} <= set(r), r["key"]
        assert 0.0 <= r["train_accuracy"] <= 1.0 and 0.0 <= r["test_accuracy"] <= 1.0
        assert r["test_accuracy"] > 0.8, r  # digits: far above chance (0.1)
        assert r["gap"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"])
        assert 1 <= r["epochs"] <= results["epochs"]
        assert 0.0 <= r["sparsity"] <= 1.0
        assert r["test_nll"] > 0 and 0.0 <= r["test_ece"] <= 1.0
        assert r["stochastic"] is (r["key"] in STOCHASTIC)
        if r["key"] in EARLY_STOPPING:
            assert 1 <= r["best_epoch"] <= r["epochs"]
        else:
            assert r["best_epoch"] is None and r["epochs"] == results["epochs"]
        assert (r["penalty"] > 0) is (r["key"] in PENALIZED), r


def test_quick_demo_mc_fields_only_for_stochastic_rows(quick_run):
    _, _, results = quick_run
    for r in results["techniques"]:
        if r["key"] not in STOCHASTIC:
            assert r["mc"] is None, r["key"]
            continue
        mc = r["mc"]
        assert set(mc) == ({"nll", "ece", "accuracy", "brier", "samples"} | MC_TS_KEYS
                           | CP_CLASSIFICATION_KEYS)
        assert mc["samples"] == results["mc_samples"] == 30
        # Coverage 0.9 on average over splits; one split of 360 test points
        # (binomial sd 0.016, about 0.022 with the calibration split's) lands
        # within 0.10 of it (4.5 sd). Measured at seed 0: 0.856 / 0.894 / 0.861,
        # the same under oneDNN 0/1 and 1/2 threads. Sets hold about one class
        # on average (LAC at 90% on an accurate classifier).
        assert abs(mc["cp_coverage"] - 0.9) < 0.10, mc
        assert 0.5 < mc["cp_set_size"] < 3, mc
        assert mc["nll"] > 0 and 0.0 <= mc["ece"] <= 1.0
        assert 0.8 < mc["accuracy"] <= 1.0
    assert set(results["uncertainty"]) == {
        r["technique"] for r in results["techniques"] if r["stochastic"]}
    for summary in results["uncertainty"].values():
        clean = summary["in_distribution"]["mean_mutual_information"]
        for kind in ("noise", "shuffled"):
            assert 0.0 <= summary[kind]["auroc_mutual_information"] <= 1.0
            # Corrupted inputs look unfamiliar to the sampled networks.
            assert summary[kind]["mean_mutual_information"] > clean


def test_quick_demo_temperature_scaling_columns(quick_run):
    proc, _, results = quick_run
    head = demo.format_table(results).splitlines()[0]
    assert "| test ECE (TS) | MC ECE (TS) | T | MC T | CP cov. | CP size |" in head
    for r in results["techniques"]:
        assert DET_TS_KEYS <= set(r), r["key"]
        assert r["temperature"] > 0 and 0.0 <= r["test_ece_ts"] <= 1.0
        # The fit minimizes the validation NLL, and T = 1 is a candidate.
        assert r["val_nll_ts"] <= r["val_nll"] + 1e-12, r
        if r["mc"] is None:
            continue
        mc = r["mc"]
        assert mc["temperature"] > 0 and 0.0 <= mc["ece_ts"] <= 1.0
        assert mc["val_nll_ts"] <= mc["val_nll"] + 1e-12, r
        assert mc["nll_ts"] > 0
    # The MC column: a number in stochastic rows, a dash in the others.
    for r in results["techniques"]:
        line = next(ln for ln in proc.stdout.splitlines()
                    if ln.startswith(f"| {r['technique']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        mc_ts, mc_t = cells[11], cells[13]
        if r["stochastic"]:
            assert mc_ts == f"{r['mc']['ece_ts']:.3f}" and mc_t == f"{r['mc']['temperature']:.2f}"
        else:
            assert mc_ts == mc_t == "—", line
        assert cells[10] == f"{r['test_ece_ts']:.3f}" and cells[12] == f"{r['temperature']:.2f}"
        cp_cov, cp_size = cells[14], cells[15]
        if r["stochastic"]:
            assert (cp_cov, cp_size) == (f"{r['mc']['cp_coverage']:.3f}",
                                         f"{r['mc']['cp_set_size']:.2f}")
        else:
            assert cp_cov == cp_size == "—", line


@pytest.fixture(scope="module")
def dropout_digits():
    # One stochastic technique through the demo's own code path, in process.
    data = demo.load_data("digits", 0)
    technique = next(t for t in demo.TECHNIQUES if t.key == "dropout")
    row, extras = demo.train_technique(technique, data, demo.CONFIGS["digits"],
                                       epochs=2, patience=1, mc_samples=10)
    return data, row, extras


def test_temperature_scaling_is_recomputable(dropout_digits):
    from kreg.calibration import apply_temperature
    from kreg.calibration import fit_temperature
    from kreg.mc import metrics as mcm

    data, row, extras = dropout_digits
    for scores, p_val, p_test, ece, ece_ts in [
        (row["mc"], extras["mc_val_probs"], extras["mc_probs"], row["mc"]["ece"],
         row["mc"]["ece_ts"]),
        (row, extras["det_val_probs"], extras["det_probs"], row["test_ece"],
         row["test_ece_ts"]),
    ]:
        assert p_val.shape == (len(data.x_val), 10)
        assert p_test.shape == (len(data.x_test), 10)
        t = scores["temperature"]
        assert t == fit_temperature(p_val, data.y_val) and t > 0
        tempered = apply_temperature(p_test, t)
        correct = tempered.argmax(1) == data.y_test
        assert ece_ts == pytest.approx(mcm.expected_calibration_error(
            tempered.max(1), correct, demo.ECE_BINS), abs=1e-12)
        # The untempered ECE is of the same probabilities (for MC: evaluate's
        # mean equals the mean of the samples reused here, up to float32
        # round-off: evaluate's mean is computed on the device, issue 18).
        assert ece == pytest.approx(mcm.classification_scores(
            p_test, data.y_test, bins=demo.ECE_BINS)["ece"], abs=1e-6)
        val_nll = mcm.classification_scores(p_val, data.y_val)["nll"]
        val_nll_ts = mcm.classification_scores(apply_temperature(p_val, t), data.y_val)["nll"]
        assert scores["val_nll"] == pytest.approx(val_nll, abs=1e-12)
        assert scores["val_nll_ts"] == pytest.approx(val_nll_ts, abs=1e-12)
        assert val_nll_ts <= val_nll + 1e-12
        # The fitted T is the validation NLL's minimum: a step either way is worse.
        for other in (t * 0.9, t * 1.1):
            assert val_nll_ts <= mcm.classification_scores(
                apply_temperature(p_val, other), data.y_val)["nll"]


def test_summarize_uncertainty_auroc_is_ood_scores():
    from kreg.mc.metrics import ood_scores

    clean = {"mutual_information": [0.1, 0.4, 0.4, 0.8], "entropy": [0, 0, 0, 0]}
    noisy = {"mutual_information": [0.4, 0.8, 0.9], "entropy": [1, 1, 1]}
    summary = demo.summarize_uncertainty({"in_distribution": clean, "noise": noisy})
    auroc = summary["noise"]["auroc_mutual_information"]
    assert auroc == ood_scores(clean["mutual_information"],
                               noisy["mutual_information"])["auroc"]
    assert auroc == pytest.approx(9.5 / 12)  # the tied pairs count 1/2


def test_quick_demo_l1_is_sparser_than_l2(quick_run):
    _, _, results = quick_run
    sparsity = {r["key"]: r["sparsity"] for r in results["techniques"]}
    # Measured (benchmarks/claims_spread.py, seed 0): l1 - l2 = 0.137, which
    # left only 0.037 over the old margin of 0.1; the claim is "L1 is
    # sparser", so the margin is 0.05.
    assert sparsity["l1"] > sparsity["l2"] + 0.05
    assert sparsity["elastic_net"] > sparsity["none"] + 0.05


def test_quick_demo_markdown(quick_run):
    _, out, results = quick_run
    text = (out / "results.md").read_text()
    assert demo.format_table(results) in text
    for technique in demo.TECHNIQUES:
        assert f"| {technique.label} |" in text


def test_regression_rows_in_process(tmp_path):
    # Diabetes (regression) through the same code path, 2 epochs per technique.
    with open(os.devnull, "w") as sink:
        results = demo.run("diabetes", tmp_path, quick=True, epochs=2, stream=sink)
    assert results["task"] == "regression"
    rows = results["techniques"]
    assert [r["key"] for r in rows] == TECHNIQUE_KEYS
    for r in rows:
        assert COMMON_KEYS | {"train_rmse", "test_rmse", "tau"} <= set(r)
        assert r["train_rmse"] > 0 and r["test_rmse"] > 0
        assert r["gap"] == pytest.approx(r["test_rmse"] - r["train_rmse"])
        assert 0.0 <= r["test_ece"] <= 1.0 and r["tau"] > 0
        assert not DET_TS_KEYS & set(r), r  # no temperature for regression
        if r["stochastic"]:
            assert set(r["mc"]) == {"rmse", "nll", "ece", "tau", "samples"} | CP_REGRESSION_KEYS
            assert 0.0 <= r["mc"]["cp_coverage"] <= 1.0 and r["mc"]["cp_width"] > 0
        else:
            assert r["mc"] is None
    for summary in results["uncertainty"].values():
        assert "mean_std" in summary["in_distribution"]
    for name in demo.OUTPUT_FILES:
        assert (tmp_path / name).stat().st_size > 0
    assert "RMSE" in demo.format_table(results)
    assert "(TS)" not in demo.format_table(results)


# -- arguments -------------------------------------------------------------------
def _one_line_error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv, expected", [
    (["demo", "--dataset", "iris"], "invalid choice: 'iris'"),
    (["demo", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["demo", "--epochs", "zero"], "argument --epochs: expected an integer >= 1"),
    (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: command"),
])
def test_bad_arguments_one_line(capsys, argv, expected):
    err = _one_line_error(capsys, argv)
    assert err.startswith("kreg") and "error: " in err and expected in err, err


def test_unwritable_out_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "out"
    err = _one_line_error(capsys, ["demo", "--quick", "--out", str(out)])
    assert err == (f"kreg demo: error: cannot write to --out {str(out)!r}: "
                   "Not a directory\n")


def test_out_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    err = _one_line_error(capsys, ["demo", "--out", str(blocker)])
    assert err.startswith(f"kreg demo: error: cannot write to --out {str(blocker)!r}: ")


def test_unwritable_out_exit_status_from_the_command_line(tmp_path):
    # The glue (`python -m kreg` -> main -> exit status) once in a subprocess;
    # the other bad arguments take the same path (tested in process above).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = _run_cli("demo", "--out", str(blocker / "x"))
    assert proc.returncode == 2 and proc.stdout == ""
    # kreg's one line, wherever it is: TensorFlow's C++ logging may write to
    # stderr before it on some CPUs (TF_CPP_MIN_LOG_LEVEL does not silence all).
    assert kreg_lines(proc.stderr) == [
        f"kreg demo: error: cannot write to --out {str(blocker / 'x')!r}: Not a directory"
    ], proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_exits_zero(capsys):
    assert cli.main(["demo", "--help"]) == 0
    assert "--dataset" in capsys.readouterr().out


def test_run_validates_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="Invalid value for argument `dataset` of "
                       "kreg.demo.run: expected one of 'digits', 'breast_cancer', "
                       "'diabetes'. Received: dataset='iris'"):
        demo.run("iris", tmp_path)
    with pytest.raises(ValueError, match="argument `seed`"):
        demo.run("digits", tmp_path, seed=-1)
    with pytest.raises(TypeError, match="argument `epochs`"):
        demo.run("digits", tmp_path, epochs=2.5)


# The docs' demo page quotes docs/results/demo_quick.json (tools/docs_numbers.py
# writes the page from it): a fresh --quick run must give the same numbers,
# within the spread of training across threads and oneDNN settings.
DOCS_RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "docs", "results", "demo_quick.json")
DOCS_TOLERANCE = {"train_accuracy": 0.02, "test_accuracy": 0.02, "gap": 0.03,
                  "sparsity": 0.03, "test_nll": 0.03, "test_ece": 0.02,
                  "test_ece_ts": 0.02, "temperature": 0.15, "nll": 0.04, "ece": 0.03,
                  "ece_ts": 0.02, "cp_coverage": 0.04, "cp_set_size": 0.3}


@pytest.mark.claim
def test_docs_demo_numbers_are_this_runs(quick_run):
    _, _, results = quick_run
    with open(DOCS_RESULTS) as f:
        docs = json.load(f)
    assert (docs["dataset"], docs["quick"], docs["seed"], docs["epochs"],
            docs["mc_samples"]) == (results["dataset"], results["quick"], results["seed"],
                                    results["epochs"], results["mc_samples"])
    rows = {r["key"]: r for r in results["techniques"]}
    for doc in docs["techniques"]:
        row = rows[doc["key"]]
        for key, tol in DOCS_TOLERANCE.items():
            for a, b, where in ((doc, row, ""), (doc["mc"] or {}, row["mc"] or {}, "mc.")):
                if key in a:
                    assert abs(a[key] - b[key]) <= tol, (
                        f"{doc['key']} {where}{key}: docs {a[key]:.4f}, this run {b[key]:.4f}"
                        " (rerun `kreg demo --quick`, copy results.json to "
                        "docs/results/demo_quick.json, run tools/docs_numbers.py)")
        assert abs(doc["epochs"] - row["epochs"]) <= 3, doc["key"]
