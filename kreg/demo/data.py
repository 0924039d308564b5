"""The demo's data: scikit-learn datasets split and standardized, and corrupted copies."""

import dataclasses

import numpy as np

from kreg import _validation as v
from kreg.demo.config import CONFIGS
from kreg.demo.config import DATASETS


@dataclasses.dataclass
class Data:
    """Standardized splits of one dataset."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = None
    y_mean: float = 0.0
    y_scale: float = 1.0


def load_data(name, seed=0):
    """Load a scikit-learn dataset, split 60/20/20 and standardize it.

    The split is stratified for classification and fixed by `seed`. Features
    are standardized with the training split's mean and standard deviation,
    per feature (breast cancer, diabetes) or with one mean and standard
    deviation for all pixels (digits: per-pixel scaling would turn a rare
    stroke in a pixel that is almost always blank into a value in the
    hundreds); regression targets too (predictions are mapped back to the
    original units for RMSE and NLL).

    Args:
        name: `"digits"`, `"breast_cancer"` or `"diabetes"`.
        seed: int >= 0, default 0. The seed of the split.

    Returns:
        A `Data` with float32 inputs.
    """
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    v.check_option("load_data", "name", name, DATASETS)
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    task = CONFIGS[name].task
    strat = y if task == "classification" else None
    idx = np.arange(len(x))
    rest, test = train_test_split(idx, test_size=0.2, random_state=seed,
                                  stratify=strat)
    train, val = train_test_split(
        rest, test_size=0.25, random_state=seed,
        stratify=None if strat is None else strat[rest])
    if CONFIGS[name].scaling == "global":
        xs = ((x - x[train].mean()) / x[train].std()).astype("float32")
    else:
        xs = StandardScaler().fit(x[train]).transform(x).astype("float32")
    data = Data(name, task, xs[train], y[train], xs[val], y[val], xs[test], y[test])
    if task == "classification":
        data.num_classes = int(y.max()) + 1
        for split in ("train", "val", "test"):
            setattr(data, f"y_{split}", getattr(data, f"y_{split}").astype("int64"))
    else:
        data.y_mean = float(y[train].mean())
        data.y_scale = float(y[train].std())
        for split in ("train", "val", "test"):
            raw = getattr(data, f"y_{split}")
            setattr(data, f"y_{split}",
                    ((raw - data.y_mean) / data.y_scale).astype("float32"))
    return data


def corrupt(x, kind, seed=0):
    """Corrupted copies of standardized inputs for the uncertainty plot.

    Args:
        x: array (N, D) of standardized inputs.
        kind: `"noise"` (add standard Gaussian noise: the signal-to-noise
            ratio of each feature becomes 1) or `"shuffled"` (permute the
            features of every row independently: the values of a real input in
            a meaningless arrangement).
        seed: int, default 0.

    Returns:
        A float32 array of the same shape.

    Example:

    >>> import numpy as np
    >>> from kreg.demo import corrupt
    >>> x = np.arange(6, dtype="float32").reshape(2, 3)
    >>> np.sort(corrupt(x, "shuffled"), axis=1).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    v.check_option("corrupt", "kind", kind, ("noise", "shuffled"))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return (x + rng.standard_normal(x.shape)).astype("float32")
    return rng.permuted(x, axis=1).astype("float32")

