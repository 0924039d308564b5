"""kreg's public API: every public module lists its names in `__all__`, every
listed name imports, every public class is registered with Keras, and nothing
defined in a public module is public by accident."""

import importlib
import inspect
import pkgutil
import types

import pytest

import kreg


def _public_modules():
    """`kreg`, every subpackage, and every module `import kreg` exposes."""
    seen = {}
    seen["kreg"] = kreg
    for info in pkgutil.walk_packages(kreg.__path__, "kreg."):
        if info.ispkg and not any(p.startswith("_") for p in info.name.split(".")):
            seen[info.name] = importlib.import_module(info.name)
    for name in kreg.__all__:
        obj = getattr(kreg, name)
        if isinstance(obj, types.ModuleType):
            seen[obj.__name__] = obj
    return seen


MODULES = _public_modules()


def test_the_modules_users_reach_are_all_checked():
    for name in ("kreg", "kreg.layers", "kreg.regularizers", "kreg.initializers",
                 "kreg.callbacks", "kreg.mc", "kreg.acquisition", "kreg.distribute",
                 "kreg.conformal"):
        assert name in MODULES, name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_public_module_has_an_all_whose_names_import(name):
    module = MODULES[name]
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), (
        f"{name} has no __all__")
    assert module.__all__, f"{name}.__all__ is empty"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}: duplicates"
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.{attr}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_public_by_accident(name):
    """A function or class defined in a public module is in its `__all__` or
    starts with an underscore."""
    module = MODULES[name]
    for attr, obj in vars(module).items():
        if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        assert attr in module.__all__, f"{name}.{attr} is public but not in __all__"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_public_name_is_documented(name):
    module = MODULES[name]
    for attr in module.__all__:
        obj = getattr(module, attr)
        if inspect.isfunction(obj) or inspect.isclass(obj) or isinstance(
                obj, types.ModuleType):
            assert (obj.__doc__ or "").strip(), f"{name}.{attr} has no docstring"


def test_import_kreg_exposes_subpackages():
    for sub in ("layers", "regularizers", "initializers", "callbacks"):
        assert hasattr(kreg, sub)


def test_public_classes_are_registered_with_keras():
    import keras

    checked = 0
    for module in MODULES.values():
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and hasattr(obj, "get_config"):
                assert keras.saving.get_registered_name(obj) == f"kreg>{obj.__name__}"
                # A lowercase name is a Keras-style alias of a listed class
                # (kreg.regularizers.l2 is L2, as keras.regularizers.l2 is).
                assert name == obj.__name__ or (
                    name.islower() and obj.__name__ in module.__all__
                    and getattr(module, obj.__name__) is obj), name
                checked += 1
    assert checked >= 8
