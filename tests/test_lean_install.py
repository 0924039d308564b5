"""The lean install: `import kreg` with Keras, NumPy and one backend, no extras.

Each check runs in a fresh interpreter with a meta-path finder that makes
TensorFlow (and the demo's scikit-learn and matplotlib) impossible to import,
as if they were not installed, on the JAX backend. The parts that need an
extra say so in one line that names the `pip install "kreg[...]"` to run.
(Once, by hand, a real venv with only keras, numpy, scipy (a JAX dependency) and jax ran
`import kreg` and the layers' tests: see the README's setup section.)
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                       reason="needs JAX (the backend of the lean process)"),
    # It starts its own JAX process; once, in the TensorFlow pass, is enough.
    pytest.mark.tf_only(reason="starts its own JAX process without TensorFlow"),
]

BLOCKER = """
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    names = {names!r}

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def _run(code, *, blocked=("tensorflow",), args=()):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
               JAX_PLATFORMS="cpu")
    source = BLOCKER.format(names=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source, *args], capture_output=True,
                          text=True, timeout=300, env=env)


def _result(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("JSON:")][-1]
    return json.loads(line[5:])


@pytest.fixture(scope="module")
def lean():
    """One process without TensorFlow, scikit-learn or matplotlib."""
    proc = _run("""
        import json, sys
        import numpy as np
        import keras
        import kreg
        import kreg.demo  # the demo package imports without its extra

        def error(fn):
            try:
                fn()
            except Exception as err:  # the class and the text are checked
                return [type(err).__name__, isinstance(err, ImportError), str(err)]
            return None

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                                  kreg.layers.Dropout(0.5, seed=1),
                                  keras.layers.Dense(3, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy")
        x = np.ones((64, 4), "float32")
        model.fit(x, np.zeros(64, "int64"), epochs=1, verbose=0)
        mask = keras.ops.convert_to_numpy(
            kreg.layers.Dropout(0.5, seed=2)(np.ones((1000, 10), "float32"),
                                             training=True))
        pred = kreg.MCPredictor(model, samples=10, seed=0).predict(x[:5], verbose=0)
        print("JSON:" + json.dumps({
            "backend": keras.backend.backend(),
            "modules": sorted(m for m in ("tensorflow", "sklearn", "matplotlib")
                              if m in sys.modules),
            "kept": float((mask > 0).mean()),
            "mc_shape": list(pred.mean.shape),
            "export": error(lambda: kreg.export(model, "unused")),
            "train": error(lambda: kreg.distribute.train(model, None)),
            "replica_loss": error(lambda: kreg.distribute.replica_loss(model, x, x)),
            "demo": error(lambda: kreg.demo.run("digits", "unused")),
        }))
    """, blocked=("tensorflow", "sklearn", "matplotlib"))
    return _result(proc)


def test_import_kreg_without_tensorflow_or_the_demo_packages(lean):
    assert lean["backend"] == "jax"
    assert lean["modules"] == []  # none of them imported (they cannot be)
    assert 0.45 < lean["kept"] < 0.55  # Dropout(0.5) keeps half: 10,000 draws
    assert lean["mc_shape"] == [5, 3]


@pytest.mark.parametrize("entry, owner", [
    ("export", "kreg.export"),
    ("train", "kreg.distribute.train"),
    ("replica_loss", "kreg.distribute.replica_loss"),
])
def test_tensorflow_parts_name_the_extra_in_one_line(lean, entry, owner):
    name, is_import_error, text = lean[entry]
    assert name == "MissingExtraError" and is_import_error
    assert text == (f"{owner} needs TensorFlow, which is not installed: "
                    'pip install "kreg[tensorflow]"')


def test_demo_run_names_the_demo_extra_in_one_line(lean):
    name, is_import_error, text = lean["demo"]
    assert name == "MissingExtraError" and is_import_error
    assert text == ("kreg demo needs scikit-learn and matplotlib, which are not "
                    'installed: pip install "kreg[demo]"')


def test_demo_command_without_the_extra_is_one_line_and_exit_status_1(tmp_path):
    out = tmp_path / "out"
    proc = _run("""
        import runpy, sys
        sys.argv = ["kreg", *sys.argv[1:]]
        runpy.run_module("kreg", run_name="__main__")
    """, blocked=("sklearn",), args=("demo", "--quick", "--out", str(out)))
    assert proc.returncode == 1 and proc.stdout == ""
    # kreg's line, wherever it is (a backend may log to stderr before it).
    lines = [x for x in proc.stderr.splitlines() if x.startswith("kreg")]
    assert lines == ['kreg: error: kreg demo needs scikit-learn, which is not '
                     'installed: pip install "kreg[demo]"'], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing written


def test_the_core_imports_only_keras_and_numpy():
    """Every module-level import in kreg (the demo package aside, which needs
    its extra) is kreg's own, Keras, NumPy or the standard library, so that
    `install_requires` (keras, numpy) is the whole core."""
    import ast
    import pathlib
    import sys

    root = pathlib.Path(__file__).resolve().parents[1] / "kreg"
    allowed = {"kreg", "keras", "numpy"} | set(sys.stdlib_module_names)
    found = {}
    for path in root.rglob("*.py"):
        if "demo" in path.relative_to(root).parts:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in allowed:
                    found.setdefault(top, []).append(str(path.relative_to(root)))
    assert found == {}, found
