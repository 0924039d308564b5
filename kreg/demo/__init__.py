"""`kreg demo`: one network, eight regularization techniques, one table.

On a dataset that ships with scikit-learn (digits by default, breast cancer, or
diabetes for regression), with a fixed seed and a fixed train/validation/test
split, the same multilayer perceptron (two hidden ReLU layers of 256 units with
He initialization) is trained eight times:

==================  ===========================================================
no regularization   the plain network
L2                  `kreg.regularizers.L2` on every kernel
L1                  `kreg.regularizers.L1` on every kernel
elastic net         `kreg.regularizers.ElasticNet` (half of each) on every kernel
inverted dropout    `kreg.layers.Dropout` after both hidden layers
DropConnect         `kreg.layers.DropConnectDense` as both hidden layers
early stopping      `kreg.callbacks.EarlyStopping` on the validation data term
dropout + L2 + ES   the three together
==================  ===========================================================

For each it reports train and test accuracy (RMSE for regression), the
generalization gap, the epochs run, the kernel sparsity and the deterministic
test NLL and calibration error; for the stochastic models (dropout, DropConnect,
dropout + L2 + ES) also the Monte Carlo averaged ones (`kreg.MCPredictor`). It
writes the table as Markdown and JSON and four PNG plots (learning curves,
kernel weight histograms, reliability diagrams, predictive uncertainty on
in-distribution vs corrupted inputs) into the output directory.

Definitions (also written into `results.md`):

- gap: train accuracy - test accuracy (classification), test RMSE - train
  RMSE (regression); both evaluated deterministically (inference mode).
- sparsity: the fraction of kernel entries, over all kernels, with
  `|w| < 1e-3` (`SPARSITY_TOLERANCE`).
- NLL: mean negative log-likelihood of the test labels. ECE: expected
  calibration error over 15 equal-width confidence bins. Regression: Gal &
  Ghahramani's Gaussian NLL with the model precision `tau` chosen on the
  validation split (separately for the deterministic and the MC predictions,
  as in their paper), and the calibration error of the central prediction
  intervals (`interval_calibration_error`); RMSE and NLL in the target's
  original units.
- MC: `samples` (100; 30 with `--quick`) stochastic passes with the predictor's
  own seed; the uncertainty plot uses joint samples (one network per sample
  for every input: `MCPredictor(..., joint=True)`).

The package: `config` (datasets, settings, techniques), `data` (splits and
corrupted inputs), `experiment` (the network, one training run, its scores),
`report` (the table and `results.md`), `plots` and `runner` (`run`, the
whole job; named so that the module does not shadow the function
`kreg.demo.run`). It needs kreg's `demo` extra (scikit-learn, matplotlib):
`run` says so in one line when they are missing.
"""

from kreg._extras import MissingExtraError
from kreg.demo.config import CONFIGS
from kreg.demo.config import DATASETS
from kreg.demo.config import ECE_BINS
from kreg.demo.config import OUTPUT_FILES
from kreg.demo.config import SPARSITY_TOLERANCE
from kreg.demo.config import TECHNIQUES
from kreg.demo.config import DatasetConfig
from kreg.demo.config import Technique
from kreg.demo.data import Data
from kreg.demo.data import corrupt
from kreg.demo.data import load_data
from kreg.demo.experiment import build_model
from kreg.demo.experiment import kernel_sparsity
from kreg.demo.experiment import kernel_statistics
from kreg.demo.experiment import kernel_weights
from kreg.demo.experiment import mc_scores
from kreg.demo.experiment import summarize_uncertainty
from kreg.demo.experiment import train_technique
from kreg.demo.report import ensure_writable_dir
from kreg.demo.report import format_table
from kreg.demo.report import markdown
from kreg.demo.runner import require_demo_extra
from kreg.demo.runner import run

__all__ = [
    "CONFIGS",
    "DATASETS",
    "ECE_BINS",
    "OUTPUT_FILES",
    "SPARSITY_TOLERANCE",
    "TECHNIQUES",
    "Data",
    "DatasetConfig",
    "MissingExtraError",
    "Technique",
    "build_model",
    "corrupt",
    "ensure_writable_dir",
    "format_table",
    "kernel_sparsity",
    "kernel_statistics",
    "kernel_weights",
    "load_data",
    "markdown",
    "mc_scores",
    "require_demo_extra",
    "run",
    "summarize_uncertainty",
    "train_technique",
]
