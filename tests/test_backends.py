"""Backends: a `.keras` file saved on one loads on the others; run-time seeds.

One chain: this (TensorFlow) process saves; a JAX process loads it and saves; a
PyTorch process loads both and saves; a JAX process loads PyTorch's; this
process loads the JAX and PyTorch files. Each file
holds a model with every kreg class that Keras serializes.
"""

import importlib.util
import json

import keras
import numpy as np
import pytest

import kreg
from kreg.layers.base import TensorSeed

once = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the cross-backend chain starts every backend itself; it runs once, in "
    "the TensorFlow run")

BACKENDS = ("tensorflow", "jax", "torch")

# Run in each backend's process: build and save (the seed state advanced by a
# few draws), then load the files of the backends before it.
CHAIN = """
import json, sys
import numpy as np
import keras
import kreg


def step(backend, folder, earlier, save):
    assert keras.backend.backend() == backend, keras.backend.backend()
    R, I = kreg.regularizers, kreg.initializers
    layers = [
        keras.Input((10,)),
        keras.layers.Dense(16, activation="relu", kernel_initializer=I.HeNormal(seed=1),
                           kernel_regularizer=R.ElasticNet(1e-3, 1e-2),
                           bias_regularizer=R.L1(1e-3)),
        kreg.layers.Dropout(keep_prob=0.8, scaling="test_time", seed=2, name="drop"),
    ]
    if hasattr(kreg.layers, "DropConnectDense"):
        layers.append(kreg.layers.DropConnectDense(8, 0.5, seed=3, name="dc",
                                                   activation="tanh"))
    layers.append(keras.layers.Dense(3, activation="softmax",
                                     kernel_initializer=I.HeNormal(seed=4, mode="fan_avg"),
                                     kernel_regularizer=R.L2(1e-2)))
    model = keras.Sequential(layers)
    x = np.random.default_rng(0).normal(size=(20, 10)).astype("float32")
    ones = np.ones((2, 16), "float32")
    for _ in range(3):  # advance the dropout layer's seed state
        model.get_layer("drop")(ones, training=True)

    def describe(m):
        return {
            "pred": np.asarray(m.predict(x, verbose=0), "float64").tolist(),
            "penalty": float(kreg.regularizers.penalty(m)[0]),
            "seed_state": [int(s) for s in keras.ops.convert_to_numpy(
                m.get_layer("drop").seed_generator.state)],
            "classes": sorted({type(layer).__name__ for layer in m.layers}),
        }

    out = {"saved": describe(model), "loaded": {}}
    if save:
        model.save(f"{folder}/{backend}.keras")
    for other in earlier:
        m = keras.models.load_model(f"{folder}/{other}.keras")
        out["loaded"][other] = describe(m)
    return out


if __name__ == "__main__":
    print("JSON:" + json.dumps(step(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]),
                                    sys.argv[4] == "save")))
"""


def _have(backend):
    return backend == "tensorflow" or importlib.util.find_spec(backend) is not None


@pytest.fixture(scope="module")
def chain(tmp_path_factory, fresh_python):
    missing = [b for b in BACKENDS if not _have(b)]
    if missing:
        pytest.skip(f"backends not installed: {missing} (pip install -e '.[test]')")
    folder = tmp_path_factory.mktemp("backends")
    script = folder / "chain.py"
    script.write_text(CHAIN)
    here = {"__name__": "kreg_backend_chain"}
    exec(CHAIN, here)  # this process is the TensorFlow one
    results = {"tensorflow": here["step"]("tensorflow", folder, [], True)}
    for backend, earlier, save in [("jax", ["tensorflow"], "save"),
                                   ("torch", ["tensorflow", "jax"], "save"),
                                   ("jax", ["torch"], "load")]:
        proc = fresh_python(
            f"import runpy, sys; sys.argv = ['chain', {backend!r}, {str(folder)!r}, "
            f"{json.dumps(earlier)!r}, {save!r}]; "
            f"runpy.run_path({str(script)!r}, run_name='__main__')",
            env={"KERAS_BACKEND": backend}, timeout=600)
        if save == "save":
            results[backend] = proc.result
        else:
            results[backend]["loaded"].update(proc.result["loaded"])
    results["here"] = here["step"]("tensorflow", folder, ["jax", "torch"], False)["loaded"]
    return results


def _loads(chain):
    """(saved on, loaded on, description) for every pair of backends."""
    for loader in BACKENDS[1:]:
        for saver, desc in chain[loader]["loaded"].items():
            yield saver, loader, desc
    for saver, desc in chain["here"].items():
        yield saver, "tensorflow", desc


@once
def test_every_backend_pair_loads(chain):
    pairs = {(s, t) for s, t, _ in _loads(chain)}
    assert pairs == {(s, t) for s in BACKENDS for t in BACKENDS if s != t}
    assert "Dropout" in chain["tensorflow"]["saved"]["classes"]


@once
def test_predictions_identical_across_backends(chain):
    for saver, loader, desc in _loads(chain):
        expected = np.array(chain[saver]["saved"]["pred"])
        # Same weights, same float32 math; backends may order a sum differently.
        np.testing.assert_allclose(np.array(desc["pred"]), expected, rtol=1e-5,
                                   atol=1e-6, err_msg=f"{saver} -> {loader}")


@once
def test_penalties_and_seed_state_survive_across_backends(chain):
    for saver, loader, desc in _loads(chain):
        saved = chain[saver]["saved"]
        assert desc["penalty"] == pytest.approx(saved["penalty"], rel=1e-6)
        assert desc["seed_state"] == saved["seed_state"], f"{saver} -> {loader}"
        assert saved["seed_state"] == [2, 3]  # seed 2, three draws


# ----------------------------------------------------------------------------
# Seeds computed at run time (Monte Carlo sampling), on every backend
# ----------------------------------------------------------------------------
def _draw(seed_pair, shape=(4000,)):
    dtype = kreg.layers.Dropout(0.5).seed_generator.state.dtype
    seed = TensorSeed(keras.ops.convert_to_tensor(np.array(seed_pair), dtype=dtype))
    return keras.ops.convert_to_numpy(keras.random.uniform(shape, seed=seed))


def test_run_time_seeds_are_reproducible_and_distinct():
    a = _draw([7, 3])
    np.testing.assert_array_equal(a, _draw([7, 3]))
    # Keras's torch backend seeds its generator with seed[0] + seed[1]; kreg
    # hashes the pair, so (7, 4) and (8, 3) are different streams everywhere.
    for other in ([7, 4], [8, 3], [3, 7]):
        b = _draw(other)
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.1, other


def test_dropout_with_a_run_time_seed_is_seeded_on_every_backend():
    # keras.random.dropout on torch takes the unseeded path for a generator
    # whose `_initial_seed` is None; a TensorSeed must never look unseeded.
    x = keras.ops.ones((50, 40))
    dtype = kreg.layers.Dropout(0.5).seed_generator.state.dtype
    seed = keras.ops.convert_to_tensor(np.array([5, 1]), dtype=dtype)
    first = keras.ops.convert_to_numpy(keras.random.dropout(x, 0.5, seed=TensorSeed(seed)))
    again = keras.ops.convert_to_numpy(keras.random.dropout(x, 0.5, seed=TensorSeed(seed)))
    np.testing.assert_array_equal(first, again)
    assert 0.4 < (first != 0).mean() < 0.6
