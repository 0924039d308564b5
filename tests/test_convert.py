"""kreg.convert_dropout keeps the model exactly; the `training=True` pitfall.

Every preprocessing layer with state that is not plain weights (an adapted
`Normalization`, `Discretization`, `IntegerLookup`, `StringLookup`,
`TextVectorization`, `Hashing`), in nested models and in custom layers'
sublayers, gives bit-identical deterministic predictions after conversion;
state that cannot be carried is refused by layer name.
"""

import warnings

import keras
import numpy as np
import pytest

import kreg
from kreg.mc.convert import forced_training_layers

RNG = np.random.default_rng(0)
NUM = RNG.normal(5.0, 3.0, size=(64, 3)).astype("float32")


def _kreg_layers(model):
    from kreg import _compat

    return [layer for layer in _compat.flatten_layers(model)
            if type(layer).__module__.startswith("kreg.")]


def _assert_same_predictions(model, converted, x):
    before = model.predict(x, verbose=0)
    after = converted.predict(x, verbose=0)
    for a, b in zip(keras.tree.flatten(before), keras.tree.flatten(after)):
        np.testing.assert_array_equal(a, b)  # bit for bit, not allclose


@keras.saving.register_keras_serializable(package="kreg_test_convert")
class Scaled(keras.layers.Layer):
    """A custom layer holding an adapted Normalization and a Dense."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.norm = keras.layers.Normalization()
        self.dense = keras.layers.Dense(units)
        self.drop = keras.layers.Dropout(0.2)

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.dense.build(input_shape)

    def call(self, x, training=None):
        return self.drop(self.dense(self.norm(x)), training=training)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _numeric_model():
    """Normalization (the TF basic-regression pattern), Discretization, a
    nested Sequential and a nested Functional (each with its own adapted
    Normalization and a Keras Dropout), and a custom layer with sublayers."""
    keras.utils.set_random_seed(1)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(NUM)
    # (Discretization.adapt needs TensorFlow: the lookups model adapts one.)
    disc = keras.layers.Discretization(bin_boundaries=[2.0, 5.0, 8.0], output_mode="one_hot",
                                       name="disc")
    inner_norm = keras.layers.Normalization(name="inner_norm")
    inner_norm.adapt(NUM * 2.0)
    seq = keras.Sequential([keras.Input((3,)), inner_norm, keras.layers.Dense(5),
                            keras.layers.Dropout(0.4, name="seq_drop")], name="seq")
    deep_norm = keras.layers.Normalization(name="deep_norm")
    deep_norm.adapt(NUM - 1.0)
    a = keras.Input((3,), name="a")
    fun = keras.Model(a, keras.layers.Dropout(0.3, name="fun_drop")(
        keras.layers.Dense(5)(deep_norm(a))), name="fun")
    scaled = Scaled(4, name="scaled")
    scaled.build((None, 3))
    scaled.norm.adapt(NUM + 3.0)
    x = keras.Input((3,), name="num")
    first = keras.Input((1,), name="first")
    h = keras.layers.concatenate([norm(x), disc(first), seq(x), fun(x), scaled(x)])
    h = keras.layers.Dropout(0.5, name="drop")(keras.layers.Dense(8, activation="relu")(h))
    return keras.Model([x, first], keras.layers.Dense(1, name="out")(h))


@pytest.fixture(scope="module")
def numeric():
    model = _numeric_model()
    return model, kreg.convert_dropout(model)


def test_numeric_preprocessing_nested_models_and_sublayers_predict_bit_exact(numeric):
    model, converted = numeric
    x = [NUM[:16], NUM[:16, :1]]
    _assert_same_predictions(model, converted, x)
    # What the conversion did before (clone_model, then set_weights) resets
    # the adapted Normalizations and moves the prediction. (On PyTorch the
    # normalizing mean is a view of the variable, so set_weights carried it.)
    if keras.backend.backend() != "torch":
        naive = keras.models.clone_model(model)
        naive.set_weights(model.get_weights())
        assert not np.array_equal(naive.predict(x, verbose=0), model.predict(x, verbose=0))
    names = {layer.name for layer in _kreg_layers(converted)}
    assert {"drop", "seq_drop", "fun_drop"} <= names
    assert converted.get_layer("scaled").drop.__module__.startswith("keras")


@pytest.mark.parametrize("path", [("norm",), ("seq", "inner_norm"), ("fun", "deep_norm"),
                                  ("scaled", "norm")])
def test_adapted_normalization_statistics_are_carried(numeric, path):
    model, converted = numeric

    def find(m):
        layer = m.get_layer(path[0])
        return getattr(layer, path[1]) if isinstance(layer, Scaled) else (
            layer.get_layer(path[1]) if len(path) > 1 else layer)

    old, new = find(model), find(converted)
    assert old is not new
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(old.mean),
                                  keras.ops.convert_to_numpy(new.mean))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(old.variance),
                                  keras.ops.convert_to_numpy(new.variance))
    assert float(np.max(keras.ops.convert_to_numpy(new.mean))) > 1.0  # not the reset 0


def test_the_conversion_is_a_copy(numeric):
    model, converted = numeric
    assert not any(a is b for a in model.weights for b in converted.weights)
    assert all(type(layer).__module__.startswith("keras")
               for layer in model.layers if "drop" in layer.name)
    assert converted.get_layer("disc").bin_boundaries == model.get_layer("disc").bin_boundaries


# -- string and integer lookups (TensorFlow) -----------------------------------
@pytest.fixture(scope="module")
def lookups():
    """The keras.io structured-data pattern: a dict of features, one of them
    a string, plus a text feature; every lookup adapted."""
    import tensorflow as tf

    keras.utils.set_random_seed(2)
    words = np.array(["cat", "dog", "bird", "cat", "fish", "dog"])
    ints = np.array([3, 5, 7, 3, 11, 5])
    docs = ["the cat sat", "a dog ran", "the dog sat down", "a bird"]
    slook = keras.layers.StringLookup(output_mode="one_hot", name="slook")
    slook.adapt(words)
    ilook = keras.layers.IntegerLookup(output_mode="one_hot", name="ilook")
    ilook.adapt(ints)
    tfidf = keras.layers.TextVectorization(max_tokens=12, output_mode="tf_idf", name="tfidf")
    tfidf.adapt(docs)
    seq = keras.layers.TextVectorization(max_tokens=12, output_sequence_length=4,
                                         name="seq_vec")
    seq.adapt(docs)
    inputs = {"animal": keras.Input((1,), dtype="string", name="animal"),
              "code": keras.Input((1,), dtype="int64", name="code"),
              "text": keras.Input((), dtype="string", name="text")}
    hashed = keras.layers.Hashing(num_bins=5, output_mode="one_hot", name="hash")
    disc = keras.layers.Discretization(num_bins=3, output_mode="one_hot", name="adapted_disc")
    disc.adapt(NUM[:, :1])
    inputs["amount"] = keras.Input((1,), name="amount")
    embedded = keras.layers.GlobalAveragePooling1D()(
        keras.layers.Embedding(13, 3)(seq(inputs["text"])))
    h = keras.layers.concatenate([slook(inputs["animal"]), ilook(inputs["code"]),
                                  tfidf(inputs["text"]), hashed(inputs["animal"]), embedded,
                                  disc(inputs["amount"])])
    h = keras.layers.Dropout(0.5)(keras.layers.Dense(8, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    x = {"animal": tf.constant([["cat"], ["dog"], ["zebra"], ["fish"], ["bird"]]),
         "code": np.array([[3], [7], [99], [11], [5]]),
         "text": tf.constant(["the cat", "dog down", "unknown words", "", "a bird sat"]),
         "amount": NUM[:5, :1]}
    return model, x


@pytest.mark.tf_only(reason="the lookup layers and string inputs are TensorFlow's")
def test_lookups_text_vectorization_and_hashing_predict_bit_exact(lookups):
    model, x = lookups
    converted = kreg.convert_dropout(model)  # raised "Table not initialized" before
    _assert_same_predictions(model, converted, x)
    for name in ("slook", "ilook", "tfidf", "seq_vec"):
        assert (converted.get_layer(name).get_vocabulary()
                == model.get_layer(name).get_vocabulary())
    assert (converted.get_layer("adapted_disc").bin_boundaries
            == model.get_layer("adapted_disc").bin_boundaries)


# -- refusals ------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="kreg_test_convert")
class Centered(keras.layers.Layer):
    """A custom layer whose `adapt` keeps its state in a Python attribute
    (not a variable, an asset or the config): no `.keras` file carries it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.center = 0.0

    def adapt(self, data):
        self.center = float(np.mean(data))

    def call(self, x):
        return x - self.center


@keras.saving.register_keras_serializable(package="kreg_test_convert")
class Unloadable(keras.layers.Layer):
    """A custom layer whose own load hook fails."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w

    def load_own_variables(self, store):
        raise RuntimeError("cannot load me")


def _with(layer):
    x = keras.Input((3,), name="x")
    h = keras.layers.Dropout(0.5)(layer(x))
    return keras.Model(x, keras.layers.Dense(1)(h))


def test_state_outside_variables_assets_and_config_is_refused_by_name():
    centered = Centered(name="my_centering")
    centered.adapt(NUM)
    model = _with(centered)
    with pytest.raises(ValueError, match=(
            r"^Invalid value for argument `model` of convert_dropout: .*the state of "
            r"layer 'my_centering' \(Centered\) is not: its copy computes other "
            r"outputs.*kreg.MCPredictor.*Received: model=<Functional name=")) as info:
        kreg.convert_dropout(model)
    assert "\n" not in str(info.value)
    # Without adapted state the same model converts (the probe is not a
    # false alarm).
    kreg.convert_dropout(_with(Centered(name="plain_centering")))


def test_a_failing_load_hook_is_refused_by_name():
    with pytest.raises(ValueError, match=r"layer 'stubborn' \(Unloadable\) is not: "
                       r"copying it failed \(RuntimeError: cannot load me\)"):
        kreg.convert_dropout(_with(Unloadable(name="stubborn")))


@pytest.mark.tf_only(reason="the lookup layers are TensorFlow's")
@pytest.mark.parametrize("mode, why", [
    ("int", r"its vocabulary does not survive a save and load"),
    ("one_hot", r"copying it failed \(RuntimeError: .*vocabulary size cannot be changed"),
])
def test_a_vocabulary_a_keras_file_cannot_carry_is_refused(mode, why):
    """Keras writes a vocabulary one token per line: a token with a line
    break comes back as two (a .keras file has the same limit)."""
    lookup = keras.layers.StringLookup(output_mode=mode, name="cities")
    lookup.adapt(np.array(["new\nyork", "paris", "paris"]))
    x = keras.Input((1,), dtype="string", name="city")
    h = keras.ops.cast(lookup(x), "float32")
    model = keras.Model(x, keras.layers.Dense(1)(keras.layers.Dropout(0.5)(h)))
    with pytest.raises(ValueError, match=r"the state of layer 'cities' \(StringLookup\) "
                       r"is not: " + why):
        kreg.convert_dropout(model)


# -- the training=True pitfall -------------------------------------------------
def _forced(nested=False):
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(16)(x)
    h = keras.layers.Dropout(0.5, name="always")(h, training=True)
    h = keras.layers.Dropout(0.5, name="usual")(h)
    h = keras.layers.BatchNormalization(name="bn")(h, training=True)  # no noise: no warning
    model = keras.Model(x, keras.layers.Dense(2, name="head")(h), name="forced")
    if not nested:
        return model
    outer_x = keras.Input((4,), name="outer_x")
    return keras.Model(outer_x, model(outer_x), name="outer")


def test_keras_predict_ignores_training_true_but_a_plain_call_samples():
    """The fact the warning states, checked on the installed Keras."""
    model = _forced()
    x = RNG.normal(size=(8, 4)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)),
                                  model.predict(x, verbose=0))
    a, b = (keras.ops.convert_to_numpy(model(x)) for _ in range(2))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("nested", [False, True])
def test_forced_training_noise_layers_are_found_and_warned_once(nested):
    model = _forced(nested)
    assert [layer.name for layer in forced_training_layers(model)] == ["always"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = kreg.convert_dropout(model)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert messages[0].startswith("The model calls 'always' (Dropout) with training=True")
    assert "predict" in messages[0] and "identical passes" in messages[0]
    assert "kreg.MCPredictor" in messages[0]
    # The conversion keeps the flag on the kreg layer's call.
    assert [layer.name for layer in forced_training_layers(converted)] == ["always"]


def test_no_warning_without_forced_noise(numeric):
    model, _ = numeric
    assert forced_training_layers(model) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        kreg.convert_dropout(model)


def test_forced_recurrent_and_attention_dropout_are_noise():
    x = keras.Input((5, 4), name="seq")
    h = keras.layers.LSTM(3, dropout=0.2, return_sequences=True, name="lstm")(x, training=True)
    h = keras.layers.MultiHeadAttention(1, 3, dropout=0.1, name="mha")(h, h, training=True)
    h = keras.layers.MultiHeadAttention(1, 3, name="mha_plain")(h, h, training=True)
    model = keras.Model(x, h)
    assert [layer.name for layer in forced_training_layers(model)] == ["lstm", "mha"]


# -- Lambda layers ---------------------------------------------------------------
SCALE = 3.0  # a module global the Lambda reads (lost if its bytecode were reloaded)


def test_lambda_layers_keep_their_live_function():
    """Keras's clone refuses a Python lambda in safe mode; kreg reuses it."""
    x = keras.Input((4,), name="x")
    h = keras.layers.Lambda(lambda t: keras.ops.tanh(t) * SCALE, name="lam")(x)
    h = keras.layers.Lambda(lambda t, k: t[:, :2] * k, output_shape=lambda s: (s[0], 2),
                            arguments={"k": 2.0}, name="lam2")(h)
    h = keras.layers.Dropout(0.5)(keras.layers.Dense(4)(h))
    model = keras.Model(x, keras.layers.Dense(1)(h))
    converted = kreg.convert_dropout(model)
    _assert_same_predictions(model, converted, NUM[:8, :1].repeat(4, axis=1))
    assert converted.get_layer("lam2").arguments == {"k": 2.0}
    assert converted.get_layer("lam") is not model.get_layer("lam")


# -- the mapping (moved from test_mc_predictor.py) -------------------------------
def test_convert_dropout_sequential_and_functional_keep_weights():
    keras.utils.set_random_seed(0)
    seq = keras.Sequential([
        keras.Input((10, 4)), keras.layers.Conv1D(6, 3), keras.layers.SpatialDropout1D(0.3),
        keras.layers.Flatten(), keras.layers.Dense(8), keras.layers.Dropout(0.4, seed=1),
        keras.layers.Dense(2, activation="softmax")])
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3)(inp)
    h = keras.layers.SpatialDropout2D(0.25)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dropout(0.5, noise_shape=(None, 1))(h)
    fun = keras.Model(inp, keras.layers.Dense(1)(h))
    for model, x in ((seq, np.ones((3, 10, 4), "float32")),
                     (fun, np.ones((3, 6, 6, 2), "float32"))):
        conv = kreg.convert_dropout(model)
        assert type(conv) is type(model)
        for a, b in zip(model.get_weights(), conv.get_weights()):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(model.predict(x, verbose=0),
                                      conv.predict(x, verbose=0))
        kreg_drops = [lyr for lyr in conv.layers if isinstance(lyr, kreg.layers.Dropout)]
        assert len(kreg_drops) == 2
        assert not any(type(lyr) is keras.layers.Dropout for lyr in conv.layers)
        kreg.MCPredictor(conv, samples=3).predict(x, verbose=0)
    drops = {lyr.name: lyr for lyr in kreg.convert_dropout(seq).layers
             if isinstance(lyr, kreg.layers.Dropout)}
    assert sorted((d.rate, d.noise_shape) for d in drops.values()) == [
        (0.3, (None, 1, None)), (0.4, None)]
    fdrops = [lyr for lyr in kreg.convert_dropout(fun).layers
              if isinstance(lyr, kreg.layers.Dropout)]
    assert sorted((d.rate, d.noise_shape) for d in fdrops) == [
        (0.25, (None, 1, 1, None)), (0.5, (None, 1))]


def test_convert_dropout_rejects_subclassed_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(1)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.ones((2, 4), "float32"))
    with pytest.raises(TypeError, match=r"subclassed model.*Replace "
                       r"keras.layers.Dropout with kreg.layers.Dropout"):
        kreg.convert_dropout(net)
