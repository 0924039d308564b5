"""The `kreg` command line: `kreg demo` (`python -m kreg demo`)."""

import argparse
import os
import sys


def _smoke_demo(args):
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    import kreg

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(
            256, activation="relu",
            kernel_initializer=kreg.initializers.HeNormal(seed=1),
            kernel_regularizer=kreg.regularizers.ElasticNet(l1=1e-5, l2=1e-4)),
        kreg.layers.Dropout(0.5, seed=2),
        keras.layers.Dense(10, activation="softmax",
                           kernel_regularizer=kreg.regularizers.L2(1e-4)),
    ])
    model.compile("adam", "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    idx = np.random.default_rng(0).permutation(len(x))
    x, y = x[idx], y[idx]
    n = int(0.8 * len(x))
    model.fit(x[:n], y[:n], validation_split=0.2, epochs=5, verbose=2)
    _, acc = model.evaluate(x[n:], y[n:], verbose=0)
    total, _ = kreg.regularizers.penalty(model)
    print(f"test accuracy {acc:.3f}; weight penalty {total:.4f}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.keras")
    model.save(path)
    print(f"saved {path}")
    return 0


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="kreg")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train and compare regularizers")
    demo.add_argument("--out", default="kreg-demo")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _smoke_demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
