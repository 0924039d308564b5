"""Shared test fixtures. Tests run against the installed package."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Helper modules shared by several test files (early_stopping_helpers.py) are
# imported by name; --import-mode=importlib does not put tests/ on sys.path.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class _Unavailable:
    """A meta-path finder that makes some packages impossible to import."""

    def __init__(self, names):
        self.names = tuple(names)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(
                f"No module named {name!r} (KREG_TEST_WITHOUT hides it)", name=name)
        return None


# `KREG_TEST_WITHOUT=tensorflow` (set by `make test-jax`) runs the suite as in
# an environment where TensorFlow is not installed: the proof that kreg and
# its layers need only Keras, NumPy and one backend. A finder, not a None entry
# in sys.modules: Keras takes `"tensorflow" in sys.modules` to mean that
# TensorFlow is imported (keras.src.utils.backend_utils.in_tf_graph). Not
# used for PyTorch: torch._dynamo probes `importlib.util.find_spec`, which the
# finder answers with the import error.
_WITHOUT = [n for n in os.environ.get("KREG_TEST_WITHOUT", "").split(",") if n]
if _WITHOUT:
    if any(n in sys.modules for n in _WITHOUT):
        raise RuntimeError(f"KREG_TEST_WITHOUT={_WITHOUT}: already imported")
    sys.meta_path.insert(0, _Unavailable(_WITHOUT))


def run_python(code, *, timeout=300, env=None, cwd=None, check=True):
    """Run `code` in a fresh Python process; return its CompletedProcess.

    The last line of stdout that starts with "JSON:" is parsed and attached
    as `.result`.
    """
    full_env = dict(os.environ)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout}\n"
            f"STDERR:\n{proc.stderr[-4000:]}"
        )
    proc.result = None
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("JSON:"):
            proc.result = json.loads(line[5:])
            break
    return proc


@pytest.fixture(scope="session")
def fresh_python():
    """`fresh_python(code, **kw)` runs code in a new interpreter (see run_python)."""
    return run_python


# ----------------------------------------------------------------------------
# Backends. `make test` runs the whole suite (tests/ and the doctests in kreg/)
# on TensorFlow, then again under KERAS_BACKEND=jax and KERAS_BACKEND=torch.
# A test (or a module, through `pytestmark = pytest.mark.tf_only(reason=...)`)
# that needs TensorFlow itself (tf.distribute, SavedModel export, tf.data) or
# runs once on purpose (notebooks, the demo) carries the `tf_only` marker and
# is skipped there, with its reason. The doctests of kreg's TensorFlow-only
# modules (TF_ONLY_MODULES) are skipped the same way.
# ----------------------------------------------------------------------------
TF_ONLY_MODULES = ("kreg/serving.py", "kreg/distribute.py")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "tf_only(reason=...): needs the TensorFlow backend (skipped under "
        "KERAS_BACKEND=jax/torch, with the reason)",
    )


# Modules that run whole programs; with the tests that start a fresh Python
# process (the `fresh_python` fixture), `make test-quick` (-m "not slow")
# leaves them out.
SLOW_MODULES = ("test_notebooks.py", "test_demo.py", "test_examples.py", "test_docs.py",
                "test_claims.py", "test_backends.py", "test_lean_install.py", "test_cli.py",
                "test_distribute.py")


def _mark_slow(items):
    for item in items:
        if (item.path.name in SLOW_MODULES
                or "fresh_python" in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_collection_modifyitems(config, items):
    import keras

    _mark_slow(items)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    for item in items:
        marker = item.get_closest_marker("tf_only")
        if marker is None and item.path.as_posix().endswith(TF_ONLY_MODULES):
            marker = pytest.mark.tf_only(reason="a TensorFlow-only module").mark
        if marker is not None:
            why = marker.kwargs.get("reason", "tf.distribute / TF APIs")
            item.add_marker(pytest.mark.skip(
                reason=f"TensorFlow-only test ({why}); the Keras backend is {backend!r}"))
