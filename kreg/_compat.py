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


def set_instance_method(obj, name, function):
    """Make `obj.name` resolve to `function` (an instance attribute).

    Keras looks `call` (and an RNN cell's mask methods) up on the instance,
    so an instance attribute replaces the class's method for this object
    only. Set with `object.__setattr__`: Keras's attribute tracking (and
    torch's module registry) must not see it. Returns what the instance held
    under `name` before (None: nothing, the class's method applied).
    """
    previous = obj.__dict__.get(name)
    object.__setattr__(obj, name, function)
    return previous


def restore_instance_method(obj, name, previous):
    """Undo `set_instance_method` (`previous`: what it returned)."""
    if previous is None:
        object.__delattr__(obj, name)
    else:
        object.__setattr__(obj, name, previous)


def forces_training(node):
    """True when a Functional node's layer was called with `training=True`."""
    arguments = getattr(node, "arguments", None)
    kwargs = getattr(arguments, "kwargs", None)
    if kwargs is None:
        raise _missing("Node.arguments.kwargs")
    return kwargs.get("training") is True
