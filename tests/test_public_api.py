"""Every name in every `__all__` imports; subpackages are exposed by `import kreg`."""

import importlib
import pkgutil

import kreg


def _modules():
    yield kreg
    for info in pkgutil.walk_packages(kreg.__path__, "kreg."):
        if info.ispkg:
            yield importlib.import_module(info.name)


def test_every_name_in_every_all_imports():
    seen = 0
    for module in _modules():
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), f"{module.__name__}.{name}"
            seen += 1
    assert seen >= 10


def test_import_kreg_exposes_subpackages():
    for sub in ("layers", "regularizers", "initializers"):
        assert hasattr(kreg, sub)


def test_public_classes_are_registered_with_keras():
    import keras

    for module in _modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if isinstance(obj, type) and hasattr(obj, "get_config"):
                assert keras.saving.get_registered_name(obj) == f"kreg>{obj.__name__}"
                # A lowercase name is a Keras-style alias of a listed class
                # (kreg.regularizers.l2 is L2, as keras.regularizers.l2 is).
                assert name == obj.__name__ or (
                    name.islower() and obj.__name__ in module.__all__
                    and getattr(module, obj.__name__) is obj), name
