"""Joint Monte Carlo samples: one network per sample, applied to every input.

`MCPredictor(..., joint=True)`: the masks of sample t are shared by all inputs
and depend only on (seed, layer, t), so samples are functions of the input
(coherent along a grid), do not depend on chunking, and still have the right
per-input marginals.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

import kreg
from kreg.layers.base import SamplingContext
from kreg.layers.base import sampling_scope

D = 8
KEEP = 0.5
GRID = np.linspace(-2.0, 2.0, 41).astype("float32")
_RNG = np.random.default_rng(0)
_A = _RNG.normal(size=D).astype("float32")
_B = _RNG.normal(size=D).astype("float32")
# A 1-D grid of inputs: a line x(s) = a + s b in input space.
X_GRID = (_A[None] + GRID[:, None] * _B[None]).astype("float32")
W = _RNG.normal(size=(D, 1)).astype("float32")
BIAS = np.array([0.3], "float32")


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def linear():
    """y = w . (m * x) / p + b: inverted dropout on the input of a linear model."""
    model = keras.Sequential([keras.Input((D,)),
                              kreg.layers.Dropout(1 - KEEP, seed=0, name="drop"),
                              keras.layers.Dense(1, name="dense")])
    model.get_layer("dense").set_weights([W, BIAS])
    return model


@pytest.fixture(scope="module")
def linear_joint(linear):
    """2000 joint samples over the grid (one predictor, several tests)."""
    predictor = kreg.MCPredictor(linear, samples=2000, seed=3, joint=True)
    return predictor, predictor.predict(X_GRID, verbose=0)


def _second_differences(samples):
    return np.diff(samples[..., 0].astype("float64"), n=2, axis=1)


# -- coherence -----------------------------------------------------------------
def test_joint_samples_are_linear_along_a_grid_independent_are_not(linear, linear_joint):
    _, joint = linear_joint
    assert joint.joint is True and joint.samples.shape == (2000, 41, 1)
    scale = np.abs(joint.samples).max()
    # Every joint sample is one linear function of s: second differences are
    # zero up to float32 round-off of values of size `scale`.
    assert np.abs(_second_differences(joint.samples)).max() < 1e-5 * scale
    # Exactly the line through the sample's two end points.
    s = joint.samples[..., 0].astype("float64")
    frac = (GRID - GRID[0]) / (GRID[-1] - GRID[0])
    line = s[:, :1] + (s[:, -1:] - s[:, :1]) * frac[None]
    np.testing.assert_allclose(s, line, atol=1e-5 * scale)
    indep = kreg.MCPredictor(linear, samples=20, seed=3).predict(
        X_GRID, verbose=0, return_samples=True)
    assert indep.joint is False
    # Per-row masks: a cloud of dots, second differences of the order of y.
    assert np.abs(_second_differences(indep.samples)).max() > 0.2 * scale
    assert np.median(np.abs(_second_differences(indep.samples))) > 1e-2 * scale


# -- chunk invariance ----------------------------------------------------------
def test_joint_samples_do_not_depend_on_chunking(linear, linear_joint):
    predictor, full = linear_joint
    halves = np.concatenate([predictor.predict(X_GRID[:20], verbose=0).samples,
                             predictor.predict(X_GRID[20:], verbose=0).samples], axis=1)
    # Same masks; the outputs may differ by the round-off of matmuls over
    # different batch sizes (about 1e-6 relative).
    np.testing.assert_allclose(halves, full.samples, rtol=1e-5, atol=1e-5)
    by_7 = predictor.predict(X_GRID, batch_size=7, verbose=0).samples
    np.testing.assert_allclose(by_7, full.samples, rtol=1e-5, atol=1e-5)
    small = kreg.MCPredictor(linear, samples=2000, seed=3, joint=True, max_batch=1000)
    got = small.predict(X_GRID, batch_size=9, verbose=0).samples  # 5 x 18 passes
    np.testing.assert_allclose(got, full.samples, rtol=1e-5, atol=1e-5)


def _drop_only(shape, noise_shape=None, rate=0.5):
    return keras.Sequential([keras.Input(shape),
                             kreg.layers.Dropout(rate, noise_shape=noise_shape, seed=0)])


@pytest.fixture(scope="module")
def mask_model():
    return _drop_only((300,))


def test_joint_masks_exactly_equal_across_chunkings(mask_model):
    """On a Dropout-only model over ones the samples *are* the masks: exact."""
    t, n = 12, 10
    x = np.ones((n, 300), "float32")
    full = kreg.MCPredictor(mask_model, samples=t, seed=5, joint=True).predict(
        x, verbose=0).samples
    assert set(np.unique(full).tolist()) == {0.0, 2.0}
    p = kreg.MCPredictor(mask_model, samples=t, seed=5, joint=True, max_batch=8)
    chunked = p.predict(x, batch_size=4, verbose=0).samples  # 3 x 6 passes
    np.testing.assert_array_equal(chunked, full)
    one = p.predict(x[:1], verbose=0).samples
    np.testing.assert_array_equal(one, full[:, :1])
    # Shared by every input of a sample, whatever the chunk it was computed in.
    np.testing.assert_array_equal(full, np.broadcast_to(full[:, :1], full.shape))


def test_joint_masks_independent_across_samples_and_sample_chunks(mask_model):
    t, d = 40, 300
    p = kreg.MCPredictor(mask_model, samples=t, seed=2, joint=True, max_batch=6)
    masks = p.predict(np.ones((3, d), "float32"), verbose=0).samples[:, 0] > 0
    # 40 samples in chunks of 2 (batch 3): each pair of samples' masks agree
    # on half of the units, as independent Bernoulli(1/2) masks do.
    agree = (masks[:, None] == masks[None]).mean(axis=2)
    off = agree[~np.eye(t, dtype=bool)]
    assert abs(off.mean() - 0.5) < 5 * 0.5 / math.sqrt(d * t)
    assert off.max() < 0.5 + 5 * 0.5 / math.sqrt(d)
    assert abs(masks.mean() - 0.5) < 5 * 0.5 / math.sqrt(masks.size)


def test_joint_respects_noise_shape():
    model = _drop_only((5, 30), noise_shape=(None, 1, 30))
    x = np.ones((4, 5, 30), "float32")
    pred = kreg.MCPredictor(model, samples=30, seed=1, joint=True).predict(x, verbose=0)
    s = pred.samples
    # One mask per sample over the channels, shared by inputs and time steps.
    np.testing.assert_array_equal(s, np.broadcast_to(s[:, :1, :1], s.shape))
    assert abs((s[:, 0, 0] > 0).mean() - 0.5) < 5 * 0.5 / math.sqrt(30 * 30)
    assert np.any(s[0, 0, 0] != s[1, 0, 0])


# -- marginals -----------------------------------------------------------------
def test_joint_and_independent_marginals_agree():
    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((3,)), keras.layers.Dense(16, activation="tanh"),
        kreg.layers.Dropout(0.5, seed=1), keras.layers.Dense(16, activation="relu"),
        kreg.layers.Dropout(0.3, seed=2), keras.layers.Dense(1)])
    x = np.random.default_rng(5).normal(size=(6, 3)).astype("float32")
    t = 3000
    a = kreg.MCPredictor(model, samples=t, seed=0, joint=True).predict(x, verbose=0)
    b = kreg.MCPredictor(model, samples=t, seed=1).predict(x, verbose=0,
                                                        return_samples=True)
    sa, sb = a.samples[..., 0].astype("float64"), b.samples[..., 0].astype("float64")
    se_mean = np.sqrt(sa.var(0) / t + sb.var(0) / t)
    assert np.all(np.abs(sa.mean(0) - sb.mean(0)) < 4.5 * se_mean)

    def var_se(s):  # standard error of the sample variance
        c = s - s.mean(0)
        return np.sqrt(((c ** 2 - (c ** 2).mean(0)) ** 2).mean(0) / len(s))

    se_var = np.sqrt(var_se(sa) ** 2 + var_se(sb) ** 2)
    assert np.all(np.abs(sa.var(0) - sb.var(0)) < 4.5 * se_var)
    # float32 statistics on the device (issue 18): equal to float32 round-off.
    np.testing.assert_allclose(a.variance[:, 0], sa.var(0), rtol=1e-5)
    # Joint samples of nearby inputs are correlated, independent ones are not.
    corr = np.corrcoef(sa.T)
    assert corr[~np.eye(6, dtype=bool)].__abs__().max() > 0.3


# -- covariance ------------------------------------------------------------------
def test_covariance_matches_the_closed_form(linear_joint):
    _, joint = linear_joint
    idx = [0, 20, 40]
    cov = joint.covariance(indices=idx)
    assert cov.shape == (3, 3)
    x = X_GRID[idx].astype("float64")
    w = W[:, 0].astype("float64")
    # Cov(y_a, y_b) = sum_j w_j^2 x_aj x_bj (1 - p) / p for inverted dropout.
    expected = (x * w) @ (x * w).T * (1 - KEEP) / KEEP
    s = joint.samples[:, idx, 0].astype("float64")
    c = s - s.mean(0)
    prod = c[:, :, None] * c[:, None, :]
    se = prod.std(0) / math.sqrt(len(s))
    assert np.all(np.abs(cov - expected) < 5 * se + 1e-9)
    # covariance: float64 from the samples; variance: float32 on the device.
    np.testing.assert_allclose(np.diag(cov), joint.variance[idx, 0], rtol=1e-5)
    np.testing.assert_allclose(joint.mean[idx, 0], x @ w + BIAS[0],
                               atol=5 * float(np.sqrt(np.diag(expected)).max())
                               / math.sqrt(len(s)))
    assert joint.covariance().shape == (41, 41)


# -- prefix once, BatchNormalization, DropConnect ---------------------------------
def test_prefix_once_in_joint_mode_matches_sampling_the_whole_model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((5,))
    a = keras.layers.Dense(8, activation="relu", name="pre1")(inp)
    b = keras.layers.Dense(8, activation="tanh", name="pre2")(a)
    d = kreg.layers.Dropout(0.3, seed=1)(b)
    c = keras.layers.Concatenate()([d, a, inp])
    e = kreg.layers.Dropout(0.2, seed=2)(keras.layers.Dense(6, activation="relu")(c))
    model = keras.Model(inp, keras.layers.Dense(2)(e))
    pred = kreg.MCPredictor(model, samples=7, seed=9, joint=True)
    assert [layer.name for layer in pred.split.prefix_layers] == ["pre1", "pre2"]
    x = np.random.default_rng(1).normal(size=(9, 5)).astype("float32")
    got = pred.predict(x, verbose=0).samples
    ctx = SamplingContext(ops.convert_to_tensor(np.array([9, 0]), dtype=pred.seed_dtype),
                          tiles=7, joint=True, sample_offset=0, total_samples=7,
                          layer_index=pred.layer_index)
    with sampling_scope(ctx):
        full = _np(model(np.tile(x, (7, 1)), training=False)).reshape(7, 9, 2)
    np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-6)


def test_dropout_then_batchnorm_in_inference_mode():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(16, name="dense"),
        kreg.layers.Dropout(0.5, seed=1, name="drop"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(3, activation="softmax", name="out")])
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(16, 2.0, "float32"))
    bn.moving_variance.assign(np.full(16, 9.0, "float32"))
    before = [_np(w).copy() for w in model.variables]
    x = np.random.default_rng(0).normal(size=(12, 6)).astype("float32")
    pred = kreg.MCPredictor(model, samples=10, seed=3, joint=True).predict(x, verbose=0)
    # The sub-network up to the dropout has the same sampling layer (index 0)
    # and seed, hence the same joint masks.
    upto = keras.Model(model.inputs, model.get_layer("drop").output)
    dropped = kreg.MCPredictor(upto, samples=10, seed=3, joint=True,
                               task="regression").predict(x, verbose=0).samples
    h = _np(model.get_layer("dense")(x))
    masks = np.round(dropped[:, 0] / h[0])  # (T, 16); all |h| > 0 here
    assert set(np.unique(masks).tolist()) == {0.0, 2.0}
    np.testing.assert_allclose(dropped, h[None] * masks[:, None], rtol=1e-5, atol=1e-6)
    # BN with the moving statistics (inference mode), then the output layer.
    g, b = _np(bn.gamma), _np(bn.beta)
    normed = (dropped - 2.0) / np.sqrt(9.0 + bn.epsilon) * g + b
    out = model.get_layer("out")
    manual = np.stack([_np(out(normed[t])) for t in range(10)])
    np.testing.assert_allclose(pred.samples, manual, rtol=1e-4, atol=1e-6)
    for a, c in zip(before, model.variables):
        np.testing.assert_array_equal(a, _np(c))


def test_dropconnect_joint_samples_are_coherent_and_chunk_invariant():
    if not hasattr(kreg.layers, "DropConnectDense"):
        pytest.skip("DropConnect not merged yet")
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((D,)),
                              kreg.layers.DropConnectDense(1, rate=0.5, seed=0)])
    p = kreg.MCPredictor(model, samples=30, seed=4, joint=True)
    s = p.predict(X_GRID, verbose=0).samples
    scale = np.abs(s).max()
    # One weight mask per sample: every sample is linear along the grid.
    assert np.abs(_second_differences(s)).max() < 1e-5 * scale
    assert np.abs(s[0] - s[1]).max() > 1e-3 * scale
    halves = np.concatenate([p.predict(X_GRID[:20], verbose=0).samples,
                             p.predict(X_GRID[20:], verbose=0).samples], axis=1)
    np.testing.assert_allclose(halves, s, rtol=1e-5, atol=1e-5)
    small = kreg.MCPredictor(model, samples=30, seed=4, joint=True, max_batch=40)
    np.testing.assert_allclose(small.predict(X_GRID, batch_size=10, verbose=0).samples,
                               s, rtol=1e-5, atol=1e-5)


def test_joint_prediction_says_so_and_keeps_samples(linear):
    pred = kreg.MCPredictor(linear, samples=3, seed=0, joint=True).predict(
        X_GRID[:4], verbose=0)
    assert pred.joint is True and pred.samples.shape == (3, 4, 1)
    assert "joint=True" in repr(pred)
