"""Execute the notebooks in place, so that they are committed with their plots.

Each notebook in notebooks/ (or those named on the command line) runs top to
bottom with nbclient in a kernel that runs this interpreter with this
checkout's kreg first on the path, in a temporary directory. The executed
notebook is written back without what churns from run to run or machine to
machine: execution timing metadata, stderr streams and TensorFlow's log lines
(with their object addresses), and the kernel's Python version. Each code cell
records a hash of the source it ran (`metadata.kreg.source_sha256`);
tests/test_notebooks.py fails when a cell's source no longer matches its
stored outputs.

Run: `python tools/execute_notebooks.py [--strip] [notebooks/06_monte_carlo.ipynb ...]`
(`--strip`: clean the stored outputs again without executing).
"""

import copy
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
# Log lines (with addresses and counts that change from run to run).
LOG_PREFIXES = ("WARNING:tensorflow:", "WARNING:absl:", "I0000 ", "W0000 ")


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


def _quiet(output):
    """A stream output without TensorFlow's log lines (None when nothing is left)."""
    if output.get("output_type") != "stream":
        return output
    if output.get("name") == "stderr":
        return None
    lines = [line for line in output.text.splitlines(True)
             if not line.startswith(LOG_PREFIXES)]
    if not lines:
        return None
    output.text = "".join(lines)
    return output


def strip(nb, metadata, *, executed=True):
    """The notebook without what churns; `metadata`: the stored notebook's.

    `executed`: record each code cell's source hash (only right after the
    cells ran: `--strip` alone keeps the stored hashes).
    """
    nb.metadata = metadata
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in map(_quiet, cell.outputs) if o is not None]
            if executed:
                cell.metadata["kreg"] = {"source_sha256": source_sha256(cell.source)}
    return nb


def execute(path):
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    metadata = copy.deepcopy(nb.metadata)  # nbclient adds the kernel's language_info
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
    argv = sys.argv[1:] if argv is None else list(argv)
    strip_only = "--strip" in argv
    argv = [a for a in argv if a != "--strip"]
    paths = [pathlib.Path(a) for a in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if strip_only:  # the stored outputs, cleaned again (no execution)
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            nbformat.write(strip(nb, nb.metadata, executed=False), path)
        return 0
    for path in paths:
        print(f"executing {path.name} ...", flush=True)
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
