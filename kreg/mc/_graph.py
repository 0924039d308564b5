"""Split a model into a deterministic prefix and a stochastic suffix.

Layers whose inputs do not depend on any sampling layer give the same output
in every Monte Carlo sample, so the predictor computes them once per input and
tiles only the rest. For Sequential and Functional models the split is made on
the functional graph: the *frontier* is the set of deterministic tensors that
feed a node depending on a sampling layer. Subclassed models are not split.
"""

import keras

from kreg import _compat
from kreg.layers.base import StochasticLayer


def sampling_layers(model):
    """The kreg stochastic layers (rate > 0) in `model`, in a stable order."""
    layers = _compat.flatten_layers(model)
    return [layer for layer in layers
            if isinstance(layer, StochasticLayer) and layer.is_stochastic]


def _contains_sampling(operation):
    if isinstance(operation, keras.layers.Layer):
        return bool(sampling_layers(operation))
    return False


def _functional_view(model):
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


def split_model(model):
    graph = _functional_view(model)
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
            sampled = _contains_sampling(op) or any(
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
