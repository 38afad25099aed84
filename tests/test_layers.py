"""The layers read top-down (docs/ARCHITECTURE.md): checked on the source, every import counted.

    pipeline/   (assembly, CLI)        may import transforms, training, core
    transforms/ (Beam stages)          may import core
    training/   (TensorFlow trainer)   may import core
    core/       (shared contracts)     imports none of them

and no module imports itself back through others (no cycles, lazy imports included).
"""
from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("core", "transforms", "training", "pipeline")
ALLOWED = {
    "core": {"core"},
    "transforms": {"core", "transforms"},
    "training": {"core", "training"},
    "pipeline": {"core", "transforms", "training", "pipeline"},
}


def _modules() -> dict[str, str]:
    out = {}
    for package in PACKAGES:
        for base, _dirs, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(base, name)
                    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def imports_of(path: str, module: str, known: set) -> set:
    """Project modules ``path`` imports anywhere in its body (module level or inside functions)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
                base = ".".join(package[:len(package) - (node.level - 1)])
                prefix = ".".join(p for p in (base, node.module) if p)
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = None


def _graph() -> dict[str, set]:
    global GRAPH
    if GRAPH is None:
        modules = _modules()
        known = set(modules)
        GRAPH = {m: imports_of(p, m, known) for m, p in modules.items()}
    return GRAPH


@pytest.mark.parametrize("package", PACKAGES)
def test_each_layer_imports_only_what_is_below_it(package):
    bad = sorted(f"{m} imports {dep}" for m, deps in _graph().items() if m.split(".")[0] == package
                 for dep in deps if dep.split(".")[0] not in ALLOWED[package])
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ is entered by every import of a module below it (and may re-export its
    # submodules): edges into package inits are not cycles of the code's own making.
    packages = {m for m, path in _modules().items() if path.endswith("__init__.py")}
    edges = {m: {d for d in deps if d in graph and d not in packages} for m, deps in graph.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The rule above can fail: a lazy upward import inside a function is found."""
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from pipeline.config import Config\n    return Config\n"
                   "from ..pipeline import backfill\nfrom . import other\n")
    known = {"pipeline", "pipeline.config", "pipeline.backfill", "transforms", "transforms.mod", "transforms.other"}
    assert imports_of(str(src), "transforms.mod", known) == {"pipeline.config", "pipeline", "pipeline.backfill",
                                                              "transforms", "transforms.other"}


def test_core_imports_neither_tensorflow_nor_beam():
    import subprocess
    import sys

    modules = sorted(m for m in _graph() if m.split(".")[0] == "core")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in ('tensorflow', 'apache_beam', 'tensorflow_data_validation', "
              "'tensorflow_transform', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
