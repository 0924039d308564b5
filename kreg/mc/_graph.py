"""Split a model into a deterministic prefix and a stochastic suffix.

Layers whose inputs do not depend on any sampling layer give the same output
in every Monte Carlo sample, so the predictor computes them once per input and
tiles only the rest. For Sequential and Functional models the split is made on
the functional graph: the *frontier* is the set of deterministic tensors that
feed a node depending on a sampling layer. Subclassed models are not split.
"""

import keras

from kreg import _compat
from kreg.layers import _keras_noise
from kreg.layers.base import StochasticLayer


def is_kreg_sampling(layer):
    """True for a kreg stochastic layer that draws (rate > 0)."""
    return isinstance(layer, StochasticLayer) and layer.is_stochastic


def sampling_layers(model, layers=None):
    """The layers (rate > 0) that Monte Carlo samples, in a stable order.

    kreg's stochastic layers, and Keras's noise layers and recurrent layers
    with dropout (`kreg.layers._keras_noise`), wherever they sit: in nested
    models and inside other layers (`MultiHeadAttention`, custom layers,
    keras-hub blocks). `layers`: the model's flattened layers, when at hand.
    """
    layers = _compat.flatten_layers(model) if layers is None else layers
    return [layer for layer in layers
            if is_kreg_sampling(layer) or _keras_noise.is_sampled(layer)]


def unsampled_noise(model, layers=None):
    """Layers that draw noise of their own that Monte Carlo cannot sample (`layers`: as above).

    A layer that is neither kreg's nor Keras's and holds a
    `keras.random.SeedGenerator` itself draws random numbers of its own
    (a custom noise layer); kreg cannot make it sample, so its noise would
    silently stay off. (Layers that hold Keras's Dropout as a sublayer are
    fine: the sublayer is sampled.)
    """
    found = []
    for layer in _compat.flatten_layers(model) if layers is None else layers:
        module = type(layer).__module__
        if (module.startswith(("keras.", "kreg.")) or isinstance(layer, StochasticLayer)
                or isinstance(layer, _keras_noise.NOISE_LAYERS)):
            continue  # kreg's, Keras's, or a subclass of a Keras noise layer
        if any(isinstance(value, keras.random.SeedGenerator)
               for value in vars(layer).values()):
            found.append(layer)
    return found


def _contains_sampling(operation, sampling):
    """True when `operation` is or holds one of the layers `sampling` (ids)."""
    if isinstance(operation, keras.layers.Layer):
        return any(id(layer) in sampling for layer in _compat.flatten_layers(operation))
    return False


def functional_view(model):
    """A Functional over the same layers, or None for subclassed models."""
    if isinstance(model, keras.Sequential):
        try:
            return keras.Model(model.inputs, model.outputs)
        except (AttributeError, ValueError, TypeError):
            return None
    if _compat.is_plain_functional(model):
        return model
    return None


class Split:
    """`prefix(x) -> list of frontier tensors`, `suffix(frontier) -> output`.

    `prefix` is None when there is nothing to compute once (the first layer
    samples, or the model is subclassed); then `suffix` is the model itself
    and takes the model's inputs.
    """

    def __init__(self, prefix, suffix, prefix_layers):
        self.prefix = prefix
        self.suffix = suffix
        self.prefix_layers = prefix_layers


def split_model(model, sampling=None):
    """Split `model`; `sampling`: the layers that sample (default: `sampling_layers`)."""
    sampling = {id(layer) for layer in (sampling_layers(model) if sampling is None
                                        else sampling)}
    graph = functional_view(model)
    if graph is None:
        return Split(None, model, [])
    nodes = _compat.nodes_by_depth(graph)
    depths = sorted(nodes, reverse=True)
    stochastic_tensors = set()
    frontier = []
    frontier_ids = set()
    prefix_layers = []
    for depth in depths:
        for node in nodes[depth]:
            op = node.operation
            inputs = list(node.input_tensors)
            sampled = _contains_sampling(op, sampling) or any(
                id(t) in stochastic_tensors for t in inputs)
            if sampled:
                for t in node.outputs:
                    stochastic_tensors.add(id(t))
                for t in inputs:
                    if id(t) not in stochastic_tensors and id(t) not in frontier_ids:
                        frontier.append(t)
                        frontier_ids.add(id(t))
            elif not isinstance(op, keras.layers.InputLayer):
                prefix_layers.append(op)
    outputs = list(graph.outputs)
    for t in outputs:
        if id(t) not in stochastic_tensors and id(t) not in frontier_ids:
            frontier.append(t)
            frontier_ids.add(id(t))
    input_ids = {id(t) for t in graph.inputs}
    if not prefix_layers or all(id(t) in input_ids for t in frontier):
        return Split(None, model, [])
    prefix = keras.Model(graph.inputs, frontier, name=f"{model.name}_mc_prefix")
    suffix = keras.Model(frontier, graph.outputs, name=f"{model.name}_mc_suffix")
    return Split(prefix, suffix, prefix_layers)
