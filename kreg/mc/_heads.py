"""How to read each output of a model for Monte Carlo prediction.

One fact, written once and used by `MCPredictor` and `kreg.export`: output k
of a model is read from the layer that produces *that* output. A softmax or
sigmoid layer (or activation) means classification; a linear output is a
regression, unless it is a logits output (`from_logits=True`, or read from
the compiled loss's `from_logits`), which is classification with its samples
passed through softmax (sigmoid for one unit or a binary loss) before they
are averaged.
"""

import warnings

import keras

from kreg import _compat
from kreg import _validation as v
from kreg.mc._inputs import symbolic

TASKS = ("auto", "classification", "regression")


def probability_tolerances(dtype=None):
    """`(range, sum)`: how far probabilities in `dtype` may stray from [0, 1] and 1.

    Rounding in the samples' dtype: 1e-6 and 1e-3 in float32 and float64
    (and when unknown); a few units in the last place for a float16 or
    bfloat16 softmax (their spacing near 1 is 2**-10 and 2**-7).
    """
    return {"float16": (2e-3, 1e-2), "bfloat16": (8e-3, 4e-2)}.get(
        str(dtype), (1e-6, 1e-3))


class Head:
    """How one output is read: its name, task, activation and from_logits.

    Attributes:
        name: the output's name (`model.output_names`), or `output_k`.
        task: `"classification"` or `"regression"`.
        activation: `"softmax"` or `"sigmoid"` (how classification outputs
            are read; `"softmax"` for regression, unused).
        from_logits: bool. The model outputs logits; each sample goes through
            `activation` before averaging.
        dtype: str, the output's dtype ("float32" when unknown).
    """

    def __init__(self, name, task, activation, from_logits, dtype="float32"):
        self.name = name
        self.task = task
        self.activation = activation
        self.from_logits = from_logits
        self.dtype = dtype or "float32"

    @property
    def tolerances(self):
        """`probability_tolerances` of the output's dtype."""
        return probability_tolerances(self.dtype)

    def __repr__(self):
        return (f"Head(name={self.name!r}, task={self.task!r}, "
                f"activation={self.activation!r}, from_logits={self.from_logits})")


def output_tensors(model):
    """`(names, flat symbolic outputs, structure)`, or None (subclassed)."""
    known = symbolic(model, "outputs")
    if known is None:
        return None
    flat, structure = known
    if isinstance(structure, dict):  # predict returns this dict: its keys
        names = output_names(structure, len(flat))
    else:
        names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(flat):
        names = [f"output_{k}" for k in range(len(flat))]
    return names, flat, structure


def _producer(tensor):
    """The layer that computes `tensor`, looking inside nested models."""
    history = _compat.keras_history(tensor)
    while history is not None:
        op, index = history
        if isinstance(op, keras.Model):
            try:
                inner = keras.tree.flatten(op.outputs)[index]
            except (AttributeError, ValueError, IndexError):
                return _last_layer(op)
            history = _compat.keras_history(inner)
            continue
        return op
    return None


def _last_layer(model):
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    while isinstance(layer, keras.Model) and getattr(layer, "layers", None):
        layer = layer.layers[-1]
    return layer


def activation_of(layer):
    """'softmax', 'sigmoid' or None, read off the layer producing an output."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    for name in ("softmax", "sigmoid"):
        if act is keras.activations.get(name):
            return name
    return None


def _loss_for(model, names, k):
    """The compiled loss of output k, or None."""
    loss = getattr(model, "loss", None)
    if loss is None:
        return None
    if isinstance(loss, dict):
        return loss.get(names[k])
    if isinstance(loss, (list, tuple)):
        return loss[k] if k < len(loss) else None
    return loss


def _is_binary(loss):
    name = loss if isinstance(loss, str) else (
        getattr(loss, "name", None) or type(loss).__name__)
    return loss is not None and "binary" in str(name).lower()


def per_output(owner, name, value, names, check):
    """Broadcast a setting to every output, or read a list/dict of one per output."""
    if isinstance(value, dict):
        if sorted(value) != sorted(names):
            raise v.invalid_value(owner, name, f"a dict keyed by the output names {names}",
                                  value)
        return [check(value[n]) for n in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise v.invalid_value(owner, name,
                                  f"one value per output ({len(names)}: {names})", value)
        return [check(x) for x in value]
    return [check(value)] * len(names)


def check_settings(owner, task, from_logits):
    """Validate the `task` and `from_logits` arguments of a predictor (see `MCPredictor`)."""
    if not isinstance(task, (str, list, tuple, dict)):
        raise v.invalid_type(owner, "task", "one of 'auto', 'classification', "
                             "'regression' (or a list/dict, one per output)", task)
    if isinstance(task, str):
        v.check_option(owner, "task", task, TASKS)
    if not isinstance(from_logits, (list, tuple, dict)):
        check_from_logits(owner)(from_logits)


def check_task(owner):
    return lambda t: v.check_option(owner, "task", t, TASKS)


def check_from_logits(owner):
    def check(value):
        if value is not None and not isinstance(value, bool):
            raise v.invalid_type(owner, "from_logits", "None, True or False "
                                 "(or a list/dict of them, one per output)", value)
        return value
    return check


def _known_loss(loss):
    """True for a loss that tells the task: a Keras loss (name, class, function)."""
    if loss is None:
        return False
    if isinstance(loss, str):
        try:
            keras.losses.get(loss)
        except (ValueError, TypeError):
            return False
        return True
    target = loss if callable(loss) and not isinstance(loss, keras.losses.Loss) \
        else type(loss)
    return str(getattr(target, "__module__", "")).startswith("keras.")


def resolve(owner, model, names, tasks, from_logits, layers, units, dtypes=None):
    """The `Head` of every output.

    An output whose task is read, not given (`task="auto"`, `from_logits`
    None), from a linear layer while the model's loss does not tell (the
    model is not compiled, was loaded with `compile=False`, or has a custom
    loss) is averaged as a regression, with one warning that says so and how
    to override it: it may hold logits.

    Args:
        names: output names; tasks, from_logits: one setting per output (see
            `per_output`); layers: the layer producing each output (or None);
        units: the size of each output's last axis (or None when unknown);
        dtypes: the dtype of each output (None: unknown).
    """
    heads = []
    guessed = []
    dtypes = dtypes or [None] * len(names)
    for k, name in enumerate(names):
        act = activation_of(layers[k]) if layers[k] is not None else None
        loss = _loss_for(model, names, k)
        logits = from_logits[k]
        if logits is None:
            logits = bool(getattr(loss, "from_logits", False))
            source = "the compiled loss says from_logits=True"
        else:
            source = "from_logits=True was passed"
        if logits and act is not None:
            raise v.invalid_value(
                owner, "from_logits",
                f"False for output {name!r}: it ends in a {act} (probabilities, "
                f"not logits), but {source}", True)
        if logits and tasks[k] == "regression":
            raise v.invalid_value(
                owner, "task",
                f"'auto' or 'classification' for output {name!r}, whose logits "
                "are read as class scores", "regression")
        if logits:
            one = units[k] == 1
            act = "sigmoid" if (one or _is_binary(loss)) else "softmax"
        task = tasks[k]
        if task == "auto":
            task = "classification" if act else "regression"
            if not act and from_logits[k] is None and not _known_loss(loss):
                guessed.append(f"{name!r} ({units[k]} units)")
        heads.append(Head(name, task, act or "softmax", bool(logits), dtypes[k]))
    if guessed:
        warnings.warn(
            f"{owner}: output {', '.join(guessed)} ends in a linear layer and the "
            "model's loss does not say what it holds (the model is not compiled, "
            "was loaded with compile=False, or has a custom loss), so it is "
            "averaged as a regression. If it holds logits, pass task="
            "'classification', from_logits=True; pass task='regression' to "
            "confirm (and silence this).", UserWarning, stacklevel=5)
    return heads


def to_probabilities(outputs, heads):
    """Apply each logits head's softmax/sigmoid to a flat list of outputs."""
    out = []
    for tensor, head in zip(outputs, heads):
        if head.from_logits:
            fn = keras.ops.sigmoid if head.activation == "sigmoid" else keras.ops.softmax
            tensor = fn(tensor)
        out.append(tensor)
    return out


def model_heads(owner, model, task, from_logits):
    """`(heads, structure)` for a model with known outputs, else `(None, None)`."""
    known = output_tensors(model)
    if known is None:
        return None, None
    names, flat, structure = known
    tasks = per_output(owner, "task", task, names, check_task(owner))
    logits = per_output(owner, "from_logits", from_logits, names, check_from_logits(owner))
    layers = [_producer(t) for t in flat]
    units = [t.shape[-1] if len(t.shape) > 1 else 1 for t in flat]
    dtypes = [str(t.dtype) for t in flat]
    return resolve(owner, model, names, tasks, logits, layers, units, dtypes), structure


def output_key(name):
    """A model output's name as a signature key prefix (`[A-Za-z0-9_]` only)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in str(name))


def output_names(structure, count):
    """The names of a structure's outputs: dict keys (paths), else `output_k`."""
    if isinstance(structure, dict):
        return ["/".join(str(p) for p in path)
                for path, _ in keras.tree.flatten_with_path(structure)]
    return [f"output_{k}" for k in range(count)]


def late_heads(owner, model, task, from_logits, outputs, structure=None):
    """Heads of a subclassed model, from its first (flat) outputs."""
    names = output_names(structure, len(outputs))
    if len(outputs) > 1 and (task == "auto" or isinstance(task, str) and task == "auto"):
        raise v.invalid_value(
            owner, "task",
            f"one task per output for a subclassed model with {len(outputs)} "
            "outputs (its layers do not say which layer produces which output): "
            "a list such as ['classification', 'regression']", task)
    tasks = per_output(owner, "task", task, names, check_task(owner))
    logits = per_output(owner, "from_logits", from_logits, names, check_from_logits(owner))
    layers = [_last_layer(model)] if len(outputs) == 1 else [None] * len(outputs)
    units = [t.shape[-1] if len(t.shape) > 1 else 1 for t in outputs]
    dtypes = [keras.backend.standardize_dtype(t.dtype) for t in outputs]
    return resolve(owner, model, names, tasks, logits, layers, units, dtypes)
