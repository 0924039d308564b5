"""Kernel penalties (L1, L2, elastic net) and helpers to apply and read them.

`l1`, `l2` and `l1_l2` are Keras's aliases of `L1`, `L2` and `L1L2`, with
Keras's defaults (0.01, 0.01, and 0 and 0). `decoupled_weight_decay` moves L2
kernel penalties into an optimizer's decoupled weight decay; `mc_dropout_l2` is
Gal's L2 coefficient for MC dropout regression.
"""

from kreg.regularizers.penalties import L1
from kreg.regularizers.penalties import L1L2
from kreg.regularizers.penalties import L2
from kreg.regularizers.penalties import ElasticNet
from kreg.regularizers.penalties import apply
from kreg.regularizers.penalties import get
from kreg.regularizers.penalties import l1
from kreg.regularizers.penalties import l1_l2
from kreg.regularizers.penalties import l2
from kreg.regularizers.penalties import penalty
from kreg.regularizers.weight_decay import WeightDecayChange
from kreg.regularizers.weight_decay import decoupled_weight_decay
from kreg.regularizers.weight_decay import mc_dropout_l2

__all__ = ["L1", "L2", "L1L2", "ElasticNet", "l1", "l2", "l1_l2", "apply", "get",
           "penalty", "WeightDecayChange", "decoupled_weight_decay", "mc_dropout_l2"]
