"""Benchmark: the cost of Monte Carlo prediction on an LSTM against its training step.

An `LSTM(64, dropout=0.2, recurrent_dropout=0.2)` and a `Dense(1)` head on a
batch of N=256 sequences of 20 steps and 16 features, all measured in one run
on the active Keras backend (median of several calls after warm-up):

  (a) one training step, `model.train_on_batch(x, y)` (Adam, MSE)
  (b) one deterministic forward pass, `model.predict_on_batch(x)`
  (c) `kreg.MCPredictor(model, samples=T).predict(x)`, T=50: the plain Keras
      model, its variational input and recurrent masks drawn once per
      sequence and sample, the mean and variance computed in the same call
  (d) the common recipe: T x `model(x, training=True)` in a Python loop

The ratios printed are (c)/(a) (an MC prediction in training steps), (d)/(c)
(what the compiled, tiled MC saves over the loop) and (c)/(b)/T (the cost of
one MC sample against one deterministic pass). The loop (d) runs eagerly, as
it is usually written; it is timed once (twice without --quick) after one
warm-up call. No targets: the figures are reported.

Run: `python benchmarks/mc_rnn.py [--quick] [--json FILE]`.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402
from _common import print_table  # noqa: E402
from _common import sync  # noqa: E402
from _common import timeit  # noqa: E402

T, N, STEPS, FEATURES, UNITS = 50, 256, 20, 16, 64


def build(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((STEPS, FEATURES)),
        keras.layers.LSTM(UNITS, dropout=0.2, recurrent_dropout=0.2),
        keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    return model


def run(repeats=7):
    import numpy as np
    from keras import ops

    import kreg

    model = build()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, STEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(N, 1)).astype("float32")
    xt = ops.convert_to_tensor(x)
    mc = kreg.MCPredictor(model, samples=T, seed=0)

    def loop():
        return [sync(model(xt, training=True)) for _ in range(T)]

    ms = {}
    ms["(a) train step"] = timeit(lambda: model.train_on_batch(x, y), repeats=repeats,
                                  warmup=2)
    ms["(b) deterministic forward"] = timeit(lambda: model.predict_on_batch(x),
                                             repeats=repeats, warmup=2)
    ms[f"(c) MCPredictor T={T}"] = timeit(lambda: mc.predict(x, batch_size=N, verbose=0),
                                          repeats=repeats, warmup=1)
    sync(model(xt, training=True))  # warm-up: one eager call, not T
    ms[f"(d) {T} x model(x, training=True)"] = timeit(
        loop, repeats=1 if repeats < 5 else 2, warmup=0)
    return ms


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    info = machine()
    ms = run(repeats=3 if args.quick else 7)
    train, forward = ms["(a) train step"], ms["(b) deterministic forward"]
    mc, loop = ms[f"(c) MCPredictor T={T}"], ms[f"(d) {T} x model(x, training=True)"]
    print(f"LSTM({UNITS}, dropout=0.2, recurrent_dropout=0.2), N={N}, {STEPS} steps, "
          f"{FEATURES} features, T={T}; {info}")
    print_table("time (median, ms)", [{"method": k, "ms": v, "/ train step": v / train}
                                      for k, v in ms.items()],
                ["method", "ms", "/ train step"])
    ratios = {
        "mc_over_train_step": mc / train,
        "loop_over_mc": loop / mc,
        "loop_over_train_step": loop / train,
        "mc_sample_over_forward": mc / forward / T,
    }
    print(f"\nMC prediction (T={T}) / one training step: {ratios['mc_over_train_step']:.2f}")
    print(f"{T} x model(x, training=True) / MC prediction: {ratios['loop_over_mc']:.2f}")
    print(f"one MC sample / one deterministic forward pass: "
          f"{ratios['mc_sample_over_forward']:.2f}")
    result = {"machine": info, "ms": ms, "ratios": ratios}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
