"""The packages' import rules (docs/architecture.md): imports run downward only, and the modules of
index/ form no cycle, counting every import (at the top, inside a function, for type checking only)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embedder", "index", "training", "app", "benchmarks")
# What each package may import of the others (benchmarks sit outside the product).
ALLOWED = {"embedder": set(), "index": {"embedder"}, "training": {"embedder", "index"},
           "app": {"embedder", "index", "training"}}


def modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of a package."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of the project the file imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def graph(package: str) -> dict[str, set[str]]:
    found = modules(package)
    known = set(found)
    return {name: imported(path, name, known) for name, path in found.items()}


def test_each_package_imports_only_the_packages_below_it():
    wrong = []
    for package, allowed in ALLOWED.items():
        for module, targets in graph(package).items():
            wrong += [f"{module} imports {t}" for t in targets if t.split(".")[0] not in allowed | {package}]
    assert wrong == []


def test_the_modules_of_index_form_no_import_cycle():
    edges = {m: {t for t in ts if t.startswith("index.") and t != m} for m, ts in graph("index").items()}
    edges = {m: {t for t in ts if t in edges and t != "index"} for m, ts in edges.items()}
    state, cycles = {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_index_subpackages_hold_no_code_of_their_own():
    """One name, one path: a subpackage's __init__ re-exports nothing from its modules."""
    for init in sorted((ROOT / "index").glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        assert all(isinstance(node, ast.Expr) for node in tree.body), init
