"""Per-epoch regularization statistics in the training logs."""

import math

import keras
import numpy as np

from kreg import _compat
from kreg import _validation as v
from kreg._validation import check_config
from kreg._validation import check_epoch
from kreg._validation import check_logs
from kreg._validation import is_real
from kreg.regularizers.penalties import penalty

_OWNER = "RegularizationMonitor"

STATS = ("penalty", "share", "l1", "l2", "sparsity")


def _kernel(layer):
    kernel = getattr(layer, "kernel", None)
    return kernel if isinstance(kernel, keras.Variable) else None


@keras.saving.register_keras_serializable(package="kreg")
class RegularizationMonitor(keras.callbacks.Callback):
    """Add the weight penalty and kernel norms and sparsity to each epoch's logs.

    At the end of every epoch it writes into the epoch's `logs` dict, so that
    `History`, `keras.callbacks.CSVLogger` and `keras.callbacks.TensorBoard`
    record them with no extra code (list those after this callback; the
    progress bar line never shows them):

    - `{prefix}penalty`: the model's total weight penalty (kernel and bias
      regularizers, from `kreg.regularizers.penalty`) with the weights at the
      end of the epoch;
    - `{prefix}penalty_share`: that penalty divided by `logs["loss"]`, the
      epoch's mean training loss (which includes the penalty); NaN when the
      loss is missing or zero. The penalty is measured on the end-of-epoch
      weights and the loss is averaged over the epoch's steps, so the share is
      a close estimate, not an identity;
    - per monitored kernel, with `w` the kernel's entries:
      `{prefix}{layer}/l1 = sum |w|`, `{prefix}{layer}/l2 = sqrt(sum w^2)`
      (the Euclidean/Frobenius norm, not its square) and
      `{prefix}{layer}/sparsity`, the fraction of entries with
      `|w| < tolerance` (the near-zeros that an L1 penalty produces).

    The values are plain Python floats computed with NumPy on
    `layer.kernel`; any backend works.

    Args:
        layers: None (default) or a list/tuple of layer names. None monitors
            every layer of the model (nested ones included) that has a
            `kernel` weight (Dense, Conv, EinsumDense, kreg's layers ...).
            A name that is not such a layer is a ValueError at the start of
            training, listing the names that are. An empty list monitors no
            kernel (only the penalty keys are written).
        stats: list/tuple of statistics, default all of `("penalty", "share",
            "l1", "l2", "sparsity")`; `"share"` writes `penalty_share`.
        tolerance: float > 0, default 1e-3. The threshold of `sparsity`.
        prefix: str, default `"reg/"`. Prepended to every key.

    Call arguments:
        on_train_begin(logs): finds the monitored kernels.
        on_epoch_end(epoch, logs): adds the keys above to `logs` (in place);
            a key already present is a ValueError rather than overwritten.

    Returns:
        A Keras callback to pass to `fit`.

    Example:

    >>> import keras, kreg, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, kernel_initializer="ones", name="d",
    ...     kernel_regularizer=kreg.regularizers.L1(0.1))])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1,
    ...     verbose=0, callbacks=[kreg.callbacks.RegularizationMonitor()])
    >>> {k: round(v[0], 3) for k, v in sorted(history.history.items())
    ...  if k.startswith("reg/")}   # doctest: +NORMALIZE_WHITESPACE
    {'reg/d/l1': 1.998, 'reg/d/l2': 1.413, 'reg/d/sparsity': 0.0,
     'reg/penalty': 0.2, 'reg/penalty_share': 0.999}

    References:
        Goodfellow, Bengio & Courville, Deep Learning, sections 7.1.1-7.1.2
        (L2 and L1 penalties; the sparsity of L1). Keras's
        `keras.callbacks.History` and `CSVLogger`, which record the keys.
    """

    def __init__(self, layers=None, stats=STATS, tolerance=1e-3,
                 prefix="reg/"):
        super().__init__()
        if layers is not None:
            expected = "None or a list/tuple of layer names"
            if isinstance(layers, str) or not isinstance(layers, (list, tuple)):
                raise v.invalid_type(_OWNER, "layers", expected, layers)
            if not all(isinstance(n, str) for n in layers):
                raise v.invalid_type(_OWNER, "layers", expected, layers)
            if len(set(layers)) != len(layers):
                raise v.invalid_value(_OWNER, "layers",
                                      expected + " without repeats", layers)
            layers = tuple(layers)
        self.layers = layers

        expected = ("a non-empty list/tuple of distinct statistics from "
                    + ", ".join(repr(s) for s in STATS))
        if isinstance(stats, str) or not isinstance(stats, (list, tuple)):
            raise v.invalid_type(_OWNER, "stats", expected, stats)
        if not stats or len(set(stats)) != len(stats):
            raise v.invalid_value(_OWNER, "stats", expected, stats)
        for stat in stats:
            if not isinstance(stat, str):
                raise v.invalid_type(_OWNER, "stats", expected, stats)
            if stat not in STATS:
                raise v.invalid_value(_OWNER, "stats", expected, stats)
        self.stats = tuple(stats)
        self.tolerance = v.check_float(_OWNER, "tolerance", tolerance, low=0.0,
                                       low_open=True)
        if not isinstance(prefix, str):
            raise v.invalid_type(_OWNER, "prefix", "a string", prefix)
        self.prefix = prefix
        self._kernels = None

    def _find_kernels(self, owner):
        model = self.model
        if model is None:
            raise RuntimeError(
                f"{owner}: no model is set; pass the callback to "
                "`model.fit(..., callbacks=[...])` or call `set_model(model)` "
                "first.")
        found = {}
        for layer in _compat.flatten_layers(model, include_self=False):
            kernel = _kernel(layer)
            if kernel is None:
                continue
            if layer.name in found and found[layer.name] is not kernel:
                raise ValueError(
                    f"RegularizationMonitor: two layers are named "
                    f"{layer.name!r}; give them distinct names so their keys "
                    "differ.")
            found[layer.name] = kernel
        if self.layers is None:
            return list(found.items())
        unknown = [n for n in self.layers if n not in found]
        if unknown:
            raise v.invalid_value(
                _OWNER, "layers",
                "names of layers with a kernel (available: "
                + (", ".join(repr(n) for n in found) or "none") + ")",
                list(self.layers))
        return [(n, found[n]) for n in self.layers]

    def on_train_begin(self, logs=None):
        check_logs(f"{_OWNER}.on_train_begin", logs)
        self._kernels = self._find_kernels(f"{_OWNER}.on_train_begin")

    def statistics(self, loss=None):
        """Compute the statistics for the current weights.

        Args:
            loss: float or None, default None. The loss that `penalty_share`
                divides by (the share is NaN when the loss is None, zero, NaN
                or infinite).

        Returns:
            A dict from key (with the prefix) to a Python float.
        """
        if loss is not None and not is_real(loss):
            raise v.invalid_type(f"{_OWNER}.statistics", "loss",
                                 "a float or None", loss)
        if self._kernels is None:
            self._kernels = self._find_kernels(f"{_OWNER}.statistics")
        out = {}
        p = self.prefix
        if "penalty" in self.stats or "share" in self.stats:
            total, _ = penalty(self.model)
            if "penalty" in self.stats:
                out[p + "penalty"] = total
            if "share" in self.stats:
                ok = loss is not None and loss != 0.0 and math.isfinite(loss)
                out[p + "penalty_share"] = total / loss if ok else math.nan
        for name, kernel in self._kernels:
            w = np.abs(np.asarray(keras.ops.convert_to_numpy(kernel.value),
                                  dtype=np.float64))
            if "l1" in self.stats:
                out[f"{p}{name}/l1"] = float(w.sum())
            if "l2" in self.stats:
                out[f"{p}{name}/l2"] = float(np.sqrt(np.square(w).sum()))
            if "sparsity" in self.stats:
                out[f"{p}{name}/sparsity"] = float(
                    np.mean(w < self.tolerance)) if w.size else 0.0
        return out

    def on_epoch_end(self, epoch, logs=None):
        owner = f"{_OWNER}.on_epoch_end"
        check_epoch(owner, epoch)
        if logs is None:
            return
        check_logs(owner, logs)
        loss = logs.get("loss")
        if loss is not None:
            try:
                loss = float(loss)
            except (TypeError, ValueError):
                raise v.invalid_type(owner, "logs",
                                     "a number at logs['loss']", loss) from None
        stats = self.statistics(loss)
        clash = [k for k in stats if k in logs]
        if clash:
            raise v.invalid_value(
                _OWNER, "prefix",
                f"a prefix whose keys are not already in the logs (clash: "
                f"{', '.join(repr(k) for k in clash)})", self.prefix)
        logs.update(stats)

    def get_config(self):
        return {
            "layers": None if self.layers is None else list(self.layers),
            "stats": list(self.stats),
            "tolerance": self.tolerance,
            "prefix": self.prefix,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**check_config(cls, config))
