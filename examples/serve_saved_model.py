"""Train, export and serve a model with Monte Carlo uncertainty.

The whole path, in about 20 seconds on a laptop CPU:

1. train a small classifier with `kreg.layers.Dropout` on three Gaussian
   blobs in 2-D;
2. `kreg.export(model, path, mc_samples=100)` writes a TensorFlow SavedModel
   with the signatures `serve`, `serve_mc` and `serve_mc_seeded`;
3. a clean Python process, in which neither kreg nor Keras can be imported
   (as on a serving host), loads it with `tf.saved_model.load` and calls all
   three signatures;
4. it prints each prediction with its uncertainty. At the point between
   all three blobs the samples agree that the class is ambiguous: high
   entropy, mutual information near 0 (aleatoric, data uncertainty). At the
   point between two blobs they disagree: a clear mutual information
   (epistemic, model uncertainty). Far from all data a ReLU network
   extrapolates with a saturated softmax and its samples agree: MC dropout
   does not flag every out-of-distribution input (the last query).

Run: `python examples/serve_saved_model.py [OUT_DIR]` (default: a temporary
directory). TensorFlow Serving serves the same directory unchanged.
"""

import os
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # SavedModel export is TF-only

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kreg  # noqa: E402

CENTERS = np.array([[0.0, 3.0], [-2.6, -1.5], [2.6, -1.5]], "float32")
QUERIES = np.array([
    [0.0, 3.0],    # the middle of class 0
    [2.6, -1.5],   # the middle of class 2
    [0.0, -1.5],   # between classes 1 and 2
    [0.0, 0.0],    # between all three classes
    [12.0, 12.0],  # far from all training data
], "float32")

SERVER = textwrap.dedent('''
    import sys
    sys.modules["kreg"] = None   # a serving host: no kreg ...
    sys.modules["keras"] = None  # ... and no Keras, only TensorFlow
    import numpy as np
    import tensorflow as tf

    path, queries = sys.argv[1], np.load(sys.argv[2])
    served = tf.saved_model.load(path)
    print("signatures:", sorted(served.signatures))
    probs = served.serve(queries).numpy()               # deterministic
    mc = served.serve_mc(queries)                       # fresh randomness
    again = served.serve_mc_seeded(queries, mc["seed"][0])  # replay that call
    assert np.array_equal(again["mean"], mc["mean"])
    print()
    print("query          serve (p0 p1 p2)     serve_mc mean     std(max) entropy  MI")
    for i, q in enumerate(queries):
        print(f"({q[0]:5.1f},{q[1]:5.1f})  "
              + " ".join(f"{p:.2f}" for p in probs[i]) + "     "
              + " ".join(f"{p:.2f}" for p in mc["mean"][i].numpy()) + "     "
              + f"{mc['std'][i].numpy().max():.3f}    "
              + f"{mc['entropy'][i].numpy():.3f}    "
              + f"{mc['mutual_information'][i].numpy():.3f}")
    print()
    print("seed of the serve_mc call:", int(mc["seed"][0]),
          "(serve_mc_seeded with it gives the same numbers)")
''')


def train(seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=600)
    x = CENTERS[y] + rng.normal(size=(600, 2)).astype("float32")
    model = keras.Sequential([
        keras.Input((2,), name="x"),
        keras.layers.Dense(64, activation="relu",
                           kernel_initializer=kreg.initializers.HeNormal(seed=seed)),
        kreg.layers.Dropout(0.3),
        keras.layers.Dense(64, activation="relu",
                           kernel_initializer=kreg.initializers.HeNormal(seed=seed + 1),
                           kernel_regularizer=kreg.regularizers.L2(1e-4)),
        kreg.layers.Dropout(0.3),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    print(f"trained: accuracy {history.history['accuracy'][-1]:.3f}")
    return model


def main(out_dir=None):
    out_dir = out_dir or tempfile.mkdtemp(prefix="kreg-serve-")
    model = train()
    path = os.path.join(out_dir, "blobs_classifier")
    kreg.export(model, path, mc_samples=100)
    print(f"exported: {path}")
    queries = os.path.join(out_dir, "queries.npy")
    np.save(queries, QUERIES)
    # The clean process: what a server does with the directory.
    subprocess.run([sys.executable, "-c", SERVER, path, queries], check=True)
    return path


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
