"""Benchmark: the import time that kreg adds on top of Keras.

`python -c "import keras"` and `python -c "import keras, kreg"` in fresh
processes on the active Keras backend (KERAS_BACKEND is passed on), run in
alternation; the median wall time of each. kreg imports only Keras and NumPy
at import time (TensorFlow-only code imports TensorFlow when it is called), so
the ratio should stay close to 1.

Target: (keras + kreg) / keras <= 1.10.

Run: `python benchmarks/import_time.py [--quick]`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402
from _common import print_table  # noqa: E402

TARGET = 1.10
STATEMENTS = {"keras": "import keras", "keras + kreg": "import keras, kreg"}


def _time_once(statement):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, env=env,
                   capture_output=True)
    return (time.perf_counter() - start) * 1000.0


def run(repeats=5):
    """Median wall time (ms) of each statement, alternating, after a warm-up."""
    for statement in STATEMENTS.values():  # warm the file cache
        _time_once(statement)
    times = {k: [] for k in STATEMENTS}
    for r in range(repeats):
        order = list(STATEMENTS) if r % 2 == 0 else list(STATEMENTS)[::-1]
        for name in order:
            times[name].append(_time_once(STATEMENTS[name]))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    info = machine()
    ms = run(repeats=3 if args.quick else 5)
    ratio = ms["keras + kreg"] / ms["keras"]
    print(f"Import time in a fresh process; {info}")
    print_table("Import time (median)", [{"import": k, "ms": v} for k, v in ms.items()],
                ["import", "ms"])
    print(f"(keras + kreg) / keras: {ratio:.3f} (target <= {TARGET}); kreg adds "
          f"{ms['keras + kreg'] - ms['keras']:.0f} ms")
    return {"machine": info, "ms": ms,
            "ratios": {"import_keras_kreg_over_keras": ratio},
            "targets": {"import_keras_kreg_over_keras": f"<= {TARGET}"}}


if __name__ == "__main__":
    main()
