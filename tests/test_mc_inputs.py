"""MCPredictor takes inputs as model.predict takes them, strings included
(kreg/mc/_inputs.py), and its input errors name strings when they are the
problem, name each input as the user knows it, and never leak an internal
class name."""

import keras
import numpy as np
import pytest

import kreg

RNG = np.random.default_rng(0)
ANIMALS = np.array([["cat"], ["dog"], ["zebra"], ["bird"], ["cat"]])
CODES = np.array([[3], [7], [99], [5], [3]])
AMOUNTS = RNG.normal(10.0, 4.0, size=(5, 1)).astype("float32")
DOCS = ["the cat sat", "a dog ran", "unknown words here", "", "a bird"]


@pytest.fixture(scope="module")
def structured():
    """keras.io's structured-data pattern: a dict of features, a string one
    (StringLookup), an integer one (IntegerLookup), a numeric one
    (Normalization), a text one (TextVectorization)."""
    keras.utils.set_random_seed(0)
    animal = keras.layers.StringLookup(output_mode="one_hot")
    animal.adapt(np.array(["cat", "dog", "bird", "fish"]))
    code = keras.layers.IntegerLookup(output_mode="one_hot")
    code.adapt(np.array([3, 5, 7, 11]))
    amount = keras.layers.Normalization()
    amount.adapt(RNG.normal(10.0, 4.0, size=(50, 1)))
    text = keras.layers.TextVectorization(max_tokens=10, output_mode="multi_hot")
    text.adapt(["the cat sat", "a dog ran", "the dog", "a bird sat"])
    inputs = {"animal": keras.Input((1,), dtype="string", name="animal"),
              "code": keras.Input((1,), dtype="int64", name="code"),
              "amount": keras.Input((1,), name="amount"),
              "text": keras.Input((), dtype="string", name="text")}
    h = keras.layers.concatenate([animal(inputs["animal"]), code(inputs["code"]),
                                  amount(inputs["amount"]), text(inputs["text"])])
    h = kreg.layers.Dropout(0.5)(keras.layers.Dense(16, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    model.compile(loss="sparse_categorical_crossentropy")
    return model


def _x(animal=ANIMALS, text=DOCS):
    return {"animal": animal, "code": CODES, "amount": AMOUNTS, "text": text}


@pytest.mark.tf_only(reason="string tensors are TensorFlow's")
def test_string_features_in_every_form_give_the_same_prediction(structured):
    import tensorflow as tf

    predictor = kreg.MCPredictor(structured, samples=8, seed=3)
    reference = predictor.predict(_x())
    assert reference.mean.shape == (5, 3)
    forms = {
        "numpy str": _x(),
        "numpy object": _x(ANIMALS.astype(object), np.array(DOCS, dtype=object)),
        "numpy bytes": _x(np.char.encode(ANIMALS), np.char.encode(np.array(DOCS))),
        "lists of str": _x(ANIMALS.tolist(), list(DOCS)),
        "tf.string tensors": _x(tf.constant(ANIMALS), tf.constant(DOCS)),
    }
    for form, x in forms.items():
        got = predictor.predict(x)
        np.testing.assert_array_equal(got.mean, reference.mean, err_msg=form)
    # The passes are sampled (the strings reached a stochastic model), and
    # their average is near the model's own deterministic prediction.
    samples = predictor.predict(_x(), return_samples=True).samples
    assert samples.shape == (8, 5, 3) and np.ptp(samples, axis=0).max() > 1e-3
    deterministic = structured.predict(_x(tf.constant(ANIMALS), tf.constant(DOCS)), verbose=0)
    assert np.abs(reference.mean - deterministic).max() < 0.5


@pytest.mark.tf_only(reason="string tensors are TensorFlow's")
def test_string_features_from_a_dataset_and_in_evaluate(structured):
    import tensorflow as tf

    y = np.array([0, 1, 2, 1, 0])
    predictor = kreg.MCPredictor(structured, samples=8, seed=3)
    arrays = predictor.predict(_x(), batch_size=2)  # the dataset's batches
    data = tf.data.Dataset.from_tensor_slices((_x(), y)).batch(2)
    streamed = predictor.predict(data.map(lambda x, _: x))
    np.testing.assert_allclose(streamed.mean, arrays.mean, rtol=1e-6, atol=1e-7)
    scores = predictor.evaluate(_x(), y, batch_size=2)
    assert scores == predictor.evaluate(data)
    assert 0.0 <= scores["mc"]["accuracy"] <= 1.0
    assert 0.0 <= scores["deterministic"]["accuracy"] <= 1.0


@pytest.mark.tf_only(reason="string tensors are TensorFlow's")
def test_a_text_model_converted_then_sampled_on_a_list_of_strings():
    """One string input (TextVectorization), trained with Keras's Dropout:
    convert_dropout keeps its vocabulary, MCPredictor takes the raw texts."""
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    vectorize = keras.layers.TextVectorization(max_tokens=12, output_sequence_length=5)
    vectorize.adapt(["the cat sat", "a dog ran", "the dog", "a bird sat"])
    text = keras.Input((), dtype="string", name="review")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(12, 4)(vectorize(text)))
    h = keras.layers.Dropout(0.5)(keras.layers.Dense(8, activation="relu")(h))
    model = keras.Model(text, keras.layers.Dense(2, activation="softmax")(h))
    converted = kreg.convert_dropout(model)
    np.testing.assert_array_equal(converted.predict(tf.constant(DOCS), verbose=0),
                                  model.predict(tf.constant(DOCS), verbose=0))
    predictor = kreg.MCPredictor(converted, samples=6, seed=0)
    listed = predictor.predict(list(DOCS))
    np.testing.assert_array_equal(listed.mean, predictor.predict(np.array(DOCS)).mean)
    np.testing.assert_array_equal(listed.mean, predictor.predict(tf.constant(DOCS)).mean)
    assert listed.mean.shape == (5, 2) and float(listed.std.max()) > 0.0


# -- wording -------------------------------------------------------------------
@pytest.fixture(scope="module")
def numeric():
    x = keras.Input((3,), name="age_height_weight")
    h = kreg.layers.Dropout(0.5)(keras.layers.Dense(4)(x))
    return keras.Model(x, keras.layers.Dense(1)(h))


def test_strings_for_a_numeric_input_are_named_as_strings(numeric):
    predictor = kreg.MCPredictor(numeric, samples=2)
    for x in (np.array([["1", "2", "3"]]), [["a", "b", "c"]],
              np.array([["a", "b", "c"]], dtype=object)):
        with pytest.raises(TypeError) as info:
            predictor.predict(x)
        message = str(info.value)
        assert message.startswith(
            "Invalid value for argument `x` of MCPredictor.predict: expected numbers "
            "for input 'age_height_weight' (the model declares it float32; ")
        assert re_received(message) in ("array of strings, shape (1, 3)",
                                        "list of strings, shape (1, 3)")
        assert "Shown" not in message and "of type" not in message


def re_received(message):
    return message.split("Received: x=<", 1)[1].rstrip(">")


@pytest.mark.tf_only(reason="string inputs are TensorFlow's")
def test_numbers_for_a_string_input_ask_for_strings(structured):
    predictor = kreg.MCPredictor(structured, samples=2)
    x = _x(animal=np.zeros((5, 1)))
    with pytest.raises(TypeError, match=(
            r"`x\['animal'\]` of MCPredictor.predict: expected strings for input "
            r"'animal' \(the model declares it dtype='string'\): an array, a list or "
            r"a tf.string tensor of them. Received: x\['animal'\]=<array of shape "
            r"\(5, 1\), dtype float64>$")):
        predictor.predict(x)


def test_no_internal_class_name_in_a_type_error(numeric):
    """`(of type Shown)` leaked from kreg's own stand-in for an array."""
    predictor = kreg.MCPredictor(numeric, samples=2)
    with pytest.raises(TypeError) as info:
        predictor.predict(np.ones((2, 3), dtype=complex))
    assert str(info.value).endswith("Received: x=<array of shape (2, 3), dtype complex128>")


def test_inputs_are_named_by_their_keras_input_names():
    x = keras.Input((3,))  # no name: Keras names the layer input_layer_N
    model = keras.Model(x, kreg.layers.Dropout(0.5)(keras.layers.Dense(2)(x)))
    layer_name = model.layers[0].name
    assert layer_name.startswith("input_layer") and model.inputs[0].name != layer_name
    with pytest.raises(ValueError) as info:
        kreg.MCPredictor(model, samples=2).predict(np.ones((2, 5), "float32"))
    assert f"expected input {layer_name!r} of shape (N, 3)" in str(info.value)
    assert "keras_tensor" not in str(info.value)


def test_dict_inputs_are_named_by_their_keys():
    inputs = {"small": keras.Input((2,), name="small"), "large": keras.Input((4,), name="large")}
    h = keras.layers.concatenate([inputs["small"], inputs["large"]])
    model = keras.Model(inputs, kreg.layers.Dropout(0.5)(h))
    predictor = kreg.MCPredictor(model, samples=2)
    with pytest.raises(ValueError, match=r"expected input 'large' of shape \(N, 4\)"):
        predictor.predict({"small": np.ones((2, 2)), "large": np.ones((2, 3))})
    with pytest.raises(ValueError, match=r"a dict keyed by the model's input names "
                       r"\['large', 'small'\]"):
        predictor.predict({"small": np.ones((2, 2)), "big": np.ones((2, 4))})


def test_the_string_hint_follows_the_backend():
    x = keras.Input((1,), name="free")
    predictor = kreg.MCPredictor(keras.Model(x, kreg.layers.Dropout(0.5)(x)), samples=2)
    hint = (r"strings go to inputs declared dtype='string', e\.g\. feeding a StringLookup"
            if keras.backend.backend() == "tensorflow"
            else r"string inputs need the TensorFlow backend")
    with pytest.raises(TypeError, match=(
            r"expected numbers for input 'free' \(the model declares it float32; "
            + hint + r"\). Received: x=<array of strings, shape \(1, 1\)>$")):
        predictor.predict(np.array([["a"]]))


def test_strings_for_a_subclassed_model_off_tensorflow():
    """A subclassed model declares no input dtypes: strings are passed on to
    it on TensorFlow, and refused by name elsewhere (no string tensors)."""
    if keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow passes strings on to the model")

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.drop = kreg.layers.Dropout(0.5)

        def call(self, x):
            return self.drop(x)

    net = Net()
    net(np.ones((1, 2), "float32"))
    with pytest.raises(TypeError, match=(
            r"^Invalid value for argument `x` of MCPredictor.predict: expected numbers for "
            r"this input \(string inputs need the TensorFlow backend\). Received: "
            r"x=<list of strings, shape \(1, 2\)>$")):
        kreg.MCPredictor(net, samples=2).predict([["a", "b"]])
