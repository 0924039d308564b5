"""Run Keras's own unit tests for the classes kreg stands in for, with kreg's.

`make test-keras-spec` runs this. It downloads the source distribution of the
*installed* Keras (`pip download keras==<version> --no-deps --no-binary
:all:`) into a cache outside the repository (`$KREG_KERAS_SDIST_DIR`, default
`~/.cache/kreg/keras-upstream`; nothing of Keras's is committed), copies
these test files into the ignored `tests/keras_upstream/_upstream/`:

    keras/src/layers/regularization/dropout_test.py
    keras/src/regularizers/regularizers_test.py
    keras/src/callbacks/early_stopping_test.py

and runs them with pytest and this directory's `pytest.ini`/`conftest.py`,
which put kreg's classes in place of Keras's and relax error-message text
(the exception class is still checked; `harness_selfcheck_test.py`, run
first, proves that). Usage:

    python tests/keras_upstream/run.py [FILE_STEM ...] [-- PYTEST_ARGS]

FILE_STEM picks files (e.g. `dropout_test`); the exit status is pytest's.
"""

import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

HERE = pathlib.Path(__file__).resolve().parent
COPIES = HERE / "_upstream"
FILES = (
    "keras/src/layers/regularization/dropout_test.py",
    "keras/src/regularizers/regularizers_test.py",
    "keras/src/callbacks/early_stopping_test.py",
)


def sdist(version):
    """The path of Keras's source distribution for `version`, downloaded once."""
    cache = pathlib.Path(os.environ.get(
        "KREG_KERAS_SDIST_DIR", pathlib.Path.home() / ".cache/kreg/keras-upstream"))
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"keras-{version}.tar.gz"
    if not path.exists():
        print(f"Downloading the source distribution of keras=={version} to {cache}",
              flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"keras=={version}",
             "--no-deps", "--no-binary", ":all:", "--quiet", "-d", str(cache)])
        if done.returncode:
            sys.exit(f"kreg: `pip download keras=={version}` failed (exit status "
                     f"{done.returncode}); this step needs the network once, or "
                     f"keras-{version}.tar.gz placed in {cache}")
    if not path.exists():
        sys.exit(f"kreg: pip did not produce {path}")
    return path


def copy_tests(archive, version, stems):
    """Copy the chosen test files out of `archive` into _upstream/."""
    shutil.rmtree(COPIES, ignore_errors=True)
    COPIES.mkdir()
    copied = []
    with tarfile.open(archive) as tar:
        for member in FILES:
            name = pathlib.PurePosixPath(member).name
            if stems and name.removesuffix(".py") not in stems:
                continue
            try:
                data = tar.extractfile(f"keras-{version}/{member}").read()
            except KeyError:
                sys.exit(f"kreg: Keras {version}'s source distribution has no "
                         f"{member}; update FILES in {__file__}")
            (COPIES / name).write_bytes(data)
            copied.append(COPIES / name)
    if not copied:
        sys.exit(f"kreg: no test file matches {sorted(stems)}; choose from "
                 f"{[pathlib.PurePosixPath(f).stem for f in FILES]}")
    return copied


def main(argv):
    stems, extra = argv, []
    if "--" in argv:
        i = argv.index("--")
        stems, extra = argv[:i], argv[i + 1:]
    version = importlib.metadata.version("keras")
    files = copy_tests(sdist(version), version, set(stems))
    env = dict(os.environ, KREG_KERAS_UPSTREAM="1")
    print(f"Keras {version}'s tests with kreg's classes "
          f"(KERAS_BACKEND={env.get('KERAS_BACKEND', 'tensorflow')}):", flush=True)
    cmd = [sys.executable, "-m", "pytest", "-c", str(HERE / "pytest.ini"),
           "--rootdir", str(HERE), str(HERE / "harness_selfcheck_test.py"),
           *map(str, files), *extra]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
