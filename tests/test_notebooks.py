"""The notebooks in notebooks/ run top to bottom and are stored executed.

They are committed with their outputs and plots (written by
tools/execute_notebooks.py), so that a repository page shows them, without
what churns (execution timing, stderr streams); each code cell records the hash
of the source its outputs came from, so that an edited cell without fresh
outputs fails here. The test run clears the stored outputs and executes a copy,
so it never compares against stale outputs.

Each notebook is executed with nbclient in a temporary directory, in a kernel
that runs this interpreter (`sys.executable`) and imports the same kreg as the
tests do. The notebooks check their own claims with `assert` cells, so a
notebook that silently stops showing what its text says fails here.

Every random choice of a notebook follows its line `SEED = 0`; the executed
copy takes the seed from `KREG_CLAIM_SEED` (default 0), so that
benchmarks/claims_spread.py and a run of this file can check the claims under
other seeds.
"""

import json
import os
import pathlib
import shutil
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

import kreg  # noqa: E402

pytestmark = pytest.mark.tf_only(
    reason="the notebooks run on TensorFlow, the default backend, and assert measured claims")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "kreg-notebooks"
CELL_TIMEOUT_S = 300
MAX_NOTEBOOK_BYTES = 1_000_000
MIN_ASSERTS = 3
SEED_LINE = "SEED = 0"

# Appended to the executed copy only: the kernel's own CPU time, for the timing line.
_CPU_PROBE = ("import os as _os\n_t = _os.times()\n"
              "print('KREG_KERNEL_CPU', _t.user + _t.system)")


def _kernel_env():
    """Environment of the notebook kernel: this kreg first on the path, quiet TF."""
    kreg_root = str(pathlib.Path(kreg.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": kreg_root + (os.pathsep + path if path else ""),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # Render figures as Jupyter does, so plotting errors surface here.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # Small matrices: one BLAS thread per kernel runs them faster than a
        # pool of threads competing for a busy CI machine's cores.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"),
    }


@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory):
    """Kernel managers for a private kernel spec that runs `sys.executable`."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(
        str(kernels / KERNEL_NAME),
        overrides={
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                     "{connection_file}"],
            "display_name": "kreg notebooks",
            "env": _kernel_env(),
        },
    )
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])

    def make():
        return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)

    return make


def _execute(nb, cwd, kernel_manager_factory):
    km = kernel_manager_factory()
    client = nbclient.NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    finally:
        # nbclient leaves a kernel it did not create running.
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb


def _stdout(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")


def test_kernel_runs_this_python_and_this_kreg(tmp_path, kernel_manager_factory):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import json, os, sys, kreg\n"
        "print(json.dumps([sys.executable, kreg.__file__, os.getcwd(),\n"
        "                  os.environ.get('TF_CPP_MIN_LOG_LEVEL')]))")]
    _execute(nb, tmp_path, kernel_manager_factory)
    executable, kreg_file, cwd, log_level = json.loads(_stdout(nb.cells[0]))
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    assert os.path.realpath(kreg_file) == os.path.realpath(kreg.__file__)
    assert os.path.realpath(cwd) == os.path.realpath(tmp_path)
    assert log_level == "2"


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 6, names
    assert all(name[:2].isdigit() and name[2] == "_" for name in names), names


def _source_sha256(source):
    import hashlib

    return hashlib.sha256(source.encode()).hexdigest()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path):
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # Executed in order, top to bottom, by tools/execute_notebooks.py.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), path.name
    for cell in code:
        stored = cell.metadata.get("kreg", {}).get("source_sha256")
        assert stored == _source_sha256(cell.source), (
            f"{path.name}: a cell changed since its outputs were stored "
            f"(python tools/execute_notebooks.py {path.relative_to(NOTEBOOK_DIR.parent)}):\n"
            f"{cell.source[:200]}")
        # Nothing that churns between runs or machines.
        assert "execution" not in cell.metadata, path.name
        for out in cell.outputs:
            assert not (out.output_type == "stream" and out.name == "stderr"), path.name
            if out.output_type == "stream":
                assert "WARNING:tensorflow:" not in out.text, f"{path.name}: a log line"
            assert out.output_type != "error", f"{path.name}: stored with an error"
    assert "version" not in nb.metadata.get("language_info", {}), path.name
    # Its plots are there for a repository page to show.
    assert any("image/png" in out.get("data", {}) for c in code for out in c.outputs), (
        f"{path.name}: no stored plot")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_checks_its_claims(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    asserts = sum(line.lstrip().startswith("assert ") for line in code.splitlines())
    assert asserts >= MIN_ASSERTS, f"{path.name}: only {asserts} assert statements"
    assert any(c.cell_type == "markdown" for c in nb.cells)
    assert "plt." in code or "matplotlib" in code, f"{path.name}: no plots"
    # One seed, in one place, that the executed copy can change.
    assert code.count(SEED_LINE) == 1, f"{path.name}: no single line {SEED_LINE!r}"


@pytest.mark.claim
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, kernel_manager_factory, record_property):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    seed = int(os.environ.get("KREG_CLAIM_SEED", "0"))
    for cell in nb.cells:
        if cell.cell_type == "code":
            # The stored outputs go: this run's outputs are its own.
            cell.outputs, cell.execution_count = [], None
            cell.source = cell.source.replace(SEED_LINE, f"SEED = {seed}")
    nb.cells.append(nbformat.v4.new_code_cell(_CPU_PROBE))
    start = time.perf_counter()
    _execute(nb, tmp_path, kernel_manager_factory)
    wall = time.perf_counter() - start
    cpu = float(_stdout(nb.cells[-1]).split()[-1])
    record_property("wall_s", round(wall, 1))
    record_property("kernel_cpu_s", round(cpu, 1))
    print(f"{path.name}: {wall:.1f} s wall, {cpu:.1f} s kernel CPU")
