"""Swap Keras's dropout layers for kreg's, keeping the model exactly.

`convert_dropout` clones the model with kreg's noise layers in place of
Keras's, then gives every other cloned layer its original's whole state the
way a `.keras` file carries it (variables through `save_own_variables` /
`load_own_variables`, vocabularies and other assets through `save_assets` /
`load_assets`, with each layer's own hooks such as
`Normalization.finalize_state`), and checks the result: the converted model's
deterministic outputs equal the original's bit for bit on a probe batch, or
it refuses, naming the layer whose state did not carry.
"""

import numbers
import warnings

import keras
import numpy as np

from kreg import _compat
from kreg import _validation as v
from kreg._validation import Shown
from kreg.layers._keras_noise import kreg_twin
from kreg.layers.base import StochasticLayer
from kreg.mc import _inputs

# Keras's layers that draw noise in training (SpatialDropout* subclass Dropout).
_KERAS_NOISE = (keras.layers.Dropout, keras.layers.GaussianDropout,
                keras.layers.GaussianNoise, keras.layers.AlphaDropout)


def _replacement(layer, gaussian_noise):
    return kreg_twin(layer, gaussian_noise=gaussian_noise, subclasses=False)


def _is_noise(layer):
    """True when `layer` is, or holds, a layer that draws noise in training:
    kreg's stochastic layers, Keras's noise layers and layers with a
    `dropout` / `recurrent_dropout` rate (recurrent layers, attention)."""
    for sub in _compat.flatten_layers(layer):
        if isinstance(sub, StochasticLayer):
            if sub.is_stochastic:
                return True
        elif isinstance(sub, _KERAS_NOISE):
            if _positive(getattr(sub, "rate", None)) or _positive(getattr(sub, "stddev", None)):
                return True
        elif _positive(getattr(sub, "dropout", None)) or _positive(
                getattr(sub, "recurrent_dropout", None)):
            return True
    return False


def _positive(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0


def _graphs(model):
    """Every plain Functional graph in `model` (itself and nested models)."""
    functional = _compat.functional_class()
    return [layer for layer in _compat.flatten_layers(model)
            if isinstance(layer, functional) and not isinstance(layer, keras.Sequential)]


def forced_training_layers(model):
    """The noise layers a Functional graph calls with `training=True`.

    A graph built with `keras.layers.Dropout(0.5)(x, training=True)` records
    the flag on that call, but Keras 3 overrides it with the model's own
    `training` value whenever the model gets one: `model.predict`,
    `model.evaluate` and `model(x, training=False)` run the layer in
    inference mode, and only `model(x)` (no `training`) samples it. A
    hand-written Monte Carlo loop over `predict` then returns identical
    passes. `kreg.convert_dropout` warns about these layers.

    Args:
        model: a Keras model (Sequential and subclassed models have no such
            calls of their own; Functional models nested in them are read).

    Returns:
        The layers (kreg's stochastic layers, Keras's noise layers, and
        layers holding them or with a `dropout`/`recurrent_dropout` rate, such
        as LSTM or MultiHeadAttention) called with `training=True`, each once,
        in graph order.

    Example:

    >>> import keras, kreg
    >>> x = keras.Input((4,))
    >>> h = keras.layers.Dropout(0.5, name="always")(keras.layers.Dense(8)(x),
    ...                                               training=True)
    >>> model = keras.Model(x, keras.layers.Dense(1)(h))
    >>> [layer.name for layer in kreg.mc.convert.forced_training_layers(model)]
    ['always']
    """
    found, seen = [], set()
    for graph in _graphs(model):
        nodes = _compat.nodes_by_depth(graph)
        for depth in sorted(nodes, reverse=True):
            for node in nodes[depth]:
                layer = node.operation
                flag = _compat.node_call_kwargs(node).get("training")
                if (isinstance(flag, (bool, np.bool_)) and flag
                        and id(layer) not in seen and isinstance(layer, keras.layers.Layer)
                        and _is_noise(layer)):
                    seen.add(id(layer))
                    found.append(layer)
    return found


def forced_training_message(layers):
    """The one-line warning about `forced_training_layers(model)`."""
    names = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in layers)
    return (
        f"The model calls {names} with training=True in its graph. Keras 3's "
        "predict, evaluate and model(x, training=False) ignore that flag and run "
        "these layers in inference mode (only model(x) samples them), so a "
        "hand-written Monte Carlo loop over model.predict would return identical "
        "passes; kreg.MCPredictor samples them.")


def _copy_layer(layer):
    """A fresh layer from `layer`'s config (its state is carried afterwards).

    A `Lambda` keeps its live function: its config holds the function's
    bytecode, which Keras refuses to load in safe mode, and which would lose
    the function's module globals.
    """
    if type(layer) is not keras.layers.Lambda:
        return layer.__class__.from_config(layer.get_config())
    config = layer.get_config()
    config.update(function=layer.function, mask=layer.mask, arguments=layer.arguments,
                  output_shape=_compat.lambda_output_shape(layer))
    return keras.layers.Lambda(**config)


def _describe_model(model):
    return Shown(f"<{type(model).__name__} name={model.name!r}>")


def _refusal(model, layer, why):
    return v.invalid_value(
        "convert_dropout", "model",
        "a model whose every layer's state can be copied (variables, assets "
        "and config, as a .keras file carries them); the state of layer "
        f"{layer.name!r} ({type(layer).__name__}) is not: {why}. The converted "
        "model would predict differently, so kreg refuses; pass the model itself "
        "to kreg.MCPredictor, which samples Keras's noise layers in place",
        _describe_model(model))


def _rebuilt(layer):
    """True when `clone_model(recursive=True)` rebuilt `layer` layer by layer."""
    return isinstance(layer, (keras.Sequential, _compat.functional_class()))


def _one_line(error):
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def _carry(model, original, copy, replaced):
    """Give every cloned layer of `copy` its original's whole state."""
    if _rebuilt(original):
        if len(original.layers) != len(copy.layers):  # pragma: no cover - Keras's clone
            raise _refusal(model, original, "its copy has other layers")
        for old, new in zip(original.layers, copy.layers):
            _carry(model, old, new, replaced)
        return
    if id(copy) in replaced or isinstance(original, keras.layers.InputLayer):
        return
    try:
        _compat.copy_layer_state(original, copy)
    except _compat.KerasCompatError:
        raise
    except Exception as error:  # any layer's own save/load hook may fail
        raise _refusal(model, original, f"copying it failed ({_one_line(error)})") from error
    old_weights, new_weights = original.get_weights(), copy.get_weights()
    if len(old_weights) != len(new_weights) or not all(
            _same(a, b) for a, b in zip(old_weights, new_weights)):
        raise _refusal(model, original, "its copy's weights differ after loading")
    if callable(getattr(original, "get_vocabulary", None)):
        if list(original.get_vocabulary()) != list(copy.get_vocabulary()):
            raise _refusal(model, original, "its vocabulary does not survive a "
                           "save and load (a token with a line break?)")


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _probe(model):
    """A small fixed batch of the model's declared inputs, or None."""
    known = _inputs.symbolic(model, "inputs")
    if known is None:  # pragma: no cover - convert_dropout takes built models
        return None
    rng = np.random.default_rng(0)
    flat = []
    for tensor in known[0]:
        shape = tuple(d if d is not None else 2 if i == 0 else 3
                      for i, d in enumerate(tensor.shape))
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if dtype == "string":
            import tensorflow as tf  # string inputs exist on TensorFlow only

            flat.append(tf.constant(np.full(shape, "kreg", dtype=object)))
        elif keras.backend.is_float_dtype(dtype):
            flat.append(rng.standard_normal(shape).astype(dtype))
        else:
            flat.append(np.zeros(shape, dtype=dtype))
    return keras.tree.pack_sequence_as(known[1], flat)


def _outputs(model, x):
    return [keras.ops.convert_to_numpy(t)
            for t in keras.tree.flatten(model(x, training=False))]


def _check_same(model, converted):
    """Refuse when `converted` predicts otherwise than `model` on a probe.

    The probe is a fixed batch of the declared inputs. A model that is not
    deterministic at inference, or that cannot run on the probe, is not
    checked this way (its state was still copied in full).
    """
    try:
        probe = _probe(model)
        if probe is None:
            return
        first, second = _outputs(model, probe), _outputs(model, probe)
    except Exception:  # inputs kreg cannot invent; not checked
        return
    if not all(_same(a, b) for a, b in zip(first, second)):
        return
    try:
        got = _outputs(converted, probe)
    except Exception as error:
        raise _refusal(model, model, f"its copy fails where it runs ({_one_line(error)})") \
            from error
    if all(_same(a, b) for a, b in zip(first, got)):
        return
    raise _refusal(model, _first_differing(model, converted, probe) or model,
                   "its copy computes other outputs from the same inputs")


def _node_outputs(model):
    """`[(layer, output tensors)]` of a model's calls, in graph order."""
    view = model if not isinstance(model, keras.Sequential) else keras.Model(
        model.inputs, model.outputs)
    nodes = _compat.nodes_by_depth(view)
    calls = []
    for depth in sorted(nodes, reverse=True):
        for node in nodes[depth]:
            if not isinstance(node.operation, keras.layers.InputLayer):
                calls.append((node.operation, list(node.outputs)))
    return view, calls


def _first_differing(model, converted, probe):
    """The first layer (in graph order) whose output differs, or None."""
    try:
        view, calls = _node_outputs(model)
        new_view, new_calls = _node_outputs(converted)
        if [c[0].name for c in calls] != [c[0].name for c in new_calls]:
            return None
        old = keras.Model(view.inputs, [t for _, ts in calls for t in ts])
        new = keras.Model(new_view.inputs, [t for _, ts in new_calls for t in ts])
        flat = keras.tree.flatten(probe)
        owners = [layer for layer, ts in calls for _ in ts]
        for layer, a, b in zip(owners, _outputs(old, flat), _outputs(new, flat)):
            if not _same(a, b):
                return layer
    except Exception:  # naming is best effort; the refusal stands
        return None
    return None  # pragma: no cover - the whole models differed


def convert_dropout(model, *, gaussian_noise=False):
    """Return a copy of `model` with kreg's noise layers in place of Keras's.

    `keras.layers.Dropout` and `SpatialDropout1D/2D/3D` become
    `kreg.layers.Dropout` with the same rate and noise shape (one mask per
    channel for the spatial ones), and `keras.layers.GaussianDropout`
    becomes `kreg.layers.GaussianDropout` with the same rate. With
    `gaussian_noise=True`, `keras.layers.GaussianNoise` (additive noise,
    often a data augmentation or input corruption rather than a
    regularizer of the network's units) becomes `kreg.layers.GaussianNoise`
    with the same standard deviation.
    Every other layer is cloned and gets its original's whole state, as a
    `.keras` file carries it: weights, the statistics of an adapted
    `Normalization`, the vocabularies of `StringLookup`, `IntegerLookup` and
    `TextVectorization`, those of sublayers and nested models. The
    converted model's deterministic `predict` equals the original's, bit for
    bit: kreg checks it on a probe batch of the declared inputs, and where a
    layer keeps state that a `.keras` file would not carry (a Python
    attribute set by a custom `adapt`), it refuses with a `ValueError`
    naming that layer, rather than return a different model. The original
    is not modified.

    Monte Carlo does not need it: `kreg.MCPredictor` and `kreg.export`
    sample Keras's noise layers in place (`kreg.layers._keras_noise`). Convert
    to get kreg's layers themselves: their seed state saved with the model,
    `scaling="test_time"`, kreg's packed masks in training.

    A noise layer that the graph calls with `training=True` (e.g.
    `keras.layers.Dropout(0.5)(x, training=True)`) gets a warning: Keras 3's
    `predict` ignores that flag (see `forced_training_layers`).

    `keras.layers.AlphaDropout` is not mapped (kreg has no AlphaDropout);
    Monte Carlo samples it in place with Keras's formula.

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

    forced = forced_training_layers(model)
    if forced:
        warnings.warn(forced_training_message(forced), UserWarning, stacklevel=2)
    replaced = set()

    def clone(layer):
        new = _replacement(layer, gaussian_noise)
        if new is None:
            return _copy_layer(layer)
        replaced.add(id(new))
        return new

    converted = keras.models.clone_model(model, clone_function=clone, recursive=True)
    _carry(model, model, converted, replaced)
    _check_same(model, converted)
    return converted
