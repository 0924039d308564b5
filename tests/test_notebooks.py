"""The notebooks in notebooks/ run top to bottom and are stored lean.

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
MAX_NOTEBOOK_BYTES = 50_000
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_lean(path):
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: stored with outputs"
            assert cell.execution_count is None, f"{path.name}: stored executed"


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
            cell.source = cell.source.replace(SEED_LINE, f"SEED = {seed}")
    nb.cells.append(nbformat.v4.new_code_cell(_CPU_PROBE))
    start = time.perf_counter()
    _execute(nb, tmp_path, kernel_manager_factory)
    wall = time.perf_counter() - start
    cpu = float(_stdout(nb.cells[-1]).split()[-1])
    record_property("wall_s", round(wall, 1))
    record_property("kernel_cpu_s", round(cpu, 1))
    print(f"{path.name}: {wall:.1f} s wall, {cpu:.1f} s kernel CPU")
