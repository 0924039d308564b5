"""Kernel penalties (L1, L2, elastic net) and helpers to apply and read them."""

from kreg.regularizers.penalties import L1
from kreg.regularizers.penalties import L2
from kreg.regularizers.penalties import ElasticNet
from kreg.regularizers.penalties import apply
from kreg.regularizers.penalties import get
from kreg.regularizers.penalties import penalty

__all__ = ["L1", "L2", "ElasticNet", "apply", "get", "penalty"]
