"""Issue 15 item 7: one line (never a traceback) for every failure; sizes read from files are bounded."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

import medunlearn.models.bundle as bundle
from medunlearn.cli.main import app
from medunlearn.errors import CheckpointError, DataError
from medunlearn.fileio import read_json
from medunlearn.models.checkpoint import load_checkpoint

runner = CliRunner()


def _boom(*args, **kwargs):
    raise IndexError("list index out of range")


def test_unexpected_error_is_one_line_with_a_private_log(tmp_path: Path, monkeypatch, runs) -> None:
    monkeypatch.setenv("MEDUNLEARN_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(bundle, "export_bundle", _boom)
    res = runner.invoke(app, ["export-bundle", str(runs["base"]), str(tmp_path / "b")])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "IndexError" in lines[0] and "--debug" in lines[0], res.output
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    assert "Traceback" in logs[0].read_text() and "_boom" in logs[0].read_text()
    assert stat.S_IMODE(os.stat(logs[0]).st_mode) == 0o600


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch, runs) -> None:
    monkeypatch.setenv("MEDUNLEARN_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(bundle, "export_bundle", _boom)
    res = runner.invoke(app, ["--debug", "export-bundle", str(runs["base"]), str(tmp_path / "b")])
    assert isinstance(res.exception, IndexError)  # re-raised for the traceback, not swallowed
    assert not (tmp_path / "logs").exists()


def test_unwritable_output_is_one_line_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["cohort", "synth", "/proc/medunlearn-nope/xx", "--patients", "4"])
    assert res.exit_code == 2
    assert res.output.strip().startswith("Error:") and len(res.output.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_deeply_nested_json_is_a_data_error(tmp_path: Path) -> None:
    f = tmp_path / "metrics.json"
    f.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(DataError, match="nested"):
        read_json(f)


def test_absurd_sizes_in_meta_are_refused_before_allocation(runs) -> None:
    meta_path = runs["base"] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["architecture"]["kwargs"]["num_classes"] = 10 ** 12
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="num_classes"):
        load_checkpoint(runs["base"])
    meta["architecture"]["kwargs"]["num_classes"] = 3
    meta["architecture"]["kwargs"]["width"] = 100_000  # within option bounds, but billions of parameters
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="parameters"):
        load_checkpoint(runs["base"])
