"""The public Python API: `medunlearn.train / forget / merge / evaluate / report / adopt`, imported lazily."""
from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import medunlearn

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["train", "forget", "merge", "evaluate", "report"]


@pytest.mark.parametrize("name", STEPS)
def test_each_step_resolves_to_its_workflow_function_and_has_a_docstring(name):
    entry = getattr(medunlearn, name)
    module_name, attr = medunlearn.ENTRY_POINTS[name]
    target = getattr(importlib.import_module(module_name), attr)
    assert callable(entry) and name in medunlearn.__all__
    assert entry.__doc__ == target.__doc__ and len(entry.__doc__.strip()) > 20
    assert inspect.signature(entry) == inspect.signature(target)


def test_adopt_resolves_or_says_clearly_it_is_missing():
    name = medunlearn.ENTRY_POINTS["adopt"][0]
    if importlib.util.find_spec(name) is not None:
        assert medunlearn.adopt.__doc__.strip()
        return
    with pytest.raises(ImportError, match="steps_adopt"):
        medunlearn.adopt("src", cohort="cohort.csv", out="base/")


def test_a_step_calls_through_with_its_arguments(monkeypatch):
    import medunlearn.workflow.steps_report as steps_report

    seen = {}
    monkeypatch.setattr(steps_report, "report", lambda *a, **k: seen.update(args=a, kwargs=k) or "done")
    assert medunlearn.report("run/", out="rep/") == "done"
    assert seen == {"args": ("run/",), "kwargs": {"out": "rep/"}}


def test_subpackages_of_the_same_name_stay_reachable():
    import medunlearn.merge.policies as policies  # import-as walks medunlearn.merge by attribute
    from medunlearn.merge import MERGES

    assert medunlearn.merge.MERGES is MERGES
    assert medunlearn.merge.policies is policies
    assert callable(medunlearn.merge)  # still the step after its sub-package was imported


def test_only_the_names_that_share_a_package_forward_to_one():
    for name in medunlearn.ENTRY_POINTS:
        has_package = (ROOT / "medunlearn" / name / "__init__.py").is_file()
        assert has_package == (name in medunlearn.SHARES_A_PACKAGE), name
    from medunlearn.selection.parse import build_rule  # forget rules live in `selection`, not under `forget`

    assert build_rule(device="ScannerX").describe()
    with pytest.raises(AttributeError, match="is a function"):
        medunlearn.forget.parse  # noqa: B018


def test_import_medunlearn_loads_nothing_heavy():
    code = ("import sys, medunlearn; heavy = [m for m in ('torch', 'monai', 'pandas', 'numpy', 'typer') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_package_ships_its_py_typed_marker():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    assert (ROOT / "medunlearn" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in data["tool"]["setuptools"]["package-data"]["medunlearn"]


def test_the_readme_names_every_registered_method_and_autos_chains():
    import re

    from medunlearn.merge import MERGES
    from medunlearn.unlearn import METHODS
    from medunlearn.workflow.auto_method import CHAINS

    raw = (ROOT / "README.md").read_text(encoding="utf-8")
    text = " ".join(raw.split())
    listed = re.search(r"Every registered method \(`medunlearn methods`\): (.*?)\. Merge methods: (.*?)\.", text)
    assert listed, "README lost its list of registered methods"
    assert sorted(listed.group(1).split(", ")) == METHODS.names()
    assert sorted(listed.group(2).split(", ")) == MERGES.names()
    for kind, row_start in (("domain", "| a device, site or outlier group |"), ("class", "| a class withdrawal |")):
        row = next((line for line in raw.splitlines() if line.startswith(row_start)), None)
        assert row, f"README lost the {kind} row of 'which method for which policy'"
        named = re.findall(r"`(\w+)", row.split("|")[2])
        assert named == [m for m, _ in CHAINS[kind]], f"README's {kind} chain is not auto's"
