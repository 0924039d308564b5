"""Ramp the drop rate of kreg's layers linearly from 0, as DropBlock's paper does."""

import keras

from kreg import _compat
from kreg import _validation as v
from kreg._validation import check_config
from kreg._validation import check_count
from kreg._validation import check_epoch
from kreg._validation import check_logs
from kreg.layers.dropblock import DropBlock2D
from kreg.layers.dropout import Dropout
from kreg.layers.gaussian_dropout import GaussianDropout
from kreg.layers.stochastic_depth import StochasticDepth

_OWNER = "LinearRateRamp"

#: The layers whose `rate` is read when their call is traced and nowhere else,
#: so that setting it and re-tracing the step functions is all a ramp needs.
RAMPABLE = (DropBlock2D, StochasticDepth, Dropout, GaussianDropout)


@keras.saving.register_keras_serializable(package="kreg")
class LinearRateRamp(keras.callbacks.Callback):
    """Ramp the `rate` of kreg's dropout layers linearly from 0 over the first epochs.

    Ghiasi et al. found DropBlock works best when its rate grows linearly from
    0 to its target during training. At the start of epoch `e` this callback
    sets every ramped layer's rate to `target * min(1, e / ramp_epochs)`
    (`e` counts from `initial_epoch`, so a resumed run continues the ramp;
    epoch 0 trains with rate 0) and has Keras re-trace its train and test
    step functions, in which the rate is a constant (one re-trace per epoch of
    the ramp, none after). The target is each layer's `rate` when training
    begins; at the end of training every rate is set back to its target, so a
    saved model and `kreg.MCPredictor` see the configured rates. Pick
    `ramp_epochs` no larger than the number of epochs you train for.

    The rate changes once per epoch, not per step (the paper ramps per
    step): a step function compiled by JAX keeps the weights as its own state
    during an epoch, so a change between steps would not reach it.

    Args:
        ramp_epochs: int >= 1. The number of epochs over which the rate rises
            from 0 to its target.
        layers: None (default) or a list/tuple of layer names. None ramps
            every `DropBlock2D`, `StochasticDepth`, `Dropout` and
            `GaussianDropout` of kreg in the model (nested models included).
            A name that is not such a layer is a ValueError when training
            begins, listing those that are.

    Call arguments:
        on_train_begin(logs): finds the layers and their target rates.
        on_epoch_begin(epoch, logs): sets the rates of this epoch.
        on_epoch_end(epoch, logs): writes `rate/{layer name}` (the epoch's
            rate) into `logs`, so that `History` records the ramp.
        on_train_end(logs): puts the target rates back.

    Returns:
        A Keras callback to pass to `fit`.

    Example:

    >>> import keras, numpy as np, kreg
    >>> model = keras.Sequential([keras.Input((6, 6, 2)),
    ...     kreg.layers.DropBlock2D(0.3, block_size=3, seed=1, name="db"),
    ...     keras.layers.Flatten(), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 6, 6, 2)), np.ones((8, 1)), epochs=4,
    ...     verbose=0, callbacks=[kreg.callbacks.LinearRateRamp(ramp_epochs=3)])
    >>> [round(r, 3) for r in history.history["rate/db"]]
    [0.0, 0.1, 0.2, 0.3]
    >>> model.get_layer("db").rate
    0.3

    References:
        Ghiasi, Lin & Le, "DropBlock: A regularization method for
        convolutional networks", NeurIPS 2018, section 3 ("Scheduled
        DropBlock").
    """

    def __init__(self, ramp_epochs, layers=None):
        super().__init__()
        self.ramp_epochs = check_count(_OWNER, "ramp_epochs", ramp_epochs, 1)
        if layers is not None:
            expected = "None or a non-empty list/tuple of distinct layer names"
            if isinstance(layers, str) or not isinstance(layers, (list, tuple)) \
                    or not all(isinstance(n, str) for n in layers):
                raise v.invalid_type(_OWNER, "layers", expected, layers)
            if not layers or len(set(layers)) != len(layers):
                raise v.invalid_value(_OWNER, "layers", expected, layers)
            layers = list(layers)
        self.layers = layers
        self._targets = None

    def _find(self):
        if self.model is None:
            raise RuntimeError(
                f"{_OWNER}: no model is set; pass the callback to "
                "`model.fit(..., callbacks=[...])` or call `set_model(model)` first.")
        found = {}
        for layer in _compat.flatten_layers(self.model, include_self=False):
            if isinstance(layer, RAMPABLE):
                found.setdefault(layer.name, layer)
        if self.layers is None:
            if not found:
                raise v.invalid_value(
                    _OWNER, "model", "a model with at least one kreg DropBlock2D, "
                    "StochasticDepth, Dropout or GaussianDropout layer", self.model.name)
            return list(found.values())
        unknown = [n for n in self.layers if n not in found]
        if unknown:
            raise v.invalid_value(
                _OWNER, "layers", "names of kreg DropBlock2D, StochasticDepth, "
                f"Dropout or GaussianDropout layers of the model (available: "
                f"{sorted(found)})", self.layers)
        return [found[n] for n in self.layers]

    def rate_at(self, epoch, target):
        """The rate of epoch `epoch` for a layer whose target is `target`."""
        epoch = check_epoch(f"{_OWNER}.rate_at", epoch)
        return target * min(1.0, epoch / self.ramp_epochs)

    def on_train_begin(self, logs=None):
        check_logs(_OWNER, logs)
        if self._targets is not None:  # a run that ended without on_train_end
            self._restore()
        self._targets = [(layer, layer.rate) for layer in self._find()]

    def on_epoch_begin(self, epoch, logs=None):
        epoch = check_epoch(_OWNER, epoch)
        check_logs(_OWNER, logs)
        if self._targets is None:
            self.on_train_begin()
        changed = False
        for layer, target in self._targets:
            rate = self.rate_at(epoch, target)
            changed |= rate != layer.rate
            layer.rate = rate
        if changed:
            self._retrace()

    def on_epoch_end(self, epoch, logs=None):
        check_epoch(_OWNER, epoch)
        logs = check_logs(_OWNER, logs)
        if self._targets is not None and hasattr(logs, "__setitem__"):
            for layer, _ in self._targets:
                logs[f"rate/{layer.name}"] = float(layer.rate)

    def on_train_end(self, logs=None):
        check_logs(_OWNER, logs)
        self._restore()

    def _restore(self):
        changed = False
        for layer, target in self._targets or ():
            changed |= layer.rate != target
            layer.rate = target
        self._targets = None
        if changed:
            self._retrace()

    def _retrace(self):
        """Make Keras trace the step functions again (the rate is a constant in them)."""
        model = self.model
        if getattr(model, "train_function", None) is not None:
            model.make_train_function(force=True)
        model.test_function = None
        model.predict_function = None

    def get_config(self):
        return {"ramp_epochs": self.ramp_epochs, "layers": self.layers}

    @classmethod
    def from_config(cls, config):
        return cls(**check_config(cls, config))
