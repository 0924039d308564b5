"""The README and the docs pages: their code runs, their numbers are current.

Every ```python block of README.md runs alone: in a fresh namespace, in an
empty directory (the quick starts promise to be self-contained). The blocks of
each docs/ page run in order in one namespace per page, also in an empty
directory. All of them run in one fresh Python process, to pay for the imports
once. The numbers the pages quote from the demo and the benchmarks are written
by tools/docs_numbers.py from docs/results/, and checked here.
"""

import json
import pathlib
import re
import sys

import pytest

pytestmark = pytest.mark.tf_only(
    reason="the README's and the docs' examples include a SavedModel export")

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README_MAX_LINES = 300

_RUNNER = r'''
import json, os, sys, tempfile, time, traceback
jobs = json.loads(JOBS)
report = {}
for name, blocks in jobs:
    start = time.perf_counter()
    os.chdir(tempfile.mkdtemp(prefix="kreg-docs-"))
    namespace = {"__name__": "__main__"}
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{name}, block {i + 1}", "exec"), namespace)
        report[name] = {"ok": True, "seconds": time.perf_counter() - start}
    except BaseException:
        report[name] = {"ok": False, "error": traceback.format_exc()[-3000:]}
print("JSON:" + json.dumps(report))
'''


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def jobs():
    """(name, blocks): each README block alone, each page's blocks together."""
    out = [(f"README.md block {i + 1}", [code])
           for i, code in enumerate(python_blocks(README))]
    out += [(f"docs/{p.name}", python_blocks(p)) for p in PAGES if python_blocks(p)]
    return out


JOBS = jobs()


@pytest.fixture(scope="module")
def ran(fresh_python):
    code = f"JOBS = {json.dumps(json.dumps(JOBS))}\n" + _RUNNER
    proc = fresh_python(code, env={"MPLBACKEND": "Agg"}, timeout=900)
    return proc.result


def test_readme_has_python_blocks():
    assert len(python_blocks(README)) >= 4


@pytest.mark.parametrize("name", [name for name, _ in JOBS])
def test_code_blocks_run(ran, name):
    result = ran[name]
    assert result["ok"], f"{name} failed:\n{result.get('error')}"


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)
    head = "\n".join(lines[:20])
    assert "make demo" in head and "make test" in head
    text = "\n".join(lines)
    # No development history: no issue numbers, dates or timing logs.
    assert not re.search(r"issue \d+|\b20\d\d-\d\d-\d\d\b|this branch|load average", text)
    assert 'pip install -e ".[tensorflow,demo]"' in text
    assert 'pip install "tensorflow-cpu>=2.21,<2.22" -e ".[demo]"' in text
    assert "KERAS_BACKEND" in text


def test_readme_and_pages_link_to_files_that_exist():
    for path in [README, *PAGES]:
        prose = re.sub(r"```.*?```|`[^`\n]*`", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", prose):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.name} links to {target}"


def test_makefile_install_matches_the_readme():
    makefile = (ROOT / "Makefile").read_text()
    assert "tensorflow-cpu>=2.21,<2.22" in makefile
    assert '-e ".[demo]"' in makefile


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert f": {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"
    for page in re.findall(r":\s+(\S+\.md)\s*$", nav, flags=re.M):
        assert (DOCS / page).is_file(), f"mkdocs.yml's nav names a missing page {page}"


def _docs_numbers():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import docs_numbers
    finally:
        sys.path.pop(0)
    return docs_numbers


def test_generated_numbers_match_the_committed_results():
    docs_numbers = _docs_numbers()
    assert docs_numbers.stale() == [], "run: python tools/docs_numbers.py"
    # Every block the script writes is in its page.
    for name, (page, _, _) in docs_numbers.BLOCKS.items():
        assert f"<!-- generated: {name} " in (DOCS / page).read_text(), (name, page)


def test_generated_numbers_fail_when_stale(tmp_path):
    docs_numbers = _docs_numbers()
    page = (DOCS / "demo.md").read_text()
    changed = re.sub(r"\| 0\.\d\d\d \|", "| 0.123 |", page, count=1)
    assert changed != page
    assert docs_numbers.render(changed) == page  # the generated value comes back
