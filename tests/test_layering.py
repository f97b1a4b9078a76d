"""Layering: lower packages never import higher ones (lazy imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medunlearn

PKG = Path(medunlearn.__file__).parent
# package -> packages it must never import (directly or lazily)
FORBIDDEN = {
    "data": {"selection", "models", "unlearn", "evaluate", "merge", "report", "workflow", "benchmarking", "cli"},
    "selection": {"models", "unlearn", "evaluate", "merge", "report", "workflow", "benchmarking", "cli"},
    "report": {"unlearn", "merge", "workflow", "benchmarking", "cli"},
    "workflow": {"benchmarking", "cli"},
}


def imported_packages(path: Path) -> set[str]:
    """Second-level medunlearn packages a module imports, e.g. {"data", "selection"}."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "medunlearn" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_layers(package):
    offenders = []
    for path in sorted((PKG / package).rglob("*.py")):
        bad = imported_packages(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(PKG)} imports {sorted(bad)}")
    assert not offenders, offenders


def test_no_module_outside_cli_imports_cli():
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if p.parts[-2] != "cli" and p.name != "__main__.py" and "cli" in imported_packages(p)]
    assert not offenders, offenders


def test_imported_packages_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from medunlearn.cli.cohort import x\n    import medunlearn.selection.rules\n")
    assert imported_packages(f) == {"cli", "selection"}


# ---------------------------------------------------------------- the unlearning core: no cycle, no hidden import
UNLEARN = PKG / "unlearn"


def hidden_imports(path: Path) -> list[str]:
    """medunlearn imports made inside a function or a TYPE_CHECKING block (they hide an import cycle)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        hiding = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
            isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
        if hiding:
            found += [f"{path.name}:{n.lineno} {name}" for n in ast.walk(node) for name in _imported(n)
                      if name.split(".")[0] == "medunlearn"]
    return found


def _imported(node: ast.AST) -> list[str]:
    """Modules an import node names; `from medunlearn.unlearn import x` names medunlearn.unlearn.x."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def module_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """{module: modules of the same package it imports} for every module of `folder` but its __init__."""
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in names:
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        deps = {i.removeprefix(package + ".") for n in ast.walk(tree) for i in _imported(n)}
        graph[name] = (deps & names) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` as [a, b, ..., a], or [] when it has none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return []
        for dep in sorted(graph[node]):
            found = visit(dep, path + [node])
            if found:
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return []


def test_unlearn_has_no_function_level_imports():
    offenders = [h for p in sorted(UNLEARN.glob("*.py")) for h in hidden_imports(p)]
    assert not offenders, offenders


def test_unlearn_modules_import_each_other_without_a_cycle():
    graph = module_graph(UNLEARN, "medunlearn.unlearn")
    assert {"types", "streams", "controller", "base"} <= set(graph)
    assert not find_cycle(graph), find_cycle(graph)
    assert not graph["types"] - {"criteria"}  # the method-facing types sit at the bottom


def test_the_checks_see_a_hidden_import_and_a_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from medunlearn.pkg.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from medunlearn.pkg import a\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import medunlearn.pkg.a\n")
    assert hidden_imports(tmp_path / "b.py") == ["b.py:2 medunlearn.pkg", "b.py:2 medunlearn.pkg.a"]
    assert hidden_imports(tmp_path / "c.py") == ["c.py:3 medunlearn.pkg.a"]
    graph = module_graph(tmp_path, "medunlearn.pkg")
    assert graph == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
