"""kreg: the classic regularization toolkit for Keras 3, correct and servable.

`import kreg` registers every kreg class with Keras (package "kreg") so that
`.keras` files holding them load with `keras.models.load_model` (or use
`kreg.load_model`, which imports kreg and explains a missing class).
`kreg.export` writes a TensorFlow SavedModel with deterministic and Monte
Carlo serving signatures (module `kreg.serving`).

`import kreg` needs only Keras (with any backend) and NumPy.
`kreg.export` and `kreg.distribute` need TensorFlow (extra `kreg[tensorflow]`)
and `kreg demo` needs `kreg[demo]`; without them they fail with one line
naming the `pip install` to run.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

__all__ = [
    "MCPrediction",
    "MCPredictor",
    "MomentPrediction",
    "MomentPredictor",
    "acquisition",
    "calibration",
    "callbacks",
    "conformal",
    "convert_dropout",
    "distribute",
    "errors",
    "export",
    "initializers",
    "layers",
    "load_model",
    "regression",
    "regularizers",
    "__version__",
]

def _imported_by_the_command_line():
    """True while `python -m kreg` or the `kreg` script imports this package.

    The command line imports what its command needs itself (`kreg.cli`), so
    that `kreg --help` and `kreg --version` answer without importing Keras and
    its backend; every public name is still reachable, imported on first use.
    """
    argv0 = _sys.argv[0] if _sys.argv else ""
    if argv0 == "-m":  # runpy imports the package before running kreg.__main__
        orig = list(getattr(_sys, "orig_argv", []))
        return "-m" in orig and orig[orig.index("-m") + 1:orig.index("-m") + 2] == ["kreg"]
    main = _sys.modules.get("__main__")
    return (_os.path.basename(argv0) in ("kreg", "kreg.exe")
            and getattr(main, "__file__", None) == argv0)


# The public API's modules, for the lazy attribute access below.
_LAZY = {"MCPrediction": "kreg.mc", "MCPredictor": "kreg.mc", "convert_dropout": "kreg.mc",
         "MomentPrediction": "kreg.mc", "MomentPredictor": "kreg.mc",
         "load_model": "kreg.saving", "export": "kreg.serving"}


def _import_public_api():
    """Import every public name (registering kreg's classes with Keras)."""
    for name in __all__:
        getattr(_sys.modules[__name__], name)


def __getattr__(name):
    """A public name not imported yet (command-line imports only): import it."""
    if name == "__version__" or name not in __all__:
        raise AttributeError(f"module 'kreg' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_LAZY.get(name, f"kreg.{name}"))
    value = getattr(module, name) if name in _LAZY else module
    globals()[name] = value
    return value


if not _imported_by_the_command_line():
    from kreg import acquisition
    from kreg import calibration
    from kreg import callbacks
    from kreg import conformal
    from kreg import distribute
    from kreg import errors
    from kreg import initializers
    from kreg import layers
    from kreg import regression
    from kreg import regularizers
    from kreg.mc import MCPrediction
    from kreg.mc import MCPredictor
    from kreg.mc import MomentPrediction
    from kreg.mc import MomentPredictor
    from kreg.mc import convert_dropout
    from kreg.saving import load_model
    from kreg.serving import export
