"""Atomic `.weights.h5` checkpoints: write to a temporary file, fsync, rename.

A write goes to a hidden temporary file next to the checkpoint,
`.<stem>.<random>.tmp.weights.h5`, is flushed to disk and then renamed over
the checkpoint (`os.replace`, atomic on POSIX and Windows), so a crash or a
kill at any moment leaves the previous checkpoint intact. A kill during a
write leaves the temporary file behind; `remove_stale_temp_files` (called by
`EarlyStopping` at the start of every run) deletes those of one checkpoint.
The file gets the mode `model.save_weights` gives (0666 minus the umask,
0644 with the usual umask 022).

One checkpoint path belongs to one writer at a time: two processes writing
the same path race (and one may delete the other's temporary file).
"""

import contextlib
import os
import re
import secrets

from kreg import _validation as v

SUFFIX = ".weights.h5"
_TEMP_SUFFIX = ".tmp" + SUFFIX


def check_path(owner, value):
    """Validate a checkpoint path (None, or a str/path-like ending in
    `.weights.h5`) and return it as a str or None."""
    expected = f"None or a path ending in {SUFFIX!r}"
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise v.invalid_type(owner, "checkpoint_path", expected, value)
    path = os.fspath(value)
    if not isinstance(path, str) or not path.endswith(SUFFIX) or \
            os.path.basename(path) == SUFFIX:
        raise v.invalid_value(owner, "checkpoint_path", expected, value)
    return path


def _stem(path):
    return os.path.basename(path)[:-len(SUFFIX)]


def temp_file_pattern(path):
    """The regular expression that a temporary file of `path` matches."""
    return re.compile(
        r"\A\." + re.escape(_stem(path)) + r"\.[A-Za-z0-9_]+"
        + re.escape(_TEMP_SUFFIX) + r"\Z")


def remove_stale_temp_files(path):
    """Delete the temporary files that interrupted writes of `path` left.

    Only names of the form `.<stem>.<random>.tmp.weights.h5` in the
    checkpoint's directory are touched (the temporary files of another
    checkpoint in the same directory have another stem).

    Args:
        path: str, the checkpoint path.

    Returns:
        The sorted list of the removed paths.
    """
    directory = os.path.dirname(os.path.abspath(path))
    pattern = temp_file_pattern(path)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    removed = []
    for name in sorted(names):
        if pattern.match(name):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
    return removed


def _fsync(path):
    flags = os.O_RDONLY
    if os.path.isdir(path):
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_weights_atomically(model, path):
    """Write `model.save_weights` to `path` atomically.

    Creates the parent directories when needed. The temporary file is created
    exclusively with mode 0666 (the umask applies, as for `save_weights`),
    written by `model.save_weights`, fsynced and renamed over `path`; on any
    error (or interrupt) it is removed and the error re-raised, so `path`
    keeps its previous content.

    Args:
        model: an object with `save_weights(path, overwrite=True)` (a Keras
            model).
        path: str, ending in `.weights.h5`.

    Returns:
        None.
    """
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    while True:
        tmp = os.path.join(directory, f".{_stem(path)}."
                           f"{secrets.token_hex(8)}{_TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                             0o666))
            break
        except FileExistsError:  # pragma: no cover - 2**-64 chance
            continue
    try:
        model.save_weights(tmp, overwrite=True)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync(directory)
