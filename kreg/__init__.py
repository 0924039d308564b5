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

from kreg import acquisition
from kreg import calibration
from kreg import callbacks
from kreg import conformal
from kreg import distribute
from kreg import errors
from kreg import initializers
from kreg import layers
from kreg import regularizers
from kreg.mc import MCPrediction
from kreg.mc import MCPredictor
from kreg.mc import convert_dropout
from kreg.saving import load_model
from kreg.serving import export

__version__ = "0.1.0"

__all__ = [
    "MCPrediction",
    "MCPredictor",
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
    "regularizers",
    "__version__",
]
