"""Add kreg's penalties, He initialization and dropout to a Sequential model.

Two ways to regularize a Keras model with kreg:

1. when you build it: `kernel_regularizer=kreg.regularizers.L2(...)` (or `L1`,
   `ElasticNet`), `kernel_initializer=kreg.initializers.HeNormal(...)` and
   `kreg.layers.Dropout(...)` between the layers;
2. after you built it: `kreg.regularizers.apply(model, kernel=...)` puts a
   penalty on every kernel of an existing model.

`kreg.regularizers.penalty(model)` reads the total penalty and its breakdown
per layer; the model saves to a `.keras` file and loads back (after
`import kreg`) with its regularizers.

Run: `python examples/regularize_sequential.py [OUT_DIR]` (default
`kreg-examples/`, or the `KREG_EXAMPLES_OUT` environment variable).
"""

import os
import sys

import keras
import numpy as np
from sklearn.datasets import load_digits

import kreg

out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KREG_EXAMPLES_OUT",
                                                          "kreg-examples")
os.makedirs(out, exist_ok=True)

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]
keras.utils.set_random_seed(0)

# 1. Regularize while building: He init for the ReLU layers (std sqrt(2 / fan_in)),
#    an elastic-net penalty on the hidden kernels, L2 on the output kernel,
#    inverted dropout (keep 0.8 on the inputs, 0.5 on the hidden units).
model = keras.Sequential([
    keras.Input((64,)),
    kreg.layers.Dropout(0.2, seed=1),
    keras.layers.Dense(128, activation="relu",
                       kernel_initializer=kreg.initializers.HeNormal(seed=2),
                       kernel_regularizer=kreg.regularizers.ElasticNet(l1=1e-5, l2=1e-4)),
    kreg.layers.Dropout(0.5, seed=3),
    keras.layers.Dense(10, activation="softmax",
                       kernel_regularizer=kreg.regularizers.L2(1e-4)),
])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=10, batch_size=64, verbose=0)
total, per_layer = kreg.regularizers.penalty(model)
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"built with penalties: test accuracy {accuracy:.3f}, penalty {total:.4f}")
print("  per layer:", {name: round(value, 4) for name, value in per_layer.items()})

# 2. Regularize a model that already exists (here: a plain Keras one).
plain = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
changed = kreg.regularizers.apply(plain, kernel=kreg.regularizers.L2(1e-3))
print(f"apply(): L2 on {len(changed)} kernels; model.losses has {len(plain.losses)} terms")
plain.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
plain.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
print(f"  penalty after training: {kreg.regularizers.penalty(plain)[0]:.4f}")

# The regularizers are part of the saved model (load it after `import kreg`).
path = os.path.join(out, "regularized.keras")
model.save(path)
reloaded = keras.models.load_model(path)
same = np.allclose(reloaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0))
print(f"saved {path}; reloaded penalty {kreg.regularizers.penalty(reloaded)[0]:.4f}, "
      f"same predictions: {same}")
assert same
