"""Write the numbers of the docs pages from the committed results in docs/results/.

Every number the docs quote from the demo or a benchmark sits between a pair of
markers in its page::

    <!-- generated: NAME (python tools/docs_numbers.py) -->
    ...
    <!-- end: NAME -->

and is written here from `docs/results/demo_quick.json` (what `kreg demo
--quick` writes as results.json) or `docs/results/bench_cpu.json` (what
`python benchmarks/run_all.py --quick --json FILE` writes). tests/test_docs.py
fails when a page differs from what this script writes, and tests/test_demo.py
compares the demo's committed results with a fresh `--quick` run.

Run: `python tools/docs_numbers.py` (rewrite the pages) or `--check` (exit 1
and name the stale pages).
"""

import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
DEMO_RESULTS = RESULTS / "demo_quick.json"
BENCH_RESULTS = RESULTS / "bench_cpu.json"
_BLOCK = re.compile(r"(<!-- generated: (\S+) \(python tools/docs_numbers.py\) -->\n)"
                    r"(.*?)(<!-- end: \2 -->)", re.S)


def _load(path):
    with open(path) as f:
        return json.load(f)


def _drop_column(table, name):
    """A Markdown table without the column headed `name`."""
    rows = [line.split("|")[1:-1] for line in table.splitlines()]
    k = [c.strip() for c in rows[0]].index(name)
    return "\n".join("|" + "|".join(r[:k] + r[k + 1:]) + "|" for r in rows)


def demo_table(results):
    """The demo's table as `kreg demo` prints it, less the machine-dependent time."""
    from kreg.demo.report import format_table

    split = results["split"]
    head = (f"`kreg demo --quick` on {results['dataset']}: network {results['network']}, at most "
            f"{results['epochs']} epochs, {results['mc_samples']} Monte Carlo samples, seed "
            f"{results['seed']}; {split['train']} train / {split['val']} validation / "
            f"{split['test']} test inputs.\n\n")
    return head + _drop_column(format_table(results), "time (s)") + "\n"


def demo_prose(results):
    """Sentences about the demo's stochastic rows, computed from its results."""
    rows = {r["key"]: r for r in results["techniques"]}
    lines = []
    for key in ("dropout", "dropconnect", "dropout_l2_es"):
        r = rows[key]
        mc = r["mc"]
        better = "lowered" if mc["nll"] < r["test_nll"] else "raised"
        lines.append(
            f"- {r['technique']}: MC averaging {better} the test NLL from "
            f"{r['test_nll']:.3f} to {mc['nll']:.3f}; ECE {r['test_ece']:.3f} "
            f"deterministic, {mc['ece']:.3f} MC, {mc['ece_ts']:.3f} MC after temperature "
            f"scaling (MC T = {mc['temperature']:.2f}).")
    n = results["split"]["test"]
    lines.append(f"- With {n} test inputs, an ECE difference of 0.01 is the weight of "
                 f"{n / 100:g} inputs in one bin.")
    return "\n".join(lines) + "\n"


def _fmt(value):
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def bench_ratios(bench):
    """`make bench`'s table of ratios and targets, and the machine."""
    machine = ", ".join(f"{k} {v}" for k, v in bench["machine"].items())
    lines = [f"Machine: {machine}.", "",
             "| benchmark | ratio | value | target |", "|:--|:--|--:|:--|"]
    known = _known_targets()
    for name, result in bench["results"].items():
        targets = {**known, **result.get("targets", {})}
        for key, value in result.get("ratios", {}).items():
            lines.append(f"| {name} | {key} | {_fmt(value)} | {targets.get(key, '')} |")
    return "\n".join(lines) + "\n"


def _known_targets():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_all
    finally:
        sys.path.pop(0)
    return dict(run_all.KNOWN_TARGETS)


def bench_mc(bench):
    """MC prediction: time per method and relative to kreg's."""
    r = bench["results"]["mc_predict.py"]
    ms = r["ms"]
    kreg_ms = ms["(d) kreg MCPredictor"]
    lines = [f"N = {r['n']} inputs, T = 50 samples.", "",
             "| method | ms | relative to kreg |", "|:--|--:|--:|"]
    for name, value in ms.items():
        lines.append(f"| {name} | {value:.1f} | {value / kreg_ms:.2f}x |")
    return "\n".join(lines) + "\n"


def bench_dropconnect(bench):
    """DropConnect's training step and memory."""
    r = bench["results"]["dropconnect.py"]
    base = r["train_step_ms"]["Dense + Dropout(0.5)"]
    lines = ["| layers | step (ms) | vs Dense + Dropout |", "|:--|--:|--:|"]
    for name, value in r["train_step_ms"].items():
        lines.append(f"| {name} | {value:.1f} | {value / base:.2f}x |")
    mem = r["memory"]
    lines += ["", f"Peak memory of a process training the per-example DropConnect MLP, as a "
              f"`kreg[tensorflow]` install: {mem['dropconnect-example']['peak_mib']:.0f} MiB "
              f"(the plain Dense process: {mem['dense']['peak_mib']:.0f} MiB); Gaussian inference "
              f"with 256 draws costs {r['ratios']['gaussian_256_over_mean_inference']:.0f}x mean "
              f"inference."]
    return "\n".join(lines) + "\n"


BLOCKS = {
    "demo-table": ("demo.md", DEMO_RESULTS, demo_table),
    "demo-prose": ("demo.md", DEMO_RESULTS, demo_prose),
    "bench-ratios": ("benchmarks.md", BENCH_RESULTS, bench_ratios),
    "bench-mc": ("benchmarks.md", BENCH_RESULTS, bench_mc),
    "bench-dropconnect": ("benchmarks.md", BENCH_RESULTS, bench_dropconnect),
}


def render(page_text):
    """The page with every generated block written from its results."""
    cache = {}

    def fill(match):
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r}")
        _, path, make = BLOCKS[name]
        if path not in cache:
            cache[path] = _load(path)
        return match.group(1) + make(cache[path]) + match.group(4)

    return _BLOCK.sub(fill, page_text)


def pages():
    return sorted({DOCS / page for page, _, _ in BLOCKS.values()})


def stale():
    """The pages whose generated blocks differ from their results."""
    return [p.name for p in pages() if render(p.read_text()) != p.read_text()]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--check"]:
        bad = stale()
        for name in bad:
            print(f"docs/{name}: generated numbers are stale (python tools/docs_numbers.py)")
        return 1 if bad else 0
    for p in pages():
        p.write_text(render(p.read_text()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
