"""kreg's callbacks: EarlyStopping (Keras + Lightning + Prechelt) and
RegularizationMonitor (penalty, norms and sparsity in the epoch logs)."""

from kreg.callbacks.early_stopping import EarlyStopping
from kreg.callbacks.regularization_monitor import RegularizationMonitor

__all__ = ["EarlyStopping", "RegularizationMonitor"]
