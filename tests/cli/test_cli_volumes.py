"""CLI: `cohort synth --3d`, `cohort index --volumes`, `retrain`, and the 3D/2D mismatch error."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from medunlearn.cli.main import app

runner = CliRunner()


def test_synth_3d_index_volumes_and_retrain(tmp_path):
    arc, cohort = tmp_path / "arc", tmp_path / "cohort.csv"
    res = runner.invoke(app, ["cohort", "synth", str(arc), "--3d", "--patients", "9", "--image-size", "16"])
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC" in res.output and "volumes" in res.output
    res = runner.invoke(app, ["cohort", "index", str(arc), "--labels", str(arc / "labels.csv"), "--volumes",
                              "--out", str(cohort), "--salt", "test-salt"])
    assert res.exit_code == 0, res.output
    assert "volumes" in res.output
    res = runner.invoke(app, ["retrain", "--cohort", str(cohort), "--out", str(tmp_path / "re"), "--epochs", "1",
                              "--batch-size", "8", "--image-size", "16", "--model", "small_cnn", "--device", "ScannerX"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "re" / "meta.json").read_text())
    assert meta["kind"] == "retrain" and meta["spatial_dims"] == 3 and meta["config"]["exclude_forget"] is True
    res = runner.invoke(app, ["retrain", "--cohort", str(cohort), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "forget rule" in res.output
    res = runner.invoke(app, ["train", "--cohort", str(cohort), "--out", str(tmp_path / "y"), "--spatial-dims", "4"])
    assert res.exit_code == 2 and "spatial dims 2" in res.output
