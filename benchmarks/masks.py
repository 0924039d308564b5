"""Benchmark: the cost of drawing a Bernoulli mask, before and after kreg's primitive.

"before": one float32 uniform per element, compared with keep_prob
(`keras.random.uniform(shape) < p`, what kreg drew until issue 18).
"after": kreg's primitive (`kreg.layers._bernoulli.keep_mask`); at
keep_prob 0.5 one random bit per element, 32 per word (`keep_words`,
unpacked; two 16-bit slices per word at keep probabilities that are not
j / 2**m, m <= 4).

Dropout itself: `where(mask, x / keep_prob, 0)` on a float32 tensor of the
same shape, with the float uniforms' mask ("before") and with kreg's
`_bernoulli.dropped` ("after"), which Dropout calls when its mask has the
inputs' shape (on TensorFlow the unpacking and the product are one XLA loop).

The shape is (T * N, 512) = (12800, 512), the mask of one hidden layer of the
Monte Carlo benchmark (T=50 samples of N=256 inputs, independent mode), with
keep_prob 0.5. Each draw runs compiled (tf.function / jax.jit; eager on
PyTorch, which has no compiled path in kreg) and the result is synced. The
four are timed in alternating rounds; a timing is the fastest round (the
work is fixed, so a busy shared machine only adds time; the median swung by
3x between runs on the 2-core machine). Every installed backend is
measured, each in its own child process, so one run prints all three.

Run: `python benchmarks/masks.py [--quick] [--backends tensorflow,jax,torch]`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402

SHAPE = (12800, 512)
KEEP = 0.5
BACKENDS = ("tensorflow", "jax", "torch")

_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np
from keras import ops
from kreg._compile import compile_inference
from kreg.layers._bernoulli import dropped
from kreg.layers._bernoulli import keep_mask
from kreg.layers.base import TensorSeed

shape, keep, rounds = {shape!r}, {keep!r}, {rounds!r}
dtype = keras.random.SeedGenerator(0).state.dtype
# The seed is an argument, so that no compiler folds the draw into a constant.
seed = ops.convert_to_tensor(np.array([1, 2]), dtype=dtype)
x = ops.convert_to_tensor(np.random.default_rng(0).normal(size=shape).astype("float32"))


def float_dropout(s, x):
    keep_ = keras.random.uniform(shape, seed=TensorSeed(s)) < keep
    return ops.where(keep_, x / keep, ops.zeros((), x.dtype))


draws = {{
    "float uniforms": compile_inference(
        lambda s, x: keras.random.uniform(shape, seed=TensorSeed(s)) < keep, []),
    "kreg primitive": compile_inference(
        lambda s, x: keep_mask(shape, keep, TensorSeed(s)), []),
    "float dropout": compile_inference(float_dropout, []),
    "kreg dropout": compile_inference(
        lambda s, x: dropped(x, keep, TensorSeed(s)), []),
}}
times = {{name: [] for name in draws}}
for fn in draws.values():
    ops.convert_to_numpy(fn(seed, x)[:1])
for _ in range(rounds):
    for name, fn in draws.items():
        start = time.perf_counter()
        out = fn(seed, x)
        if keras.backend.backend() == "jax":
            out.block_until_ready()
        else:
            ops.convert_to_numpy(out[:1])
        times[name].append((time.perf_counter() - start) * 1e3)
print("JSON:" + json.dumps({{k: min(v) for k, v in times.items()}}))
"""


def measure(backend, rounds):
    """Fastest ms of the four draws on `backend` (a child process), or an error."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _CHILD.format(root=root, shape=SHAPE, keep=KEEP, rounds=rounds)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=900, env=env)
    lines = [s for s in proc.stdout.splitlines() if s.startswith("JSON:")]
    if proc.returncode or not lines:
        return None, (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(lines[-1][5:]), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 11
    start = time.perf_counter()
    rows, ms, ratios, skipped = [], {}, {}, {}
    for backend in args.backends.split(","):
        result, error = measure(backend, rounds)
        if result is None:
            skipped[backend] = error
            continue
        before, after = result["float uniforms"], result["kreg primitive"]
        drop_before, drop_after = result["float dropout"], result["kreg dropout"]
        ms[backend] = result
        ratios[f"mask_draw_{backend}_primitive_over_float"] = after / before
        ratios[f"dropout_{backend}_kreg_over_float"] = drop_after / drop_before
        rows.append({"backend": backend, "float uniforms ms": f"{before:.1f}",
                     "kreg primitive ms": f"{after:.1f}",
                     "after / before": f"{after / before:.2f}",
                     "float dropout ms": f"{drop_before:.1f}",
                     "kreg dropout ms": f"{drop_after:.1f}",
                     "dropout after / before": f"{drop_after / drop_before:.2f}"})
    print(f"Bernoulli(keep_prob={KEEP}) mask of shape {SHAPE} "
          f"({SHAPE[0] * SHAPE[1] / 1e6:.1f}M elements); {os.cpu_count()} CPU "
          f"cores; fastest of {rounds} rounds")
    print_table("Mask draw and dropout time", rows, [
        "backend", "float uniforms ms", "kreg primitive ms", "after / before",
        "float dropout ms", "kreg dropout ms", "dropout after / before"])
    for backend, error in skipped.items():
        print(f"(not measured on {backend}: {error})")
    print(f"\n(benchmark run time {time.perf_counter() - start:.0f} s)")
    return {"ms": ms, "ratios": ratios, "skipped": skipped}


if __name__ == "__main__":
    main()
