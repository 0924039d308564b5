"""kreg: the classic regularization toolkit for Keras 3, correct and servable.

`import kreg` registers every kreg class with Keras (package "kreg") so that
`.keras` files holding them load with `keras.models.load_model`.
"""

from kreg import acquisition
from kreg import callbacks
from kreg import initializers
from kreg import layers
from kreg import regularizers
from kreg.mc import MCPrediction
from kreg.mc import MCPredictor
from kreg.mc import convert_dropout

__version__ = "0.1.0"

__all__ = [
    "MCPrediction",
    "MCPredictor",
    "acquisition",
    "callbacks",
    "convert_dropout",
    "initializers",
    "layers",
    "regularizers",
    "__version__",
]
