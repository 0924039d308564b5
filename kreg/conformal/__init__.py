"""Conformal prediction: sets and intervals with a coverage guarantee.

`SplitConformal` calibrates any classifier's probabilities or any
regressor's (mean, std) (a `kreg.MCPrediction` included) on held-out data
and returns prediction sets (classification) or intervals (regression) that
hold the truth with probability at least 1 - alpha. `kreg.export(model,
path, conformal=cp)` serves them from the SavedModel (see `kreg.serving`).
`SklearnAdapter` gives a kreg model the scikit-learn interface that MAPIE and
crepes expect.
"""

from kreg.conformal.sklearn_adapter import SklearnAdapter
from kreg.conformal.split_conformal import SplitConformal

__all__ = ["SklearnAdapter", "SplitConformal"]
