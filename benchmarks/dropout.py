"""Benchmark: a training step with kreg's Dropout vs keras.layers.Dropout.

The same MLP (784-512-512-10, dropout 0.5 after each hidden layer, batch 128,
SGD), once with `keras.layers.Dropout` and once with `kreg.layers.Dropout`,
on the active Keras backend. A timing is the median time of one
`train_on_batch` step. The two models are timed in alternating short rounds,
and the ratio is the median over rounds of the ratio within a round, so that
a busy machine slows both alike. Unseeded layers (the common case) and seeded
ones (reproducible masks) are measured separately.

Target: kreg / Keras <= 1.05.

Run: `python benchmarks/dropout.py [--quick]`.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402
from _common import print_table  # noqa: E402

BATCH = 128
TARGET = 1.05


def build(dropout_cls, seed):
    import keras

    keras.utils.set_random_seed(0)
    seeds = (None, None) if seed is None else (seed, seed + 1)
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(512, activation="relu"),
        dropout_cls(0.5, seed=seeds[0]),
        keras.layers.Dense(512, activation="relu"),
        dropout_cls(0.5, seed=seeds[1]),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    return model


def _step_times(model, x, y, steps):
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)  # returns the loss as a Python float: synced
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def run(rounds=20, steps=5):
    """Median step times (ms) and the paired ratio kreg / keras, per variant."""
    import keras
    import numpy as np

    import kreg

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 784)).astype("float32")
    y = rng.integers(0, 10, size=BATCH)
    results = {}
    for label, seed in (("unseeded", None), ("seeded", 1)):
        models = {"keras": build(keras.layers.Dropout, seed),
                  "kreg": build(kreg.layers.Dropout, seed)}
        times = {k: [] for k in models}
        ratios = []
        for model in models.values():  # compile and warm up
            _step_times(model, x, y, 3)
        for r in range(rounds):
            order = list(models) if r % 2 == 0 else list(models)[::-1]
            now = {name: _step_times(models[name], x, y, steps) for name in order}
            for name, t in now.items():
                times[name] += t
            ratios.append(statistics.median(now["kreg"]) / statistics.median(now["keras"]))
        results[label] = {k: statistics.median(v) for k, v in times.items()}
        results[label]["ratio"] = statistics.median(ratios)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    info = machine()
    ms = run(rounds=8 if args.quick else 20)
    rows = [{"layers": label, "keras ms": t["keras"], "kreg ms": t["kreg"],
             "kreg / keras": t["ratio"]} for label, t in ms.items()]
    print(f"Dropout training step, MLP 784-512-512-10, batch {BATCH}; {info}")
    print_table("Training step time (median)", rows,
                ["layers", "keras ms", "kreg ms", "kreg / keras"])
    ratios = {f"dropout_step_{label}_kreg_over_keras": t["ratio"]
              for label, t in ms.items()}
    for name, value in ratios.items():
        print(f"{name}: {value:.3f} (target <= {TARGET})")
    return {"machine": info, "ms": ms, "ratios": ratios,
            "targets": {name: f"<= {TARGET}" for name in ratios}}


if __name__ == "__main__":
    main()
