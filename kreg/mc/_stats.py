"""Monte Carlo statistics on the device, accumulated pass by pass.

`kreg.MCPrediction` computes its numbers from the (T, N, ...) samples in
float64 NumPy. The predictor instead keeps the samples where they were made
(on the accelerator, or in TensorFlow's graph on the CPU) and reduces every
forward pass to a few (N, ...) statistics in `keras.ops`, in float32 (float64
when the model outputs float64), so only those small arrays reach the host:

* `pass_statistics(samples, kind)`: the sufficient statistics of one pass of
  t samples: the count t, the per-input mean and the sum of squared
  deviations from it (`m2`, by the corrected two-pass algorithm), for
  classification the sum over samples of the per-sample entropy and the vote
  counts (argmax one-hot for softmax, `p > 0.5` for sigmoid), and four data
  checks (`nan`: NaN count; `low`/`high`: extremes of the non-NaN values;
  `sum_error`: the largest `|sum - 1|` of a softmax row along the last axis).
* `merge(a, b)`: the statistics of two passes together. Mean and `m2` merge
  as Chan, Golub & LeVeque (1979) do (`delta = mean_b - mean_a`, `m2 = m2_a
  + m2_b + delta**2 n_a n_b / n`), which keeps a float32 variance accurate
  where the naive `sum(x**2) - n mean**2` cancels; sums add; checks combine.
* `finalize(stats, kind)`: what `MCPrediction` reports: `mean`, `variance`
  (1/T), and for classification `entropy`, `expected_entropy`,
  `mutual_information` and `variation_ratio`, by the same definitions
  (softmax outputs of more than three axes are flattened per input, sigmoid
  outputs are independent binary problems whose entropies add up).
* `tempered(samples, temperature, kind)`: the tempered mean and entropy split
  of `kreg.calibration.tempered_uncertainty_ops` (it needs every sample of an
  input: it is not a function of the sums above).

`kind` is `"regression"`, `"softmax"` or `"sigmoid"` (`kind_of`). These
functions take and return backend tensors and run inside a compiled
function; `to_host` and `join` then bring a chunk's finalized statistics to
NumPy and join the chunks of a call. The numbers equal `MCPrediction`'s float64 ones to float32
round-off (tests/test_mc_stats.py holds them within 1e-5).

References:
    Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for
    computing sample variances", Stanford CS tech. report STAN-CS-79-773, 1979;
    Chan, Golub & LeVeque, "Algorithms for computing the sample variance:
    analysis and recommendations", The American Statistician 37(3), 1983
    (the corrected two-pass algorithm).
"""

import math

import keras
import numpy as np
from keras import ops

from kreg import calibration
from kreg._entropy import bernoulli_entropy
from kreg._entropy import categorical_entropy

KINDS = ("regression", "softmax", "sigmoid")
CHECKS = ("nan", "low", "high", "sum_error")


def kind_of(task, activation):
    """`"regression"`, or the classification activation."""
    return "regression" if task == "regression" else activation


def accumulator_dtype(dtype):
    """float64 for float64 outputs, else float32 (float16/bfloat16 widen)."""
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def _flat(x, leading):
    """x (leading..., rest...) reshaped to (leading..., prod(rest))."""
    static, dynamic = x.shape, ops.shape(x)  # traces may relax leading dims
    rest = static[leading:]
    size = math.prod(rest) if all(d is not None for d in rest) else -1
    return ops.reshape(x, tuple(dynamic[i] if static[i] is None else static[i]
                                for i in range(leading)) + (size,))


def _checks(s, kind):
    """NaN count, extremes of the non-NaN values, softmax row-sum error."""
    nan = ops.isnan(s)
    big = ops.cast(float("inf"), s.dtype)
    out = {
        "nan": ops.sum(ops.cast(nan, s.dtype)),
        "low": ops.min(ops.where(nan, big, s)),
        "high": ops.max(ops.where(nan, -big, s)),
        "sum_error": ops.zeros((), s.dtype),
    }
    if kind == "softmax" and len(s.shape) > 2 and s.shape[-1] != 1:
        row = ops.sum(ops.where(nan, ops.zeros_like(s), s), axis=-1)
        out["sum_error"] = ops.max(ops.abs(row - 1.0))
    return out


def _entropies(flat, kind):
    """Entropy (...) of probabilities flat (..., D): categorical (softmax), or
    the sum of D independent Bernoulli entropies (sigmoid)."""
    if kind == "softmax":
        return categorical_entropy(flat, xp=ops)
    return ops.sum(bernoulli_entropy(flat, xp=ops), axis=-1)


def _votes(flat, kind):
    """Per-input vote counts (N, D) of the t samples flat (t, N, D)."""
    if kind == "softmax":
        hot = ops.one_hot(ops.argmax(flat, axis=-1), flat.shape[-1], dtype=flat.dtype)
        return ops.sum(hot, axis=0)
    return ops.sum(ops.cast(flat > 0.5, flat.dtype), axis=0)


def pass_statistics(samples, kind):
    """The sufficient statistics of one pass of samples (t, N, ...).

    Args:
        samples: tensor (t, N, ...) of outputs (probabilities for a
            classification `kind`), t known statically.
        kind: `"regression"`, `"softmax"` or `"sigmoid"`.

    Returns:
        dict of tensors: `count` (scalar), `mean` and `m2` (N, ...), the
        checks (scalars) and, for classification, `entropy_sum` (N,) and
        `votes` (N, D).
    """
    s = ops.cast(samples, accumulator_dtype(samples.dtype))
    count = ops.cast(ops.shape(s)[0], s.dtype)
    # The corrected two-pass algorithm: the deviations' own mean repairs the
    # round-off of the first mean (large offsets, long passes).
    mean = ops.mean(s, axis=0)
    dev = s - mean
    fix = ops.mean(dev, axis=0)
    out = {
        "count": count,
        "mean": mean + fix,
        "m2": ops.sum(ops.square(dev), axis=0) - count * ops.square(fix),
    }
    out.update(_checks(s, kind))
    if kind != "regression":
        flat = _flat(s, 2)
        out["entropy_sum"] = ops.sum(_entropies(flat, kind), axis=0)
        out["votes"] = _votes(flat, kind)
    return out


def merge(a, b):
    """The statistics of passes a and b together (Chan et al.'s update)."""
    n = a["count"] + b["count"]
    delta = b["mean"] - a["mean"]
    out = {
        "count": n,
        "mean": a["mean"] + delta * (b["count"] / n),
        "m2": a["m2"] + b["m2"] + ops.square(delta) * (a["count"] * b["count"] / n),
        "nan": a["nan"] + b["nan"],
        "low": ops.minimum(a["low"], b["low"]),
        "high": ops.maximum(a["high"], b["high"]),
        "sum_error": ops.maximum(a["sum_error"], b["sum_error"]),
    }
    for key in ("entropy_sum", "votes"):
        if key in a:
            out[key] = a[key] + b[key]
    return out


def finalize(stats, kind):
    """`MCPrediction`'s numbers from accumulated statistics.

    Returns:
        dict of tensors: `mean`, `variance` (N, ...); for classification
        also `entropy`, `expected_entropy`, `mutual_information`,
        `variation_ratio` (N,); and the checks (scalars).
    """
    count = stats["count"]
    out = {"mean": stats["mean"], "variance": stats["m2"] / count}
    out.update({key: stats[key] for key in CHECKS})
    if kind == "regression":
        return out
    mean = _flat(stats["mean"], 1)
    entropy = _entropies(mean, kind)
    if kind == "softmax":
        modal = ops.max(stats["votes"], axis=-1)
        variation = (count - modal) / count  # exactly 0 when unanimous
    else:
        ones = stats["votes"]
        variation = ops.mean((count - ops.maximum(ones, count - ones)) / count,
                             axis=-1)
    expected = stats["entropy_sum"] / count
    out.update({
        "entropy": entropy,
        "expected_entropy": expected,
        # Jensen: H[mean p] >= mean H[p]; clip round-off below zero.
        "mutual_information": ops.maximum(entropy - expected, ops.zeros_like(entropy)),
        "variation_ratio": variation,
    })
    return out


def tempered(samples, temperature, kind):
    """The tempered mean, variance and entropy split of samples (T, N, ...).

    `kreg.calibration.tempered_uncertainty_ops` on the samples flattened to
    (T, N, D), in the accumulator dtype; `mean` and `variance` come back in
    the shape of one sample (N, ...).
    """
    s = ops.cast(samples, accumulator_dtype(samples.dtype))
    out = calibration.tempered_uncertainty_ops(_flat(s, 2), temperature,
                                               activation=kind)
    shape = ops.shape(s)[1:]
    out["mean"] = ops.reshape(out["mean"], shape)
    out["variance"] = ops.reshape(out["variance"], shape)
    return out


def statistics(samples, kind, temperature=None):
    """`finalize(pass_statistics(samples))`, tempered when T is given.

    The whole computation for samples that are all at hand (one pass, or
    passes concatenated on the device).
    """
    out = finalize(pass_statistics(samples, kind), kind)
    if temperature is not None:
        out.update(tempered(samples, temperature, kind))
    return out


def to_host(stats, rows):
    """Finalized statistics as NumPy, the first `rows` inputs (padding cut)."""
    return {key: (float(ops.convert_to_numpy(t)) if key in CHECKS
                  else ops.convert_to_numpy(t)[:rows])
            for key, t in stats.items()}


def join(parts):
    """Host statistics of consecutive chunks of inputs as one (`to_host`'s)."""
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if key == "nan":
            out[key] = sum(values)
        elif key == "low":
            out[key] = min(values)
        elif key in ("high", "sum_error"):
            out[key] = max(values)
        else:
            out[key] = np.concatenate(values, axis=0)
    return out
