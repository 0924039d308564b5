"""The stochastic-layer plumbing's seams: dispatch, seed layout, no cycles."""

import keras
import numpy as np
from keras import ops

import kreg
from kreg.layers import _seeds
from kreg.layers._sampling import SamplingContext
from kreg.layers._sampling import sampling_scope
from kreg.layers.base import StochasticLayer


class _Marker(StochasticLayer):
    """Adds 1 when sampling, 2 when training, 3 at inference (only the three hooks)."""

    def __init__(self, rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self._init_stochastic(rate, None, seed)
        self.seen = []

    def _sample(self, inputs, ctx):
        self.seen.append(("sample", ctx.tiles))
        return inputs + 1.0

    def _train(self, inputs):
        return inputs + 2.0

    def _infer(self, inputs):
        return inputs + 3.0


def test_call_dispatches_to_sample_train_infer():
    x = np.zeros((2, 3), "float32")
    layer = _Marker()
    assert float(ops.convert_to_numpy(layer(x, training=True))[0, 0]) == 2.0
    assert float(ops.convert_to_numpy(layer(x, training=False))[0, 0]) == 3.0
    assert float(ops.convert_to_numpy(layer(x))[0, 0]) == 3.0
    ctx = SamplingContext(ops.convert_to_tensor(np.array([1, 2]),
                                                dtype=_seeds.seed_dtype()), tiles=4)
    with sampling_scope(ctx):  # sampling wins over training=False and True
        assert float(ops.convert_to_numpy(layer(x, training=False))[0, 0]) == 1.0
        assert float(ops.convert_to_numpy(layer(x, training=True))[0, 0]) == 1.0
    assert layer.seen == [("sample", 4), ("sample", 4)]
    off = _Marker(rate=0.0)  # a layer that does not draw always infers
    with sampling_scope(ctx):
        assert float(ops.convert_to_numpy(off(x, training=True))[0, 0]) == 3.0
    assert float(ops.convert_to_numpy(off(x, training=True))[0, 0]) == 3.0


def test_a_layer_with_the_three_hooks_is_sampled_by_the_predictor():
    model = keras.Sequential([keras.Input((3,)), _Marker(name="m"),
                              keras.layers.Dense(2)])
    pred = kreg.MCPredictor(model, samples=5, seed=0, task="regression")
    out = pred.predict(np.zeros((4, 3), "float32"), verbose=0)
    det = model.predict(np.zeros((4, 3), "float32"), verbose=0)
    dense = model.layers[-1]
    kernel = ops.convert_to_numpy(dense.kernel)
    bias = ops.convert_to_numpy(dense.bias)
    np.testing.assert_allclose(out.mean, np.ones((4, 3)) @ kernel + bias, rtol=1e-5)
    np.testing.assert_allclose(det, 3 * np.ones((4, 3)) @ kernel + bias, rtol=1e-5)
    assert pred.plan.layers == [model.layers[0]]


def _imports(path):
    """The kreg modules a module imports (module level and inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kreg"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kreg"))
    return found


def test_layers_have_no_import_cycle_and_never_import_mc():
    import pathlib

    root = pathlib.Path(kreg.__file__).parent
    modules = {f"kreg.layers.{p.stem}": p for p in (root / "layers").glob("*.py")
               if p.stem != "__init__"}
    graph = {name: {m for m in _imports(path) if m in modules}
             for name, path in modules.items()}
    assert not any(m.startswith("kreg.mc") or m == "kreg.serving"
                   for path in modules.values() for m in _imports(path))
    assert graph["kreg.layers._replica"] == {"kreg.layers._seeds"}
    state = {}

    def visit(name, stack):
        state[name] = "open"
        for dep in graph[name]:
            assert state.get(dep) != "open", f"import cycle: {stack + [dep]}"
            if dep not in state:
                visit(dep, stack + [dep])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
