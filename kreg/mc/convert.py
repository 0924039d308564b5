"""Swap Keras's dropout layers for kreg's, keeping every weight."""

import keras

from kreg import _validation as v
from kreg.layers.dropout import Dropout
from kreg.layers.gaussian_dropout import GaussianDropout
from kreg.layers.gaussian_dropout import GaussianNoise


def _spatial_noise_shape(layer):
    rank = {"SpatialDropout1D": 3, "SpatialDropout2D": 4,
            "SpatialDropout3D": 5}[type(layer).__name__]
    if rank == 3:
        return (None, 1, None)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return (None, None) + (1,) * (rank - 2)
    return (None,) + (1,) * (rank - 2) + (None,)


def _replacement(layer, gaussian_noise):
    name = type(layer).__name__
    if type(layer) is keras.layers.GaussianDropout:
        return GaussianDropout(layer.rate, seed=layer.seed, name=layer.name)
    if gaussian_noise and type(layer) is keras.layers.GaussianNoise:
        return GaussianNoise(layer.stddev, seed=layer.seed, name=layer.name)
    if type(layer) is keras.layers.Dropout:
        return Dropout(layer.rate, noise_shape=layer.noise_shape, seed=layer.seed,
                       name=layer.name)
    if name in ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D") and \
            isinstance(layer, keras.layers.Dropout):
        return Dropout(layer.rate, noise_shape=_spatial_noise_shape(layer),
                       seed=layer.seed, name=layer.name)
    return None


def convert_dropout(model, *, gaussian_noise=False):
    """Return a copy of `model` with kreg's noise layers in place of Keras's.

    `keras.layers.Dropout` and `SpatialDropout1D/2D/3D` become
    `kreg.layers.Dropout` with the same rate and noise shape (one mask per
    channel for the spatial ones), and `keras.layers.GaussianDropout`
    becomes `kreg.layers.GaussianDropout` with the same rate. With
    `gaussian_noise=True`, `keras.layers.GaussianNoise` (additive noise,
    often a data augmentation or input corruption rather than a
    regularizer of the network's units) becomes `kreg.layers.GaussianNoise`
    with the same standard deviation, so Monte Carlo samples draw it too.
    Every other layer is cloned, and the new model gets exactly the
    original's weights. The original is not modified. Use it to
    Monte-Carlo-sample a model trained with plain Keras, without retraining.

    `keras.layers.AlphaDropout` is not mapped (it stays Keras's layer, the
    identity at inference, so Monte Carlo samples do not draw it): sampling
    it would need a kreg AlphaDropout that sets dropped units to SELU's
    saturation value `alpha' = -1.7581` and applies the affine correction
    `a (x m + alpha' (1 - m)) + b`, `a = ((1 - rate) (1 + rate alpha'^2))^-1/2`,
    `b = -a alpha' rate`, drawn per row or per sample as the other layers.

    Args:
        model: a built Sequential or Functional model.
        gaussian_noise: bool, default False. Also replace
            `keras.layers.GaussianNoise`.

    Returns:
        A new model of the same kind.

    Example:

    >>> import keras, kreg
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                       keras.layers.Dropout(0.3), keras.layers.Dense(2)])
    >>> converted = kreg.convert_dropout(m)
    >>> type(converted.layers[1]).__module__.split(".")[0], converted.layers[1].rate
    ('kreg', 0.3)
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.GaussianNoise(0.1),
    ...                       keras.layers.Dense(8), keras.layers.GaussianDropout(0.2)])
    >>> [type(layer).__name__ for layer in kreg.convert_dropout(m).layers]
    ['GaussianNoise', 'Dense', 'GaussianDropout']
    >>> [type(layer).__module__.split(".")[0] for layer in
    ...  kreg.convert_dropout(m, gaussian_noise=True).layers]
    ['kreg', 'keras', 'kreg']

    References:
        Gal & Ghahramani, ICML 2016 (MC dropout on a trained network);
        Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017
        (alpha dropout).
    """
    gaussian_noise = v.check_bool("convert_dropout", "gaussian_noise",
                                  gaussian_noise)
    if not isinstance(model, keras.Model):
        raise v.invalid_type("convert_dropout", "model",
                             "a Sequential or Functional Keras model", model)
    is_functional = type(model).__name__ == "Functional"
    if not (isinstance(model, keras.Sequential) or is_functional):
        raise TypeError(
            "Invalid value for argument `model` of convert_dropout: expected a "
            "Sequential or Functional model; a subclassed model's layers are "
            "created in its own __init__, so kreg cannot rebuild it. Replace "
            "keras.layers.Dropout with kreg.layers.Dropout in your class, build "
            "it, then copy the weights with new_model.set_weights("
            f"model.get_weights()). Received: model={type(model).__name__}")
    if not model.built:
        raise v.invalid_value("convert_dropout", "model",
                              "a built model (call it or build it first)", model)

    def clone(layer):
        new = _replacement(layer, gaussian_noise)
        if new is not None:
            return new
        return layer.__class__.from_config(layer.get_config())

    converted = keras.models.clone_model(model, clone_function=clone, recursive=True)
    converted.set_weights(model.get_weights())
    return converted
