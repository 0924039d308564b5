"""Execute the notebooks in place, so that they are committed with their plots.

Each notebook in notebooks/ (or those named on the command line) runs top to
bottom with nbclient in a kernel that runs this interpreter with this
checkout's kreg first on the path, in a temporary directory. The executed
notebook is written back without what churns from run to run or machine to
machine: execution timing metadata, stderr streams (TensorFlow's log lines),
and the kernel's Python version. Each code cell records a hash of the source
it ran (`metadata.kreg.source_sha256`); tests/test_notebooks.py fails when a
cell's source no longer matches its stored outputs.

Run: `python tools/execute_notebooks.py [notebooks/06_monte_carlo.ipynb ...]`.
"""

import hashlib
import os
import pathlib
import sys
import tempfile

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNEL_NAME = "kreg-notebooks"
CELL_TIMEOUT_S = 600


def source_sha256(source):
    """The hash of a code cell's source that its stored outputs came from."""
    return hashlib.sha256(source.encode()).hexdigest()


def _kernel_spec_manager(directory):
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager

    write_kernel_spec(
        os.path.join(directory, KERNEL_NAME),
        overrides={
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "kreg notebooks",
            "env": {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                    "MKL_NUM_THREADS": "1"},
        },
    )
    return KernelSpecManager(kernel_dirs=[directory])


def strip(nb, metadata):
    """The executed notebook without what churns; `metadata`: the stored notebook's."""
    nb.metadata = metadata
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream"
                                    and o.get("name") == "stderr")]
            cell.metadata["kreg"] = {"source_sha256": source_sha256(cell.source)}
    return nb


def execute(path):
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    metadata = nb.metadata
    with tempfile.TemporaryDirectory() as kernels, tempfile.TemporaryDirectory() as cwd:
        km = KernelManager(kernel_name=KERNEL_NAME,
                           kernel_spec_manager=_kernel_spec_manager(kernels))
        client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S,
                                         kernel_name=KERNEL_NAME,
                                         resources={"metadata": {"path": cwd}})
        try:
            client.execute()
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    nbformat.write(strip(nb, metadata), path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    paths = [pathlib.Path(a) for a in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        print(f"executing {path.name} ...", flush=True)
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
