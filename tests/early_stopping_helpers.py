"""Shared by the EarlyStopping tests (test_early_stopping*.py, test_prechelt.py).

A stand-in model whose "weights" are the epoch index, so that restoring can be
checked exactly and no training runs; `drive` runs one scripted 'fit'.
"""

import keras
import numpy as np

NAN = float("nan")

# Scripted curves for Prechelt's PQ (validation and training errors) and UP.
PQ_TRAIN = [3.0, 2.0, 1.5, 1.2, 1.1, 1.0, 1.0, 0.99, 0.98]
PQ_VAL = [3.0, 2.0, 1.5, 1.4, 1.45, 1.5, 1.7, 1.7, 1.6]
UP_VAL = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1]


class FakeModel:
    """Just enough of a model: weights, stop_training, metrics."""

    def __init__(self, metrics=()):
        self.stop_training = False
        self.metrics = list(metrics)
        self.weights = [np.zeros(1)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]


def drive(cb, val, train=None, *, monitor="val_loss", model=None,
          first_epoch=0, begin=True, end=True, stop_at=None):
    """Run one scripted 'fit': weights at epoch e are [e]; returns the model.

    `stop_at`: an epoch at whose end another callback sets stop_training.
    """
    model = model or FakeModel()
    cb.set_model(model)
    if begin:
        model.stop_training = False
        cb.on_train_begin()
    for i, value in enumerate(val):
        epoch = first_epoch + i
        model.weights = [np.full(1, float(epoch))]
        logs = {"loss": 1.0 if train is None else train[i]}
        if value is not None:
            logs[monitor] = value
        cb.on_epoch_end(epoch, logs)
        if stop_at is not None and epoch == stop_at:
            model.stop_training = True
        if model.stop_training:
            break
    if end:
        cb.on_train_end()
    return model


def restored_epoch(model):
    return int(model.weights[0][0])



def compiled_model(metrics=None):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(1, kernel_initializer="zeros", name="dense")])
    model.compile(keras.optimizers.SGD(0.1), "mse", metrics=metrics)
    return model
