"""Run every benchmark in benchmarks/ and print one table of ratios.

Every `benchmarks/*.py` module (except `_*.py` helpers, the tools in TOOLS and
this file) that has a `main(argv)` is run, each in a fresh process (so one
benchmark's imports and thread pools cannot slow the next), on the active Keras
backend (KERAS_BACKEND), one after the other, so all ratios come from the same
run on the same machine. Each `main` returns a dict with `"ratios"` (name -> value)
and optionally `"targets"` (name -> "<= x" or ">= x"). The run ends with the
list of files that ran (and any that did not, with the reason), the machine
and versions, and one Markdown table of ratios against their targets; the
README's benchmark tables are copied from it.

Run: `make bench`, or `python benchmarks/run_all.py [--quick] [--json FILE]`.
Exit status 1 when a benchmark fails. An expected benchmark that is not in
this checkout is listed as missing, and a missed target is reported; neither
is an error (timings depend on the machine).
"""

import argparse
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine  # noqa: E402

# The benchmarks the README reports; a missing one is listed, never skipped
# silently.
EXPECTED = ("dropout.py", "dropconnect.py", "mc_predict.py", "import_time.py",
            "masks.py")
# Targets of benchmarks whose main() does not return them.
KNOWN_TARGETS = {
    "speedup_vs_eager_loop": ">= 6",
    "speedup_vs_tiled": ">= 1.5",
    "joint_over_independent": "<= 1.10",
    "mc_over_flop_bound": "<= 1.5",
    "dropconnect_mask_example_step_over_dense_dropout": "<= 10",
    "dropconnect_mask_example_peak_rss_gib": "<= 1",
}
# Arguments in --quick mode (default: --quick).
QUICK_ARGS = {"mc_predict.py": ["--quick", "--no-memory"], "dropconnect.py": ["--rounds", "3"]}


def _dropconnect_ratios(result):
    """Ratios from benchmarks/dropconnect.py's result (it returns times only)."""
    train, forward = result["train_step_ms"], result["forward_ms"]
    dropout = train["Dense + Dropout(0.5)"]
    ratios = {}
    for name, ms in train.items():
        if name != "Dense + Dropout(0.5)":
            key = re.sub(r"[^a-z0-9]+", "_", name.lower().replace("dense", "", 1)
                         if name.startswith("DropConnect") else name.lower()).strip("_")
            ratios[f"{key}_step_over_dense_dropout"] = ms / dropout
    ratios["gaussian_256_over_mean_inference"] = forward["gaussian"] / forward["mean"]
    memory = result.get("memory", {}).get("dropconnect-example")
    if memory:  # not a ratio: the process's peak, against the 1 GiB target,
        # as a kreg[tensorflow] install (no JAX, PyTorch, scikit-learn, ...)
        ratios["dropconnect_mask_example_peak_rss_gib"] = memory["peak_mib"] / 1024
        if memory.get("peak_anon_mib"):
            ratios["dropconnect_mask_example_peak_anon_rss_gib"] = (
                memory["peak_anon_mib"] / 1024)
    venv = result.get("memory_this_venv", {}).get("dropconnect-example")
    if venv:  # the same process importing what the test venv has (no target)
        ratios["dropconnect_mask_example_peak_rss_gib_test_venv"] = venv["peak_mib"] / 1024
    return ratios


# Ratios of benchmarks whose main() returns times only.
RATIOS = {"dropconnect.py": _dropconnect_ratios}


#: Scripts in benchmarks/ that are tools, not benchmarks: they time nothing,
#: and claims_spread.py trains every claim under 4 conditions and several seeds
#: (an hour or more). `make bench` lists them as not run.
TOOLS = ("claims_spread.py",)


def discover():
    names = sorted(n for n in os.listdir(HERE)
                   if n.endswith(".py") and not n.startswith("_")
                   and n != "run_all.py" and n not in TOOLS)
    return names


def _load(name):
    spec = importlib.util.spec_from_file_location(f"kreg_bench_{name[:-3]}",
                                                  os.path.join(HERE, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call_main(main, argv):
    params = inspect.signature(main).parameters
    if not params:
        return main()
    try:
        return main(argv)
    except SystemExit as exc:  # an argparse that does not know --quick
        if exc.code == 2 and argv:
            print(f"(it does not accept {argv}; running it with no arguments)")
            return main([])
        raise


def met(value, target):
    if not target:
        return ""
    op, bound = target.split()
    ok = value <= float(bound) if op == "<=" else value >= float(bound)
    return "yes" if ok else "NO"


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _child(name, quick, result_path):
    """Run one benchmark here (a fresh process) and write its result as JSON."""
    module = _load(name)
    if not hasattr(module, "main"):
        print("not run: it has no main()")
        return NO_MAIN
    extra = QUICK_ARGS.get(name, ["--quick"]) if quick else []
    result = _call_main(module.main, extra)
    if isinstance(result, dict) and "ratios" not in result and name in RATIOS:
        result = dict(result, ratios=RATIOS[name](result))
    with open(result_path, "w") as f:
        json.dump(result if isinstance(result, dict) else {}, f, default=_json_default)
    return 0


#: The child's exit status for a benchmark file without main().
NO_MAIN = 3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, no memory measurements")
    parser.add_argument("--json", help="also write every result to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, args.result)
    started = time.perf_counter()
    names = discover()
    ran, failed, results = [], [], {}
    for name in names:
        print(f"\n{'=' * 78}\n## benchmarks/{name}\n{'=' * 78}", flush=True)
        t0 = time.perf_counter()
        # Each benchmark runs in its own process: one that imports JAX and
        # PyTorch (masks.py) leaves their thread pools behind, and the next
        # one's TensorFlow timings then moved by up to 25 % (independent /
        # joint MC: 1.29 after the others in one process, 1.02-1.10 alone).
        with tempfile.TemporaryDirectory() as tmp:
            result_path = os.path.join(tmp, "result.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", name,
                   "--result", result_path] + (["--quick"] if args.quick else [])
            code = subprocess.run(cmd).returncode
            if code == NO_MAIN:
                failed.append((name, "no main()"))
                continue
            if code != 0:  # the child printed its traceback
                failed.append((name, f"exited with status {code} (output above)"))
                continue
            with open(result_path) as f:
                results[name] = json.load(f)
        ran.append((name, time.perf_counter() - t0))
    missing = [n for n in EXPECTED if n not in names]

    info = machine()
    print(f"\n{'=' * 78}\n# Summary ({time.perf_counter() - started:.0f} s)\n")
    print("Ran: " + ", ".join(f"{n} ({s:.0f} s)" for n, s in ran))
    for name, why in failed:
        print(f"Failed: {name}: {why}")
    for name in missing:
        print(f"Missing: {name} (expected in benchmarks/, not there in this checkout)")
    for name in TOOLS:
        print(f"Not run: {name} (a tool, not a benchmark; run it by hand)")
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print("\n| benchmark | ratio | value | target | met |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        ratios = result.get("ratios") or {}
        targets = dict(KNOWN_TARGETS, **(result.get("targets") or {}))
        if not ratios:
            print(f"| {name} | (no ratios returned) | | | |")
        for key, value in ratios.items():
            target = targets.get(key, "")
            print(f"| {name} | {key} | {value:.3f} | {target} | {met(value, target)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "ran": [n for n, _ in ran], "failed": failed,
                       "missing": missing, "results": results}, f, indent=2,
                      default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
