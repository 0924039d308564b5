"""`MCPredictor(..., augment=True)`: test-time augmentation. The 50/50 mixture
of a flipped and an unflipped asymmetric model, BatchNormalization in
inference mode, reproducibility, no variable change, the prefix split, the
compile cache, joint samples and the argument errors."""

import math

import keras
import numpy as np
import pytest

import kreg

T = 4000


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _flip_model(*, dropout=False, prefix=False, seed=1):
    """RandomFlip("horizontal") -> BatchNormalization -> Flatten -> Dense(1).

    The Dense kernel weighs pixel (i, j) by 1 + i + 4 j: mirroring a row
    changes the output (asymmetric by construction). BatchNormalization has
    moving statistics far from (0, 1), so training mode would be visible.
    """
    inputs = keras.Input((3, 4, 1))
    h = inputs
    if prefix:  # a layer before the flip: the predictor's prefix candidate
        h = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")(h)
    h = keras.layers.RandomFlip("horizontal", seed=seed)(h)
    bn = keras.layers.BatchNormalization()
    h = keras.layers.Flatten()(bn(h))
    if dropout:
        h = kreg.layers.Dropout(0.5, seed=seed)(h)
    dense = keras.layers.Dense(1, kernel_initializer="zeros")
    model = keras.Model(inputs, dense(h))
    i, j = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    dense.kernel.assign((1.0 + i + 4.0 * j).reshape(12, 1).astype("float32"))
    bn.moving_mean.assign(np.array([0.7], "float32"))
    bn.moving_variance.assign(np.array([4.0], "float32"))
    return model


def _inputs(n=3):
    return np.random.default_rng(0).uniform(0, 1, (n, 3, 4, 1)).astype("float32")


def _variables(model):
    return [_np(v).copy() for v in model.variables]


def test_flip_gives_the_50_50_mixture_with_bn_in_inference_mode():
    model = _flip_model()
    x = _inputs()
    plain = _np(model(x, training=False))[:, 0]
    mirrored = _np(model(x[:, :, ::-1], training=False))[:, 0]
    assert np.abs(plain - mirrored).min() > 0.5  # asymmetric by construction
    before = _variables(model)
    pred = kreg.MCPredictor(model, samples=T, seed=3, augment=True,
                            task="regression").predict(x, verbose=0, return_samples=True)
    s = pred.samples[..., 0]  # (T, N)
    # Each sample is the inference-mode output on x or on its mirror image
    # (BN's moving statistics: training mode would give other numbers).
    is_plain = np.isclose(s, plain, rtol=1e-5, atol=1e-5)
    is_mirrored = np.isclose(s, mirrored, rtol=1e-5, atol=1e-5)
    assert (is_plain ^ is_mirrored).all()
    # The mean is the 50/50 mixture within 5 standard errors
    # (SE = |plain - mirrored| / 2 / sqrt(T)), and so is the flip frequency.
    se = np.abs(plain - mirrored) / 2 / math.sqrt(T)
    np.testing.assert_array_less(np.abs(pred.mean[:, 0] - (plain + mirrored) / 2), 5 * se)
    assert abs(is_mirrored.mean() - 0.5) < 5 * 0.5 / math.sqrt(is_mirrored.size)
    # Every input draws its own flip: agreement between two inputs is chance.
    agree = (is_mirrored[:, 0] == is_mirrored[:, 1]).mean()
    assert abs(agree - 0.5) < 5 * 0.5 / math.sqrt(T)
    # No variable changed (BN's statistics, the flip's own seed state).
    for old, new in zip(before, _variables(model)):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_allclose(_np(model.predict(x, verbose=0))[:, 0], plain, rtol=1e-6)


def test_seeded_runs_are_reproducible():
    model = _flip_model(dropout=True)
    x = _inputs()

    def samples(seed):
        return kreg.MCPredictor(model, samples=16, seed=seed, augment=True).predict(
            x, verbose=0, return_samples=True).samples

    np.testing.assert_array_equal(samples(7), samples(7))
    assert not np.array_equal(samples(7), samples(8))


def test_joint_samples_flip_every_input_of_a_sample_together():
    model = _flip_model()
    x = _inputs()
    plain = _np(model(x, training=False))[:, 0]
    s = kreg.MCPredictor(model, samples=400, seed=2, augment=True, joint=True,
                         task="regression").predict(
        x, verbose=0, return_samples=True).samples[..., 0]
    is_plain = np.isclose(s, plain, rtol=1e-5, atol=1e-5)
    assert (is_plain == is_plain[:, :1]).all()
    assert abs(is_plain[:, 0].mean() - 0.5) < 5 * 0.5 / math.sqrt(400)
    # A function of the seed and the sample index only: chunked passes agree.
    chunked = kreg.MCPredictor(model, samples=400, seed=2, augment=True, joint=True,
                               task="regression", max_batch=3 * 64).predict(
        x, verbose=0, return_samples=True).samples[..., 0]
    np.testing.assert_allclose(chunked, s, rtol=1e-6)


def test_layers_before_the_flip_are_the_prefix_and_the_flip_samples():
    model = _flip_model(prefix=True)
    x = _inputs()
    plain = _np(model(x, training=False))[:, 0]
    mirrored = _np(model(x[:, :, ::-1], training=False))[:, 0]
    predictor = kreg.MCPredictor(model, samples=200, seed=4, augment=True,
                                 task="regression")
    s = predictor.predict(x, verbose=0, return_samples=True).samples[..., 0]
    is_mirrored = np.isclose(s, mirrored, rtol=1e-5, atol=1e-5)
    assert (np.isclose(s, plain, rtol=1e-5, atol=1e-5) ^ is_mirrored).all()
    assert 0 < is_mirrored.mean() < 1


def test_an_augmentation_block_nested_in_a_sequential_samples():
    """The common Keras pattern: `augmentation = keras.Sequential([...])`."""
    block = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=2)])
    inputs = keras.Input((3, 4, 1))
    h = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")(inputs)
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(block(h))))
    dense.kernel.assign(np.arange(1.0, 13.0, dtype="float32").reshape(12, 1))
    x = _inputs()
    plain = _np(model(x, training=False))[:, 0]
    mirrored = _np(model(x[:, :, ::-1], training=False))[:, 0]
    assert np.abs(plain - mirrored).min() > 0.1
    s = kreg.MCPredictor(model, samples=200, seed=6, augment=True, task="regression").predict(
        x, verbose=0, return_samples=True).samples[..., 0]
    is_mirrored = np.isclose(s, mirrored, rtol=1e-5, atol=1e-6)
    assert (np.isclose(s, plain, rtol=1e-5, atol=1e-6) ^ is_mirrored).all()
    assert abs(is_mirrored.mean() - 0.5) < 5 * 0.5 / math.sqrt(is_mirrored.size)


def test_augment_false_leaves_the_augmentation_layers_off():
    """Same model, augment=False then True: the compile cache keeps them apart."""
    model = _flip_model(dropout=True)
    x = _inputs()
    mirrored = _np(model(x[:, :, ::-1], training=False))[:, 0]
    off = kreg.MCPredictor(model, samples=200, seed=5, task="regression").predict(
        x, verbose=0, return_samples=True).samples[..., 0]
    on = kreg.MCPredictor(model, samples=200, seed=5, augment=True,
                          task="regression").predict(
        x, verbose=0, return_samples=True).samples[..., 0]
    # Dropout alone: never the mirrored model's output (its flips are off).
    assert not np.isclose(off, mirrored, rtol=1e-5, atol=1e-5).any()
    assert not np.array_equal(off, on)


def test_a_model_with_only_augmentation_layers_needs_augment_true():
    model = _flip_model()
    kreg.MCPredictor(model, samples=2, augment=True)  # accepted
    with pytest.raises(ValueError) as err:
        kreg.MCPredictor(model, samples=2)
    message = str(err.value)
    assert message.startswith("Invalid value for argument `model` of MCPredictor: "
                              "expected a model with at least one layer that samples")
    assert "augment=True" in message  # the hint


def test_augment_argument_errors():
    model = _flip_model()
    with pytest.raises(TypeError) as err:
        kreg.MCPredictor(model, augment="yes")
    assert str(err.value).startswith(
        "Invalid value for argument `augment` of MCPredictor: expected a bool")
    shear = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.RandomShear(0.2),
                              keras.layers.Flatten(), kreg.layers.Dropout(0.5),
                              keras.layers.Dense(1)], name="sheared")
    with pytest.raises(ValueError, match="RandomShear"):
        kreg.MCPredictor(shear, augment=True)
    kreg.MCPredictor(shear)  # augment=False: the shear is not asked to sample


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="SavedModel export is TensorFlow-only")
def test_export_with_augment_matches_the_predictor(tmp_path, fresh_python):
    """The SavedModel samples the flips too, without kreg or Keras."""
    model = _flip_model(dropout=True)
    x = _inputs()
    path = str(tmp_path / "tta")
    kreg.export(model, path, mc_samples=16, task="regression", augment=True)
    np.save(tmp_path / "x.npy", x)
    res = fresh_python(f"""
        import json, sys
        sys.modules["kreg"] = None
        sys.modules["keras"] = None
        import numpy as np
        import tensorflow as tf
        served = tf.saved_model.load({path!r})
        x = tf.constant(np.load({str(tmp_path / "x.npy")!r}))
        out = served.serve_mc_seeded(x, tf.constant(9, tf.int64))
        print("JSON:" + json.dumps(dict(mean=out["mean"].numpy().tolist(),
                                        serve=served.serve(x).numpy().tolist())))
    """).result
    expected = kreg.MCPredictor(model, samples=16, seed=9, augment=True,
                                task="regression").predict(x, verbose=0, batch_size=len(x))
    np.testing.assert_allclose(res["mean"], expected.mean, rtol=1e-5, atol=1e-6)
    dropout_only = kreg.MCPredictor(model, samples=16, seed=9, task="regression").predict(
        x, verbose=0, batch_size=len(x))
    assert np.abs(res["mean"] - dropout_only.mean).max() > 0.1  # the flips are served
    np.testing.assert_allclose(res["serve"], _np(model(x, training=False)), rtol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="SavedModel export is TensorFlow-only")
def test_export_rejects_augment_of_the_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="argument `augment` of export"):
        kreg.export(_flip_model(dropout=True), str(tmp_path / "m"), augment=1)
