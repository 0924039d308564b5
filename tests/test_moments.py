"""kreg.MomentPredictor: analytic moment propagation against closed forms and MC.

Exact cases (noise followed by elementwise/structural layers and one linear
map) are held to float32 round-off against NumPy closed forms; the
approximations (a nonlinearity of a non-Gaussian input, max pooling, the
classification head) against Monte Carlo, with tolerances of a few standard
errors of the MC estimate plus, where the rule approximates, the bound
stated with the test.
"""

import keras
import numpy as np
import pytest
from scipy import special
from scipy import stats

import kreg
from kreg.mc import _moment_rules as rules

D = keras.layers.Dense


def _mlp(noise, inputs=5, hidden=7, outputs=2, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), D(hidden, name="first"), noise,
                             D(outputs, name="last")])


def _numpy_weights(model, seed):
    """The same kernels on every backend (Keras's initializers differ)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(size=w.shape) / np.sqrt(np.prod(w.shape[:-1]))
                           if w.ndim > 1 else w for w in layer.get_weights()])


def _x(n=6, d=5, seed=1):
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


def _weights(model, name):
    return [np.asarray(w, "float64") for w in model.get_layer(name).get_weights()]


# Closed forms of the variance of one noise layer on a deterministic h.
NOISES = {
    "kreg_inverted": (lambda: kreg.layers.Dropout(0.3),
                      lambda h: (h, h * h * 0.3 / 0.7)),
    "kreg_test_time": (lambda: kreg.layers.Dropout(0.3, scaling="test_time"),
                       lambda h: (0.7 * h, 0.7 * 0.3 * h * h)),
    "keras_dropout": (lambda: keras.layers.Dropout(0.4),
                      lambda h: (h, h * h * 0.4 / 0.6)),
    "kreg_gaussian_dropout": (lambda: kreg.layers.GaussianDropout(0.2),
                              lambda h: (h, h * h * 0.25)),
    "keras_gaussian_dropout": (lambda: keras.layers.GaussianDropout(0.2),
                               lambda h: (h, h * h * 0.25)),
    "kreg_gaussian_noise": (lambda: kreg.layers.GaussianNoise(0.5),
                            lambda h: (h, np.full_like(h, 0.25))),
    "keras_gaussian_noise": (lambda: keras.layers.GaussianNoise(0.5),
                             lambda h: (h, np.full_like(h, 0.25))),
}


@pytest.mark.parametrize("name", sorted(NOISES))
def test_linear_network_matches_the_closed_form(name):
    make, closed = NOISES[name]
    model = _mlp(make())
    x = _x()
    w1, b1 = _weights(model, "first")
    w2, b2 = _weights(model, "last")
    mean_h, var_h = closed(x.astype("float64") @ w1 + b1)
    pred = kreg.MomentPredictor(model).predict(x)
    np.testing.assert_allclose(pred.mean, mean_h @ w2 + b2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.variance, var_h @ (w2 * w2), rtol=1e-4, atol=1e-6)
    assert pred.task == "regression" and pred.num_samples is None


@pytest.mark.parametrize("drop_bias", [True, False])
def test_dropconnect_dense_is_wans_moments(drop_bias):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), kreg.layers.DropConnectDense(
        4, 0.4, drop_bias=drop_bias, bias_initializer="ones", name="dc")])
    x = _x()
    w, b = _weights(model, "dc")
    x64 = x.astype("float64")
    var = 0.4 / 0.6 * ((x64 * x64) @ (w * w) + (b * b if drop_bias else 0.0))
    pred = kreg.MomentPredictor(model).predict(x)
    np.testing.assert_allclose(pred.mean, x64 @ w + b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.variance, var, rtol=1e-4, atol=1e-6)
    # ... and with a random input: Var = (W^2)^T v + (r/k) (W^2)^T (m^2 + v).
    noisy = keras.Sequential([keras.Input((5,)), kreg.layers.GaussianNoise(0.5),
                              model.get_layer("dc")])
    pred = kreg.MomentPredictor(noisy).predict(x)
    var = (0.25 * (w * w).sum(axis=0) + 0.4 / 0.6 * (
        (x64 * x64 + 0.25) @ (w * w) + (b * b if drop_bias else 0.0)))
    np.testing.assert_allclose(pred.variance, var, rtol=1e-4, atol=1e-6)


def _jacobian_variance(model, x, unit_var):
    """Closed form of a linear model y = g(u) with independent noisy inputs u."""
    d = x.shape[1:]
    size = int(np.prod(d))
    basis = np.eye(size, dtype="float32").reshape((size,) + d)
    def g(a):
        return keras.ops.convert_to_numpy(model(a)).astype("float64")

    g0 = g(np.zeros((1,) + d, "float32"))
    cols = g(basis) - g0  # (size, out)
    return (unit_var.reshape(len(x), size) @ (cols * cols)), g0


def test_structural_layers_and_average_pooling_are_exact():
    keras.utils.set_random_seed(0)
    u1, u2 = keras.Input((4, 4, 2)), keras.Input((4, 4, 2))
    bn = keras.layers.BatchNormalization()
    a = keras.layers.AveragePooling2D(2)(bn(u1))
    b = keras.layers.Reshape((72,))(keras.layers.ZeroPadding2D(1)(u2))
    h = keras.layers.Concatenate()([keras.layers.Flatten()(a), b])
    linear = keras.Model([u1, u2], D(3)(h))  # linear in (u1, u2)
    bn.moving_mean.assign(np.linspace(-1, 1, 2))
    bn.moving_variance.assign(np.array([0.5, 2.0]))
    inp = keras.Input((4, 4, 2))
    model = keras.Model(inp, linear([kreg.layers.Dropout(0.4)(inp),
                                     keras.layers.GaussianNoise(0.5)(inp)]))
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype("float32")
    pred = kreg.MomentPredictor(model).predict(x)
    # Independent noisy units, then one linear map (BatchNormalization and
    # non-overlapping average pooling keep them independent): exact.
    basis = np.eye(32, dtype="float32").reshape(32, 4, 4, 2)
    zero = np.zeros_like(basis)
    def g(a, b):
        return keras.ops.convert_to_numpy(linear([a, b])).astype("float64")

    g0 = g(zero[:1], zero[:1])
    j1, j2 = g(basis, zero) - g0, g(zero, basis) - g0
    var1 = (x * x * 0.4 / 0.6).reshape(3, 32).astype("float64")
    var = var1 @ (j1 * j1) + 0.25 * (j2 * j2).sum(axis=0)
    np.testing.assert_allclose(pred.mean, model.predict(x, verbose=0), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(pred.variance, var, rtol=1e-4, atol=1e-6)


def test_average_pooling_with_same_padding_counts_only_inner_cells():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 5, 1)), kreg.layers.Dropout(0.5),
                              keras.layers.AveragePooling2D(2, padding="same"),
                              keras.layers.Flatten()])
    x = np.abs(np.random.default_rng(0).normal(size=(2, 5, 5, 1))).astype("float32") + 0.5
    pred = kreg.MomentPredictor(model).predict(x)
    var, _ = _jacobian_variance(model, x, (x * x).astype("float64"))
    np.testing.assert_allclose(pred.variance, var, rtol=1e-4, atol=1e-6)


def test_clark_max_of_two_gaussians_is_exact():
    from keras import ops

    a = rules.Moments(ops.convert_to_tensor([0.3, -1.0, 2.0]),
                      ops.convert_to_tensor([1.0, 0.25, 0.5]))
    b = rules.Moments(ops.convert_to_tensor([0.0, -0.5, 2.5]),
                      ops.convert_to_tensor([0.5, 2.0, 0.1]))
    out = rules.clark_max(a, b)
    rng = np.random.default_rng(0)
    n = 400_000
    xa = np.array([0.3, -1.0, 2.0]) + np.sqrt([1.0, 0.25, 0.5]) * rng.normal(size=(n, 3))
    xb = np.array([0.0, -0.5, 2.5]) + np.sqrt([0.5, 2.0, 0.1]) * rng.normal(size=(n, 3))
    mx = np.maximum(xa, xb)
    se = mx.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(ops.convert_to_numpy(out.mean) - mx.mean(axis=0)) < 5 * se)
    se_var = np.sqrt(((mx - mx.mean(0)) ** 4).mean(0) / n)
    assert np.all(np.abs(ops.convert_to_numpy(out.var) - mx.var(axis=0)) < 5 * se_var)


@pytest.fixture(scope="module")
def gaussian_input():
    x = np.array([[-1.5, -0.2, 0.0, 0.4, 1.2, 2.5]], "float32")
    return x


@pytest.mark.parametrize("act", ["relu", "leaky", "prelu", "tanh", "gelu", "sigmoid",
                                 "softplus"])
def test_activations_of_a_gaussian_match_the_integral(act, gaussian_input):
    """GaussianNoise(0.8) then the activation: the input is exactly Gaussian,
    so ReLU/LeakyReLU are exact and the quadrature matches to 1e-4."""
    layer = {"relu": keras.layers.ReLU(), "leaky": keras.layers.LeakyReLU(0.1),
             "prelu": keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.3)),
             }.get(act) or keras.layers.Activation(act)
    model = keras.Sequential([keras.Input((6,)), kreg.layers.GaussianNoise(0.8), layer])
    pred = kreg.MomentPredictor(model, task="regression").predict(gaussian_input)
    # The exact moments by fine numerical integration (NumPy, float64).
    z = np.linspace(-10, 10, 40001)
    w = stats.norm.pdf(z) * (z[1] - z[0])
    a = gaussian_input[0][:, None].astype("float64") + 0.8 * z[None]
    fn = {"relu": lambda t: np.maximum(t, 0), "leaky": lambda t: np.where(t > 0, t, 0.1 * t),
          "prelu": lambda t: np.where(t > 0, t, 0.3 * t), "tanh": np.tanh,
          "gelu": lambda t: 0.5 * t * (1 + special.erf(t / np.sqrt(2))),
          "sigmoid": lambda t: 1 / (1 + np.exp(-t)), "softplus": lambda t: np.logaddexp(0, t)}[act]
    y = fn(a)
    mean = (w * y).sum(axis=1)
    var = (w * y * y).sum(axis=1) - mean ** 2
    np.testing.assert_allclose(pred.mean[0], mean, atol=2e-4)
    np.testing.assert_allclose(pred.variance[0], var, atol=2e-4)


@pytest.fixture(scope="module")
def relu_regression():
    keras.utils.set_random_seed(3)
    inp = keras.Input((20,))
    hidden = D(16, activation="relu")(kreg.layers.Dropout(0.2)(inp))
    out = D(1)(kreg.layers.Dropout(0.2)(hidden))
    model = keras.Model(inp, [hidden, out])
    x = np.random.default_rng(2).normal(size=(40, 20)).astype("float32")
    mc = kreg.MCPredictor(model, samples=4000, seed=0).predict(x, verbose=0)
    return model, x, mc


def test_relu_network_within_mc_error(relu_regression):
    model, x, mc = relu_regression
    pred = kreg.MomentPredictor(model).predict(x)
    t = 4000
    # The ReLU rule is exact for a Gaussian pre-activation; a sum of 20
    # dropped-out inputs is only near one (Bernoulli tails), so next to the
    # MC error (4 standard errors) the test allows the approximation error,
    # in units of the predictive std (floored at a tenth of its median, for
    # units that are almost always off). Measured over seeds 3-5: worst
    # 0.14 std for a hidden unit's mean, 0.02 for the output's.
    for p, m, worst in zip(pred, mc, (0.25, 0.1)):
        scale = np.maximum(m.std, 0.1 * np.median(m.std))
        excess = (np.abs(p.mean - m.mean) - 4 * m.std / np.sqrt(t)) / scale
        assert excess.max() <= worst and np.median(excess) <= 0.03
    ratio = pred[0].std / mc[0].std
    assert 0.85 < np.median(ratio[mc[0].std > 0.1 * np.median(mc[0].std)]) < 1.15
    # The output's variance sums correlated hidden units (they share the
    # input's masks) as if independent: the diagonal assumption
    # (docs/moments.md). Only its order of magnitude is asserted.
    ratio = pred[1].std / mc[1].std
    assert np.all((ratio > 0.5) & (ratio < 2.0))


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,)), D(32, activation="relu"),
                              kreg.layers.Dropout(0.5), D(4, activation="softmax")])
    x = np.random.default_rng(5).normal(size=(30, 6)).astype("float32") * 2
    return model, x


def test_classifier_probabilities_sum_to_one_and_match_mc(classifier):
    model, x = classifier
    pred = kreg.MomentPredictor(model).predict(x)
    assert isinstance(pred, kreg.MCPrediction) and pred.task == "classification"
    np.testing.assert_allclose(pred.mean.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(pred.mutual_information >= 0)
    assert np.all(pred.entropy >= pred.mutual_information - 1e-6)
    assert pred.num_samples == 64 and pred.variation_ratio.shape == (30,)
    mc = kreg.MCPredictor(model, samples=4000, seed=0).predict(x, verbose=0)
    se = mc.std / np.sqrt(4000)
    # One noise layer before the last Dense: the logits are a sum of many
    # dropped-out units (near Gaussian); the head's 64 quasi-random draws
    # add under 0.01 (measured 0.002-0.004 on benchmarks/moments.py's MLP).
    assert np.abs(pred.mean - mc.mean).mean() < 0.01
    assert np.all(np.abs(pred.mean - mc.mean) <= 4 * se + 0.03)
    det = model.predict(x, verbose=0)
    assert np.abs(pred.mean - mc.mean).mean() < np.abs(det - mc.mean).mean()
    # kreg's metrics take it as they take an MCPrediction.
    y = np.arange(30) % 4
    scores = kreg.mc.metrics.classification_scores(pred.mean, y)
    assert 0 <= scores["ece"] <= 1 and scores["nll"] > 0


def test_sigmoid_and_logits_heads(classifier):
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((6,)), D(16, activation="relu"),
                              kreg.layers.Dropout(0.3), D(1, activation="sigmoid")])
    x = classifier[1]
    pred = kreg.MomentPredictor(model).predict(x)
    assert pred.activation == "sigmoid" and np.all((pred.mean > 0) & (pred.mean < 1))
    mc = kreg.MCPredictor(model, samples=4000, seed=0).predict(x, verbose=0)
    assert np.abs(pred.mean - mc.mean).mean() < 0.01
    logits = keras.Sequential([keras.Input((6,))] + model.layers[:-1] + [D(1, name="z")])
    logits.get_layer("z").set_weights(model.layers[-1].get_weights())
    with_logits = kreg.MomentPredictor(logits, from_logits=True).predict(x)
    np.testing.assert_allclose(with_logits.mean, pred.mean, atol=1e-5)


def test_multi_output_functional_returns_the_output_structure():
    keras.utils.set_random_seed(7)
    inp = keras.Input((5,), name="x")
    h = kreg.layers.Dropout(0.3)(D(8, activation="tanh")(inp))
    out = {"cls": D(3, activation="softmax", name="cls")(h),
           "reg": D(1, name="reg")(keras.layers.Add()([h, D(8)(inp)]))}
    model = keras.Model(inp, out)
    pred = kreg.MomentPredictor(model).predict({"x": _x()})
    assert sorted(pred) == ["cls", "reg"]
    assert pred["cls"].task == "classification" and pred["reg"].task == "regression"
    assert pred["reg"].mean.shape == (6, 1)


@pytest.mark.parametrize("pool", ["1d", "2d", "global"])
def test_max_pooling_of_independent_gaussians(pool):
    """Clark's rule: exact for the max of two Gaussians (MaxPooling1D(2));
    for more cells it treats each pairwise max as Gaussian (measured: means
    within 2% and stds within 6% of the predictive std for 4 and 16 cells)."""
    layer, shape = {"1d": (keras.layers.MaxPooling1D(2), (8, 2)),
                    "2d": (keras.layers.MaxPooling2D(2), (4, 4, 2)),
                    "global": (keras.layers.GlobalMaxPooling2D(), (4, 4, 2))}[pool]
    model = keras.Sequential([keras.Input(shape), kreg.layers.GaussianNoise(1.0), layer,
                              keras.layers.Flatten()])
    x = np.random.default_rng(0).normal(size=(4,) + shape).astype("float32")
    pred = kreg.MomentPredictor(model).predict(x)
    t = 4000
    mc = kreg.MCPredictor(model, samples=t, seed=0).predict(x, verbose=0)
    exact = pool == "1d"
    se = mc.std / np.sqrt(t)
    assert np.all(np.abs(pred.mean - mc.mean) <= 4 * se + (0 if exact else 0.05 * mc.std))
    se_std = mc.std / np.sqrt(2 * t)  # ~ for a near-Gaussian output
    assert np.all(np.abs(pred.std - mc.std) <= 5 * se_std + (0 if exact else 0.1 * mc.std))


def test_layer_norm_and_conv_stay_near_mc():
    keras.utils.set_random_seed(8)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        kreg.layers.Dropout(0.3), keras.layers.DepthwiseConv2D(3, padding="same"),
        keras.layers.Flatten(), keras.layers.LayerNormalization(), D(1)])
    _numpy_weights(model, 8)
    x = np.random.default_rng(9).normal(size=(8, 8, 8, 1)).astype("float32")
    pred = kreg.MomentPredictor(model).predict(x)
    mc = kreg.MCPredictor(model, samples=2000, seed=0).predict(x, verbose=0)
    # LayerNorm over 256 units: its statistics barely move with the noise,
    # so holding them fixed costs little (measured on a 64-unit layer: means
    # within 0.04 std, std ratios 0.95-1.16).
    assert np.mean(np.abs(pred.mean - mc.mean)) <= 0.2 * np.mean(mc.std)
    ratio = pred.std / mc.std
    assert np.all((ratio > 0.5) & (ratio < 2.0))


def test_the_deterministic_prefix_runs_as_plain_layers():
    """Layers before the noise (an Embedding, a Lambda) need no rule."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4),
                              keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Flatten(),
                              kreg.layers.Dropout(0.5), D(1, name="out")])
    x = np.array([[1, 2, 3], [4, 5, 9]], "int32")
    pred = kreg.MomentPredictor(model).predict(x)
    h = keras.ops.convert_to_numpy(keras.Sequential(model.layers[:3])(x)).astype("float64")
    w, b = _weights(model, "out")
    np.testing.assert_allclose(pred.mean, h @ w + b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.variance, (h * h) @ (w * w), rtol=1e-4, atol=1e-6)


def test_spatial_dropout_marginals_are_exact():
    model = keras.Sequential([keras.Input((3, 4)), keras.layers.SpatialDropout1D(0.5),
                              keras.layers.Flatten()])
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    pred = kreg.MomentPredictor(model).predict(x)
    np.testing.assert_allclose(pred.variance, (x * x).reshape(2, -1), rtol=1e-5)


def test_a_layer_without_a_rule_is_named_at_construction():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2),
                              kreg.layers.Dropout(0.5), D(3),
                              keras.layers.Lambda(lambda t: t ** 3, name="cube"), D(1)])
    with pytest.raises(ValueError, match=r"Invalid value for argument `model` of "
                       r"MomentPredictor: expected layers with a moment rule .*"
                       r"Lambda 'cube' has no moment rule.*Received: model='cube'"):
        kreg.MomentPredictor(model)
    hidden_softmax = keras.Sequential([keras.Input((4,)), kreg.layers.Dropout(0.5),
                                       D(3, activation="log_softmax"), D(1)])
    with pytest.raises(ValueError, match="log_softmax"):
        kreg.MomentPredictor(hidden_softmax)


def test_bad_arguments_use_kregs_wording():
    model = _mlp(kreg.layers.Dropout(0.5))
    with pytest.raises(TypeError, match=r"argument `model` of MomentPredictor: "
                       r"expected a Keras model"):
        kreg.MomentPredictor("model")
    with pytest.raises(ValueError, match=r"`head_samples` of MomentPredictor.*"
                       r"Received: head_samples=1"):
        kreg.MomentPredictor(model, head_samples=1)
    with pytest.raises(ValueError, match="at least one noise layer"):
        kreg.MomentPredictor(keras.Sequential([keras.Input((3,)), D(2)]))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = D(1)
            self.drop = kreg.layers.Dropout(0.5)

        def call(self, x):
            return self.d(self.drop(x))

    sub = Sub()
    sub(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="Sequential or Functional"):
        kreg.MomentPredictor(sub)
    predictor = kreg.MomentPredictor(model)
    with pytest.raises(ValueError, match="at least one row"):
        predictor.predict(np.zeros((0, 5), "float32"))
    with pytest.raises(ValueError, match=r"input .* of shape \(N, 5\)"):
        predictor.predict(np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match=r"`batch_size` of MomentPredictor.predict"):
        predictor.predict(_x(), batch_size=0)


def test_chunks_give_the_same_numbers(classifier):
    model, x = classifier
    predictor = kreg.MomentPredictor(model)
    whole = predictor.predict(x)
    parts = predictor.predict(x, batch_size=7)
    np.testing.assert_allclose(parts.mean, whole.mean, atol=1e-6)
    np.testing.assert_allclose(parts.mutual_information, whole.mutual_information,
                               atol=1e-6)


@pytest.mark.tf_only(reason="SavedModel export is TensorFlow-only")
def test_export_adds_serve_moments(tmp_path, classifier):
    tf = pytest.importorskip("tensorflow")
    model, x = classifier
    path = str(tmp_path / "served")
    kreg.export(model, path, mc_samples=4, moments=True)
    served = tf.saved_model.load(path)
    assert "serve_moments" in served.signatures
    out = served.signatures["serve_moments"](tf.constant(x))
    assert sorted(out) == ["entropy", "mean", "mutual_information", "std"]
    pred = kreg.MomentPredictor(model).predict(x)
    np.testing.assert_allclose(out["mean"].numpy(), pred.mean, atol=1e-5)
    np.testing.assert_allclose(out["std"].numpy(), pred.std, atol=1e-5)
    with pytest.raises(TypeError, match="`moments` of export"):
        kreg.export(model, str(tmp_path / "other"), moments="yes")
