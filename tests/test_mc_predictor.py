"""MCPredictor: BN safety, mask independence, reproducibility, prefix split;
every model shape and input form (logits, datasets, several inputs/outputs,
nested and subclassed models)."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import kreg
from kreg.layers.base import SamplingContext
from kreg.layers.base import sampling_scope
from kreg.mc.metrics import gaussian_log_likelihood


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def bn_model():
    """Dense -> BatchNorm (moving stats far from batch stats) -> Dropout -> Dense."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, name="dense"),
        keras.layers.BatchNormalization(name="bn"),
        kreg.layers.Dropout(0.5, seed=1, name="drop"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(16, 5.0, "float32"))
    bn.moving_variance.assign(np.full(16, 4.0, "float32"))
    return model


X = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")


def test_batchnorm_stays_in_inference_mode_and_no_variable_changes(bn_model):
    model = bn_model
    before = [_np(v).copy() for v in model.variables]
    # Exact check on the sub-network up to the dropout: every MC sample equals
    # BN_inference(dense(x)) * mask / p with mask in {0, 1}.
    upto = keras.Model(model.inputs, model.get_layer("drop").output)
    pred = kreg.MCPredictor(upto, samples=8, seed=3, task="regression").predict(
        X, verbose=0, return_samples=True)
    bn = model.get_layer("bn")
    h = _np(model.get_layer("dense")(X))
    manual = (h - 5.0) / np.sqrt(4.0 + bn.epsilon) * _np(bn.gamma) + _np(bn.beta)
    ratio = pred.samples / manual[None]
    assert np.all(np.isclose(ratio, 0.0, atol=1e-5) | np.isclose(ratio, 2.0, rtol=1e-4))
    assert 0.4 < np.isclose(ratio, 2.0, rtol=1e-4).mean() < 0.6
    kreg.MCPredictor(model, samples=5, seed=0).predict(X, verbose=0)
    after = [_np(v) for v in model.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_model_predict_stays_deterministic_before_and_after(bn_model):
    model = bn_model
    first = model.predict(X, verbose=0)  # traces and caches predict_function
    mc = kreg.MCPredictor(model, samples=10, seed=0).predict(X, verbose=0,
                                                             return_samples=True)
    assert np.abs(mc.samples[0] - mc.samples[1]).max() > 1e-3
    np.testing.assert_array_equal(model.predict(X, verbose=0), first)
    np.testing.assert_allclose(_np(model(X)), first, rtol=1e-5, atol=1e-7)
    # And in the other order: MC first on a model never predicted before.
    keras.utils.set_random_seed(1)
    fresh = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                              kreg.layers.Dropout(0.5), keras.layers.Dense(2)])
    kreg.MCPredictor(fresh, samples=4).predict(X, verbose=0)
    a = fresh.predict(X, verbose=0)
    np.testing.assert_array_equal(a, fresh.predict(X, verbose=0))
    np.testing.assert_allclose(a, _np(fresh(X)), rtol=1e-5, atol=1e-6)


def _drop_only(rate=0.5, noise_shape=None, dims=200):
    return keras.Sequential([keras.Input((dims,)),
                             kreg.layers.Dropout(rate, noise_shape=noise_shape, seed=0)])


def test_masks_independent_across_samples_and_inputs():
    t, n, d = 20, 10, 200
    pred = kreg.MCPredictor(_drop_only(dims=d), samples=t, seed=5, task="regression"
                            ).predict(np.ones((n, d), "float32"), verbose=0,
                                      return_samples=True)
    masks = pred.samples > 0
    # Agreement of two independent Bernoulli(1/2) masks is 1/2; SE over d
    # units is 0.5/sqrt(d); across all sample pairs the mean has SE ~ .5/sqrt(m).
    pairs = [(masks[a] == masks[b]).mean() for a in range(t) for b in range(a)]
    assert abs(np.mean(pairs) - 0.5) < 5 * 0.5 / math.sqrt(len(pairs) * n * d / 4)
    assert max(pairs) < 0.5 + 5 * 0.5 / math.sqrt(n * d)
    across_inputs = (masks[:, 0] == masks[:, 1]).mean()
    assert abs(across_inputs - 0.5) < 5 * 0.5 / math.sqrt(t * d)
    # Keep fraction over all samples.
    assert abs(masks.mean() - 0.5) < 5 * 0.5 / math.sqrt(masks.size)


def test_masks_independent_across_sample_chunks_and_layers_with_max_batch():
    # Two dropout layers of the same shape on parallel branches, several
    # sample chunks: no (layer, chunk) pair may reuse another's random stream.
    t, n, d = 12, 1, 300
    inp = keras.Input((d,))
    out = keras.layers.Concatenate()([kreg.layers.Dropout(0.5, seed=0)(inp),
                                      kreg.layers.Dropout(0.5, seed=0)(inp)])
    model = keras.Model(inp, out)
    pred = kreg.MCPredictor(model, samples=t, seed=2, max_batch=2,
                            task="regression").predict(
        np.ones((n, d), "float32"), verbose=0, return_samples=True)
    masks = (pred.samples > 0).reshape(t * n * 2, d)  # every (sample, layer) mask
    agree = (masks[:, None] == masks[None]).mean(axis=2)
    off = agree[~np.eye(len(masks), dtype=bool)]
    # Agreement of independent Bernoulli(1/2) masks: 1/2 with SE 0.5/sqrt(d).
    assert off.max() < 0.5 + 6 * 0.5 / math.sqrt(d)


def test_seeded_runs_reproducible_and_unseeded_fresh(bn_model):
    a = kreg.MCPredictor(bn_model, samples=6, seed=11).predict(X, verbose=0,
                                                               return_samples=True)
    b = kreg.MCPredictor(bn_model, samples=6, seed=11).predict(X, verbose=0,
                                                               return_samples=True)
    np.testing.assert_array_equal(a.samples, b.samples)
    p = kreg.MCPredictor(bn_model, samples=6)
    c = p.predict(X, verbose=0, return_samples=True)
    d = p.predict(X, verbose=0, return_samples=True)
    assert not np.array_equal(c.samples, d.samples)


def test_samples_one_equals_one_stochastic_pass_of_the_model(bn_model):
    pred = kreg.MCPredictor(bn_model, samples=1, seed=4)
    got = pred.predict(X, verbose=0, return_samples=True).samples[0]
    dtype = pred.seed_dtype
    ctx = SamplingContext(ops.convert_to_tensor(np.array([4, 0]), dtype=dtype),
                          layer_index=pred.layer_index)
    with sampling_scope(ctx):
        manual = _np(bn_model(X, training=False))
    np.testing.assert_allclose(got, manual, rtol=1e-5, atol=1e-6)
    # One pass of the whole model: rows are valid softmax outputs, not averages.
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def _functional_with_skip():
    keras.utils.set_random_seed(3)
    inp = keras.Input((5,))
    a = keras.layers.Dense(8, activation="relu", name="pre1")(inp)
    b = keras.layers.Dense(8, activation="tanh", name="pre2")(a)
    d = kreg.layers.Dropout(0.3, seed=1, name="d1")(b)
    c = keras.layers.Concatenate()([d, a, inp])
    e = keras.layers.Dense(6, activation="relu")(c)
    e = kreg.layers.Dropout(0.2, seed=2, name="d2")(e)
    out = keras.layers.Dense(2)(e)
    return keras.Model(inp, out)


def test_prefix_computed_once_matches_full_model_sampling():
    model = _functional_with_skip()
    pred = kreg.MCPredictor(model, samples=7, seed=9)
    assert [layer.name for layer in pred.split.prefix_layers] == ["pre1", "pre2"]
    x = np.random.default_rng(1).normal(size=(9, 5)).astype("float32")
    # One chunk of exactly 9 rows (batch_size=9: no padding to 16 rows).
    got = pred.predict(x, batch_size=9, verbose=0, return_samples=True).samples
    ctx = SamplingContext(ops.convert_to_tensor(np.array([9, 0]),
                                                dtype=pred.seed_dtype),
                          tiles=7, layer_index=pred.layer_index)
    with sampling_scope(ctx):
        full = _np(model(np.tile(x, (7, 1)), training=False)).reshape(7, 9, 2)
    np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-6)


def test_subclassed_model_is_sampled_without_split():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1 = keras.layers.Dense(8)
            self.drop = kreg.layers.Dropout(0.5, seed=0)
            self.d2 = keras.layers.Dense(1)

        def call(self, x, training=None):
            return self.d2(self.drop(self.d1(x), training=training))

    net = Net()
    net(X)
    pred = kreg.MCPredictor(net, samples=30, seed=0)
    assert pred.split.prefix is None
    out = pred.predict(X, verbose=0)
    assert out.task == "regression"
    assert np.all(out.std > 0)


def test_no_stochastic_layer_is_an_error():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"`model` of MCPredictor: expected a model "
                       r"with at least one layer that samples"):
        kreg.MCPredictor(plain)
    zero = keras.Sequential([keras.Input((3,)), kreg.layers.Dropout(0.0)])
    with pytest.raises(ValueError, match=r"rate above 0"):
        kreg.MCPredictor(zero)
    keras_zero = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.0)])
    with pytest.raises(ValueError, match=r"rate above 0"):
        kreg.MCPredictor(keras_zero)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"samples": 0}, ValueError, r"`samples` of MCPredictor: expected an integer >= 1"),
    ({"samples": 2.5}, TypeError, r"`samples` of MCPredictor"),
    ({"max_batch": 0}, ValueError, r"`max_batch` of MCPredictor"),
    ({"task": "auto-detect"}, ValueError, r"`task` of MCPredictor: expected one of "
     r"'auto', 'classification', 'regression'"),
    ({"joint": 1}, TypeError, r"`joint` of MCPredictor: expected a bool"),
    ({"seed": -3}, ValueError, r"`seed` of MCPredictor"),
])
def test_bad_arguments(bn_model, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        kreg.MCPredictor(bn_model, **kwargs)


def test_predict_argument_errors(bn_model):
    p = kreg.MCPredictor(bn_model, samples=2)
    with pytest.raises(ValueError, match=r"`verbose` of MCPredictor.predict"):
        p.predict(X, verbose=2)
    with pytest.raises(ValueError, match=r"`batch_size` of MCPredictor.predict"):
        p.predict(X, batch_size=0)


def test_task_detection(bn_model):
    assert kreg.MCPredictor(bn_model).resolved_task == "classification"
    sig = keras.Sequential([keras.Input((3,)), kreg.layers.Dropout(0.5),
                            keras.layers.Dense(1, activation="sigmoid")])
    p = kreg.MCPredictor(sig, samples=4)
    assert (p.resolved_task, p.activation) == ("classification", "sigmoid")
    out = p.predict(np.ones((5, 3), "float32"), verbose=0)
    assert out.entropy.shape == (5,)
    assert kreg.MCPredictor(sig, task="regression").resolved_task == "regression"


def test_progress_bar_and_chunking_shapes(bn_model, capsys):
    p = kreg.MCPredictor(bn_model, samples=5, seed=0, max_batch=16)
    out = p.predict(X, batch_size=8, verbose=1, return_samples=True)
    assert out.samples.shape == (5, 40, 3)
    assert "pass" in capsys.readouterr().out


# -- uncertainty identities and metrics ---------------------------------------
def test_uncertainty_identities_on_random_softmax_samples():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(30, 50, 4)) * 2
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    pred = kreg.MCPrediction(p, task="classification")
    np.testing.assert_allclose(pred.entropy,
                               pred.expected_entropy + pred.mutual_information,
                               atol=1e-12)
    assert np.all(pred.mutual_information >= 0)
    mean = p.mean(0)
    np.testing.assert_allclose(pred.entropy, -(mean * np.log(mean)).sum(-1))
    np.testing.assert_allclose(pred.expected_entropy,
                               -(p * np.log(p)).sum(-1).mean(0))
    np.testing.assert_allclose(pred.variance, p.var(0))
    modal = np.array([np.bincount(p[:, i].argmax(-1), minlength=4).max()
                      for i in range(50)])
    np.testing.assert_allclose(pred.variation_ratio, 1 - modal / 30)


def test_aleatoric_zero_for_one_hot_samples():
    labels = np.random.default_rng(1).integers(0, 3, size=(10, 6))
    pred = kreg.MCPrediction(np.eye(3)[labels], task="classification")
    np.testing.assert_allclose(pred.expected_entropy, 0.0, atol=1e-12)
    np.testing.assert_allclose(pred.mutual_information, pred.entropy)


def test_regression_log_likelihood_equals_gal_formula():
    rng = np.random.default_rng(2)
    t, n, tau = 25, 7, 3.5
    draws = rng.normal(size=(t, n, 2))
    y = rng.normal(size=(n, 2))
    ll = gaussian_log_likelihood(draws, y, tau)
    for i in range(n):
        sq = ((draws[:, i] - y[i]) ** 2).sum(-1)
        expected = (np.log(np.mean(np.exp(-0.5 * tau * sq)))
                    - np.log(2 * np.pi) + np.log(tau))  # D = 2
        np.testing.assert_allclose(ll[i], expected, rtol=1e-10)
    pred = kreg.MCPrediction(draws, task="regression")
    np.testing.assert_allclose(pred.predictive_variance(tau), draws.var(0) + 1 / tau)


def test_evaluate_reports_mc_next_to_deterministic(bn_model):
    y = np.random.default_rng(0).integers(0, 3, size=40)
    res = kreg.MCPredictor(bn_model, samples=10, seed=0).evaluate(X, y, verbose=0)
    assert set(res["mc"]) == set(res["deterministic"]) == {"nll", "accuracy",
                                                           "brier", "ece"}
    det = bn_model.predict(X, verbose=0)
    np.testing.assert_allclose(res["deterministic"]["nll"],
                               -np.log(det[np.arange(40), y]).mean(), rtol=1e-5)
    np.testing.assert_allclose(res["deterministic"]["accuracy"],
                               (det.argmax(1) == y).mean())
    np.testing.assert_allclose(res["deterministic"]["brier"],
                               ((det - np.eye(3)[y]) ** 2).sum(1).mean(), rtol=1e-5)


def test_expected_calibration_error_by_hand():
    from kreg.mc.metrics import expected_calibration_error

    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.55, 0.55])
    correct = np.array([1, 0, 1, 1, 1, 0])
    # Bin (0.9,1]: acc .5 conf .95 -> 2/6 * .45; bin (0.5,.6]: acc .75 conf .55.
    expected = 2 / 6 * 0.45 + 4 / 6 * 0.2
    assert expected_calibration_error(conf, correct, bins=10) == pytest.approx(expected)


def test_covariance_needs_joint_samples():
    pred = kreg.MCPrediction(np.zeros((3, 4, 1)), task="regression")
    with pytest.raises(ValueError, match=r"expected joint samples"):
        pred.covariance()


@pytest.mark.parametrize("mask", ["batch", "example"])
def test_dropconnect_masks_independent_across_samples(mask):
    # Kernel of ones, no bias, identity inputs: sample t's output for input e_j
    # is row j of that sample's weight mask (times 1/keep).
    d_in, d_out, t = 20, 30, 10
    layer = kreg.layers.DropConnectDense(d_out, rate=0.5, mask=mask, use_bias=False,
                                         kernel_initializer="ones", seed=0)
    model = keras.Sequential([keras.Input((d_in,)), layer])
    x = np.eye(d_in, dtype="float32")
    pred = kreg.MCPredictor(model, samples=t, seed=1, max_batch=3 * d_in).predict(
        x, verbose=0, return_samples=True)
    masks = pred.samples > 0  # (T, d_in, d_out)
    np.testing.assert_allclose(pred.samples[masks], 2.0, rtol=1e-6)
    flat = masks.reshape(t, -1)
    agree = (flat[:, None] == flat[None]).mean(axis=2)[~np.eye(t, dtype=bool)]
    se = 0.5 / math.sqrt(flat.shape[1])
    assert agree.max() < 0.5 + 5 * se
    assert abs(masks.mean() - 0.5) < 5 * 0.5 / math.sqrt(masks.size)


# -- inputs, compiled functions and seeds (issue 17) ---------------------------
def test_python_list_of_rows_is_accepted_like_model_predict(bn_model):
    p = kreg.MCPredictor(bn_model, samples=4, seed=1)
    a = p.predict(X, verbose=0, return_samples=True)
    b = p.predict(X.tolist(), verbose=0, return_samples=True)
    np.testing.assert_array_equal(a.samples, b.samples)


def test_input_sizes_reuse_a_few_compiled_functions(monkeypatch, caplog):
    # Chunks are padded to a power of two (or batch_size): 13 input sizes
    # with max_batch=64 compile at most two functions per padded size, and a
    # second round of sizes compiles nothing new.
    from kreg.mc import plan as mod

    traces = []
    original = mod.sample_outputs

    def counting(*args, **kwargs):
        traces.append(args[3])  # tiles
        return original(*args, **kwargs)

    monkeypatch.setattr(mod, "sample_outputs", counting)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                              kreg.layers.Dropout(0.5), keras.layers.Dense(2)])
    p = kreg.MCPredictor(model, samples=10, seed=0, max_batch=64)
    sizes = [1, 2, 3, 5, 7, 9, 13, 17, 23, 31, 40, 50, 63]
    rng = np.random.default_rng(0)
    for n in sizes:
        out = p.predict(rng.normal(size=(n, 3)).astype("float32"), verbose=0,
                        return_samples=True)
        assert out.samples.shape == (10, n, 2)
    samplers = [k for k in p._cache if k[0] == "sampler"]
    # Padded sizes 1..64 (7 buckets), each with one full and one remainder
    # tiles count at most; in practice fewer, as tiles coincide.
    assert len(samplers) <= 10
    if keras.backend.backend() != "torch":  # torch runs eagerly: no traces
        first = len(traces)
        assert first <= 12
        for n in [4, 6, 11, 19, 29, 33, 47, 55, 64]:
            p.predict(rng.normal(size=(n, 3)).astype("float32"), verbose=0)
        assert len(traces) == first
    assert "retracing" not in caplog.text


def test_temperatures_are_inputs_of_one_compiled_function(monkeypatch):
    # Predictors of one model with other temperatures share their compiled
    # passes (the temperature is an input, not part of the trace), and a
    # call with another number of rows is not a retrace on TensorFlow (the
    # rows are traced as unknown): no "triggered tf.function retracing".
    from kreg.mc import plan as mod

    traces = []
    original = mod.sample_outputs

    def counting(*args, **kwargs):
        traces.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(mod, "sample_outputs", counting)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                              kreg.layers.Dropout(0.5),
                              keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(300, 3)).astype("float32")
    means = {}
    for temp in (None, 0.5, 2.0, 3.0):
        p = kreg.MCPredictor(model, samples=6, seed=0, temperature=temp)
        means[temp] = p.predict(x, verbose=0).mean
        p.evaluate(x, np.zeros(300, "int64"), verbose=0)
    samplers = {k for k in p._cache if k[0] == "sampler"}
    assert len(samplers) == 4  # (untempered, tempered) x (predict, evaluate)
    raw = kreg.MCPredictor(model, samples=6, seed=0).predict(x, verbose=0)
    for temp in (0.5, 2.0, 3.0):
        np.testing.assert_allclose(
            means[temp], kreg.calibration.apply_temperature(raw.mean, temp), atol=1e-5)
    if keras.backend.backend() == "tensorflow":  # 256 + 44 rows: one trace each
        assert len(traces) == 4


def test_seeds_differing_by_2_to_the_24_give_different_samples(bn_model):
    def run(seed):
        return kreg.MCPredictor(bn_model, samples=3, seed=seed).predict(
            X, verbose=0, return_samples=True).samples

    base = run(5)
    for other in (5 + 2**24, 5 + 2**28, 5 + 2**31):
        assert np.abs(run(other) - base).max() > 1e-3
    np.testing.assert_array_equal(run(5), base)
    with pytest.raises(ValueError, match=r"`seed` of MCPredictor: expected an integer in "
                       r"\[0, 4294967295\] or None. Received: seed=4294967296"):
        kreg.MCPredictor(bn_model, seed=2**32)


def test_seed_words_are_one_to_one():
    from kreg.layers._seeds import encode_seed as seed_words

    seeds = [0, 1, 2**24 - 1, 2**24, 2**24 + 1, 2**31, 2**32 - 1]
    words = {seed_words(s, c) for s in seeds for c in (0, 1, 2**20 - 1)}
    assert len(words) == len(seeds) * 3
    assert all(0 <= b < 2**24 and 0 <= h < 2**28 for b, h in words)
    assert seed_words(7) == (7, 0)


# -- every model shape and input form (issues 14 and 16) ------------------------
RNG4 = np.random.default_rng(0)
X4 = RNG4.normal(size=(20, 4)).astype("float32")
Y3 = RNG4.integers(0, 3, size=20)


def _same(a, b, atol=1e-6):
    np.testing.assert_allclose(a.mean, b.mean, atol=atol, rtol=0)
    np.testing.assert_allclose(a.std, b.std, atol=atol, rtol=0)
    if a.task == "classification":
        for name in ("entropy", "expected_entropy", "mutual_information"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, rtol=0)
    assert (a.task, a.activation) == (b.task, b.activation)


# -- logits models -------------------------------------------------------------
@pytest.mark.parametrize("units, loss, head", [
    (3, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.layers.Softmax),
    (1, keras.losses.BinaryCrossentropy(from_logits=True),
     lambda: keras.layers.Activation("sigmoid")),
])
@pytest.mark.parametrize("joint", [False, True])
def test_logits_model_equals_the_model_with_softmax_appended(units, loss, head, joint):
    keras.utils.set_random_seed(1)
    layers = [keras.layers.Dense(16, activation="relu"), kreg.layers.Dropout(0.5),
              keras.layers.Dense(units)]
    logits = keras.Sequential([keras.Input((4,))] + layers)
    logits.compile(loss=loss)
    probs = keras.Sequential([keras.Input((4,))] + layers + [head()])
    a = kreg.MCPredictor(logits, samples=30, seed=3, joint=joint).predict(
        X4, verbose=0, return_samples=True)
    b = kreg.MCPredictor(probs, samples=30, seed=3, joint=joint).predict(
        X4, verbose=0, return_samples=True)
    assert a.task == "classification"
    _same(a, b)
    np.testing.assert_allclose(a.samples, b.samples, atol=1e-6, rtol=0)
    # Explicit from_logits on the uncompiled twin gives the same.
    twin = keras.Sequential([keras.Input((4,))] + layers)
    c = kreg.MCPredictor(twin, samples=30, seed=3, joint=joint,
                         from_logits=True).predict(X4, verbose=0)
    _same(c, b)
    # And evaluate scores labels on the logits model (was a reshape error).
    y = Y3 if units == 3 else (Y3 > 0).astype("float32")
    ea = kreg.MCPredictor(logits, samples=30, seed=3).evaluate(X4, y, verbose=0)
    eb = kreg.MCPredictor(probs, samples=30, seed=3).evaluate(X4, y, verbose=0)
    for part in ("mc", "deterministic"):
        for key, value in eb[part].items():
            assert ea[part][key] == pytest.approx(value, abs=1e-6)


def test_classification_of_a_linear_output_needs_from_logits():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4,)), kreg.layers.Dropout(0.5),
                              keras.layers.Dense(3)])
    p = kreg.MCPredictor(model, samples=5, task="classification")
    with pytest.raises(ValueError, match=r"`from_logits` of MCPredictor.predict: expected "
                       r"True for output .* are not probabilities"):
        p.predict(X4 * 10, verbose=0)
    assert kreg.MCPredictor(model, samples=5).resolved_task == "regression"


# -- datasets, PyDataset, generators -------------------------------------------
@pytest.fixture(scope="module")
def clf():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             kreg.layers.Dropout(0.5),
                             keras.layers.Dense(3, activation="softmax")])


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y=None, batch=8):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        sl = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[sl] if self.y is None else (self.x[sl], self.y[sl])


def _gen(x, y=None, batch=8):
    for i in range(0, len(x), batch):
        yield x[i:i + batch] if y is None else (x[i:i + batch], y[i:i + batch])


def test_pydataset_and_generator_are_chunked_by_their_batches(clf):
    p = kreg.MCPredictor(clf, samples=6, seed=4)
    ref = p.predict(X4, batch_size=8, verbose=0, return_samples=True)
    for data in (_Batches(X4), _gen(X4), _Batches(X4, Y3), _gen(X4, Y3)):
        got = p.predict(data, verbose=0, return_samples=True)
        np.testing.assert_array_equal(got.samples, ref.samples)
    ev = p.evaluate(X4, Y3, batch_size=8, verbose=0)
    assert p.evaluate(_Batches(X4, Y3), verbose=0) == ev
    assert p.evaluate(_gen(X4, Y3), verbose=0) == ev


@pytest.mark.tf_only(reason="tf.data.Dataset is TensorFlow's")
def test_tf_data_dataset_of_x_or_x_y(clf):
    import tensorflow as tf

    p = kreg.MCPredictor(clf, samples=6, seed=4)
    ref = p.predict(X4, batch_size=8, verbose=0, return_samples=True)
    for ds in (tf.data.Dataset.from_tensor_slices(X4).batch(8),
               tf.data.Dataset.from_tensor_slices((X4, Y3)).batch(8)):
        got = p.predict(ds, verbose=0, return_samples=True)
        np.testing.assert_array_equal(got.samples, ref.samples)
    ds = tf.data.Dataset.from_tensor_slices((X4, Y3)).batch(8)
    assert p.evaluate(ds, verbose=0) == p.evaluate(X4, Y3, batch_size=8, verbose=0)


# -- several inputs ------------------------------------------------------------
@pytest.fixture(scope="module")
def multi():
    """Two named inputs, a deterministic prefix, two outputs (dict)."""
    keras.utils.set_random_seed(5)
    a = keras.Input((3,), name="num")
    b = keras.Input((2,), name="cat")
    h = keras.layers.Concatenate()([keras.layers.Dense(6, name="pa")(a),
                                    keras.layers.Dense(6, name="pb")(b)])
    h = kreg.layers.Dropout(0.4, name="drop")(keras.layers.Dense(8, activation="relu")(h))
    outs = {"label": keras.layers.Dense(3, activation="softmax", name="label_head")(h),
            "value": keras.layers.Dense(1, name="value_head")(h)}
    return keras.Model({"num": a, "cat": b}, outs)


XA = RNG4.normal(size=(12, 3)).astype("float32")
XB = RNG4.normal(size=(12, 2)).astype("float32")


def test_every_input_form_gives_the_same_samples(multi):
    p = kreg.MCPredictor(multi, samples=5, seed=6)
    assert p.split.prefix is not None
    ref = p.predict({"num": XA, "cat": XB}, verbose=0, return_samples=True)
    assert sorted(ref) == ["label", "value"]
    forms = [
        {"cat": ops.convert_to_tensor(XB), "num": ops.convert_to_tensor(XA)},
        {"num": XA.tolist(), "cat": XB.tolist()},
    ]
    for x in forms:
        got = p.predict(x, verbose=0, return_samples=True)
        for name in ("label", "value"):
            np.testing.assert_array_equal(got[name].samples, ref[name].samples)
    # The prefix-once split matches sampling the whole model.
    ctx = SamplingContext(ops.convert_to_tensor(np.array([6, 0]), dtype=p.seed_dtype),
                          tiles=5, layer_index=p.layer_index)
    with sampling_scope(ctx):
        full = multi({"num": np.tile(XA, (5, 1)), "cat": np.tile(XB, (5, 1))},
                     training=False)
    got = p.predict({"num": XA, "cat": XB}, batch_size=12, verbose=0,
                    return_samples=True)
    for name in ("label", "value"):
        want = _np(full[name]).reshape((5, 12, -1))
        np.testing.assert_allclose(got[name].samples, want, rtol=1e-5, atol=1e-6)


def test_each_output_has_its_own_task_and_evaluate_scores_every_output(multi):
    p = kreg.MCPredictor(multi, samples=8, seed=7)
    pred = p.predict({"num": XA, "cat": XB}, verbose=0)
    assert (pred["label"].task, pred["value"].task) == ("classification", "regression")
    assert pred["label"].mean.shape == (12, 3) and pred["value"].mean.shape == (12, 1)
    assert p.resolved_task == ["classification", "regression"]
    y = {"label": Y3[:12], "value": RNG4.normal(size=(12, 1))}
    ev = p.evaluate({"num": XA, "cat": XB}, y, verbose=0)
    assert ev["label"]["task"] == "classification" and set(ev["label"]["mc"]) == {
        "nll", "accuracy", "brier", "ece"}
    assert ev["value"]["task"] == "regression"
    det = multi.predict({"num": XA, "cat": XB}, verbose=0)
    rmse = float(np.sqrt(np.mean((det["value"] - y["value"]) ** 2)))
    assert ev["value"]["deterministic"]["rmse"] == pytest.approx(rmse, rel=1e-5)
    # A list of targets in output order works too.
    assert p.evaluate({"num": XA, "cat": XB}, [y["label"], y["value"]], verbose=0) == ev


def test_list_input_model_takes_a_list_tuple_or_dict_by_name():
    keras.utils.set_random_seed(12)
    a = keras.Input((3,), name="num")
    b = keras.Input((2,), name="cat")
    h = keras.layers.Concatenate()([a, keras.layers.Dense(4, name="pb")(b)])
    out = keras.layers.Dense(1)(kreg.layers.Dropout(0.5)(h))
    model = keras.Model([a, b], out)
    p = kreg.MCPredictor(model, samples=5, seed=6)
    ref = p.predict([XA, XB], verbose=0, return_samples=True)
    for x in [(XA, XB), {"cat": XB, "num": XA},
              [ops.convert_to_tensor(XA), XB.tolist()]]:
        got = p.predict(x, verbose=0, return_samples=True)
        np.testing.assert_array_equal(got.samples, ref.samples)
    with pytest.raises(ValueError, match=r"`x` of MCPredictor.predict: expected 2 arrays"):
        p.predict([XA], verbose=0)


def test_list_outputs_give_a_list_and_per_output_settings():
    keras.utils.set_random_seed(8)
    inp = keras.Input((4,))
    h = kreg.layers.Dropout(0.5)(keras.layers.Dense(8)(inp))
    model = keras.Model(inp, [keras.layers.Dense(2)(h), keras.layers.Dense(1)(h)])
    p = kreg.MCPredictor(model, samples=4, seed=0, from_logits=[True, False])
    pred = p.predict(X4, verbose=0)
    assert isinstance(pred, list) and [q.task for q in pred] == ["classification",
                                                                  "regression"]
    np.testing.assert_allclose(pred[0].mean.sum(axis=1), 1.0, rtol=1e-6)
    q = kreg.MCPredictor(model, samples=4, seed=0, task=["regression", "regression"])
    assert [r.task for r in q.predict(X4, verbose=0)] == ["regression"] * 2


@pytest.mark.parametrize("joint", [False, True])
def test_every_output_comes_from_the_same_networks(joint):
    # Output b is exactly 2 * output a in every sample iff both outputs of a
    # sample come from one forward pass with one set of masks.
    keras.utils.set_random_seed(9)
    inp = keras.Input((4,))
    d = kreg.layers.Dropout(0.5, name="d")(keras.layers.Dense(6, name="pre")(inp))
    a = keras.layers.Dense(2, name="a")(d)
    b = keras.layers.Rescaling(2.0, name="b")(a)
    model = keras.Model(inp, {"a": a, "b": b})
    for max_batch in (None, 16):
        p = kreg.MCPredictor(model, samples=10, seed=1, joint=joint, max_batch=max_batch)
        pred = p.predict(X4, verbose=0, return_samples=True)
        np.testing.assert_allclose(pred["b"].samples, 2 * pred["a"].samples, rtol=1e-5,
                                   atol=1e-6)
        assert np.abs(pred["a"].samples[0] - pred["a"].samples[1]).max() > 1e-3
        if joint:
            if max_batch is None:
                first = pred["a"].samples
            else:  # joint samples do not depend on chunking
                np.testing.assert_allclose(pred["a"].samples, first, rtol=1e-5, atol=1e-6)


def test_nested_sequential_inside_functional():
    keras.utils.set_random_seed(10)
    inner = keras.Sequential([keras.Input((8,)), kreg.layers.Dropout(0.5),
                              keras.layers.Dense(3, activation="softmax")], name="inner")
    inp = keras.Input((4,))
    out = inner(keras.layers.Dense(8, name="pre")(inp))
    model = keras.Model(inp, out)
    p = kreg.MCPredictor(model, samples=6, seed=2)
    assert p.resolved_task == "classification"
    got = p.predict(X4, batch_size=20, verbose=0, return_samples=True)
    ctx = SamplingContext(ops.convert_to_tensor(np.array([2, 0]), dtype=p.seed_dtype),
                          tiles=6, layer_index=p.layer_index)
    with sampling_scope(ctx):
        full = _np(model(np.tile(X4, (6, 1)), training=False)).reshape(6, 20, 3)
    np.testing.assert_allclose(got.samples, full, rtol=1e-5, atol=1e-6)


class TwoHeads(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8)
        self.drop = kreg.layers.Dropout(0.5, seed=0)
        self.cls = keras.layers.Dense(3, activation="softmax")
        self.reg = keras.layers.Dense(1)

    def call(self, x, training=None):
        h = self.drop(self.hidden(x), training=training)
        return {"cls": self.cls(h), "reg": self.reg(h)}


def test_subclassed_model_with_two_outputs():
    keras.utils.set_random_seed(11)
    net = TwoHeads()
    net(X4)
    with pytest.raises(ValueError, match=r"`task` of MCPredictor: expected one task per "
                       r"output for a subclassed model with 2 outputs"):
        kreg.MCPredictor(net, samples=4).predict(X4, verbose=0)
    p = kreg.MCPredictor(net, samples=4, seed=0, task=["classification", "regression"])
    pred = p.predict(X4, verbose=0)
    assert sorted(pred) == ["cls", "reg"]
    assert (pred["cls"].task, pred["reg"].task) == ("classification", "regression")
    ev = p.evaluate(X4, {"cls": Y3, "reg": np.zeros((20, 1))}, verbose=0)
    assert ev["cls"]["task"] == "classification"
