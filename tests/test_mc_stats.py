"""kreg.mc._stats: Monte Carlo statistics on the device (float32, keras.ops)
equal MCPrediction's float64 NumPy ones to 1e-5, in one pass or merged over
uneven passes, inside a compiled function, on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

import kreg
from kreg import MCPrediction
from kreg._compile import compile_inference
from kreg.mc import _stats

FIELDS = ("mean", "variance", "entropy", "expected_entropy", "mutual_information",
          "variation_ratio")
TOL = 1e-5  # issue 18: float32 device statistics vs float64 NumPy
PASSES = ((0, 17), (17, 34), (34, 50))  # T = 50 in three uneven passes


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _cases():
    rng = np.random.default_rng(0)
    sigmoid = 1 / (1 + np.exp(-3 * rng.normal(size=(50, 40, 3))))
    return {
        # (kind, samples): sharp and flat softmax rows, a flattened 4-D output,
        # sigmoid (N,) and (N, K), regression of scale 1 and with an offset.
        "softmax": ("softmax", _softmax(3 * rng.normal(size=(50, 40, 10)))),
        "softmax_4d": ("softmax", _softmax(rng.normal(size=(50, 40, 2, 3)))),
        "sigmoid_1": ("sigmoid", sigmoid[..., 0]),
        "sigmoid_k": ("sigmoid", sigmoid),
        "regression": ("regression", rng.normal(size=(50, 40, 2))),
        "regression_offset": ("regression", 100 + 0.01 * rng.normal(size=(50, 40))),
    }


CASES = _cases()


def _reference(kind, samples, temperature=None):
    task = "regression" if kind == "regression" else "classification"
    activation = "softmax" if kind == "regression" else kind
    return MCPrediction(samples, task, activation=activation, temperature=temperature)


def _merged(samples, kind, temperature=None):
    """Three passes reduced and merged in compiled functions (as MCPredictor)."""
    first = compile_inference(lambda s: _stats.pass_statistics(s, kind), [])
    step = compile_inference(
        lambda acc, s: _stats.merge(acc, _stats.pass_statistics(s, kind)), [])
    done = compile_inference(lambda acc: _stats.finalize(acc, kind), [])
    parts = [ops.convert_to_tensor(samples[a:b]) for a, b in PASSES]
    acc = first(parts[0])
    for part in parts[1:]:
        acc = step(acc, part)
    out = dict(done(acc))
    if temperature is not None:
        whole = ops.concatenate(parts, axis=0)  # as the predictor: on the device
        out.update(compile_inference(
            lambda s: _stats.tempered(s, temperature, kind), [])(whole))
    return out


def _one_pass(samples, kind, temperature=None):
    fn = compile_inference(lambda s: _stats.statistics(s, kind, temperature), [])
    return fn(ops.convert_to_tensor(samples))


def _assert_close(out, ref):
    """Within 1e-5 of the float64 numbers (times their scale when above 1)."""
    for field in FIELDS:
        expected = getattr(ref, field)
        if expected is None:
            assert field not in out
            continue
        got = ops.convert_to_numpy(out[field])
        assert got.shape == expected.shape, field
        scale = max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(got.astype("float64"), expected, atol=TOL * scale,
                                   rtol=0.0, err_msg=field)


@pytest.mark.parametrize("reduce", [_one_pass, _merged], ids=["one_pass", "merged"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_device_statistics_equal_float64_numpy_within_1e_5(name, reduce):
    kind, s64 = CASES[name]
    samples = s64.astype("float32")  # what a model outputs
    out = reduce(samples, kind)
    assert keras.backend.standardize_dtype(out["mean"].dtype) == "float32"
    _assert_close(out, _reference(kind, samples))


@pytest.mark.parametrize("reduce", [_one_pass, _merged], ids=["one_pass", "merged"])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
@pytest.mark.parametrize("name", ["softmax", "sigmoid_1", "sigmoid_k"])
def test_tempered_statistics_equal_float64_numpy_within_1e_5(name, temperature, reduce):
    kind, s64 = CASES[name]
    samples = s64.astype("float32")
    _assert_close(reduce(samples, kind, temperature),
                  _reference(kind, samples, temperature))


def test_chan_merge_keeps_the_variance_of_a_large_offset():
    # x = 1e3 + 1e-2 z in float32: sum(x^2)/T - mean^2 is off by a factor of
    # thousands (measured 6.5e3: eps * 1e6 >> the 1e-4 variance); the merged
    # deviations are within 1.5e-3 (the mean itself resolves 1e3 to 6e-5).
    rng = np.random.default_rng(3)
    samples = (1e3 + 1e-2 * rng.normal(size=(50, 30))).astype("float32")
    ref = samples.astype("float64").var(axis=0)
    out = _merged(samples, "regression")
    np.testing.assert_allclose(ops.convert_to_numpy(out["variance"]), ref, rtol=1e-2)
    naive = (samples**2).mean(axis=0) - samples.mean(axis=0) ** 2
    assert np.max(np.abs(naive / ref - 1)) > 1.0


def test_variation_ratio_ties_vote_for_the_first_class_as_numpy():
    # Every sample ties classes 0 and 1 (0 and 2 for input 1): argmax is the
    # first maximal class on every backend, as np.argmax.
    p = np.tile(np.array([[[0.4, 0.4, 0.2], [0.45, 0.1, 0.45]]], "float32"), (6, 1, 1))
    p[:2, 0] = [0.1, 0.6, 0.3]  # two samples vote for class 1
    votes = ops.convert_to_numpy(
        _stats.pass_statistics(ops.convert_to_tensor(p), "softmax")["votes"])
    np.testing.assert_array_equal(votes, [[4, 2, 0], [6, 0, 0]])
    ref = MCPrediction(p, "classification")
    np.testing.assert_allclose(ref.variation_ratio, [2 / 6, 0.0])
    np.testing.assert_allclose(ops.convert_to_numpy(_one_pass(p, "softmax")[
        "variation_ratio"]), ref.variation_ratio, rtol=1e-6)


def test_merge_sums_votes_and_entropies_and_combines_checks():
    a = _stats.pass_statistics(ops.convert_to_tensor(
        np.array([[[0.2, 0.8]], [[0.7, 0.3]]], "float32")), "softmax")
    b = _stats.pass_statistics(ops.convert_to_tensor(
        np.array([[[0.1, 0.9]]], "float32")), "softmax")
    m = {k: ops.convert_to_numpy(t) for k, t in _stats.merge(a, b).items()}
    assert float(m["count"]) == 3
    np.testing.assert_array_equal(m["votes"], [[1.0, 2.0]])
    h = lambda p: -(p * np.log(p)).sum()  # noqa: E731
    np.testing.assert_allclose(
        m["entropy_sum"], [h(np.array([0.2, 0.8])) + h(np.array([0.7, 0.3]))
                           + h(np.array([0.1, 0.9]))], rtol=1e-6)
    np.testing.assert_allclose([m["low"], m["high"]], [0.1, 0.9], rtol=1e-6)
    assert float(m["nan"]) == 0 and float(m["sum_error"]) < 1e-6


def _host(stats):
    return {k: ops.convert_to_numpy(t) for k, t in stats.items()}


BAD = {
    "nan": ("regression", "regression", np.array([[[0.5]], [[np.nan]]])),
    "inf": ("regression", "regression", np.array([[[0.5]], [[np.inf]]])),
    "logits": ("classification", "softmax", np.array([[[2.0, -1.0]], [[0.5, 0.5]]])),
    "rows": ("classification", "softmax", np.array([[[0.5, 0.2]], [[0.5, 0.5]]])),
    "sigmoid": ("classification", "sigmoid", np.array([[[0.5]], [[-0.5]]])),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_from_statistics_raises_the_errors_of_the_constructor(name):
    task, activation, samples = BAD[name]
    kind = _stats.kind_of(task, activation)
    with pytest.raises(ValueError) as direct:
        MCPrediction(samples, task, activation=activation)
    stats = _host(_stats.statistics(ops.convert_to_tensor(samples, "float32"), kind))
    with pytest.raises(ValueError) as via_stats:
        MCPrediction.from_statistics(stats, task, activation=activation,
                                     num_samples=len(samples))
    assert str(via_stats.value) == str(direct.value)


def test_from_statistics_keeps_the_attributes_and_float64():
    kind, s64 = CASES["softmax"]
    samples = s64.astype("float32")
    stats = _host(_stats.statistics(ops.convert_to_tensor(samples), kind))
    pred = MCPrediction.from_statistics(stats, "classification", num_samples=50,
                                        joint=True)
    ref = MCPrediction(samples, "classification", joint=True, keep_samples=False)
    assert pred.samples is None and pred.joint and pred.temperature is None
    assert pred.num_samples == 50 and repr(pred) == repr(ref)
    for field in FIELDS + ("std",):
        assert getattr(pred, field).dtype == np.float64, field
        np.testing.assert_allclose(getattr(pred, field), getattr(ref, field), atol=TOL)
    kept = MCPrediction.from_statistics(stats, "classification", num_samples=50,
                                        samples=samples)
    assert kept.samples is samples
    with pytest.raises(ValueError, match=r"temperature.*\(T, N, C\)"):
        MCPrediction.from_statistics(
            _host(_stats.statistics(ops.convert_to_tensor(samples[..., None]), kind)),
            "classification", num_samples=50, temperature=2.0)


# -- the predictor: its statistics are those of its samples --------------------
@pytest.fixture(scope="module")
def three_heads():
    """A softmax head, a sigmoid head (two units) and a regression head."""
    keras.utils.set_random_seed(0)
    x = keras.Input((4,))
    h = keras.layers.Dense(16, activation="relu")(x)
    h = kreg.layers.Dropout(0.4)(h)
    return keras.Model(x, [keras.layers.Dense(3, activation="softmax")(h),
                           keras.layers.Dense(2, activation="sigmoid")(h),
                           keras.layers.Dense(2)(h)])


@pytest.mark.parametrize("temperature", [None, 0.5])
@pytest.mark.parametrize("max_batch", [None, 24], ids=["one_call", "four_passes"])
def test_predictor_statistics_equal_float64_numpy_of_its_samples(three_heads, max_batch,
                                                                 temperature):
    # batch_size=4 over 10 inputs: chunks of 4, 4, 2 (padded to 4, 4, 2); with
    # max_batch=24 a chunk of 4 takes 4 passes of 6, 6, 6, 2 samples (merged).
    x = np.random.default_rng(1).normal(size=(10, 4)).astype("float32")
    temps = [temperature, temperature, None]
    preds = kreg.MCPredictor(three_heads, samples=20, seed=5, max_batch=max_batch,
                             temperature=temps).predict(
        x, batch_size=4, verbose=0, return_samples=True)
    for pred, temp in zip(preds, temps):
        assert pred.samples.shape[:2] == (20, 10) and pred.temperature == temp
        _assert_close({f: getattr(pred, f) for f in FIELDS
                       if getattr(pred, f) is not None},
                      MCPrediction(pred.samples, pred.task, activation=pred.activation,
                                   temperature=temp))
