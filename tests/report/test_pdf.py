"""report.pdf: printed by headless Chromium when one is installed, skipped with a note otherwise."""
from __future__ import annotations

import json

import pytest

from medunlearn.report import render_report
from medunlearn.report.pdf import find_browser
from tests.report.test_verdict import ACCEPTANCE_MET, write_run


def test_no_browser_skips_the_pdf_with_a_note_and_removes_a_stale_one(tmp_path, monkeypatch):
    d = write_run(tmp_path / "run", ACCEPTANCE_MET)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.pdf").write_bytes(b"%PDF-old")
    monkeypatch.setenv("MEDUNLEARN_CHROMIUM", str(tmp_path / "no-such-browser"))
    paths = render_report(d, out, overwrite=True, pdf=True)
    assert "pdf" not in paths and not (out / "report.pdf").exists()
    assert "no Chromium" in json.loads(paths["json"].read_text())["pdf"]["skipped"]


@pytest.mark.skipif(find_browser() is None, reason="no Chromium / Chrome installed")
def test_pdf_is_printed_from_the_html(tmp_path):
    paths = render_report(write_run(tmp_path / "run", ACCEPTANCE_MET), tmp_path / "out", pdf=True)
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-" and paths["pdf"].stat().st_size > 10_000
    assert json.loads(paths["json"].read_text())["pdf"] == {"file": "report.pdf"}
    assert not list((tmp_path / "out").glob(".report-*"))  # no temp file left behind
