"""Inputs of `MCPredictor`, in every form `model.predict` takes them.

`batches(owner, model, x, y, rows)` turns x (and y) into a stream of
`(xs, ys)` chunks of at most `rows` rows, with `xs` the model's inputs as a
flat list of NumPy arrays (in the order of `model.inputs`) and `ys` the
targets (a NumPy array, a structure of them, or None):

- arrays: a NumPy array, a tensor or a Python list of rows (single-input
  models), a list/tuple of them (one per input) or a dict keyed by input name;
- a `tf.data.Dataset` (TensorFlow), a `keras.utils.PyDataset` or a generator
  yielding x or (x, y) (or (x, y, sample_weight)) batches, as `model.predict`
  and `model.evaluate` read them: the data's own batches are the chunks.

Every chunk is checked at the boundary: numeric (or strings, for an input
the model declares with `dtype="string"`, e.g. one feeding a `StringLookup`
or `TextVectorization`; TensorFlow only), finite, the same number of rows in
every input, at least one row in all, and (where the model declares them)
the feature shape of each input. Errors name each input as the user knows
it: its key in the model's input dict, else the name of its `keras.Input`
(`keras.Input(name="age")`, else Keras's `input_layer_N`), never Keras's
internal tensor name (`keras_tensor_7`).
"""

import types

import keras
import numpy as np

from kreg import _compat
from kreg import _validation as v
from kreg._validation import Shown
from kreg._validation import numeric_array

_EXPECTED_X = (
    "the model's inputs as model.predict takes them: an array, a tensor or a "
    "list of rows (one input), a list/tuple of arrays (one per input), a dict "
    "keyed by input name, a tf.data.Dataset, a keras.utils.PyDataset or a "
    "generator"
)


def describe(value):
    """A short stand-in for an array or structure in an error message."""
    kind = _string_kind(value)
    if kind is not None:
        return Shown(f"<{kind}, shape {tuple(np.shape(value))}>")
    if isinstance(value, np.ndarray) or hasattr(value, "shape"):
        return v.shown(value)
    if isinstance(value, dict):
        return Shown("{" + ", ".join(f"{k!r}: {describe(x)!r}" for k, x in value.items()) + "}")
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return Shown(f"<{type(value).__name__} of {len(value)} items>")
    return value


def check_indices(owner, indices, n, *, distinct=False):
    """Validate a non-empty 1-D sequence of row indices in [0, n); return it."""
    expected = (f"a non-empty sequence of {'distinct ' if distinct else ''}"
                f"integers in [0, {n - 1}]")
    if indices is None or isinstance(indices, (str, bytes, dict)):
        raise v.invalid_type(owner, "indices", expected, indices)
    try:
        idx = np.asarray(indices)
    except (TypeError, ValueError):
        raise v.invalid_type(owner, "indices", expected, indices) from None
    if idx.ndim != 1 or idx.size == 0:
        raise v.invalid_value(owner, "indices", expected, indices)
    if idx.dtype.kind not in "iu":
        raise v.invalid_type(owner, "indices", expected, indices)
    if idx.min() < 0 or idx.max() >= n or (distinct and np.unique(idx).size != idx.size):
        raise v.invalid_value(owner, "indices", expected, indices)
    return idx


def symbolic(model, which):
    """`(flat, structure)` of a model's symbolic `"inputs"`/`"outputs"`, or
    None (a subclassed model declares none)."""
    try:
        flat = list(getattr(model, which))
    except (AttributeError, ValueError, TypeError):
        return None
    if not flat:
        return None
    try:
        structure = getattr(model, which[:-1])  # model.input / model.output
    except (AttributeError, ValueError):  # a Sequential never called
        structure = flat[0] if len(flat) == 1 else flat
    return flat, structure


def input_name(tensor, structure=None):
    """The name a user knows a model input by: its key in the model's input
    dict, else the name of its `keras.Input` layer (the `name=` given, else
    Keras's `input_layer_N`), not the tensor's internal `keras_tensor_N`."""
    if isinstance(structure, dict):
        for key, value in structure.items():
            if value is tensor:
                return key
    history = _compat.keras_history(tensor)
    if history is not None and isinstance(getattr(history[0], "name", None), str):
        return history[0].name
    return getattr(tensor, "name", None)


def input_specs(model):
    """`(names, shapes, structure, dtypes)` of a model's declared inputs, or
    None; names as `input_name` gives them.

    Subclassed models declare none until they are called with symbolic
    inputs; then only the batch size and the types are checked.
    """
    known = symbolic(model, "inputs")
    if known is None:
        return None
    inputs, structure = known
    names = [input_name(t, structure) for t in inputs]
    shapes = [tuple(t.shape) for t in inputs]
    dtypes = [getattr(t, "dtype", None) for t in inputs]
    return names, shapes, structure, dtypes


def _is_tf_dataset(x):
    if keras.backend.backend() != "tensorflow" and "tensorflow" not in type(x).__module__:
        return False
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - TF is a kreg dependency
        return False
    return isinstance(x, tf.data.Dataset)


def is_data_stream(x):
    """True for a dataset, a PyDataset or a generator (batches, not arrays)."""
    return (_is_tf_dataset(x) or isinstance(x, keras.utils.PyDataset)
            or isinstance(x, types.GeneratorType))


def _string_kind(value):
    """The kind of string data `value` holds ("array of strings"), or None."""
    dtype = getattr(value, "dtype", None)
    if dtype is None and isinstance(value, (list, tuple)):
        leaves = keras.tree.flatten(list(value))
        if leaves and all(isinstance(e, (str, bytes)) for e in leaves):
            return "list of strings"
        return None
    if dtype is None:
        return None
    if isinstance(value, np.ndarray):
        if dtype.kind in "US":
            return "array of strings"
        if dtype.kind == "O" and value.size and all(
                isinstance(e, (str, bytes)) for e in value.flat):
            return "array of strings"
        return None
    try:
        is_string = keras.backend.standardize_dtype(dtype) == "string"
    except ValueError:
        return None
    return "tensor of strings" if is_string else None


def _strings(owner, name, value, input_label):
    """A string input as a NumPy array of `str`/`bytes` (TensorFlow only)."""
    if keras.backend.backend() != "tensorflow":
        raise v.invalid_type(
            owner, name, f"numbers for {input_label} (string inputs need the "
            "TensorFlow backend)", describe(value))
    kind = _string_kind(value)
    if kind is None:
        raise v.invalid_type(
            owner, name, f"strings for {input_label} (the model declares it "
            "dtype='string'): an array, a list or a tf.string tensor of them",
            describe(value))
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # a tf.string tensor: an object array of bytes
    return np.asarray(value)


def _leaf(owner, name, value, dtype=None, input_label=None):
    """One input (or target) as a NumPy array, or kreg's TypeError.

    `dtype` is the dtype the model declares for this input (None: unknown);
    `input_label` names the input in messages (e.g. "input 'age'").
    """
    label = input_label or "this input"
    declared = None if dtype is None else keras.backend.standardize_dtype(dtype)
    if declared == "string":
        arr = _strings(owner, name, value, label)
    elif _string_kind(value) is not None:
        if declared is not None:
            where = ("strings go to inputs declared dtype='string', e.g. feeding a "
                     "StringLookup" if keras.backend.backend() == "tensorflow" else
                     "string inputs need the TensorFlow backend")
            raise v.invalid_type(
                owner, name, f"numbers for {label} (the model declares it "
                f"{declared}; {where})", describe(value))
        arr = _strings(owner, name, value, label)  # the model will tell
    else:
        arr = numeric_array(owner, name, value, _EXPECTED_X)
    if arr.ndim == 0:
        raise v.invalid_value(owner, name, "an array with a batch axis (N, ...)",
                              describe(arr))
    return arr


def _structure(owner, model, x):
    """`(flat, template)`: x as a flat list of NumPy arrays in the order of
    `model.inputs`, and the structure the model is called with."""
    specs = input_specs(model)
    flat = _flat(owner, model, x, specs)
    if specs is not None:
        return flat, specs[2]
    if isinstance(x, dict):
        return flat, {k: None for k in sorted(x)}
    return flat, (None if len(flat) == 1 else [None] * len(flat))


def _flat(owner, model, x, specs):
    count = len(specs[0]) if specs else None

    def leaf(name, value, i):
        if specs is None:
            return _leaf(owner, name, value)
        return _leaf(owner, name, value, specs[3][i], f"input {specs[0][i]!r}")

    if isinstance(x, dict):
        if specs is None:
            return [_leaf(owner, f"x[{k!r}]", x[k]) for k in sorted(x)]
        names = specs[0]
        missing = [n for n in names if n not in x]
        extra = [k for k in x if k not in names]
        if missing or extra:
            raise v.invalid_value(
                owner, "x", f"a dict keyed by the model's input names {names}",
                Shown("a dict with keys " + repr(sorted(map(str, x)))))
        return [leaf(f"x[{n!r}]", x[n], i) for i, n in enumerate(names)]
    if isinstance(x, (list, tuple)):
        arrays = all(hasattr(e, "shape") and len(getattr(e, "shape", ())) > 0 for e in x)
        if count == 1 and not (arrays and len(x) == 1 and len(x[0].shape) == len(specs[1][0])):
            return [leaf("x", list(x), 0)]  # a list of rows
        if count is None and not (arrays and len(x) > 0):
            return [_leaf(owner, "x", list(x))]
        if specs is not None and isinstance(specs[2], dict):
            raise v.invalid_value(
                owner, "x", f"a dict keyed by the model's input names {specs[0]} "
                "(the model takes a dict)", Shown(f"a {type(x).__name__} of {len(x)} items"))
        if count is not None and len(x) != count:
            raise v.invalid_value(
                owner, "x",
                f"{count} arrays, one per model input {specs[0]}",
                Shown(f"a {type(x).__name__} of {len(x)} items"))
        return [leaf(f"x[{i}]", e, i) for i, e in enumerate(x)]
    if count is not None and count > 1:
        raise v.invalid_value(
            owner, "x", f"{count} inputs (a list of arrays or a dict keyed by "
            f"{specs[0]})", describe(x))
    return [leaf("x", x, 0)]


def check_inputs(owner, model, xs):
    """Validate a flat list of input arrays (a chunk); return the row count."""
    rows = {len(a) for a in xs}
    if len(rows) != 1:
        raise v.invalid_value(owner, "x", "the same number of rows in every input",
                              Shown(str([a.shape for a in xs])))
    n = rows.pop()
    if n == 0:
        raise v.invalid_value(owner, "x", "at least one row",
                              Shown(str([a.shape for a in xs])))
    specs = input_specs(model)
    for i, a in enumerate(xs):
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise v.invalid_value(owner, "x", "finite inputs (no NaN or inf)",
                                  describe(a))
        if specs is None:
            continue
        name, shape = specs[0][i], specs[1][i]
        want = shape[1:]
        ok = len(a.shape) == len(shape) and all(
            w is None or w == g for w, g in zip(want, a.shape[1:]))
        if not ok:
            shown = "(N, " + ", ".join("None" if w is None else str(w) for w in want) + ")"
            raise v.invalid_value(
                owner, "x", f"input {name!r} of shape {shown.replace(', )', ')')}",
                describe(a))
    return n


def _as_declared(model, xs):
    """Cast each input to the dtype its Input declares, as model.predict does."""
    specs = input_specs(model)
    if specs is None:
        return xs
    return [a if dt is None or a.dtype == dt or a.dtype.kind in "USO"  # strings as given
            else a.astype(dt) for a, dt in zip(xs, specs[3])]


def batches(owner, model, x, rows, *, want_y):
    """Yield `(xs, ys, template)` chunks of at most `rows` rows.

    `xs` is a flat list of input arrays (see the module doc) and `template`
    the structure to call the model with (`keras.tree.pack_sequence_as`).
    For arrays, `ys` is None (the caller has its own `y`); for a dataset or
    generator it is the batch's targets when `want_y`.
    """
    if x is None:
        raise v.invalid_type(owner, "x", _EXPECTED_X, x)
    if is_data_stream(x):
        yield from _stream(owner, model, x, rows, want_y)
        return
    xs, template = _structure(owner, model, x)
    n = check_inputs(owner, model, xs)
    xs = _as_declared(model, xs)
    for start in range(0, n, rows):
        yield [a[start:start + rows] for a in xs], None, template


def _stream(owner, model, data, rows, want_y):
    if _is_tf_dataset(data):
        iterator = data.as_numpy_iterator()
    elif isinstance(data, keras.utils.PyDataset):
        count = data.num_batches
        iterator = (data[i] for i in range(count)) if count is not None else iter(data)
    else:
        iterator = data
    seen = 0
    for element in iterator:
        if isinstance(element, tuple):
            bx, by, _ = keras.utils.unpack_x_y_sample_weight(element)
        else:
            bx, by = element, None
        if want_y and by is None:
            raise v.invalid_value(owner, "x", "a dataset or generator of (x, y) "
                                  "batches (evaluate needs the targets)",
                                  describe(element))
        xs, template = _structure(owner, model, bx)
        n = check_inputs(owner, model, xs)
        xs = _as_declared(model, xs)
        seen += n
        for start in range(0, n, rows):
            ys = None if not want_y else keras.tree.map_structure(
                lambda a, s=start: np.asarray(a)[s:s + rows], by)
            yield [a[start:start + rows] for a in xs], ys, template
    if seen == 0:
        raise v.invalid_value(owner, "x", "at least one batch with at least one row",
                              Shown(f"an empty {type(data).__name__}"))


# ----------------------------------------------------------------------------
# Targets (MCPredictor.evaluate)
# ----------------------------------------------------------------------------
def targets(owner, y, names):
    """y as a flat list with one target array per output."""
    expected = ("the targets" if len(names) == 1 else
                f"targets for every output {names}: a list or a dict keyed by name")
    if isinstance(y, dict):
        if sorted(y) != sorted(names):
            raise v.invalid_value(owner, "y", expected, describe(y))
        return [y[n] for n in names]
    if len(names) > 1:
        if not isinstance(y, (list, tuple)) or len(y) != len(names):
            raise v.invalid_value(owner, "y", expected, describe(y))
        return list(y)
    if isinstance(y, tuple) and len(y) == 1:
        return [y[0]]
    return [y]


def check_target(owner, name, y, head, out_shape):
    """Validate one output's targets; return them as a NumPy array."""
    n = out_shape[0]
    arr = numeric_array(owner, name, y, "an array of numeric targets")
    if arr.ndim == 0 or len(arr) != n:
        raise v.invalid_value(owner, name, f"{n} targets, one per input row",
                              describe(arr))
    if not np.all(np.isfinite(arr)):
        raise v.invalid_value(owner, name, "finite targets (no NaN or inf)",
                              describe(arr))
    per_row = int(np.prod(out_shape[1:], dtype=np.int64))
    if head.task == "regression":
        if arr[0].size != per_row:
            raise v.invalid_value(owner, name, f"targets of shape {(n,) + out_shape[1:]}",
                                  describe(arr))
        return arr
    classes = out_shape[-1] if len(out_shape) > 1 else 1
    if head.activation == "sigmoid":
        if arr[0].size != per_row or arr.min() < 0 or arr.max() > 1:
            raise v.invalid_value(
                owner, name, f"0/1 targets (or probabilities in [0, 1]) of shape "
                f"{(n,) + out_shape[1:]}", describe(arr))
        return arr
    if arr.ndim == 2 and arr.shape[1] == classes and classes > 1:
        if arr.min() < 0 or arr.max() > 1 or np.max(np.abs(arr.sum(axis=1) - 1)) > 1e-3:
            raise v.invalid_value(owner, name, "one-hot (or probability) rows that "
                                  "sum to 1", describe(arr))
        return arr
    if arr[0].size != 1:
        raise v.invalid_value(owner, name, f"integer labels (N,) or one-hot (N, {classes})",
                              describe(arr))
    labels = arr.reshape(-1)
    if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= classes:
        raise v.invalid_value(owner, name, f"integer labels in [0, {classes - 1}] "
                              f"({classes} classes)",
                              describe(np.unique(labels)[:10]))
    return labels.astype("int64")
