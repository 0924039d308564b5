"""Load `.keras` files that hold kreg objects, with a useful error when a class is missing.

kreg's classes are registered with Keras (package "kreg") when kreg is
imported. A `.keras` file that holds one therefore loads with the plain
Keras call, **after one line**::

    import kreg  # registers kreg's classes with Keras
    model = keras.models.load_model("model.keras")  # safe_mode=True works

Without `import kreg`, Keras fails with a long nested `TypeError`
("... could not be deserialized properly ... Could not locate class
'Dropout' ...") that never says which import is missing.
`kreg.load_model(path)` imports kreg and loads; when a class is still
missing it re-raises Keras's error with a short hint naming the class and
the import that provides it.
"""

import json
import os
import zipfile

import keras

from kreg import _validation as v


def _registered_names(config):
    """Every `registered_name` of the form 'package>Class' in a config tree."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = node.get("registered_name")
            if isinstance(name, str) and ">" in name:
                yield name
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def missing_classes(filepath, custom_objects=None):
    """Registered class names used in a `.keras` file that Keras cannot find.

    Args:
        filepath: path of a `.keras` file.
        custom_objects: dict or None, default None; names found there count
            as available.

    Returns:
        A sorted list of names like `'kreg>Dropout'`; empty when every class
        is available or the file cannot be read as a `.keras` archive.
    """
    try:
        with zipfile.ZipFile(filepath) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    custom_objects = custom_objects or {}
    missing = set()
    for name in _registered_names(config):
        short = name.split(">", 1)[1]
        if name in custom_objects or short in custom_objects:
            continue
        if keras.saving.get_registered_object(name) is None:
            missing.add(name)
    return sorted(missing)


def hint(names, version):
    """kreg's short explanation of why `names` could not be deserialized."""
    from_kreg = [n for n in names if n.startswith("kreg>")]
    others = [n for n in names if not n.startswith("kreg>")]
    parts = []
    if from_kreg:
        parts.append(
            f"kreg: this file uses {', '.join(repr(n) for n in from_kreg)}, which "
            f"kreg {version} does not define. kreg's classes are registered by "
            "`import kreg` (kreg.load_model does it), so the file was saved "
            "with another kreg version: install that one.")
    if others:
        parts.append(
            f"kreg: this file uses {', '.join(repr(n) for n in others)}, which "
            "no imported module registered with Keras. Import the package that "
            "defines it before loading (as `import kreg` does for kreg's "
            "classes), or pass custom_objects={...}.")
    return " ".join(parts)


def load_model(filepath, **kwargs):
    """Import kreg and load a saved Keras model (`keras.models.load_model`).

    The same as `import kreg; keras.models.load_model(filepath, **kwargs)`:
    importing kreg registers its classes, which is all a `.keras` file with
    kreg objects needs (`safe_mode=True`, Keras's default, works). When
    Keras cannot find a class the file refers to, its `TypeError` is
    re-raised (chained) with a short hint naming the missing class and the
    import that provides it.

    Args:
        filepath: str or path-like. A `.keras` file (or anything
            `keras.models.load_model` accepts).
        **kwargs: forwarded to `keras.models.load_model` (`custom_objects`,
            `compile`, `safe_mode`).

    Returns:
        The loaded Keras model.

    Example:

    >>> import os, tempfile, keras, numpy as np, kreg
    >>> model = keras.Sequential([keras.Input((3,)), kreg.layers.Dropout(0.5, seed=1),
    ...     keras.layers.Dense(2, kernel_regularizer=kreg.regularizers.L2(1e-3))])
    >>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
    >>> model.save(path)
    >>> loaded = kreg.load_model(path, safe_mode=True)
    >>> type(loaded.layers[0]).__name__, loaded.layers[0].seed
    ('Dropout', 1)
    """
    import kreg  # noqa: F401 - registers kreg's classes with Keras

    if not isinstance(filepath, (str, os.PathLike)):
        raise v.invalid_type("load_model", "filepath", "a str or path-like", filepath)
    known = ("custom_objects", "compile", "safe_mode")
    for name in kwargs:
        if name not in known:
            raise TypeError(v.error_message(
                "load_model", name, "one of the keyword arguments "
                + ", ".join(f"`{k}`" for k in known), kwargs[name]))
    for name in ("compile", "safe_mode"):
        if name in kwargs:
            v.check_bool("load_model", name, kwargs[name])
    if kwargs.get("custom_objects") is not None and not isinstance(
            kwargs["custom_objects"], dict):
        raise v.invalid_type("load_model", "custom_objects", "a dict or None",
                             kwargs["custom_objects"])
    try:
        return keras.models.load_model(filepath, **kwargs)
    except TypeError as err:
        names = missing_classes(filepath, kwargs.get("custom_objects"))
        if not names:
            raise
        raise TypeError(hint(names, kreg.__version__)) from err
