"""The `kreg` command line: quiet, `--version`, and a `--help` that imports no Keras."""

import os
import subprocess
import sys

import pytest

import kreg

pytestmark = pytest.mark.tf_only(
    reason="the command line's demo runs on TensorFlow; the start-up lines are TensorFlow's")


def _kreg(*args, env=None, timeout=300):
    full = {k: val for k, val in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    full.update(env or {})
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=full)


def test_version():
    proc = _kreg("-m", "kreg", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"kreg {kreg.__version__}\n" and proc.stderr == ""


def test_help_is_quiet_and_imports_no_keras():
    proc = _kreg("-X", "importtime", "-m", "kreg", "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: kreg [-h] [--version] command")
    assert "demo" in proc.stdout and "--version" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "kreg.cli" in imported
    assert not [m for m in imported if m.split(".")[0] in ("keras", "tensorflow", "jax",
                                                              "torch", "numpy")], imported
    # Nothing but the import-time lines on stderr: no TensorFlow start-up lines.
    assert all(line.startswith("import time:") for line in proc.stderr.splitlines())


def test_demo_errors_are_one_line_without_tensorflow_start_up_lines():
    proc = _kreg("-m", "kreg", "demo", "--dataset", "nope")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "kreg demo: error: argument --dataset: invalid choice: 'nope' "
        "(choose from 'digits', 'breast_cancer', 'diabetes')"]


def test_errors_before_a_command_are_unchanged():
    proc = _kreg("-m", "kreg")
    assert (proc.returncode, proc.stderr) == (
        2, "kreg: error: the following arguments are required: command\n")
    proc = _kreg("-m", "kreg", "train")
    assert proc.returncode == 2
    assert proc.stderr == "kreg: error: argument command: invalid choice: 'train' " \
                          "(choose from 'demo')\n"


def test_lazy_package_still_gives_every_public_name():
    # As the command line imports it: `python -m kreg` sets sys.argv[0] to "-m"
    # while the package is imported, and orig_argv names the module.
    code = ("import sys\nsys.argv = ['-m']\nsys.orig_argv = [sys.executable, '-m', 'kreg']\n"
            "import kreg\nassert 'keras' not in sys.modules, 'imported keras'\n"
            "sys.argv = ['x']\n"
            "assert kreg.layers.Dropout.__name__ == 'Dropout'\n"
            "assert kreg.MCPredictor.__name__ == 'MCPredictor'\n"
            "kreg._import_public_api()\n"
            "assert all(hasattr(kreg, n) for n in kreg.__all__)\nprint('ok')")
    proc = _kreg("-c", code)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr[-2000:]


def test_plain_import_is_eager():
    code = ("import sys, kreg, keras\nassert 'kreg.mc' in sys.modules\n"
            "assert keras.saving.get_registered_object('kreg>Dropout') is kreg.layers.Dropout\n"
            "print('ok')")
    proc = _kreg("-c", code)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr[-2000:]


def test_a_backend_keras_cannot_import_is_one_line():
    # As in an environment without TensorFlow and without KERAS_BACKEND set.
    code = ("import sys\n"
            "class Hide:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'tensorflow':\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "sys.argv = ['-m']\nsys.orig_argv = [sys.executable, '-m', 'kreg']\n"
            "from kreg.cli import main\n"
            "sys.exit(main(['demo', '--quick']))\n")
    proc = _kreg("-c", code, env={"KERAS_BACKEND": "tensorflow"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [
        "kreg: error: Keras cannot import its backend 'tensorflow' (KERAS_BACKEND): No module "
        "named 'tensorflow'. Install it (TensorFlow: pip install \"kreg[tensorflow]\") or set "
        "KERAS_BACKEND to an installed one (jax, torch)"]
