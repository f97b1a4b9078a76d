"""`medunlearn report`: prints the decision, --require-pass gates on it, a missing evaluation names the fix."""
from __future__ import annotations

from typer.testing import CliRunner

from medunlearn.cli.main import app
from tests.report.test_verdict import ACCEPTANCE_MET, not_met, write_merge, write_run

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_report_prints_the_decision_and_gates_on_it(tmp_path):
    ok = write_run(tmp_path / "ok", ACCEPTANCE_MET)
    res = invoke("report", ok, "--out", tmp_path / "o1", "--no-pdf", "--require-pass")
    assert res.exit_code == 0 and "Decision: PASS" in res.output
    bad = write_run(tmp_path / "bad", not_met())
    res = invoke("report", bad, "--out", tmp_path / "o2", "--no-pdf")
    assert res.exit_code == 0 and "Decision: FAIL" in res.output  # written; the gate is opt-in
    res = invoke("report", bad, "--out", tmp_path / "o3", "--no-pdf", "--require-pass")
    assert res.exit_code == 3 and (tmp_path / "o3" / "report.json").is_file()
    old = write_run(tmp_path / "old", None)
    res = invoke("report", old, "--out", tmp_path / "o4", "--no-pdf", "--require-pass")
    assert res.exit_code == 3 and "Decision: NOT EVALUATED" in res.output


def test_report_on_a_merge_without_evaluations_names_the_command(tmp_path):
    d = write_merge(tmp_path / "merged", None)
    (d / "metrics.json").unlink()
    res = invoke("report", d, "--no-pdf")
    assert res.exit_code == 2
    assert "Error:" in res.output and "medunlearn merge runs/psg_device runs/psg_site" in res.output
    assert "--cohort" in res.output
