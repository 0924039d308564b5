"""Shared helpers of kreg's benchmarks: timing, machine facts, tables."""

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timeit(fn, repeats=5, warmup=1):
    """Median wall time of `fn()` in milliseconds after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def machine():
    import keras

    backend = keras.backend.backend()
    info = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": backend,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    if backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["device"] = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    elif backend == "jax":
        import jax

        info["jax"] = jax.__version__
        info["device"] = str(jax.devices()[0].platform).upper()
    elif backend == "torch":
        import torch

        info["torch"] = torch.__version__
        info["device"] = "GPU" if torch.cuda.is_available() else "CPU"
    return info


def print_table(title, rows, columns):
    """Print rows (dicts) as a Markdown table with the given columns."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = []
        for c in columns:
            val = row.get(c, "")
            cells.append(f"{val:.3g}" if isinstance(val, float) else str(val))
        print("| " + " | ".join(cells) + " |")


def sync(x):
    """Block until `x` is computed (device backends are asynchronous)."""
    import keras

    return keras.ops.convert_to_numpy(x)
