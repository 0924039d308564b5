"""LinearRateRamp: the schedule, that the compiled training step really uses each
epoch's rate (re-traced), the targets put back, and errors in kreg's wording."""

import keras
import numpy as np
import pytest

import kreg
from kreg.callbacks import LinearRateRamp


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        kreg.layers.DropBlock2D(0.5, block_size=2, seed=1, name="db"),
        keras.layers.Flatten(),
        kreg.layers.Dropout(0.4, seed=2, name="drop"),
        keras.layers.Dense(1, kernel_initializer="ones", use_bias=False),
    ])


X = np.random.default_rng(0).uniform(0.5, 1.5, size=(32, 6, 6, 1)).astype("float32")
Y = np.zeros((32, 1), "float32")


def test_compiled_training_step_uses_each_epochs_rate():
    model = _model()
    # Learning rate 0: the weights stay, so the training loss shows the noise only.
    model.compile(keras.optimizers.SGD(0.0), "mse")
    clean = model.evaluate(X, Y, verbose=0, batch_size=32)
    ramp = LinearRateRamp(ramp_epochs=2)
    history = model.fit(X, Y, epochs=4, batch_size=32, verbose=0, shuffle=False,
                        callbacks=[ramp])
    assert history.history["rate/db"] == pytest.approx([0.0, 0.25, 0.5, 0.5])
    assert history.history["rate/drop"] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    loss = history.history["loss"]
    assert loss[0] == pytest.approx(clean, rel=1e-5)  # rate 0: no noise at all
    # From epoch 1 on the compiled step drops units (a re-traced function).
    assert all(abs(v - clean) > 1e-3 * clean for v in loss[1:])
    # The targets are back after training; evaluation is deterministic again.
    assert model.get_layer("db").rate == 0.5 and model.get_layer("drop").rate == 0.4
    assert model.evaluate(X, Y, verbose=0, batch_size=32) == pytest.approx(clean, rel=1e-6)


def test_resumed_run_continues_the_ramp_and_named_layers_only():
    model = _model()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    ramp = LinearRateRamp(ramp_epochs=4, layers=["db"])
    history = model.fit(X, Y, epochs=4, initial_epoch=2, verbose=0, callbacks=[ramp])
    assert history.history["rate/db"] == pytest.approx([0.25, 0.375])
    assert "rate/drop" not in history.history
    assert model.get_layer("drop").rate == 0.4
    # One instance serves several fits.
    again = model.fit(X, Y, epochs=1, verbose=0, callbacks=[ramp])
    assert again.history["rate/db"] == [0.0]
    assert model.get_layer("db").rate == 0.5


def test_rate_at():
    ramp = LinearRateRamp(3)
    assert [ramp.rate_at(e, 0.3) for e in range(5)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.3])


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"ramp_epochs": 0}, ValueError,
     r"Invalid value for argument `ramp_epochs` of LinearRateRamp: expected an "
     r"integer >= 1. Received: ramp_epochs=0"),
    ({"ramp_epochs": 2.5}, ValueError, r"argument `ramp_epochs`"),
    ({"ramp_epochs": "3"}, TypeError, r"argument `ramp_epochs`"),
    ({"ramp_epochs": 2, "layers": "db"}, TypeError, r"argument `layers` of LinearRateRamp"),
    ({"ramp_epochs": 2, "layers": []}, ValueError, r"argument `layers`"),
    ({"ramp_epochs": 2, "layers": ["a", "a"]}, ValueError, r"argument `layers`"),
])
def test_bad_arguments_have_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        LinearRateRamp(**kwargs)


def test_unknown_layers_and_models_without_rates_are_refused():
    model = _model()
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=(
            r"argument `layers` of LinearRateRamp: expected names of kreg "
            r"DropBlock2D.*available: \['db', 'drop'\]")):
        model.fit(X, Y, epochs=1, verbose=0,
                  callbacks=[LinearRateRamp(2, layers=["dense"])])
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"argument `model` of LinearRateRamp"):
        plain.fit(np.ones((2, 2)), np.ones((2, 1)), verbose=0,
                  callbacks=[LinearRateRamp(2)])
    with pytest.raises(RuntimeError, match="no model is set"):
        LinearRateRamp(2).on_train_begin()
    with pytest.raises(TypeError, match=r"argument `epoch` of LinearRateRamp"):
        LinearRateRamp(2).on_epoch_begin("1")
