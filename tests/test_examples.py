"""Every script in examples/ runs (docs cannot drift from code).

Each example runs in a fresh interpreter with the working directory in a
temporary folder, `MPLBACKEND=Agg`, and its output directory passed both as
the first argument and as `KREG_EXAMPLES_OUT` (the examples' convention).
"""

import os
import pathlib
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.tf_only(
    reason="the examples run on TensorFlow; serve_saved_model exports a SavedModel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: Files that the examples of this repository promise to write.
EXPECTED_FILES = {
    "regularize_sequential.py": ["regularized.keras"],
    "early_stopping_and_monitor.py": ["history.png", "history.csv"],
    "mc_uncertainty_existing_model.py": ["mc_uncertainty.png"],
}



def _serve_saved_model_output(out):
    """What serve_saved_model.py prints: its signatures and five served rows."""
    assert "signatures: ['serve', 'serve_mc', 'serve_mc_seeded', 'serving_default']" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("(")]
    assert len(rows) == 5, out
    between_two, between_all = rows[2], rows[3]
    assert float(between_all[-2]) > 0.8  # entropy (nats) near log 3
    assert float(between_two[-1]) > float(between_all[-1])  # more model uncertainty


#: What an example's standard output must show, beyond not being empty.
EXPECTED_OUTPUT = {"serve_saved_model.py": _serve_saved_model_output}

#: Each example must run in this many seconds on an unloaded 2-core machine;
#: the subprocess limit is generous because the test machine is shared.
BUDGET_S = 30
TIMEOUT_S = 600


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert set(EXPECTED_FILES) <= names, names


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, MPLBACKEND="Agg", KREG_EXAMPLES_OUT=str(out),
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=TIMEOUT_S)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, (
        f"{script.name} failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout}\n"
        f"STDERR:\n{proc.stderr[-4000:]}")
    assert proc.stdout.strip(), f"{script.name} printed nothing"
    if script.name in EXPECTED_OUTPUT:
        EXPECTED_OUTPUT[script.name](proc.stdout)
    for name in EXPECTED_FILES.get(script.name, []):
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, (name, sorted(os.listdir(out)))
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if script.name in EXPECTED_FILES:
        # Ours write only into the output directory.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    print(f"{script.name}: {elapsed:.1f} s (budget {BUDGET_S} s unloaded)")
