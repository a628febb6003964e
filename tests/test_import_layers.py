"""The package's imports form no cycle, and the lower floors never import the higher ones.

Every module under relicv2_tf/ is parsed (no import runs); every `import` / `from ... import`
in it counts, at module level or inside a function (a function-level import is still a
dependency, only a later one). `from package import name` counts as an import of the submodule
`package.name` when that is a module, else of `package`. Importing a submodule is not counted as
importing its package's `__init__`.

Floors: `data`, `losses`, `models`, `optim` (and the modules they use) are the ground the
methods, the evaluation, the config, the training loop and the commands stand on: none of them
may import `config`, `methods`, `evaluation`, `cli`, `train` or `train_logging`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "relicv2_tf"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
LOWER = ("data", "losses", "models", "optim")
HIGHER = ("config", "methods", "evaluation", "cli", "train", "train_logging")


def module_sources(root: Path = ROOT, package: str = PACKAGE) -> dict[str, str]:
    """{dotted module name: source} of every .py file under `root`."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join([package, *parts])] = path.read_text(encoding="utf-8")
    return sources


def _resolve(name: str, modules) -> str | None:
    """`name` or its longest prefix that is one of `modules`."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """{module: the package modules it imports anywhere in its source}."""
    modules = set(sources)
    graph = {}
    for module, source in sources.items():
        is_package = any(m.startswith(module + ".") for m in modules)
        targets = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, `level` steps up
                    anchor = module.split(".")
                    anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names]
            else:
                continue
            targets.update(t for t in (_resolve(n, modules) for n in names)
                           if t is not None and t != module)
        graph[module] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _floor(module: str, floors, package: str = PACKAGE) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == package and parts[1] in floors else None


def upward_imports(graph, package: str = PACKAGE) -> list[str]:
    """'a -> b' for every module of a LOWER floor importing one of a HIGHER floor."""
    return sorted(f"{module} -> {target}" for module, targets in graph.items()
                  if _floor(module, LOWER, package)
                  for target in targets if _floor(target, HIGHER, package))


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph(module_sources()))
    assert not cycles, f"import cycles (module-level or function-level imports): {cycles}"


def test_lower_floors_do_not_import_higher_ones():
    upward = upward_imports(import_graph(module_sources()))
    assert not upward, f"imports from {LOWER} up to {HIGHER}: {upward}"


def test_the_walk_sees_the_whole_package():
    graph = import_graph(module_sources())
    assert {"relicv2_tf.config", "relicv2_tf.data.views", "relicv2_tf.methods",
            "relicv2_tf.evaluation.knn_report"} <= set(graph)
    # A function-level import counts: config.validate's.
    assert "relicv2_tf.evaluation.knn_report" in graph["relicv2_tf.config"]
    assert "relicv2_tf.data.defaults" in graph["relicv2_tf.evaluation.inputs"]


@pytest.fixture
def synthetic_package(tmp_path):
    """A package with a function-level cycle a -> b -> c -> a, a relative import, and an upward
    import data.reader -> config."""
    root = tmp_path / "pkg"
    (root / "data").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    import pkg.c\n",
        "c.py": "from . import a\n",
        "config.py": "",
        "data/__init__.py": "",
        "data/reader.py": "def g():\n    from pkg.config import X\n",
        "data/ok.py": "from pkg.data import reader\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    return module_sources(root, "pkg")


def test_the_checks_report_a_synthetic_cycle_and_an_upward_import(synthetic_package):
    graph = import_graph(synthetic_package)
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.b"] == {"pkg.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert upward_imports(graph, "pkg") == ["pkg.data.reader -> pkg.config"]
    del graph["pkg.c"]  # no cycle without the closing edge
    assert find_cycles(graph) == []
