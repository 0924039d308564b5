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
        assert set(mc) == {"nll", "ece", "accuracy", "brier", "samples"}
        assert mc["samples"] == results["mc_samples"] == 30
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


def test_quick_demo_l1_is_sparser_than_l2(quick_run):
    _, _, results = quick_run
    sparsity = {r["key"]: r["sparsity"] for r in results["techniques"]}
    assert sparsity["l1"] > sparsity["l2"] + 0.1
    assert sparsity["elastic_net"] > sparsity["none"] + 0.1


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
        if r["stochastic"]:
            assert set(r["mc"]) == {"rmse", "nll", "ece", "tau", "samples"}
        else:
            assert r["mc"] is None
    for summary in results["uncertainty"].values():
        assert "mean_std" in summary["in_distribution"]
    for name in demo.OUTPUT_FILES:
        assert (tmp_path / name).stat().st_size > 0
    assert "RMSE" in demo.format_table(results)


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
