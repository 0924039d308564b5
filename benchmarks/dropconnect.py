"""Benchmark: DropConnectDense training steps and Gaussian inference.

A 784-512-512-10 ReLU MLP at batch 128, trained with Adam via
`train_on_batch`, in four variants measured in the same run (interleaved
rounds, median step time):

* Dense: plain `keras.layers.Dense` layers (the reference, 1.00x);
* Dense + Dropout: `keras.layers.Dropout(0.5)` after each hidden layer;
* DropConnect batch: the three layers are `DropConnectDense(mask="batch")`;
* DropConnect example: the same with `mask="example"` (per-example masks).

It also times one forward pass of the DropConnect MLP with
`inference="gaussian"` (256 draws) against `inference="mean"`, and measures the
peak resident memory (VmHWM) of a process training with per-example masks,
against one training plain Dense layers (each in a fresh subprocess, so nothing
else inflates it). The target (under 1 GiB) is measured as in a
`pip install "kreg[tensorflow]"` environment: the packages of the test, demo
and onnx extras are made unimportable in that process, since Keras imports
JAX, scikit-learn and matplotlib whenever they are installed and their shared
libraries then count in a TensorFlow process's RSS. The same processes with
this venv's packages, and the anonymous part of the RSS (sampled; file-backed
library pages vary with the page cache: the same packages measured about
150 MiB apart in two venvs), are printed too.

Run: `python benchmarks/dropconnect.py` (about a minute on a 2-core CPU).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 128
SIZES = (784, 512, 512, 10)


def build(kind, inference="mean"):
    import keras

    import kreg

    layers = [keras.Input((SIZES[0],))]
    for i, units in enumerate(SIZES[1:]):
        activation = "relu" if i < len(SIZES) - 2 else None
        if kind.startswith("dropconnect"):
            layers.append(kreg.layers.DropConnectDense(
                units, rate=0.5, mask=kind.split("-")[1], inference=inference,
                activation=activation, seed=i))
        else:
            layers.append(keras.layers.Dense(units, activation=activation))
            if kind == "dropout" and activation:
                layers.append(keras.layers.Dropout(0.5, seed=i))
    model = keras.Sequential(layers)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def data():
    import numpy as np

    rng = np.random.RandomState(0)
    x = rng.rand(BATCH, SIZES[0]).astype("float32")
    y = rng.randint(0, SIZES[-1], BATCH)
    return x, y


def time_steps(model, x, y, steps):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def training_table(rounds):
    x, y = data()
    kinds = {
        "Dense": ("dense", 10),
        "Dense + Dropout(0.5)": ("dropout", 10),
        "DropConnectDense, mask=\"batch\"": ("dropconnect-batch", 10),
        "DropConnectDense, mask=\"example\"": ("dropconnect-example", 3),
    }
    models = {name: build(kind) for name, (kind, _) in kinds.items()}
    for model in models.values():  # trace and warm up
        time_steps(model, x, y, 2)
    times = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, (_, steps) in kinds.items():
            times[name].append(time_steps(models[name], x, y, steps))
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def inference_table(rounds):
    import keras

    x, _ = data()
    out = {}
    for inference in ("mean", "gaussian"):
        model = build("dropconnect-batch", inference=inference)
        model.predict_on_batch(x)
        model.predict_on_batch(x)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(5):
                model.predict_on_batch(x)
            samples.append((time.perf_counter() - start) / 5)
        out[inference] = statistics.median(samples) * 1e3
        keras.backend.clear_session()
    return out


# Packages that `pip install "kreg[tensorflow]"` does not install but the test
# venv has (the test, demo and onnx extras): Keras imports several of them
# when they are present (jax, sklearn, matplotlib, ...), which maps their
# shared libraries into a TensorFlow process.
NOT_IN_A_TENSORFLOW_INSTALL = ("jax", "jaxlib", "torch", "sklearn", "matplotlib",
                               "scipy", "IPython", "onnx", "onnxruntime", "tf2onnx",
                               "cv2", "PIL")

MEMORY_CODE = """
import json, os, re, resource, sys, threading, time
sys.path.insert(0, {root!r})
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
BLOCK = {block!r}


class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)


if BLOCK:  # as a kreg[tensorflow] install, which has none of them
    sys.meta_path.insert(0, _Blocked())
# The anonymous part of the resident memory (heap, stacks, tensors), sampled:
# VmHWM also counts the pages of shared libraries mapped from files, which
# vary with the page cache (the same packages measured about 150 MiB apart in
# two venvs).
anon = [0]
stop = []


def sample():
    while not stop:
        status = open("/proc/self/status").read()
        anon[0] = max(anon[0], int(re.search(r"RssAnon:\\s+(\\d+)", status).group(1)))
        time.sleep(0.002)


try:
    open("/proc/self/status").read()
    threading.Thread(target=sample, daemon=True).start()
except OSError:
    stop.append(True)
from benchmarks.dropconnect import build, data, time_steps

def peak_mib():
    # VmHWM is this process's own peak; ru_maxrss can carry the parent's
    # peak across exec on Linux.
    try:
        status = open("/proc/self/status").read()
        return int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

x, y = data()
model = build({kind!r})
model.predict_on_batch(x)
before = peak_mib()
time_steps(model, x, y, 4)
stop.append(True)
print("JSON:" + json.dumps({{"before_mib": before, "peak_mib": peak_mib(),
                            "peak_anon_mib": anon[0] / 1024 or None}}))
"""


def peak_memory(kind, tensorflow_install=True):
    """Peak RSS (MiB) of a fresh process training `kind` for 4 steps.

    With `tensorflow_install` (the default), the packages a
    `kreg[tensorflow]` install lacks are made unimportable in that process
    (`NOT_IN_A_TENSORFLOW_INSTALL`); otherwise it imports what this venv has.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    block = NOT_IN_A_TENSORFLOW_INSTALL if tensorflow_install else ()
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_CODE.format(root=root, kind=kind, block=block)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, os.environ.get("PYTHONPATH", "")])},
    )
    line = [s for s in proc.stdout.splitlines() if s.startswith("JSON:")][-1]
    return json.loads(line[5:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    train = training_table(args.rounds)
    infer = inference_table(args.rounds)
    kinds = ("dense", "dropconnect-example")
    memory = {kind: peak_memory(kind) for kind in kinds}
    memory_venv = {kind: peak_memory(kind, tensorflow_install=False) for kind in kinds}
    result = {"train_step_ms": train, "forward_ms": infer, "memory": memory,
              "memory_this_venv": memory_venv,
              "seconds": time.perf_counter() - start}
    if args.json:
        print(json.dumps(result, indent=2))
        return result

    base = train["Dense"]
    dropout = train["Dense + Dropout(0.5)"]
    print(f"784-512-512-10 MLP, batch {BATCH}, Adam, train_on_batch; "
          f"{os.cpu_count()} CPU cores; median of {args.rounds} rounds\n")
    print("| layers | step (ms) | vs Dense | vs Dense + Dropout |")
    print("|---|---:|---:|---:|")
    for name, ms in train.items():
        print(f"| {name} | {ms:.1f} | {ms / base:.2f}x | {ms / dropout:.2f}x |")
    example = train['DropConnectDense, mask="example"']
    print(f'\nmask="example" / Dense + Dropout: {example / dropout:.1f}x '
          "(target: at most 10x, issue 18)")
    print("\n| DropConnectDense inference (forward, batch 128) | ms | vs mean |")
    print("|---|---:|---:|")
    for name, ms in infer.items():
        label = "gaussian (256 draws)" if name == "gaussian" else name
        print(f"| {label} | {ms:.2f} | {ms / infer['mean']:.2f}x |")
    print("\n| training process (fresh, 4 steps) | peak RSS (MiB), as a "
          "kreg[tensorflow] install | over the Dense process | its anonymous "
          "part | peak RSS (MiB), with this venv's packages |")
    print("|---|---:|---:|---:|---:|")
    dense_peak = memory["dense"]["peak_mib"]
    for label, kind in (("Dense", "dense"),
                        ('DropConnectDense, mask="example"',
                         "dropconnect-example")):
        peak, anon = memory[kind]["peak_mib"], memory[kind]["peak_anon_mib"]
        anon = "n/a" if anon is None else f"{anon:.0f}"
        print(f"| {label} | {peak:.0f} | {peak - dense_peak:+.0f} | {anon} | "
              f"{memory_venv[kind]['peak_mib']:.0f} |")
    print("(target: the mask=\"example\" process under 1024 MiB, as a "
          "kreg[tensorflow] install: without JAX, PyTorch, scikit-learn or "
          "matplotlib, which Keras imports when they are installed)")
    print(f"\n(benchmark run time {result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
