"""Every Python code block in README.md runs (docs cannot drift from code)."""

import pathlib
import re

import pytest

pytestmark = pytest.mark.tf_only(
    reason="the README's examples include a SavedModel export")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_blocks():
    assert len(readme_blocks()) >= 1


def test_readme_python_blocks_run(tmp_path, fresh_python):
    code = "\n\n".join(readme_blocks())
    fresh_python(code, cwd=tmp_path, timeout=600)
