"""Issue 15 item 9: each message says what is wrong with the input, with a line number where there is one."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medunlearn.cli.main import app
from medunlearn.configio import load_yaml_mapping
from medunlearn.data.datasets import short_reason
from medunlearn.errors import ConfigError
from medunlearn.report.render import to_markdown
from medunlearn.selection.rules import load_rule_file

runner = CliRunner()


def test_yaml_syntax_error_names_the_line_not_tags(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text("any:\n  - device: ScannerX\n  - site: [Site A\n")
    with pytest.raises(ConfigError) as err:
        load_rule_file(f)
    assert "line " in str(err.value) and "!!python" not in str(err.value)
    with pytest.raises(ConfigError, match="line 3"):
        load_yaml_mapping(f)
    evil = tmp_path / "evil.yaml"
    evil.write_text("device: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="tags such as"):
        load_rule_file(evil)


def test_a_file_given_as_model_is_called_a_file(tmp_path: Path, runs) -> None:
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04K\x01.")
    res = runner.invoke(app, ["export-bundle", str(tmp_path / "evil.pt"), str(tmp_path / "b")])
    assert res.exit_code == 2 and "a file" in res.output and "does not exist" not in res.output
    from medunlearn.errors import DataError
    from medunlearn.fileio import require_dir

    with pytest.raises(DataError, match="a file"):
        require_dir(tmp_path / "evil.pt", "a base checkpoint")


def test_dry_run_reports_a_bad_rule_before_an_existing_output(tmp_path: Path) -> None:
    root = tmp_path
    assert runner.invoke(app, ["cohort", "synth", str(root / "a"), "--patients", "8", "--image-size", "16"]).exit_code == 0
    res = runner.invoke(app, ["cohort", "index", str(root / "a"), "--labels", str(root / "a" / "labels.csv"),
                              "--out", str(root / "c.csv")])
    assert res.exit_code == 0, res.output
    (root / "split.json").write_text("{}")
    res = runner.invoke(app, ["forget", "--cohort", str(root / "c.csv"), "--device", "ScanerX", "--dry-run",
                              "--out", str(root)])
    assert res.exit_code == 2 and "ScanerX" in res.output and "already exists" not in res.output


def test_decode_reasons_drop_paths_and_never_cut_mid_word() -> None:
    exc = RuntimeError("cannot find a suitable reader for file: /archive/MRN-123456_DOE/IM1.dcm " + "word " * 60)
    text = short_reason(exc, "/archive/MRN-123456_DOE/IM1.dcm")
    assert "MRN" not in text and "<file>" in text and text.endswith("word ...")


def test_markdown_report_shows_html_as_text() -> None:
    sections = [{"title": "S", "blocks": [{"type": "p", "text": "<script>alert(1)</script>"},
                                          {"type": "kv", "title": "T", "rows": [["rule", "<img src=x onerror=y>"]]}]}]
    md = to_markdown("t", "s", sections, synthetic=False)
    assert "<script>" not in md and "<img" not in md and "&lt;script&gt;" in md
