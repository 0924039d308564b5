"""Early stopping and regularization statistics in `fit`, and a plot of History.

`kreg.callbacks.EarlyStopping` stops on the validation loss (Keras's patience
rule here; `criterion="gl"`, `"pq"` or `"up"` give Prechelt's criteria) and,
by default, restores the best epoch's weights. `kreg.callbacks.RegularizationMonitor`
adds the weight penalty, its share of the loss and each kernel's L1/L2 norms
and sparsity to every epoch's logs, so `History` (and `CSVLogger`, listed
after it) records them with no extra code.

Run: `python examples/early_stopping_and_monitor.py [OUT_DIR]` (default
`kreg-examples/`, or the `KREG_EXAMPLES_OUT` environment variable); writes
`history.png` and `history.csv` there.
"""

import os
import sys

import keras
from matplotlib.figure import Figure
from sklearn.datasets import load_digits

import kreg

out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KREG_EXAMPLES_OUT",
                                                          "kreg-examples")
os.makedirs(out, exist_ok=True)

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Dense(128, activation="relu", name="hidden",
                       kernel_initializer=kreg.initializers.HeNormal(seed=1),
                       kernel_regularizer=kreg.regularizers.L1(1e-4)),
    keras.layers.Dense(10, activation="softmax", name="output",
                       kernel_regularizer=kreg.regularizers.L1(1e-4)),
])
model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
              metrics=["accuracy"])

stopper = kreg.callbacks.EarlyStopping(monitor="val_loss", patience=3)
monitor = kreg.callbacks.RegularizationMonitor()
csv = keras.callbacks.CSVLogger(os.path.join(out, "history.csv"))  # after the monitor
history = model.fit(x[:1000], y[:1000], validation_data=(x[1000:1400], y[1000:1400]),
                    epochs=40, batch_size=64, verbose=0,
                    callbacks=[stopper, monitor, csv])
print(stopper.summary())
print("logged per epoch:", sorted(k for k in history.history if k.startswith("reg/")))
_, accuracy = model.evaluate(x[1400:], y[1400:], verbose=0)
print(f"test accuracy with the restored weights: {accuracy:.3f}")

h = history.history
epochs = range(1, len(h["loss"]) + 1)
fig = Figure(figsize=(12, 3.8))
fig.subplots_adjust(left=0.06, right=0.98, bottom=0.15, top=0.88, wspace=0.3)
ax_loss, ax_pen, ax_sparse = fig.subplots(1, 3)
ax_loss.plot(epochs, h["loss"], label="train loss (with penalty)")
ax_loss.plot(epochs, h["val_loss"], label="validation loss")
ax_loss.axvline(stopper.best_epoch + 1, color="k", ls="--", lw=1, label="restored epoch")
ax_loss.set_title("loss")
ax_pen.plot(epochs, h["reg/penalty"], label="L1 penalty")
ax_pen.plot(epochs, h["reg/penalty_share"], label="share of the loss")
ax_pen.set_title("weight penalty")
for name in ("hidden", "output"):
    ax_sparse.plot(epochs, h[f"reg/{name}/sparsity"], label=name)
ax_sparse.set_title("kernel sparsity (|w| < 1e-3)")
for ax in (ax_loss, ax_pen, ax_sparse):
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
path = os.path.join(out, "history.png")
fig.savefig(path, dpi=90)
print(f"wrote {path} and {os.path.join(out, 'history.csv')}")
