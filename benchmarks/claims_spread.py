"""The spread of every claim's asserted quantities across CPUs' numerical conditions.

A claim about the outcome of training (a notebook's `assert` cells, the tests in
tests/test_claims.py) must hold on any CPU. This script runs each claim under the
2 x 2 matrix of conditions that change TensorFlow's floating-point results:

- `TF_ENABLE_ONEDNN_OPTS=0` and `=1` (oneDNN's kernels and graph rewrites; the
  default is on or off depending on the CPU),
- 1 and 2 intra-op threads (`TF_NUM_INTRAOP_THREADS`, `OMP_NUM_THREADS` and
  `tf.config.threading`, set before the first op; inter-op threads likewise),

and over several seeds (`SEED = 0` of each notebook is rewritten; the claim tests
read `KREG_CLAIM_SEED`; `demo:digits_quick` runs `kreg demo --quick --seed SEED`
and the asserts of tests/test_demo.py on what it trained). Every `assert` is
instrumented: each comparison it makes (`a < b`, `a > b and c < d`, ...) is
recorded with both sides and its margin, and a failing assert is counted, not
raised, so one run measures all of them.

Each condition runs in a fresh process (TensorFlow reads the switches at start).
The table printed at the end gives, for each asserted comparison, the number of
runs, the failures, and the range of both sides and of the margin (how far the
comparison was from failing: `b - a` for `a < b`).

Usage (from the repository root; slow: run it on a quiet machine):

    python benchmarks/claims_spread.py                      # everything
    python benchmarks/claims_spread.py --claims nb:05_he_initialization \\
        test:test_digits_dropconnect_beats_unregularized --seeds 0 1 2
    python benchmarks/claims_spread.py --list
    python benchmarks/claims_spread.py --conditions 0:1 1:2 --json spread.json
    python benchmarks/claims_spread.py --report spread.json # table of a saved run
"""

import argparse
import ast
import contextlib
import io
import json
import operator
import os
import pathlib
import subprocess
import sys
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CLAIM_TESTS = ROOT / "tests" / "test_claims.py"
DEMO_TESTS = ROOT / "tests" / "test_demo.py"
# The tests of test_demo.py that assert what the quick demo's training produced;
# each takes the `quick_run` fixture (proc, out, results) and reads only `results`.
DEMO_CLAIMS = ("test_quick_demo_json_rows", "test_quick_demo_mc_fields_only_for_stochastic_rows",
               "test_quick_demo_l1_is_sparser_than_l2")
SEED_ENV = "KREG_CLAIM_SEED"
SEED_LINE = "SEED = 0"
CONDITIONS = ("0:1", "0:2", "1:1", "1:2")  # TF_ENABLE_ONEDNN_OPTS : intra-op threads

_OPS = {ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le),
        ast.Gt: (">", operator.gt), ast.GtE: (">=", operator.ge),
        ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne),
        ast.Is: ("is", operator.is_), ast.IsNot: ("is not", operator.is_not),
        ast.In: ("in", lambda a, b: a in b), ast.NotIn: ("not in", lambda a, b: a not in b)}


# ----------------------------------------------------------------------------
# Instrumented asserts
# ----------------------------------------------------------------------------
class _Recorder:
    """Collects every instrumented assert of one run."""

    def __init__(self):
        self.checks, self.seen = [], {}

    def __call__(self, label, pairs, test):
        # Loops assert the same line several times: number the occurrences.
        k = self.seen.get(label, 0)
        self.seen[label] = k + 1
        label = f"{label} #{k + 1}" if k else label
        ok = bool(test())
        for segment, op, left, right in pairs:
            try:
                a, b = _scalar(left()), _scalar(right())
            except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                a = b = None
                segment = f"{segment} [{type(e).__name__}]"
            margin = None
            if isinstance(a, float) and isinstance(b, float) and op in "<=>=":
                margin = b - a if op.startswith("<") else a - b
            self.checks.append(dict(label=label, compare=segment, op=op, left=a,
                                    right=b, margin=margin, ok=ok))
        if not pairs:
            self.checks.append(dict(label=label, compare=None, op=None, left=None,
                                    right=None, margin=None, ok=ok))


def _scalar(value):
    try:
        import numpy as np

        arr = np.asarray(value)
        if arr.size == 1 and arr.dtype.kind in "biuf":
            return float(arr.reshape(()))
    except Exception:  # noqa: BLE001 - not a number: only pass/fail is recorded
        pass
    return None


class _Instrument(ast.NodeTransformer):
    """`assert t` -> `__claim_check__(label, [(src, op, lhs, rhs), ...], lambda: t)`."""

    def __init__(self, source, prefix):
        self.source, self.prefix, self.function = source, prefix, None

    def visit_FunctionDef(self, node):
        # Labels name the test, not a line: they stay put when the file is edited.
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer
        return node

    def visit_Assert(self, node):
        compares = []
        stack = [node.test]
        while stack:  # top-level comparisons, through `and`
            t = stack.pop(0)
            if isinstance(t, ast.BoolOp) and isinstance(t.op, ast.And):
                stack[:0] = t.values
            elif isinstance(t, ast.Compare):
                compares.append(t)
        pairs = []
        for cmp in compares:
            operands = [cmp.left, *cmp.comparators]
            for op, lhs, rhs in zip(cmp.ops, operands, operands[1:]):
                segment = " ".join([ast.get_source_segment(self.source, lhs) or "?",
                                    _OPS[type(op)][0],
                                    ast.get_source_segment(self.source, rhs) or "?"])
                pairs.append(ast.Tuple([ast.Constant(segment),
                                        ast.Constant(_OPS[type(op)][0]),
                                        _thunk(lhs), _thunk(rhs)], ast.Load()))
        where = f"{self.function}: " if self.function else ""
        label = f"{self.prefix}{where}{ast.get_source_segment(self.source, node.test)}"
        call = ast.Call(ast.Name("__claim_check__", ast.Load()),
                        [ast.Constant(label), ast.List(pairs, ast.Load()), _thunk(node.test)],
                        [])
        return ast.copy_location(ast.Expr(call), node)


def _thunk(expr):
    return ast.Lambda(ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[],
                                    defaults=[]), expr)


def _run_instrumented(source, filename, prefix, recorder, namespace=None):
    tree = ast.fix_missing_locations(_Instrument(source, prefix).visit(ast.parse(source)))
    namespace = {} if namespace is None else namespace
    namespace.update(__name__="__claims__", __file__=filename, __claim_check__=recorder)
    exec(compile(tree, filename, "exec"), namespace)
    return namespace


# ----------------------------------------------------------------------------
# Claims: notebooks and the tests of tests/test_claims.py
# ----------------------------------------------------------------------------
def list_claims():
    claims = [f"nb:{p.stem}" for p in sorted(NOTEBOOKS.glob("*.ipynb"))]
    tree = ast.parse(CLAIM_TESTS.read_text())
    claims += [f"test:{n.name}" for n in tree.body
               if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    return claims + ["demo:digits_quick"]


def _run_notebook(stem, seed, recorder):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    if not any(SEED_LINE in s for s in cells):
        raise RuntimeError(f"{stem}: no line {SEED_LINE!r} to reseed")
    namespace = {}
    for i, source in enumerate(cells):
        source = source.replace(SEED_LINE, f"SEED = {seed}", 1)
        _run_instrumented(source, f"{stem}[{i}]", f"code cell {i}: ", recorder, namespace)
    import matplotlib.pyplot as plt

    plt.close("all")


def _run_test(name, seed, recorder):
    os.environ[SEED_ENV] = str(seed)
    module = _run_instrumented(CLAIM_TESTS.read_text(), str(CLAIM_TESTS), "", recorder)
    module[name]()


def _run_demo(name, seed, recorder):
    """`kreg demo --quick --seed SEED`, checked by test_demo.py's training asserts."""
    import tempfile

    from kreg import demo

    with tempfile.TemporaryDirectory() as out:
        results = demo.run("digits", out, quick=True, seed=seed, stream=io.StringIO())
        tests = _run_instrumented(DEMO_TESTS.read_text(), str(DEMO_TESTS), "", recorder)
        for test in DEMO_CLAIMS:
            tests[test]((None, pathlib.Path(out), results))


def _worker(args):
    """Runs the claims x seeds in this process (its environment is the condition)."""
    threads = int(os.environ["TF_NUM_INTRAOP_THREADS"])
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    results = []
    for claim in args.claims:
        kind, name = claim.split(":", 1)
        for seed in args.seeds:
            recorder, error = _Recorder(), None
            start = time.perf_counter()
            keras.utils.clear_session(free_memory=True)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    {"nb": _run_notebook, "test": _run_test, "demo": _run_demo}[kind](
                        name, seed, recorder)
            except Exception:  # noqa: BLE001 - reported with the run
                error = traceback.format_exc(limit=3)[-1500:]
            row = dict(claim=claim, seed=seed, condition=args.condition,
                       seconds=round(time.perf_counter() - start, 1),
                       intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
                       error=error, checks=recorder.checks)
            results.append(row)
            fails = sum(not c["ok"] for c in row["checks"])
            print(f"  {claim} seed {seed} [{args.condition}]: {row['seconds']} s, "
                  f"{len(row['checks'])} comparisons, {fails} failing"
                  + (", ERROR" if error else ""), file=sys.stderr, flush=True)
            with open(args.out, "w") as f:
                json.dump(results, f)


def _spawn(condition, claims, seeds, out):
    onednn, threads = condition.split(":")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_NUM_INTRAOP_THREADS=threads,
               TF_NUM_INTEROP_THREADS=threads, OMP_NUM_THREADS=threads,
               KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, __file__, "--worker", "--condition", condition, "--out", out,
           "--claims", *claims, "--seeds", *map(str, seeds)]
    subprocess.run(cmd, env=env, cwd=ROOT, check=False)
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------
def _fmt(lo, hi):
    if lo is None:
        return "-"
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g} .. {hi:.4g}"


def _range(values):
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else (None, None)


def report(rows):
    import re

    for r in rows:  # runs saved before labels named the test carry a line number
        for c in r["checks"]:
            c["label"] = re.sub(r"^(code cell \d+ )?line \d+: ", lambda m: (
                m.group(1).rstrip() + ": ") if m.group(1) else "", c["label"])
    lines = []
    for claim in dict.fromkeys(r["claim"] for r in rows):
        runs = [r for r in rows if r["claim"] == claim]
        conds = sorted({r["condition"] for r in runs})
        seeds = sorted({r["seed"] for r in runs})
        secs = [r["seconds"] for r in runs]
        lines.append(f"\n## {claim}: {len(runs)} runs (conditions {', '.join(conds)}; "
                     f"seeds {seeds}); {min(secs):.0f} .. {max(secs):.0f} s a run")
        for r in runs:
            if r["error"]:
                lines.append(f"ERROR seed {r['seed']} [{r['condition']}]: "
                             + r["error"].strip().splitlines()[-1])
        lines.append("| assert | comparison | fails | left | right | margin |")
        lines.append("|---|---|---|---|---|---|")
        keys = dict.fromkeys((c["label"], c["compare"]) for r in runs for c in r["checks"])
        for label, compare in keys:
            checks = [c for r in runs for c in r["checks"]
                      if (c["label"], c["compare"]) == (label, compare)]
            fails = [f"{r['seed']}@{r['condition']}" for r in runs for c in r["checks"]
                     if (c["label"], c["compare"]) == (label, compare) and not c["ok"]]
            lines.append(f"| {label} | {compare or ''} | {len(fails)}/{len(checks)}"
                         f"{' (' + ' '.join(fails) + ')' if fails else ''} | "
                         f"{_fmt(*_range(c['left'] for c in checks))} | "
                         f"{_fmt(*_range(c['right'] for c in checks))} | "
                         f"{_fmt(*_range(c['margin'] for c in checks))} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", nargs="+", help="claims to run (default: all; --list)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS),
                        help="ONEDNN:THREADS pairs (default: %(default)s)")
    parser.add_argument("--json", help="also write every run's records here")
    parser.add_argument("--report", nargs="+",
                        help="print the table of saved --json files (or .part files) and exit")
    parser.add_argument("--list", action="store_true", help="list the claims and exit")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--condition", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(list_claims()))
        return 0
    if args.report:
        rows = []
        for path in args.report:
            with open(path) as f:
                rows += json.load(f)
        print(report(rows))
        return 0
    args.claims = args.claims or list_claims()
    unknown = sorted(set(args.claims) - set(list_claims()))
    if unknown:
        parser.error(f"unknown claims {unknown}; see --list")
    if args.worker:
        _worker(args)
        return 0
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for condition in args.conditions:
            print(f"TF_ENABLE_ONEDNN_OPTS={condition.split(':')[0]}, "
                  f"{condition.split(':')[1]} thread(s):", file=sys.stderr, flush=True)
            # With --json, a condition's runs so far survive an interrupted run.
            part = (f"{args.json}.{condition.replace(':', '_')}.part" if args.json
                    else os.path.join(tmp, f"{condition.replace(':', '_')}.json"))
            rows += _spawn(condition, args.claims, args.seeds, part)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f)
    print(report(rows))
    return 1 if any(r["error"] or not all(c["ok"] for c in r["checks"]) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
