"""Tests of kreg.layers.DropConnectDense and DropConnectConv2D."""

import inspect
import math
import re

import keras
import numpy as np
import pytest

import kreg
from kreg._compile import compile_inference
from kreg.layers import DropConnectConv2D
from kreg.layers import DropConnectDense
from kreg.layers.base import SEED_STATE_KEY
from kreg.layers.base import SamplingContext
from kreg.layers.base import sampling_scope


def as_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def value_and_grads(fn, variables):
    """`fn()` -> (loss, aux): returns (aux, d loss / d variables) on any backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, aux = fn()
        return aux, tape.gradient(loss, variables)
    if backend == "jax":
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn()

        (_, aux), grads = jax.value_and_grad(pure, has_aux=True)(
            [v.value for v in variables])
        return aux, grads
    if backend == "torch":
        import torch

        loss, aux = fn()
        return aux, torch.autograd.grad(loss, [v.value for v in variables])
    raise NotImplementedError(backend)


def dense(units, in_dim, **kwargs):
    layer = DropConnectDense(units, **kwargs)
    layer.build((None, in_dim))
    return layer


def ones_dense(units, in_dim, **kwargs):
    kwargs.setdefault("kernel_initializer", "ones")
    kwargs.setdefault("bias_initializer", "ones")
    return dense(units, in_dim, **kwargs)


def sampling(tiles, seed=(3, 4), **kwargs):
    return sampling_scope(
        SamplingContext(seed=np.array(seed), tiles=tiles, **kwargs)
    )


def traced_samples(layer, x, tiles):
    """`tiles` Monte Carlo samples of `layer(x)` in one tiled, traced call.

    (The scope is read when the function is traced; traced, the per-sample
    loop is a graph loop, much faster than an eager one.)
    """
    if not layer.built:  # build eagerly: jax.jit must not create variables
        layer.build(x.shape)
    with sampling(tiles=tiles):
        out = compile_inference(layer, layer.variables)(np.concatenate([x] * tiles))
    return as_np(out).reshape((tiles, -1))


def z_scores(estimate, expected, std_err):
    return np.abs(np.asarray(estimate) - expected) / np.asarray(std_err)


def test_public_names():
    assert {"DropConnectDense", "DropConnectConv2D"} <= set(kreg.layers.__all__)
    assert kreg.layers.DropConnectDense is DropConnectDense
    assert issubclass(DropConnectDense, keras.layers.Dense)
    assert issubclass(DropConnectConv2D, keras.layers.Conv2D)


# ----------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------
RATE_EXPECTED = (
    "expected a float in [0, 1) (rate=1 drops every unit, so the 1/keep_prob "
    "scaling is undefined)"
)
DENSE_ERRORS = [
    (dict(units=0), ValueError,
     "Invalid value for argument `units` of DropConnectDense: expected an "
     "integer >= 1. Received: units=0"),
    (dict(units=2.5), TypeError,
     "`units` of DropConnectDense: expected an integer >= 1. Received: "
     "units=2.5 (of type float)"),
    (dict(rate=1.0), ValueError, f"{RATE_EXPECTED}. Received: rate=1.0"),
    (dict(rate=-0.1), ValueError, f"{RATE_EXPECTED}. Received: rate=-0.1"),
    (dict(rate=float("nan")), ValueError, f"{RATE_EXPECTED}. Received: rate=nan"),
    (dict(rate="0.5"), TypeError, "Received: rate='0.5' (of type str)"),
    (dict(keep_prob=0.0), ValueError, "Received: keep_prob=0.0"),
    (dict(rate=0.3, keep_prob=0.7), ValueError,
     "expected either `rate` or `keep_prob`, not both. Received: keep_prob=0.7 "
     "together with rate=0.3"),
    (dict(mask="row"), ValueError,
     "Invalid value for argument `mask` of DropConnectDense: expected one of "
     "'batch', 'example'. Received: mask='row'"),
    (dict(mask=None), TypeError, "Received: mask=None (of type NoneType)"),
    (dict(inference="median"), ValueError,
     "Invalid value for argument `inference` of DropConnectDense: expected one "
     "of 'mean', 'gaussian', 'sample'. Received: inference='median'"),
    (dict(inference_samples=0), ValueError,
     "Invalid value for argument `inference_samples` of DropConnectDense: "
     "expected an integer >= 1. Received: inference_samples=0"),
    (dict(inference_samples=2.0), TypeError, "Received: inference_samples=2.0"),
    (dict(inference_samples=True), TypeError, "Received: inference_samples=True"),
    (dict(drop_bias="yes"), TypeError,
     "Invalid value for argument `drop_bias` of DropConnectDense: expected a "
     "bool. Received: drop_bias='yes'"),
    (dict(example_chunk=0), ValueError,
     "Invalid value for argument `example_chunk` of DropConnectDense: expected "
     "an integer >= 1 or None. Received: example_chunk=0"),
    (dict(example_chunk=1.5), TypeError, "Received: example_chunk=1.5"),
    (dict(seed=-1), ValueError,
     "Invalid value for argument `seed` of DropConnectDense: expected None or "
     "a non-negative integer. Received: seed=-1"),
    (dict(seed=1.5), TypeError, "Received: seed=1.5"),
]


@pytest.mark.parametrize("kwargs,error,message", DENSE_ERRORS)
def test_dense_bad_arguments(kwargs, error, message):
    kwargs = {"units": 4, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        DropConnectDense(**kwargs)


CONV_ERRORS = [
    (dict(filters=0), ValueError,
     "Invalid value for argument `filters` of DropConnectConv2D: expected an "
     "integer >= 1. Received: filters=0"),
    (dict(mask="example"), ValueError,
     "Invalid value for argument `mask` of DropConnectConv2D: expected 'batch' "
     "(DropConnectConv2D draws one kernel mask per call; per-example masks, "
     "mask='example', are only implemented for DropConnectDense). Received: "
     "mask='example'"),
    (dict(mask=1), TypeError, "Received: mask=1 (of type int)"),
    (dict(rate=1.5), ValueError, f"{RATE_EXPECTED}. Received: rate=1.5"),
    (dict(inference="gauss"), ValueError, "Received: inference='gauss'"),
    (dict(inference_samples=-3), ValueError, "Received: inference_samples=-3"),
    (dict(drop_bias=None), TypeError, "Received: drop_bias=None"),
    (dict(seed="1"), TypeError, "Received: seed='1'"),
]


@pytest.mark.parametrize("kwargs,error,message", CONV_ERRORS)
def test_conv_bad_arguments(kwargs, error, message):
    kwargs = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        DropConnectConv2D(**kwargs)


# ----------------------------------------------------------------------------
# Configuration, weights, serialization
# ----------------------------------------------------------------------------
def full_dense():
    return DropConnectDense(
        7, rate=0.3, mask="example", inference="gaussian", inference_samples=17,
        drop_bias=False, example_chunk=3, seed=5, activation="relu",
        use_bias=True, kernel_initializer="he_normal", bias_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(0.01), bias_regularizer="l1",
        activity_regularizer="l2", kernel_constraint="non_neg",
        bias_constraint=keras.constraints.MaxNorm(2.0), name="dc", dtype="float32",
    )


def full_conv():
    return DropConnectConv2D(
        3, (2, 3), rate=0.2, inference="sample", inference_samples=9,
        drop_bias=False, seed=7, strides=(1, 2), padding="same",
        data_format="channels_last", dilation_rate=1, groups=1,
        activation="tanh", use_bias=True, kernel_initializer="he_uniform",
        bias_initializer="ones", kernel_regularizer="l2", bias_regularizer="l1",
        activity_regularizer="l2", kernel_constraint="unit_norm",
        bias_constraint="non_neg", name="dcc",
    )


def constructor_args(*classes):
    names = set()
    for cls in classes:
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                names.add(name)
    return names - {"lora_rank", "lora_alpha"}  # only saved when LoRA is on


@pytest.mark.parametrize("make,base", [(full_dense, keras.layers.Dense),
                                       (full_conv, keras.layers.Conv2D)])
def test_config_round_trip(make, base):
    layer = make()
    config = layer.get_config()
    missing = constructor_args(type(layer), base) - set(config)
    assert not missing
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is type(layer)
    assert restored.get_config() == config
    for key in ("rate", "inference_samples", "drop_bias", "seed", "mask"):
        assert type(config[key]) in (float, int, bool, str)


def test_config_keeps_dense_behaviour_arguments():
    config = full_dense().get_config()
    assert config["units"] == 7
    assert config["activation"] == "relu"
    assert config["kernel_regularizer"]["config"]["l2"] == pytest.approx(0.01)
    assert config["bias_constraint"]["class_name"] == "MaxNorm"
    assert config["example_chunk"] == 3 and config["keep_prob"] is None
    conv = full_conv().get_config()
    assert conv["strides"] == (1, 2) and conv["padding"] == "same"
    assert conv["kernel_size"] == (2, 3)


def test_keep_prob_and_defaults_round_trip():
    layer = DropConnectDense(4, keep_prob=0.8)
    assert layer.rate == pytest.approx(0.2)
    assert DropConnectDense.from_config(layer.get_config()).rate == layer.rate
    default = DropConnectDense(4)
    assert (default.rate, default.mask, default.inference) == (0.5, "batch", "mean")
    assert default.inference_samples == 256 and default.drop_bias is True


def test_lora_round_trip_and_training():
    layer = dense(3, 4, lora_rank=2, seed=1)
    assert layer.get_config()["lora_rank"] == 2
    out = layer(np.ones((2, 4), "float32"), training=True)
    assert tuple(out.shape) == (2, 3)


def test_weights_are_dense_weights():
    layer = dense(3, 4, seed=1)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (4, 3) and bias.shape == (3,)
    reference = keras.layers.Dense(3)
    reference.build((None, 4))
    reference.set_weights([np.arange(12.0).reshape(4, 3), np.ones(3)])
    layer.set_weights(reference.get_weights())
    x = np.random.RandomState(0).rand(5, 4).astype("float32")
    np.testing.assert_allclose(as_np(layer(x)), as_np(reference(x)), rtol=1e-6)
    assert len(dense(3, 4, use_bias=False).get_weights()) == 1
    store = {}
    layer.save_own_variables(store)
    assert set(store) == {"0", "1", SEED_STATE_KEY}
    conv = DropConnectConv2D(2, 3)
    conv.build((None, 5, 5, 1))
    assert [w.shape for w in conv.get_weights()] == [(3, 3, 1, 2), (2,)]


@pytest.mark.parametrize("inference", ["mean", "gaussian", "sample"])
@pytest.mark.parametrize("training", [False, True])
def test_rate_zero_is_keras_dense_and_conv(inference, training):
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    layer = dense(5, 4, rate=0.0, inference=inference, activation="relu",
                  bias_initializer="ones")
    ref = keras.layers.Dense(5, activation="relu")
    ref.build((None, 4))
    ref.set_weights(layer.get_weights())
    np.testing.assert_allclose(as_np(layer(x, training=training)), as_np(ref(x)),
                               rtol=1e-6)
    # (TensorFlow's CPU convolution supports channels_last only.)
    img = np.random.RandomState(1).randn(2, 5, 6, 3).astype("float32")
    conv = DropConnectConv2D(4, 3, rate=0.0, inference=inference,
                             bias_initializer="ones", activation="relu",
                             strides=2, padding="same")
    ref = keras.layers.Conv2D(4, 3, activation="relu", strides=2,
                              padding="same")
    ref.build(img.shape)
    conv.build(img.shape)
    ref.set_weights(conv.get_weights())
    np.testing.assert_allclose(as_np(conv(img, training=training)),
                               as_np(ref(img)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------
def revealed_dense_masks(layer, in_dim, calls, training=True):
    """Scaled kernel masks (calls or examples, in, out) via identity inputs.

    With a kernel of ones, `eye(in) @ (W * M / p)` is `M / p`.
    """
    eye = np.eye(in_dim, dtype="float32")
    if layer.mask == "example":
        x = np.broadcast_to(eye, (calls, in_dim, in_dim))
        return as_np(layer(x, training=training))
    return np.stack([as_np(layer(eye, training=training)) for _ in range(calls)])


def check_fraction(masks, keep):
    values = np.unique(np.round(masks * keep, 5))
    assert set(values.tolist()) <= {0.0, 1.0}
    n = masks.size
    frac = np.mean(masks > 0)
    assert abs(frac - keep) < 4 * math.sqrt(keep * (1 - keep) / n)


@pytest.mark.parametrize("mask", ["batch", "example"])
@pytest.mark.parametrize("rate", [0.5, 0.2])
def test_dense_keep_fraction(mask, rate):
    layer = ones_dense(40, 30, rate=rate, mask=mask, use_bias=False, seed=2)
    check_fraction(revealed_dense_masks(layer, 30, 20), 1 - rate)
    bias_layer = ones_dense(500, 3, rate=rate, mask=mask, seed=3)
    zeros = np.zeros((20, 3), "float32")  # x = 0: the output is the dropped bias
    if mask == "example":
        out = as_np(bias_layer(zeros, training=True))
    else:  # one bias mask per call, shared by the rows
        out = np.stack([as_np(bias_layer(zeros[:1], training=True))
                        for _ in range(20)])
    check_fraction(out, 1 - rate)


def test_conv_keep_fraction():
    keep = 0.7
    conv = DropConnectConv2D(64, 3, keep_prob=keep, seed=4,
                             kernel_initializer="ones", use_bias=False)
    x = np.ones((1, 3, 3, 5), "float32")  # one window: sum of kept / keep
    kept = np.concatenate(
        [as_np(conv(x, training=True)).ravel() * keep for _ in range(10)]
    )
    assert np.allclose(kept, np.round(kept), atol=1e-4)
    n = 45 * kept.size
    frac = kept.sum() / n
    assert abs(frac - keep) < 4 * math.sqrt(keep * (1 - keep) / n)


def test_example_masks_differ_between_examples_batch_masks_do_not():
    x = np.ones((16, 20), "float32")
    batch = as_np(dense(30, 20, seed=1)(x, training=True))
    assert np.all(batch == batch[0])
    example = as_np(dense(30, 20, seed=1, mask="example", example_chunk=3)(
        x, training=True))
    rows = {tuple(r) for r in example.round(5)}
    assert len(rows) == 16
    # Rank 3: one mask per example, shared by the positions of the example.
    seq = as_np(dense(30, 20, mask="example", seed=2)(np.ones((4, 5, 20),
                                                              "float32"),
                                                      training=True))
    np.testing.assert_allclose(seq, np.broadcast_to(seq[:, :1], seq.shape),
                               rtol=1e-5, atol=1e-6)
    assert len({tuple(r) for r in seq[:, 0].round(3)}) == 4


@pytest.mark.parametrize("mask", ["batch", "example"])
def test_expected_training_output_is_mean_inference(mask):
    rng = np.random.RandomState(0)
    layer = dense(6, 10, rate=0.4, mask=mask, seed=7,
                  bias_initializer="random_normal")
    x = rng.randn(1, 10).astype("float32")
    if mask == "example":
        samples = as_np(layer(np.repeat(x, 3000, axis=0), training=True))
    else:  # one mask per call: 300 calls (traced on TensorFlow)
        call = lambda: layer(x, training=True)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            call = tf.function(call)
        samples = np.concatenate([as_np(call()) for _ in range(300)])
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / math.sqrt(len(samples))
    assert np.all(z_scores(mean, as_np(layer(x))[0], se) < 4.5)


def test_conv_expected_training_output_is_mean_inference():
    conv = DropConnectConv2D(3, 2, rate=0.5, seed=8,
                             bias_initializer="random_normal")
    x = np.random.RandomState(1).randn(1, 3, 3, 2).astype("float32")
    samples = traced_samples(conv, x, 1500)  # 1500 independent kernel masks
    se = samples.std(0, ddof=1) / math.sqrt(1500)
    assert np.all(z_scores(samples.mean(0), as_np(conv(x)).ravel(), se) < 4.5)


# ----------------------------------------------------------------------------
# Gaussian inference
# ----------------------------------------------------------------------------
def closed_form_dense_moments(layer, x, drop_bias):
    kernel, bias = layer.get_weights()
    r = layer.rate / layer.keep_prob
    mu = x @ kernel + bias
    var = r * (x * x) @ (kernel * kernel) + (r * bias**2 if drop_bias else 0.0)
    return mu[0], var[0]


def check_moments(samples, mu, var):
    n = len(samples)
    mean, sample_var = samples.mean(0), samples.var(0, ddof=1)
    assert np.all(z_scores(mean, mu, np.sqrt(var / n)) < 4.5)
    fourth = ((samples - mean) ** 4).mean(0)
    assert np.all(z_scores(sample_var, var, np.sqrt((fourth - var**2) / n)) < 4.5)


@pytest.mark.parametrize("drop_bias", [True, False])
def test_dense_moments_match_monte_carlo(drop_bias):
    rng = np.random.RandomState(2)
    layer = dense(5, 12, rate=0.3, mask="example", drop_bias=drop_bias, seed=9,
                  bias_initializer=keras.initializers.RandomNormal(1.0, seed=1))
    x = rng.randn(1, 12).astype("float32")
    mu, var = closed_form_dense_moments(layer, x, drop_bias)
    got_mu, got_var = layer.preactivation_moments(x)
    np.testing.assert_allclose(as_np(got_mu)[0], mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(as_np(got_var)[0], var, rtol=1e-5, atol=1e-6)
    samples = as_np(layer(np.repeat(x, 20000, axis=0), training=True))
    check_moments(samples, mu, var)


def conv_valid_moments(conv, x, drop_bias):
    """mean/var of a 'valid' conv by explicit patches (NumPy)."""
    kernel, bias = conv.get_weights()
    kh, kw = kernel.shape[:2]
    r = conv.rate / conv.keep_prob
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    mu = np.zeros((h, w, kernel.shape[-1]))
    var = np.zeros_like(mu)
    for i in range(h):
        for j in range(w):
            patch = x[0, i:i + kh, j:j + kw, :]
            mu[i, j] = np.einsum("abc,abcf->f", patch, kernel) + bias
            var[i, j] = r * np.einsum("abc,abcf->f", patch**2, kernel**2)
            if drop_bias:
                var[i, j] += r * bias**2
    return mu.ravel(), var.ravel()


@pytest.mark.parametrize("drop_bias", [True, False])
def test_conv_moments_match_monte_carlo(drop_bias):
    conv = DropConnectConv2D(2, 2, rate=0.4, drop_bias=drop_bias, seed=3,
                             bias_initializer="ones")
    x = np.random.RandomState(3).randn(1, 3, 3, 2).astype("float32")
    conv.build(x.shape)
    mu, var = conv_valid_moments(conv, x, drop_bias)
    got_mu, got_var = conv.preactivation_moments(x)
    np.testing.assert_allclose(as_np(got_mu).ravel(), mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(as_np(got_var).ravel(), var, rtol=1e-5, atol=1e-6)
    samples = traced_samples(conv, x, 3000)
    check_moments(samples, mu, var)


def relu_gaussian_mean(mu, sd):
    """E relu(u), u ~ N(mu, sd^2), and E relu(u)^2."""
    a = mu / sd
    pdf = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))
    first = mu * cdf + sd * pdf
    second = (mu * mu + sd * sd) * cdf + mu * sd * pdf
    return first, second


def test_gaussian_relu_standard_normal_case():
    # mu = 0, sigma^2 = (0.5/0.5) * (1/2 + 1/2) = 1: E relu(u) = 1/sqrt(2 pi).
    z = 4096
    layer = dense(1, 2, rate=0.5, inference="gaussian", inference_samples=z,
                  activation="relu", use_bias=False, kernel_initializer="ones",
                  seed=1)
    x = np.array([[1.0, -1.0]], "float32") / math.sqrt(2)
    gaussian = as_np(layer(x))[0, 0]
    se = math.sqrt((0.5 - 1 / (2 * math.pi)) / z)
    assert abs(gaussian - 1 / math.sqrt(2 * math.pi)) < 4 * se
    mean_layer = DropConnectDense.from_config(
        {**layer.get_config(), "inference": "mean"})
    mean_layer.build((None, 2))
    mean_layer.set_weights(layer.get_weights())
    assert as_np(mean_layer(x))[0, 0] == 0.0


def test_gaussian_relu_closer_to_monte_carlo_than_mean():
    rng = np.random.RandomState(4)
    z = 2048
    sampler = dense(8, 50, rate=0.5, mask="example", inference="sample",
                    activation="relu", seed=5, bias_initializer="zeros")
    x = rng.randn(1, 50).astype("float32")
    config = {**sampler.get_config(), "mask": "batch"}
    gauss = DropConnectDense.from_config(
        {**config, "inference": "gaussian", "inference_samples": z})
    mean = DropConnectDense.from_config({**config, "inference": "mean"})
    for layer in (gauss, mean):
        layer.build((None, 50))
        layer.set_weights(sampler.get_weights())
    mc = as_np(sampler(np.repeat(x, 10000, axis=0))).mean(0)
    g, m = as_np(gauss(x))[0], as_np(mean(x))[0]
    assert np.abs(g - mc).sum() < 0.25 * np.abs(m - mc).sum()
    # Against the closed form E relu(N(mu, sigma^2)) of the matched moments.
    mu, var = (as_np(t)[0] for t in gauss.preactivation_moments(x))
    first, second = relu_gaussian_mean(mu, np.sqrt(var))
    se = np.sqrt((second - first**2) / z)
    assert np.all(z_scores(g, first, se) < 4.5)


def test_gaussian_is_deterministic_and_batch_independent():
    x = np.random.RandomState(5).randn(6, 4).astype("float32")
    layer = dense(3, 4, inference="gaussian", activation="tanh",
                  inference_samples=70)  # 3 blocks, the last one padded
    full = as_np(layer(x))
    np.testing.assert_array_equal(full, as_np(layer(x)))
    np.testing.assert_allclose(as_np(layer(x[3:5])), full[3:5], rtol=1e-5,
                               atol=1e-6)
    twin = DropConnectDense.from_config(layer.get_config())
    twin.build((None, 4))
    twin.set_weights(layer.get_weights())
    twin.seed_generator.state.assign(layer.seed_generator.state)
    np.testing.assert_array_equal(as_np(twin(x)), full)
    # Seeded weights and an absolute tolerance: with rtol alone, an output
    # near 0 (a cancellation in x @ W) fails on a backend that sums in
    # another order (seen once on PyTorch with unseeded weights).
    linear = dense(3, 4, inference="gaussian",
                   kernel_initializer=keras.initializers.GlorotUniform(seed=7))
    np.testing.assert_allclose(as_np(linear(x)),
                               x @ linear.get_weights()[0], rtol=1e-5, atol=1e-6)
    conv = DropConnectConv2D(2, 3, inference="gaussian", activation="relu",
                             seed=1)
    img = np.random.RandomState(6).randn(2, 5, 5, 3).astype("float32")
    out = as_np(conv(img))
    assert out.shape == (2, 3, 3, 2)
    np.testing.assert_array_equal(out, as_np(conv(img)))
    np.testing.assert_allclose(as_np(conv(img[1:])), out[1:], rtol=1e-5,
                               atol=1e-6)


def test_sample_inference_draws_fresh_masks():
    x = np.ones((2, 10), "float32")
    layer = dense(8, 10, inference="sample", seed=1)
    first, second = as_np(layer(x)), as_np(layer(x))
    assert not np.array_equal(first, second)
    assert np.array_equal(first[0], first[1])  # one mask per call
    mean = dense(8, 10, seed=1)
    np.testing.assert_array_equal(as_np(mean(x)), as_np(mean(x)))


# ----------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mask", ["batch", "example"])
def test_gradients_flow_only_through_kept_weights(mask):
    # 120 weights: some are dropped in all 5 examples (each with chance 1/32),
    # whatever the mask stream, so the last check is not vacuous.
    in_dim, units, keep = 6, 20, 0.5
    layer = ones_dense(units, in_dim, mask=mask, seed=3, example_chunk=2)
    probe = np.concatenate([np.eye(in_dim), np.zeros((1, in_dim))]).astype(
        "float32")  # rows: W*M/p + b*m/p, and b*m/p alone
    examples = 5 if mask == "example" else 1
    x = np.broadcast_to(probe, (examples,) + probe.shape)
    g = np.random.RandomState(0).randn(examples, in_dim + 1, units)
    if mask == "batch":
        x, g = x[0], g[0]
    def forward():
        out = layer(x, training=True)
        return keras.ops.sum(out * keras.ops.cast(g, out.dtype)), out

    out, grads = value_and_grads(forward, layer.weights)
    d_kernel, d_bias = (as_np(t) for t in grads)
    out = as_np(out).reshape(examples, in_dim + 1, units)
    g = g.reshape(examples, in_dim + 1, units)
    bias_masks = out[:, -1]  # (examples, units): m / p
    kernel_masks = out[:, :-1] - bias_masks[:, None]  # (examples, in, units)
    check_fraction(kernel_masks, keep)
    np.testing.assert_allclose(d_kernel, (g[:, :-1] * kernel_masks).sum(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_bias, (g * bias_masks[:, None]).sum((0, 1)),
                               rtol=1e-5, atol=1e-6)
    never_kept = np.all(kernel_masks == 0, axis=0)
    assert never_kept.any() and np.all(d_kernel[never_kept] == 0)


@pytest.mark.parametrize("example_chunk", [2, 100])
def test_example_gradients_with_one_position_per_example(example_chunk):
    # 2D inputs take their own backward pass (over chunks of input units).
    # The masks are revealed by a twin layer (same seed, so the same masks)
    # called on identity probes; then kernel and input gradients must be
    # the exact products with those masks.
    in_dim, units, examples = 6, 20, 5
    twin = ones_dense(units, in_dim, mask="example", seed=3, use_bias=False,
                      example_chunk=example_chunk)
    probe = np.broadcast_to(np.eye(in_dim, dtype="float32"),
                            (examples, in_dim, in_dim))
    masks = as_np(twin(probe, training=True))  # (examples, in, units): M / p
    check_fraction(masks, 0.5)
    layer = dense(units, in_dim, mask="example", seed=3, use_bias=False,
                  example_chunk=example_chunk)
    rng = np.random.RandomState(0)
    kernel = rng.randn(in_dim, units).astype("float32")
    layer.set_weights([kernel])
    x = keras.Variable(rng.randn(examples, in_dim).astype("float32"))
    g = rng.randn(examples, units)

    def forward():
        out = layer(x, training=True)
        return keras.ops.sum(out * keras.ops.cast(g, out.dtype)), out

    out, grads = value_and_grads(forward, [layer.kernel, x])
    d_kernel, d_x = (as_np(t) for t in grads)
    masked = kernel[None] * masks  # (examples, in, units)
    x = as_np(x)
    np.testing.assert_allclose(as_np(out), np.einsum("bi,bio->bo", x, masked),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_kernel, np.einsum("bi,bo,bio->io", x, g, masks),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_x, np.einsum("bo,bio->bi", g, masked),
                               rtol=1e-5, atol=1e-5)
    never_kept = np.all(masks == 0, axis=0)
    assert never_kept.any() and np.all(d_kernel[never_kept] == 0)


def test_example_gradients_with_several_positions_per_example():
    # 3D inputs: chunks of examples in both passes, 5 examples in chunks of 2.
    # The twin reveals the masks (shared by an example's positions); output,
    # kernel and input gradients must be the exact products with them.
    in_dim, units, examples, length = 6, 20, 5, 3
    twin = ones_dense(units, in_dim, mask="example", seed=4, use_bias=False,
                      example_chunk=2)
    probe = np.broadcast_to(np.eye(in_dim, dtype="float32"),
                            (examples, in_dim, in_dim))
    masks = as_np(twin(probe, training=True))  # (examples, in, units): M / p
    check_fraction(masks, 0.5)
    layer = dense(units, in_dim, mask="example", seed=4, use_bias=False,
                  example_chunk=2)
    rng = np.random.RandomState(1)
    kernel = rng.randn(in_dim, units).astype("float32")
    layer.set_weights([kernel])
    x = keras.Variable(rng.randn(examples, length, in_dim).astype("float32"))
    g = rng.randn(examples, length, units)

    def forward():
        out = layer(x, training=True)
        return keras.ops.sum(out * keras.ops.cast(g, out.dtype)), out

    out, grads = value_and_grads(forward, [layer.kernel, x])
    d_kernel, d_x = (as_np(t) for t in grads)
    masked = kernel[None] * masks
    x = as_np(x)
    np.testing.assert_allclose(as_np(out), np.einsum("bsi,bio->bso", x, masked),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        d_kernel, np.einsum("bsi,bso,bio->io", x, g, masks), rtol=1e-5,
        atol=1e-5)
    np.testing.assert_allclose(d_x, np.einsum("bso,bio->bsi", g, masked),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="an unknown batch size is a TensorFlow graph matter")
@pytest.mark.parametrize("shape", [(5, 6), (5, 3, 6)])
def test_example_masks_traced_with_unknown_batch_match_eager(shape):
    # A traced `fit` sees (None, ...) inputs; the compiled forward and backward
    # programs must then give the same output and gradients as a known batch.
    import tensorflow as tf

    layer = dense(20, 6, mask="example", seed=3, example_chunk=2)
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(*shape).astype("float32"))
    g = tf.constant(rng.randn(*shape[:-1], 20).astype("float32"))

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * g)
        return [loss] + tape.gradient(loss, [x] + layer.trainable_weights)

    state = as_np(layer.seed_generator.state)
    eager = step(x)
    layer.seed_generator.state.assign(state)  # the same masks again
    spec = tf.TensorSpec((None,) + shape[1:], tf.float32)
    traced = tf.function(step, input_signature=[spec])(x)
    for a, b in zip(eager, traced):
        np.testing.assert_allclose(as_np(b), as_np(a), rtol=1e-6, atol=1e-6)


def test_conv_gradients_flow_only_through_kept_weights():
    keep = 0.6
    conv = DropConnectConv2D(3, 2, keep_prob=keep, seed=6,
                             kernel_initializer="ones", bias_initializer="ones")
    taps = 2 * 2 * 2
    # One-hot windows (in the kernel's (row, col, channel) order), then zeros.
    probe = np.eye(taps + 1, taps, dtype="float32").reshape(taps + 1, 2, 2, 2)
    conv.build(probe.shape)
    g = np.random.RandomState(1).randn(taps + 1, 1, 1, 3)
    def forward():
        out = conv(probe, training=True)
        return keras.ops.sum(out * keras.ops.cast(g, out.dtype)), out

    out, grads = value_and_grads(forward, conv.weights)
    d_kernel, d_bias = (as_np(t) for t in grads)
    out = as_np(out).reshape(taps + 1, 3)
    kernel_mask = (out[:-1] - out[-1]).reshape(2, 2, 2, 3)
    check_fraction(kernel_mask, keep)
    g = g.reshape(taps + 1, 3)
    np.testing.assert_allclose(d_kernel, g[:-1].reshape(2, 2, 2, 3) * kernel_mask,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_bias, g.sum(0) * out[-1], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Monte Carlo sampling scope
# ----------------------------------------------------------------------------
def test_tiled_samples_get_their_own_masks():
    x = np.ones((3, 10), "float32")
    layer = dense(12, 10, seed=1)  # inference="mean": the scope still samples
    with sampling(tiles=4):
        out = as_np(layer(np.tile(x, (4, 1)), training=False)).reshape(4, 3, 12)
    assert np.all(out == out[:, :1])  # mask="batch": one mask per sample
    assert len({tuple(s[0].round(5)) for s in out}) == 4
    per_row = dense(12, 10, seed=1, mask="example")
    with sampling(tiles=4):
        rows = as_np(per_row(np.tile(x, (4, 1))))
    assert len({tuple(r.round(5)) for r in rows}) == 12
    np.testing.assert_array_equal(as_np(layer(x)), as_np(layer(x)))  # no scope


def joint(layer, x, tiles, offset, total):
    with sampling(tiles=tiles, joint=True, sample_offset=offset,
                  total_samples=total):
        return as_np(layer(np.concatenate([x] * tiles)))


@pytest.mark.parametrize("make,shape", [
    (lambda: dense(7, 5, seed=2), (3, 5)),
    (lambda: dense(7, 5, seed=2, mask="example"), (3, 5)),
    (lambda: DropConnectConv2D(2, 2, seed=2, bias_initializer="ones"),
     (3, 3, 3, 2)),
])
def test_joint_samples_are_chunk_invariant(make, shape):
    layer = make()
    x = np.random.RandomState(0).randn(*shape).astype("float32")
    whole = joint(layer, x, 4, 0, 4)
    parts = np.concatenate([joint(layer, x, 2, 0, 4), joint(layer, x, 2, 2, 4),
                            ])
    np.testing.assert_allclose(parts, whole, rtol=1e-6)
    one = joint(layer, x, 1, 3, 4)
    np.testing.assert_allclose(one, whole[-len(x):], rtol=1e-6)
    same = np.ones((2,) + shape[1:], "float32")
    shared = joint(layer, same, 3, 0, 3).reshape(3, 2, -1)
    assert np.all(shared == shared[:, :1])  # one network per sample
    assert not np.array_equal(shared[0], shared[1])


# ----------------------------------------------------------------------------
# Training, saving
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mask", ["batch", "example"])
@pytest.mark.parametrize("shape", [(0, 4), (0, 2, 4)])
def test_empty_batch_gives_empty_output(mask, shape):
    # mask="example" on 0 rows used to fail (a StridedSlice of an empty batch).
    layer = dense(3, 4, mask=mask, seed=1, example_chunk=2)
    x = np.zeros(shape, "float32")
    for training in (True, False):
        assert tuple(layer(x, training=training).shape) == shape[:-1] + (3,)
    with sampling(tiles=2):
        assert tuple(layer(x).shape) == shape[:-1] + (3,)
    out, grads = value_and_grads(
        lambda: (keras.ops.sum(layer(x, training=True)), None), layer.weights)
    assert all(np.all(as_np(g) == 0) for g in grads)


def test_fit_with_example_masks_and_partial_batches():
    rng = np.random.RandomState(0)
    x = rng.randn(45, 6).astype("float32")
    y = rng.randint(0, 3, 45)
    model = keras.Sequential([
        keras.Input((6,)),
        DropConnectDense(8, mask="example", example_chunk=4, activation="relu",
                         seed=1),
        DropConnectDense(3, seed=2),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(not np.array_equal(a, b)
               for a, b in zip(before, model.get_weights()))


def test_mixed_precision():
    layer = DropConnectDense(4, inference="gaussian", activation="relu",
                             dtype="mixed_float16", mask="example", seed=1)
    x = np.ones((3, 5), "float32")
    for training in (True, False):
        out = layer(x, training=training)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(as_np(out)))


def test_save_and_load_in_fresh_process(tmp_path, fresh_python):
    rng = np.random.RandomState(0)
    x = rng.randn(4, 6).astype("float32")
    img = rng.randn(2, 5, 5, 2).astype("float32")
    inputs = keras.Input((6,))
    h = DropConnectDense(5, mask="example", inference="gaussian",
                         activation="relu", seed=1)(inputs)
    h = DropConnectDense(3, inference="sample", seed=2,
                         kernel_regularizer="l2")(h)
    dense_model = keras.Model(inputs, h)
    conv_model = keras.Sequential([
        keras.Input((5, 5, 2)),
        DropConnectConv2D(3, 3, inference="gaussian", activation="relu", seed=3),
    ])
    for model, data, target in ((dense_model, x, np.zeros((4, 3))),
                                (conv_model, img, np.zeros((2, 3, 3, 3)))):
        model.compile("sgd", "mse")
        model.train_on_batch(data, target)  # advance the random streams
    dense_model.save(tmp_path / "dense.keras")
    conv_model.save(tmp_path / "conv.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "img.npy", img)
    expected = {
        "dense_predict": as_np(dense_model(x)).tolist(),
        "dense_next": as_np(dense_model(x, training=True)).tolist(),
        "conv_predict": as_np(conv_model(img)).tolist(),
        "conv_next": as_np(conv_model(img, training=True)).tolist(),
    }
    result = fresh_python(f"""
        import json, numpy as np, keras
        import kreg
        d = keras.models.load_model({str(tmp_path / "dense.keras")!r},
                                    safe_mode=True)
        c = keras.models.load_model({str(tmp_path / "conv.keras")!r},
                                    safe_mode=True)
        x = np.load({str(tmp_path / "x.npy")!r})
        img = np.load({str(tmp_path / "img.npy")!r})
        f = lambda t: keras.ops.convert_to_numpy(t).tolist()
        print("JSON:" + json.dumps({{
            "dense_predict": f(d(x)), "dense_next": f(d(x, training=True)),
            "conv_predict": f(c(img)), "conv_next": f(c(img, training=True)),
            "types": [type(l).__name__ for l in d.layers[1:] + c.layers],
        }}))
    """).result
    assert result["types"] == ["DropConnectDense", "DropConnectDense",
                               "DropConnectConv2D"]
    for key, value in expected.items():
        np.testing.assert_allclose(result[key], value, rtol=1e-6, atol=1e-7)
