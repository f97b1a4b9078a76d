"""Execute notebooks/runbook.ipynb end to end (tiny synthetic cohort) and check what it writes."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "runbook.ipynb"

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("ipykernel", "nbclient", "nbformat")),
    reason="executing the runbook needs ipykernel, nbclient and nbformat (pip install 'medunlearn[test]')")


def test_runbook_is_clean_and_defines_nothing_reusable():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 6
    assert all(not c.outputs and c.execution_count is None for c in code), "commit the notebook with outputs cleared"
    source = "\n".join(c.source for c in code)
    assert "\ndef " not in f"\n{source}" and "\nclass " not in f"\n{source}"
    assert "MEDUNLEARN_RUNBOOK_OUT" in source
    assert any("SYNTHETIC" in c.source for c in nb.cells if c.cell_type == "markdown")


def test_runbook_executes_and_writes_report(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    out = tmp_path / "runbook_out"
    # The kernel inherits this process's environment: point outputs into tmp_path and keep it to one thread.
    monkeypatch.setenv("MEDUNLEARN_RUNBOOK_OUT", str(out))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=180,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    for name in ("report.html", "report.md", "report.json"):
        assert (out / "report" / name).stat().st_size > 0
    merged = out / "merged"
    assert (merged / "model.safetensors").stat().st_size > 0
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["synthetic"] is True
    metrics = json.loads((merged / "metrics.json").read_text())
    assert sorted(metrics["policies"]) == ["device = ScannerX", "site = Synthetic General Hospital"]
    for run in ("device", "famr_site"):
        assert (out / "runs" / run / "metrics.json").is_file()
    assert json.loads((out / "runs" / "famr_site" / "metrics.json").read_text())["goal"] == "equivalence"
    # Nothing leaked into the working directory the kernel started in (all outputs under the env folder).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runbook_out"]
    # The notebook really ran: the last cell shows the headline table.
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert any("text/html" in o.get("data", {}) or "text/plain" in o.get("data", {}) for o in last.outputs)
