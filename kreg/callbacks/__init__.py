"""kreg's callbacks: EarlyStopping (Keras + Lightning + Prechelt),
RegularizationMonitor (penalty, norms and sparsity in the epoch logs) and
LinearRateRamp (DropBlock's linear schedule of the drop rate)."""

from kreg.callbacks.early_stopping import EarlyStopping
from kreg.callbacks.rate_ramp import LinearRateRamp
from kreg.callbacks.regularization_monitor import RegularizationMonitor

__all__ = ["EarlyStopping", "RegularizationMonitor", "LinearRateRamp"]
