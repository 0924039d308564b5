"""The demo's settings: datasets, training settings per dataset, the eight techniques.

Plain data (frozen dataclasses and tuples), no Keras or scikit-learn import.
"""

import dataclasses

DATASETS = ("digits", "breast_cancer", "diabetes")

#: |w| below this counts as zero in the kernel sparsity.
SPARSITY_TOLERANCE = 1e-3

#: Number of equal-width confidence bins of the ECE and reliability diagrams.
ECE_BINS = 15

#: File names written into the output directory.
OUTPUT_FILES = (
    "results.md",
    "results.json",
    "learning_curves.png",
    "weight_histograms.png",
    "reliability.png",
    "uncertainty.png",
)


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Training settings of one dataset (shared by all eight techniques)."""

    task: str
    hidden: tuple = (256, 256)
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 60
    quick_epochs: int = 12
    l2: float = 1e-3
    l1: float = 1e-4
    # No input dropout by default: on these small inputs (an 8x8 image, 30 or
    # 10 measurements) each Monte Carlo sample would lose much of the input,
    # and the MC average came out underconfident (digits: MC NLL 0.16 vs 0.10
    # deterministic with 0.2 on the inputs; 0.10 vs 0.15 without).
    input_dropout: float = 0.0
    dropout: float = 0.5
    dropconnect: float = 0.5
    patience: int = 10
    quick_patience: int = 4
    scaling: str = "feature"  # "feature": per feature; "global": one mean/std


CONFIGS = {
    # Pixels share one unit: per-pixel standardization would blow rare pixels
    # (nearly always 0 in the training split) up to values in the hundreds.
    "digits": DatasetConfig("classification", learning_rate=3e-3, scaling="global"),
    "breast_cancer": DatasetConfig("classification", batch_size=32),
    "diabetes": DatasetConfig(
        "regression", batch_size=32, epochs=100, quick_epochs=20,
        dropout=0.2, dropconnect=0.2, l1=1e-4, l2=1e-3,
    ),
}


@dataclasses.dataclass(frozen=True)
class Technique:
    """One row of the demo: which regularizers the network gets."""

    key: str
    label: str
    penalty: str = None  # None, "l2", "l1" or "elastic_net"
    dropout: bool = False
    dropconnect: bool = False
    early_stopping: bool = False

    @property
    def stochastic(self):
        return self.dropout or self.dropconnect


TECHNIQUES = (
    Technique("none", "no regularization"),
    Technique("l2", "L2", penalty="l2"),
    Technique("l1", "L1", penalty="l1"),
    Technique("elastic_net", "elastic net", penalty="elastic_net"),
    Technique("dropout", "inverted dropout", dropout=True),
    Technique("dropconnect", "DropConnect", dropconnect=True),
    Technique("early_stopping", "early stopping", early_stopping=True),
    Technique("dropout_l2_es", "dropout + L2 + early stopping", penalty="l2",
              dropout=True, early_stopping=True),
)

