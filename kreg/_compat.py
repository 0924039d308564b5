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


# -- Appended for `kreg.convert_dropout` (issue 25): a layer's whole state,
# and the keyword arguments of a Functional graph's calls.
PRIVATE_APIS += (
    "keras.src.saving.saving_lib._save_state / _load_state / H5IOStore / DiskIOStore",
    "keras.src.ops.node.Node.arguments",
    "keras.layers.Lambda._output_shape",
)


def copy_layer_state(source, target):
    """Carry `source`'s whole state to `target`, as a `.keras` save and load do.

    That is every variable (`save_own_variables` / `load_own_variables`,
    so a layer's own hook such as `Normalization.finalize_state` runs) and
    every asset (`save_assets` / `load_assets`: the vocabularies of
    `StringLookup`, `IntegerLookup` and `TextVectorization`), of the layer
    and of every sublayer it tracks. `target` must be a built layer of the
    same structure (a clone from `get_config`). Nothing touches the disk but
    a temporary folder for the assets, removed on return.
    """
    import io
    import warnings
    from contextlib import closing

    module = "keras.src.saving.saving_lib"
    save_state = _private(module, "_save_state")
    load_state = _private(module, "_load_state")
    h5_store = _private(module, "H5IOStore")
    disk_store = _private(module, "DiskIOStore")
    buffer = io.BytesIO()
    assets = disk_store("assets", mode="w")
    # Keras's own deprecation notices (h5py, NumPy 2) are not the user's.
    with warnings.catch_warnings(), closing(assets):
        warnings.simplefilter("ignore", DeprecationWarning)
        with closing(h5_store(buffer, mode="w")) as weights:
            save_state(source, weights_store=weights, assets_store=assets,
                       inner_path="", visited_saveables=set())
        with closing(h5_store(buffer, mode="r")) as weights:
            load_state(target, weights_store=weights,
                       assets_store=disk_store(assets.working_dir, mode="r"),
                       inner_path="", visited_saveables=set())


def node_call_kwargs(node):
    """The keyword arguments a Functional graph's node was called with
    (e.g. `{"training": True}` for `Dropout(0.5)(x, training=True)`)."""
    arguments = getattr(node, "arguments", None)
    kwargs = getattr(arguments, "kwargs", None)
    if kwargs is None:
        raise _missing("Node.arguments.kwargs")
    return dict(kwargs)


def lambda_output_shape(layer):
    """The `output_shape` a `keras.layers.Lambda` was built with (a shape,
    a callable or None), as given, not as its config serializes it."""
    if not isinstance(layer, keras.layers.Lambda) or not hasattr(layer, "_output_shape"):
        raise _missing("Lambda._output_shape")
    return layer._output_shape


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
