"""Monte Carlo dropout uncertainty for a model trained with plain Keras.

A model built with `keras.layers.Dropout` is converted, weights and all, by
`kreg.convert_dropout` (Keras's Dropout becomes `kreg.layers.Dropout`), and
`kreg.MCPredictor` averages T stochastic passes: the predictive mean, the
total uncertainty (entropy) and its epistemic part (mutual information),
which grows on inputs unlike the training data. No retraining is needed, and
the original model's `predict` is unchanged.

What the printed numbers show. MC averaging is not automatically better
calibrated than the deterministic network (weight scaling): here its test NLL
is typically *worse*. This network is small, trained briefly with dropout 0.5,
and not overconfident; the average of 50 thinned networks is then
*underconfident* (its probabilities too flat), which NLL and ECE punish. The
temperature fitted on held-out data says so: T < 1, a sharpening. Tempered
(`MCPredictor(..., temperature=T)`), the MC mean's calibration error drops
below the deterministic network's, while its NLL stays a little worse: each
thinned network of this small model is a weaker classifier, and MC averaging
pays in NLL mostly on networks that are overconfident (larger, trained
longer; see the demo). The uncertainty is what MC adds either way: the
mutual information (epistemic uncertainty) is far higher on shuffled pixels
than on real digits, which one deterministic pass cannot tell.

Figures (`mc_uncertainty.png`): histograms over the inputs of the entropy of
the MC mean (left, total uncertainty) and of the mutual information (right,
epistemic), for test digits and for the same digits with shuffled pixels. The
shuffled inputs sit to the right in both; the separation is clearer in the
mutual information, since the entropy also counts the ambiguity of real digits.

Run: `python examples/mc_uncertainty_existing_model.py [OUT_DIR]` (default
`kreg-examples/`, or the `KREG_EXAMPLES_OUT` environment variable); writes
`mc_uncertainty.png` there.
"""

import os
import sys

import keras
import numpy as np
from matplotlib.figure import Figure
from sklearn.datasets import load_digits

import kreg

out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KREG_EXAMPLES_OUT",
                                                          "kreg-examples")
os.makedirs(out, exist_ok=True)

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
x_train, y_train, x_test, y_test = x[:1000], y[:1000], x[1200:], y[1200:]
x_val, y_val = x[1000:1200], y[1000:1200]  # held out, for the temperature

# An existing model: plain Keras, trained elsewhere.
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dropout(0.5),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
model.fit(x_train, y_train, epochs=10, batch_size=64, verbose=0)

# Convert (same weights) and sample 50 networks. joint=True: sample t is one
# network applied to every input, so the samples of different inputs are
# jointly distributed.
mc_model = kreg.convert_dropout(model)
predictor = kreg.MCPredictor(mc_model, samples=50, seed=0, joint=True)
scores = predictor.evaluate(x_test, y_test, verbose=0)
print(f"test NLL: MC {scores['mc']['nll']:.3f} vs deterministic "
      f"{scores['deterministic']['nll']:.3f}; ECE: MC {scores['mc']['ece']:.3f} "
      f"vs {scores['deterministic']['ece']:.3f}")

# Why MC can score worse: its mean is underconfident. The NLL-optimal
# temperature of the validation MC mean is below 1 (a sharpening); tempered,
# the MC mean is better calibrated (ECE) than the deterministic network.
val_mean = predictor.predict(x_val, verbose=0).mean
temperature = kreg.calibration.fit_temperature(val_mean, y_val)
tempered = kreg.MCPredictor(mc_model, samples=50, seed=0, joint=True,
                            temperature=temperature).evaluate(x_test, y_test, verbose=0)
print(f"MC temperature {temperature:.2f} (< 1: the MC mean is underconfident); "
      f"tempered MC NLL {tempered['mc']['nll']:.3f}, ECE {tempered['mc']['ece']:.3f}")

# Inputs unlike the training data: the test digits with their pixels shuffled.
rng = np.random.default_rng(0)
shuffled = rng.permuted(x_test, axis=1)
clean, odd = predictor.predict(x_test, verbose=0), predictor.predict(shuffled, verbose=0)
print(f"mean mutual information (epistemic): test digits "
      f"{clean.mutual_information.mean():.3f}, shuffled pixels "
      f"{odd.mutual_information.mean():.3f}")
print(f"first test digit: class {clean.mean[0].argmax()} with p={clean.mean[0].max():.2f}"
      f" +- {clean.std[0, clean.mean[0].argmax()]:.2f} (std over samples)")

fig = Figure(figsize=(10, 3.6))
fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.88, wspace=0.25)
for ax, key in zip(fig.subplots(1, 2), ("entropy", "mutual_information")):
    bins = np.linspace(0, np.log(10), 30)
    ax.hist(getattr(clean, key), bins=bins, histtype="step", lw=1.5, label="test digits")
    ax.hist(getattr(odd, key), bins=bins, histtype="step", lw=1.5, label="shuffled pixels")
    ax.set_xlabel(f"{key.replace('_', ' ')} (nats)")
    ax.set_ylabel("inputs")
    ax.legend(fontsize=8)
path = os.path.join(out, "mc_uncertainty.png")
fig.savefig(path, dpi=90)
print(f"wrote {path}")
assert odd.mutual_information.mean() > clean.mutual_information.mean()
assert temperature < 1, temperature  # the underconfidence the text above explains
