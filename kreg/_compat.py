"""Every private Keras API kreg uses, in one place.

Keras's public API does not offer everything kreg needs: walking nested
layers, a Functional model's graph by depth, a tensor's producing layer, a
metric's declared direction, the backend's seed dtype, the SavedModel input
signature. Each such use goes through a function here, so that a Keras
release that moves one breaks this module only, and loudly:
`tests/test_compat.py` exercises every function on the installed Keras, and
at run time a missing API raises `KerasCompatError` naming it and the Keras
version, instead of kreg computing something wrong.

Checked on Keras 3.15 (TensorFlow, JAX and PyTorch backends).
"""

import importlib

import keras

#: The private APIs reached through this module (for the test's inventory).
PRIVATE_APIS = (
    "keras.Layer._flatten_layers",
    "keras.Layer._trainable_variables / _non_trainable_variables",
    "keras.src.backend.random_seed_dtype",
    "keras.src.models.functional.Functional",
    "Functional._nodes_by_depth",
    "KerasTensor._keras_history",
    "keras.metrics.Metric._direction",
    "keras.src.utils.io_utils.print_msg",
    "keras.src.export.export_utils.get_input_signature / make_tf_tensor_spec",
    "keras.Layer._build_at_init",
    "keras.random.SeedGenerator._initial_seed",
    "torch._dynamo.disable",
)


class KerasCompatError(RuntimeError):
    """A private Keras API that kreg relies on is missing from this Keras."""


def _missing(api, error=None):
    detail = f" ({error})" if error else ""
    return KerasCompatError(
        f"kreg needs Keras's private `{api}`, which Keras {keras.__version__} "
        "does not provide (kreg is tested with Keras 3.15); please report "
        f"this kreg/Keras combination.{detail}")


def _private(module, name):
    """`module.name` from Keras's private tree, or `KerasCompatError`."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise _missing(f"{module}.{name}", error) from error


def flatten_layers(layer, include_self=True, recursive=True):
    """Every layer tracked by `layer` (nested models included), in order."""
    method = getattr(layer, "_flatten_layers", None)
    if method is None:
        raise _missing("Layer._flatten_layers")
    return list(method(include_self=include_self, recursive=recursive))


def own_variables(layer):
    """The variables a layer created itself (not those of nested layers)."""
    try:
        return list(layer._trainable_variables) + list(layer._non_trainable_variables)
    except AttributeError as error:
        raise _missing("Layer._trainable_variables", error) from error


def random_seed_dtype():
    """The backend's dtype of `keras.random` seeds (uint32 on JAX)."""
    return _private("keras.src.backend", "random_seed_dtype")()


def functional_class():
    """Keras's `Functional` model class."""
    return _private("keras.src.models.functional", "Functional")


def is_plain_functional(model):
    """True for a Functional model whose `call` is Functional's own."""
    functional = functional_class()
    return isinstance(model, functional) and type(model).call is functional.call


def nodes_by_depth(graph):
    """A Functional model's nodes as `{depth: [node, ...]}` (inputs deepest)."""
    nodes = getattr(graph, "_nodes_by_depth", None)
    if nodes is None:
        raise _missing("Functional._nodes_by_depth")
    return nodes


def keras_history(tensor):
    """`(operation, tensor_index)` that produced a symbolic tensor, or None."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    return history.operation, history.tensor_index


def metric_direction(metric):
    """A metric's declared direction: "up", "down" or None (undeclared)."""
    return getattr(metric, "_direction", None)


def print_msg(message):
    """Print as Keras's callbacks do (its io_utils honours its logging setup)."""
    _private("keras.src.utils.io_utils", "print_msg")(message)


def export_input_signature(model):
    """The input signature Keras's own export infers for `model` (TensorFlow)."""
    return _private("keras.src.export.export_utils", "get_input_signature")(model)


def make_tf_tensor_spec(spec):
    """A `tf.TensorSpec` from a Keras `InputSpec`, shape or spec (TensorFlow)."""
    return _private("keras.src.export.export_utils", "make_tf_tensor_spec")(spec)


def build_at_init(layer):
    """Mark a layer without weights as built at construction, as Keras's own
    layers do (`Layer._build_at_init`: built only when `build` is Keras's)."""
    method = getattr(layer, "_build_at_init", None)
    if method is None:
        raise _missing("Layer._build_at_init")
    method()


class FixedSeed(keras.random.SeedGenerator):
    """A seed "generator" that always returns one given seed tensor.

    `keras.random.*` takes an int or a `SeedGenerator` as `seed` (on
    TensorFlow), so a seed computed at run time is wrapped in this. It skips
    `SeedGenerator.__init__` on purpose (that would create a state variable)
    and sets the private `_initial_seed` instead: Keras's torch backend takes
    an unseeded fast path when a generator's `_initial_seed` is None, and this
    one is always seeded. Subclasses may override `next`.

    Args:
        seed_tensor: an integer tensor of shape (2,), the seed to return.
    """

    def __init__(self, seed_tensor):  # noqa: D107 - no super().__init__ on purpose
        self._seed_tensor = seed_tensor
        self._initial_seed = seed_tensor

    def next(self, ordered=True):
        return self._seed_tensor


def torch_compile_disable(function):
    """`function`, left out of `torch.compile`'s tracing (`torch._dynamo.disable`)."""
    import torch

    try:
        disable = torch._dynamo.disable
    except AttributeError as error:
        raise _missing("torch._dynamo.disable", error) from error
    return disable(function)
