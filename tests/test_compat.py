"""kreg/_compat.py: every private Keras API kreg uses, exercised on this Keras.

A Keras release that moves one of them fails here, by name, rather than
somewhere deep in kreg (or, worse, with a wrong result).
"""

import ast
import pathlib

import keras
import numpy as np
import pytest

import kreg
from kreg import _compat

KREG = pathlib.Path(kreg.__file__).parent


def _model():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="inner_d")],
                             name="inner")
    x = keras.Input((3,), name="x")
    h = inner(x)
    h = kreg.layers.Dropout(0.5, name="drop")(h)
    y = keras.layers.Dense(2, activation="softmax", name="out")(h)
    return keras.Model(x, y, name="outer")


def test_flatten_layers_walks_nested_models_in_order():
    model = _model()
    names = [layer.name for layer in _compat.flatten_layers(model)]
    assert names[0] == "outer"
    assert {"inner", "inner_d", "drop", "out"} <= set(names)
    assert names.index("inner") < names.index("inner_d")
    without = [layer.name for layer in _compat.flatten_layers(model, include_self=False)]
    assert "outer" not in without and "inner_d" in without
    shallow = [layer.name for layer in _compat.flatten_layers(model, recursive=False)]
    assert "inner_d" not in shallow


def test_own_variables_are_the_layers_own():
    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    assert [v.path for v in _compat.own_variables(dense)] == [
        v.path for v in dense.weights]
    assert _compat.own_variables(_model()) == []  # a model owns none itself


def test_random_seed_dtype_is_what_keras_random_takes():
    dtype = _compat.random_seed_dtype()
    expected = {"jax": "uint32", "tensorflow": "int64", "torch": "int32"}
    assert keras.backend.standardize_dtype(dtype) == expected[keras.backend.backend()]
    seed = keras.ops.convert_to_tensor(np.array([1, 2]), dtype=dtype)
    draw = keras.random.uniform((3,), seed=kreg.layers.base.TensorSeed(seed))
    assert tuple(draw.shape) == (3,)


def test_functional_graph_by_depth():
    model = _model()
    assert _compat.is_plain_functional(model)
    assert not _compat.is_plain_functional(keras.Sequential([keras.Input((3,))]))

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert not _compat.is_plain_functional(Sub())
    nodes = _compat.nodes_by_depth(model)
    ops = [node.operation.name for d in sorted(nodes, reverse=True) for node in nodes[d]]
    assert ops[-1] == "out" and ops.index("inner") < ops.index("drop")


def test_keras_history_names_the_producer():
    model = _model()
    op, index = _compat.keras_history(model.outputs[0])
    assert op.name == "out" and index == 0
    assert _compat.keras_history(np.zeros(2)) is None


def test_metric_direction():
    assert _compat.metric_direction(keras.metrics.AUC()) == "up"
    assert _compat.metric_direction(keras.metrics.MeanSquaredError()) == "down"
    assert _compat.metric_direction(object()) is None


def test_print_msg(capsys):
    _compat.print_msg("kreg compat check")
    assert "kreg compat check" in capsys.readouterr().out


@pytest.mark.tf_only(reason="SavedModel input signatures are TensorFlow's")
def test_export_signature_helpers():
    import tensorflow as tf

    model = _model()
    signature = _compat.export_input_signature(model)
    spec = keras.tree.flatten(keras.tree.map_structure(_compat.make_tf_tensor_spec,
                                                       signature))[0]
    assert isinstance(spec, tf.TensorSpec) and spec.shape.as_list() == [None, 3]


def test_missing_api_fails_loudly():
    with pytest.raises(_compat.KerasCompatError,
                       match=r"Layer\._flatten_layers.*Keras \d"):
        _compat.flatten_layers(object())
    with pytest.raises(_compat.KerasCompatError, match=r"_nodes_by_depth"):
        _compat.nodes_by_depth(object())


def _private_uses(path):
    """(line, text) of `._private` attribute uses of Keras objects and
    `keras.src` imports in one module."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = getattr(node, "module", None) or ""
            names = [module] + [a.name for a in node.names]
            if any(n.startswith("keras.src") for n in names):
                found.append((node.lineno, f"import {module or names[1]}"))
        if isinstance(node, ast.Attribute) and node.attr in (
                "_flatten_layers", "_nodes_by_depth", "_keras_history",
                "_trainable_variables", "_non_trainable_variables"):
            found.append((node.lineno, node.attr))
        if isinstance(node, ast.Constant) and node.value in (
                "_direction", "_keras_history", "_nodes_by_depth"):
            found.append((node.lineno, node.value))
    return found


def test_private_keras_apis_are_used_only_through_compat():
    offenders = {}
    for path in sorted(KREG.rglob("*.py")):
        if path.name == "_compat.py":
            continue
        uses = _private_uses(path)
        if uses:
            offenders[str(path.relative_to(KREG))] = uses
    assert offenders == {}, offenders


def test_copy_layer_state_carries_variables_assets_and_hooks():
    norm = keras.layers.Normalization()
    norm.adapt(np.arange(12.0).reshape(6, 2))
    copy = keras.layers.Normalization.from_config(norm.get_config())
    copy.build((None, 2))
    _compat.copy_layer_state(norm, copy)
    # load_own_variables ran Normalization's finalize_state: `mean` is live.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(copy.mean),
                                  keras.ops.convert_to_numpy(norm.mean))
    assert float(keras.ops.convert_to_numpy(copy.mean).ravel()[0]) == 5.0


@pytest.mark.tf_only(reason="StringLookup's table is TensorFlow's")
def test_copy_layer_state_carries_a_vocabulary_asset():
    lookup = keras.layers.StringLookup()
    lookup.adapt(np.array(["b", "a", "b"]))
    copy = keras.layers.StringLookup.from_config(lookup.get_config())
    _compat.copy_layer_state(lookup, copy)
    assert copy.get_vocabulary() == lookup.get_vocabulary() == ["[UNK]", "b", "a"]


def test_node_call_kwargs_reads_the_training_flag():
    x = keras.Input((3,))
    y = keras.layers.Dropout(0.5, name="forced")(x, training=True)
    model = keras.Model(x, y)
    nodes = _compat.nodes_by_depth(model)
    flags = {node.operation.name: _compat.node_call_kwargs(node).get("training")
             for d in nodes for node in nodes[d]}
    assert flags["forced"] is True
    with pytest.raises(_compat.KerasCompatError, match=r"Node\.arguments"):
        _compat.node_call_kwargs(object())


def test_lambda_output_shape_is_the_one_given():
    shape = lambda s: (s[0], 2)  # noqa: E731
    assert _compat.lambda_output_shape(keras.layers.Lambda(lambda t: t, output_shape=shape)) \
        is shape
    assert _compat.lambda_output_shape(keras.layers.Lambda(lambda t: t)) is None
    with pytest.raises(_compat.KerasCompatError, match=r"Lambda\._output_shape"):
        _compat.lambda_output_shape(keras.layers.Dense(2))
