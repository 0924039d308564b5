"""kreg's optional extras: a one-line error when one is needed and missing.

The core (`pip install kreg`) is Keras and NumPy with any Keras backend.
Three parts need more, each an extra: `kreg.export` and
`kreg.distribute` need TensorFlow (`kreg[tensorflow]`, or the
`tensorflow-cpu` build), `kreg demo` needs scikit-learn and matplotlib
(`kreg[demo]`). Their imports stay inside the functions that use them, so
`import kreg` works without any of them. The TensorFlow-only parts also need
the TensorFlow backend: `require_tensorflow_backend` gives their one error.
"""

import importlib.util

import keras

from kreg import _validation as v


class MissingExtraError(ModuleNotFoundError):
    """A package of one of kreg's optional extras is not installed.

    A `ModuleNotFoundError` (so an `ImportError`) whose message is one line
    naming what is missing and the `pip install "kreg[extra]"` that adds it.
    """


def installed(module):
    """True when `module` can be imported (found on the path, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(owner, extra, packages):
    """Raise `MissingExtraError` unless every package of `extra` is installed.

    Args:
        owner: str, who needs them (`"kreg demo"`, `"kreg.export"`).
        extra: str, the name of kreg's extra (`"demo"`, `"tensorflow"`).
        packages: sequence of `(import name, distribution name)` pairs.
    """
    missing = [dist for module, dist in packages if not installed(module)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise MissingExtraError(
            f"{owner} needs {' and '.join(missing)}, which {verb} not installed: "
            f'pip install "kreg[{extra}]"', name=missing[0])


def require_tensorflow(owner):
    """`require(owner, "tensorflow", ...)`: TensorFlow (any of its builds)."""
    require(owner, "tensorflow", (("tensorflow", "TensorFlow"),))


def require_tensorflow_backend(owner, reason):
    """Raise unless Keras runs on the TensorFlow backend: kreg's one error.

    Without TensorFlow installed: `MissingExtraError` (`require_tensorflow`),
    for `owner` as a `kreg.` name. With it, on another backend: kreg's
    ValueError for the argument `backend`.

    Args:
        owner: str, the public function (`"export"`, `"kreg.distribute.train"`).
        reason: str, why it is TensorFlow-only (`"it is built on tf.distribute"`).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    require_tensorflow(owner if owner.startswith("kreg.") else f"kreg.{owner}")
    raise v.invalid_value(
        owner, "backend",
        f"the TensorFlow backend ({reason}; set KERAS_BACKEND=tensorflow)",
        backend)
