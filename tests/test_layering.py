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
