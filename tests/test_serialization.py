"""`.keras` files of a model mixing kreg's classes, loaded in a fresh process.

The per-class contract (registration, every argument in the config, config
and `serialize_keras_object` round trips, a `.keras` file per class) is in
tests/test_contract.py; this module checks what it does not: the seed state
continuing after a load, penalties counted, and the Keras alias `l1_l2`."""


import keras
import numpy as np

import kreg


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(
            16, activation="relu",
            kernel_initializer=kreg.initializers.HeNormal(seed=1),
            kernel_regularizer=kreg.regularizers.ElasticNet(l1=1e-4, l2=1e-3),
            bias_regularizer=kreg.regularizers.L1(1e-3)),
        kreg.layers.Dropout(0.5, seed=2, name="drop"),
        keras.layers.Dense(3, activation="softmax",
                           kernel_regularizer=kreg.regularizers.L2(1e-3),
                           bias_regularizer=kreg.regularizers.l1_l2(l2=1e-3)),
    ])


def test_keras_file_loads_in_fresh_process_with_same_predictions_and_rng(
        tmp_path, fresh_python):
    model = _model()
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 12)).astype("float32")
    y = rng.integers(0, 3, size=24)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # k = 3 steps
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    drop = model.get_layer("drop")
    ones = np.ones((2, 16), "float32")
    next_masks = [keras.ops.convert_to_numpy(drop(ones, training=True)).tolist()
                  for _ in range(2)]
    pred = model.predict(x, verbose=0)
    result = fresh_python(f"""
        import json, numpy as np, keras, kreg
        m = keras.models.load_model({str(path)!r}, safe_mode=True)
        x = np.load({str(tmp_path / 'x.npy')!r})
        drop = m.get_layer("drop")
        ones = np.ones((2, 16), "float32")
        masks = [np.asarray(drop(ones, training=True)).tolist() for _ in range(2)]
        print("JSON:" + json.dumps({{"pred": m.predict(x, verbose=0).tolist(),
                                    "masks": masks, "losses": len(m.losses),
                                    "bias_reg": m.layers[-1].bias_regularizer.get_config()
                                    | {{"cls": type(m.layers[-1].bias_regularizer).__name__}}
                                    }}))
    """).result
    np.testing.assert_array_equal(np.array(result["pred"], "float32"), pred)
    assert result["masks"] == next_masks  # RNG state was saved and restored
    assert result["losses"] == 4
    assert result["bias_reg"] == {"cls": "L1L2", "l1": 0.0, "l2": 1e-3}


def test_keras_own_dropout_does_not_restore_rng_but_ours_does(tmp_path):
    for layer in (keras.layers.Dropout(0.5, seed=9), kreg.layers.Dropout(0.5, seed=9)):
        model = keras.Sequential([keras.Input((32,)), layer])
        ones = np.ones((1, 32), "float32")
        for _ in range(3):
            layer(ones, training=True)
        path = tmp_path / f"{type(layer).__module__.split('.')[0]}.keras"
        model.save(path)
        expected = keras.ops.convert_to_numpy(layer(ones, training=True))
        loaded = keras.models.load_model(path).layers[0]
        got = keras.ops.convert_to_numpy(loaded(ones, training=True))
        if isinstance(layer, kreg.layers.Dropout):
            np.testing.assert_array_equal(got, expected)
        else:
            assert not np.array_equal(got, expected)


def test_get_weights_unchanged_by_rng_state():
    layer = kreg.layers.Dropout(0.5)
    layer.build((None, 3))
    assert layer.get_weights() == []
    assert len(layer.variables) == 1  # the seed state, saved by save_own_variables
