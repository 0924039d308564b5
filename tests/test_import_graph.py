"""kreg's import graph has no cycle, counting imports inside functions.

Read from the source with `ast` (nothing is imported), so an import that runs
only when a function is called counts as much as one at the top of a module.
Checked at two scales: between modules, and between kreg's parts (a top-level
module such as `kreg.calibration`, or a subpackage such as `kreg.mc` with
everything in it). Imports of the root package `kreg` (the facade that
imports everything, e.g. to register every class) are left out.
"""

import ast
import pathlib

import pytest

import kreg

KREG = pathlib.Path(kreg.__file__).parent


def _module_name(path):
    parts = ("kreg",) + path.relative_to(KREG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, name, modules):
    """The kreg modules that the module `name` at `path` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from kreg import calibration` names a module
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m not in (name, "kreg")}


def import_graph():
    """`{module: set of kreg modules it imports}` for every module of kreg."""
    paths = {_module_name(p): p for p in KREG.rglob("*.py")}
    return {name: _imports(path, name, paths) for name, path in paths.items()}


def part_of(module):
    """`kreg.mc.predictor` -> `kreg.mc`; `kreg.calibration` -> itself."""
    return ".".join(module.split(".")[:2])


def coarsen(graph, key):
    out = {}
    for source, targets in graph.items():
        for target in targets:
            if key(source) != key(target):
                out.setdefault(key(source), set()).add(key(target))
    return out


def cycles(graph):
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = {"kreg.calibration": {"kreg.mc.metrics"}, "kreg.mc._stats": {"kreg.calibration"},
             "kreg.mc.metrics": set()}
    assert cycles(graph) == []  # no cycle between modules, but one between parts:
    assert cycles(coarsen(graph, part_of)) == [["kreg.calibration", "kreg.mc"]]


def test_imports_inside_functions_count():
    graph = import_graph()
    assert "kreg.layers.base" in graph["kreg.layers.dropout"]
    # Both imported inside a function only:
    assert "kreg.layers._seeds" in graph["kreg.layers._bernoulli"]
    assert "kreg.demo" in graph["kreg.cli"]


@pytest.mark.parametrize("scale", ["module", "part"])
def test_no_import_cycle(scale):
    graph = import_graph()
    if scale == "part":
        graph = coarsen(graph, part_of)
    assert cycles(graph) == []
