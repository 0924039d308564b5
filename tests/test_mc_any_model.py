"""Monte Carlo on the models people train: Keras's own noise layers sampled in place.

Keras's Dropout family, MultiHeadAttention's attention dropout and the
dropout of recurrent layers are sampled where they sit (top level, nested
models, custom layers), with no conversion, no variable changed and
BatchNormalization in inference mode (kreg.layers._keras_noise). Random
draws are checked against their closed form with tolerances of a few
standard errors.
"""

import warnings

import keras
import numpy as np
import pytest

import kreg

T = 400  # samples per statistical check


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _samples(model, x, samples=T, **kw):
    kw.setdefault("task", "regression")
    pred = kreg.MCPredictor(model, samples=samples, seed=3, **kw).predict(
        x, verbose=0, return_samples=True)
    return pred.samples


def _single(layer, shape, x=None):
    inp = keras.Input(shape)
    return keras.Model(inp, layer(inp)), (np.ones((4,) + shape, "float32") if x is None else x)


def _kept_fraction_ok(kept, n, keep):
    se = np.sqrt(keep * (1 - keep) / n)
    assert abs(kept - keep) < 5 * se, (kept, keep, se)


# -- every Keras noise layer, in place ------------------------------------------
def test_keras_dropout_is_sampled_with_its_rate_and_scaling():
    model, x = _single(keras.layers.Dropout(0.3), (25,))
    s = _samples(model, x)
    values = np.unique(np.round(s, 5))
    np.testing.assert_allclose(values, [0.0, round(1 / 0.7, 5)], rtol=1e-5)
    _kept_fraction_ok((s > 0).mean(), s.size, 0.7)


@pytest.mark.parametrize("layer, shape, channel_axis", [
    (keras.layers.SpatialDropout1D(0.5), (6, 5), -1),
    (keras.layers.SpatialDropout2D(0.5), (3, 4, 5), -1),
    (keras.layers.SpatialDropout2D(0.5, data_format="channels_first"), (5, 3, 4), 1),
    (keras.layers.SpatialDropout3D(0.5), (2, 3, 2, 5), -1),
])
def test_spatial_dropout_drops_whole_channels(layer, shape, channel_axis):
    model, x = _single(layer, shape)
    s = _samples(model, x, samples=100)  # (T, N) + shape
    # channel_axis counts the batch axis; the samples have (T, N) in front
    axis, size = (-1, shape[-1]) if channel_axis < 0 else (channel_axis + 1,
                                                           shape[channel_axis - 1])
    moved = np.moveaxis(s, axis, -1).reshape(s.shape[0], s.shape[1], -1, size)
    # one value per (sample, row, channel), constant over the other axes
    assert (moved.max(axis=2) == moved.min(axis=2)).all()
    per_channel = moved[:, :, 0, :]
    _kept_fraction_ok((per_channel > 0).mean(), per_channel.size, 0.5)


def test_gaussian_dropout_and_noise_match_their_moments():
    rate, std = 0.2, 0.3
    model, x = _single(keras.layers.GaussianDropout(rate), (50,))
    s = _samples(model, x).ravel()
    var = rate / (1 - rate)
    assert abs(s.mean() - 1) < 5 * np.sqrt(var / s.size)
    assert abs(s.var() - var) < 5 * var * np.sqrt(2 / s.size)
    model, x = _single(keras.layers.GaussianNoise(std), (50,))
    s = _samples(model, 2 * x).ravel()
    assert abs(s.mean() - 2) < 5 * std / np.sqrt(s.size)
    assert abs(s.std() - std) < 5 * std / np.sqrt(2 * s.size)


def test_alpha_dropout_follows_keras_formula():
    rate = 0.25
    model, x = _single(keras.layers.AlphaDropout(rate), (40,))
    s = _samples(model, 0.5 * x)
    alpha_p = -1.0507009873554805 * 1.6732632423543772
    a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * rate
    kept, dropped = a * 0.5 + b, a * alpha_p + b
    np.testing.assert_allclose(np.unique(np.round(s, 4)),
                               np.round(sorted([kept, dropped]), 4), atol=2e-4)
    _kept_fraction_ok(np.isclose(s, kept, atol=1e-4).mean(), s.size, 1 - rate)


def test_attention_dropout_of_multi_head_attention_is_sampled():
    keras.utils.set_random_seed(0)
    q = keras.Input((4, 6))
    out = keras.layers.MultiHeadAttention(2, 3, dropout=0.5)(q, q)
    model = keras.Model(q, out)
    x = np.random.default_rng(0).normal(size=(3, 4, 6)).astype("float32")
    pred = kreg.MCPredictor(model, samples=64, seed=0, task="regression").predict(
        x, verbose=0)
    assert pred.std.min() > 0
    # the attention dropout is the only noise: its mean is the deterministic output
    det = _np(model.predict(x, verbose=0))
    se = pred.std / np.sqrt(64)
    assert (np.abs(pred.mean - det) < 6 * se + 1e-5).mean() > 0.99


# -- nothing of the model changes ------------------------------------------------
def _mixed_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((5,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.5, seed=7)(h)
    h = keras.layers.GaussianNoise(0.1)(h)
    return keras.Model(inp, keras.layers.Dense(1)(h))


def _snapshot(model):
    return {v.path: _np(v).copy() for v in model.variables}


def test_no_variable_changes_and_batchnorm_stays_in_inference_mode():
    model = _mixed_model()
    x = np.random.default_rng(1).normal(size=(64, 5)).astype("float32")
    det = _np(model.predict(x, verbose=0))
    before = _snapshot(model)
    pred = kreg.MCPredictor(model, samples=200, seed=0, task="regression").predict(
        x, verbose=0)
    after = _snapshot(model)
    assert before.keys() == after.keys()
    for key in before:  # seed generators and BN moving statistics included
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    np.testing.assert_array_equal(_np(model.predict(x, verbose=0)), det)
    # inverted dropout and zero-mean noise after BN in inference mode: the MC
    # mean is the deterministic output, within its standard error
    se = pred.std / np.sqrt(200)
    assert (np.abs(pred.mean - det) < 5 * se + 1e-5).all()


def test_nested_models_and_custom_layers_are_reached():
    @keras.saving.register_keras_serializable(package="kreg_test")
    class Block(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.dense = keras.layers.Dense(4)
            self.drop = keras.layers.Dropout(0.5)

        def call(self, x, training=None):
            return self.drop(self.dense(x), training=training)

    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4),
                              keras.layers.Dropout(0.3)])
    inp = keras.Input((4,))
    model = keras.Model(inp, Block()(inner(inp)))
    predictor = kreg.MCPredictor(model, samples=8, seed=0, task="regression")
    assert len(predictor.sampling_layers) == 2
    assert predictor.predict(np.ones((2, 4), "float32"), verbose=0).std.max() > 0


class GuardedNet(keras.Model):
    def __init__(self, guarded, **kw):
        super().__init__(**kw)
        self.guarded = guarded
        self.dense = keras.layers.Dense(8)
        self.drop = keras.layers.Dropout(0.5)
        self.out = keras.layers.Dense(1)

    def call(self, x, training=None):
        h = self.dense(x)
        if self.guarded:
            if training:
                h = self.drop(h)
        else:
            h = self.drop(h, training=training)
        return self.out(h)


def test_subclassed_model_samples_or_the_safety_net_says_why():
    x = np.ones((3, 4), "float32")
    model = GuardedNet(False)
    model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pred = kreg.MCPredictor(model, samples=8, task="regression").predict(x, verbose=0)
    assert pred.std.max() > 0
    guarded = GuardedNet(True)
    guarded(x)
    predictor = kreg.MCPredictor(guarded, samples=8, task="regression")
    with pytest.warns(UserWarning, match=r"all 8 samples are identical.*`if training:`"):
        assert predictor.predict(x, verbose=0).std.max() == 0
    with warnings.catch_warnings():  # once per predictor
        warnings.simplefilter("error", UserWarning)
        predictor.predict(x, verbose=0)


def test_noise_kreg_cannot_sample_is_an_error_naming_the_layer():
    class MyNoise(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.gen = keras.random.SeedGenerator(0)

        def call(self, x, training=None):
            if training:
                return x + keras.random.normal(keras.ops.shape(x), seed=self.gen)
            return x

    inp = keras.Input((3,))
    h = MyNoise(name="my_noise")(keras.layers.Dropout(0.5)(inp))
    model = keras.Model(inp, h)
    with pytest.raises(ValueError, match=r"^Invalid value for argument `model` of "
                       r"MCPredictor: .*MyNoise 'my_noise'"):
        kreg.MCPredictor(model)


def test_training_true_in_the_graph_warns_and_is_sampled():
    inp = keras.Input((4,))
    h = keras.layers.Dropout(0.5, name="forced")(keras.layers.Dense(8)(inp), training=True)
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    x = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(_np(model.predict(x, verbose=0)),
                                  _np(model.predict(x, verbose=0)))
    with pytest.warns(UserWarning, match=r"'forced' \(Dropout\) with "
                      r"training=True.*identical\s+passes"):
        predictor = kreg.MCPredictor(model, samples=8, task="regression")
    assert predictor.predict(x, verbose=0).std.max() > 0


# -- recurrent dropout (Gal & Ghahramani 2016) ------------------------------------
def _linear_rnn(dropout, recurrent_dropout, units=6, steps=5):
    inp = keras.Input((steps, units))
    rnn = keras.layers.SimpleRNN(
        units, activation=None, use_bias=False, return_sequences=True,
        kernel_initializer="identity", recurrent_initializer="identity",
        dropout=dropout, recurrent_dropout=recurrent_dropout)
    return keras.Model(inp, rnn(inp))


def test_recurrent_input_mask_is_one_per_sequence_fresh_per_sample_and_row():
    # h_t = (x_t * m) + h_{t-1}: with x = 1, h_t - h_{t-1} = m at every step.
    model = _linear_rnn(0.5, 0.0)
    x = np.ones((8, 5, 6), "float32")
    s = _samples(model, x, samples=40)          # (T, N, steps, units)
    steps = np.diff(np.concatenate([np.zeros_like(s[:, :, :1]), s], axis=2), axis=2)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[:, :, :1], steps.shape),
                               atol=1e-5)        # the same mask at every step
    masks = steps[:, :, 0]                       # (T, N, units)
    assert set(np.round(np.unique(masks), 4)) == {0.0, 2.0}
    _kept_fraction_ok((masks > 0).mean(), masks.size, 0.5)
    # independent draws: two rows (or two samples) differ in half of the units
    for a, b in ((masks[:, 0], masks[:, 1]), (masks[0], masks[1])):
        _kept_fraction_ok((a != b).mean(), a.size, 0.5)
    # joint mode: one mask per sample, shared by the rows, fresh per sample
    joint = _samples(model, x, samples=40, joint=True)
    np.testing.assert_array_equal(joint, np.broadcast_to(joint[:, :1], joint.shape))
    first = joint[:, 0, 0]                       # (T, units)
    _kept_fraction_ok((first[1:] != first[:-1]).mean(), first[1:].size, 0.5)


def test_recurrent_state_mask_is_the_same_at_every_step():
    # h_t = 1 + h_{t-1} * r: d_t = h_t - h_{t-1} = d_{t-1} * r, the same r each step.
    model = _linear_rnn(0.0, 0.5)
    s = _samples(model, np.ones((6, 5, 6), "float32"), samples=30)
    d = np.diff(s, axis=2)                      # d_1..d_4
    r = 1 / 0.5
    # where the state is kept, d_t = r^t (growing); where dropped, 0 from then on
    kept = d[:, :, 0] > 0
    for t in range(1, d.shape[2]):
        np.testing.assert_allclose(d[:, :, t], np.where(kept, r ** (t + 1), 0.0), rtol=1e-5)
    _kept_fraction_ok(kept.mean(), kept.size, 0.5)


@pytest.mark.parametrize("make", [
    lambda: keras.layers.LSTM(5, dropout=0.3, recurrent_dropout=0.3),
    lambda: keras.layers.LSTM(5, dropout=0.3),
    lambda: keras.layers.GRU(5, dropout=0.3, recurrent_dropout=0.2),
    lambda: keras.layers.Bidirectional(keras.layers.GRU(5, dropout=0.3)),
    lambda: keras.layers.RNN([keras.layers.LSTMCell(4, dropout=0.3),
                              keras.layers.LSTMCell(4, recurrent_dropout=0.3)]),
], ids=["lstm", "lstm-cudnn-path", "gru", "bidirectional", "stacked-cells"])
def test_recurrent_layers_sample_and_leave_the_model_unchanged(make):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 3))
    model = keras.Model(inp, keras.layers.Dense(1)(make()(inp)))
    x = np.random.default_rng(0).normal(size=(3, 4, 3)).astype("float32")
    det = _np(model.predict(x, verbose=0))
    before = _snapshot(model)
    pred = kreg.MCPredictor(model, samples=16, seed=0, task="regression").predict(
        x, verbose=0)
    assert pred.std.min() > 0
    after = _snapshot(model)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    np.testing.assert_array_equal(_np(model.predict(x, verbose=0)), det)


def test_conv_lstm_dropout_is_sampled():
    inp = keras.Input((3, 5, 2))
    h = keras.layers.ConvLSTM1D(2, 3, padding="same", dropout=0.4,
                                recurrent_dropout=0.4)(inp)
    model = keras.Model(inp, keras.layers.Flatten()(h))
    pred = kreg.MCPredictor(model, samples=8, seed=0, task="regression").predict(
        np.ones((2, 3, 5, 2), "float32"), verbose=0)
    assert pred.std.max() > 0


# -- reading the outputs ------------------------------------------------------------
def _linear_head(units):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                             keras.layers.Dropout(0.5), keras.layers.Dense(units)])


def test_an_unknown_linear_head_is_averaged_as_regression_with_a_warning():
    model = _linear_head(3)
    with pytest.warns(UserWarning, match=r"output 'output_0' \(3 units\) ends in a "
                      r"linear layer.*not compiled.*from_logits=True"):
        predictor = kreg.MCPredictor(model, samples=2)
    assert predictor.resolved_task == "regression"
    model.compile(loss=lambda y, p: keras.ops.mean(p))  # a custom loss tells nothing
    with pytest.warns(UserWarning, match=r"custom loss"):
        kreg.MCPredictor(model, samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for kw in ({"task": "regression"}, {"from_logits": True}):
            kreg.MCPredictor(_linear_head(3), samples=2, **kw)
        model.compile(loss="mse")
        kreg.MCPredictor(model, samples=2)
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert kreg.MCPredictor(model, samples=2).resolved_task == "classification"


def test_a_float16_softmax_head_is_read_as_probabilities():
    keras.utils.set_random_seed(0)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential([
            keras.Input((6,)), keras.layers.Dense(32), keras.layers.Dropout(0.5),
            keras.layers.Dense(7, activation="softmax", dtype="float16")])
    finally:
        keras.config.set_dtype_policy(previous)
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32") * 3
    pred = kreg.MCPredictor(model, samples=8, seed=0).predict(x, verbose=0)
    assert pred.task == "classification"
    np.testing.assert_allclose(pred.mean.sum(-1), 1.0, atol=1e-2)


# -- keras-hub ------------------------------------------------------------------------
def test_keras_hub_backbone_built_from_a_config_is_sampled():
    import keras_hub  # installed by `make test` (see the Makefile: without tensorflow-text)

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=6, dropout=0.2)
    inputs = {k: keras.Input((6,), dtype="int32", name=k)
              for k in ("token_ids", "padding_mask", "segment_ids")}
    model = keras.Model(inputs, keras.layers.Dense(
        3, activation="softmax")(backbone(inputs)["pooled_output"]))
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(0, 30, (4, 6)).astype("int32"),
         "padding_mask": np.ones((4, 6), "int32"),
         "segment_ids": np.zeros((4, 6), "int32")}
    predictor = kreg.MCPredictor(model, samples=8, seed=0)
    # embeddings, attention (MultiHeadAttention's own), its output, feed-forward
    assert len(predictor.sampling_layers) == 4
    before = _snapshot(model)
    pred = predictor.predict(x, verbose=0)
    assert pred.mutual_information.max() > 0
    np.testing.assert_allclose(pred.mean.sum(-1), 1.0, atol=1e-5)
    after = _snapshot(model)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


# -- export --------------------------------------------------------------------------
_SERVE = """
import sys
sys.modules["kreg"] = None   # served without kreg or Keras
sys.modules["keras"] = None
import numpy as np
import tensorflow as tf
served = tf.saved_model.load(sys.argv[1] + "/m")
x = np.load(sys.argv[1] + "/x.npy")
out = served.signatures["serve_mc_seeded"](seq=x, seed=tf.constant(7, tf.int64))
np.savez(sys.argv[1] + "/out.npz", **{k: v.numpy() for k, v in out.items()})
"""


@pytest.mark.tf_only(reason="SavedModel export is TensorFlow-only")
def test_lstm_and_attention_model_exports_with_its_dropout_sampled(tmp_path, fresh_python):
    keras.utils.set_random_seed(0)
    seq = keras.Input((5, 3), name="seq")
    h = keras.layers.LSTM(6, dropout=0.3, recurrent_dropout=0.3, return_sequences=True)(seq)
    h = keras.layers.MultiHeadAttention(2, 3, dropout=0.2)(h, h)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(seq, out)
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    kreg.export(model, tmp_path / "m", mc_samples=12)
    fresh_python(_SERVE.replace("sys.argv[1]", repr(str(tmp_path))))
    served = dict(np.load(tmp_path / "out.npz"))
    pred = kreg.MCPredictor(model, 12, seed=7).predict(x, batch_size=4, verbose=0)
    assert pred.std.max() > 0
    np.testing.assert_allclose(served["mean"], pred.mean, rtol=0, atol=2e-6)
    np.testing.assert_allclose(served["std"], pred.std, rtol=0, atol=2e-6)


def test_a_dropout_subclass_forcing_training_is_sampled_as_dropout():
    # The common MC dropout recipe: predict samples with the layer's own
    # generator; kreg samples it as the Dropout it is, with its own seeds.
    class MCDropout(keras.layers.Dropout):
        def call(self, inputs, training=None):
            return super().call(inputs, training=True)

    model, x = _single(MCDropout(0.5), (40,))
    s = _samples(model, x, samples=50)
    assert set(np.unique(s)) == {0.0, 2.0}
    _kept_fraction_ok((s > 0).mean(), s.size, 0.5)


def test_twins_share_their_layers_streams_so_many_dropouts_leave_room():
    # 70 Keras Dropouts (and their 70 kreg twins) and an LSTM cell: the cell
    # gets stream 71, not one past every twin (at most 127 streams a pass).
    inp = keras.Input((3, 2))
    h = keras.layers.Average()([keras.layers.Dropout(0.1)(inp) for _ in range(70)])
    model = keras.Model(inp, keras.layers.LSTM(2, dropout=0.3)(h))
    predictor = kreg.MCPredictor(model, samples=4, seed=0, task="regression")
    assert max(predictor.layer_index.values()) == 71
    assert predictor.predict(np.ones((1, 3, 2), "float32"), verbose=0).std.max() > 0
