"""Issue 15 item 1: no command writes or exports a model with non-finite weights or outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from medunlearn.cli.main import app
from medunlearn.errors import CheckpointError, DivergenceError
from medunlearn.models.bundle import export_bundle
from medunlearn.models.checkpoint import load_checkpoint, save_checkpoint
from medunlearn.models.finite import check_finite_outputs, nonfinite_tensors
from tests.safety.conftest import CLASSES, tiny_model

runner = CliRunner()


def _one_error_line(res) -> None:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    assert "Traceback" not in res.output


def test_merge_with_overflowing_weights_exits_2_and_writes_nothing(runs) -> None:
    out = runs["root"] / "m8"
    res = runner.invoke(app, ["merge", *map(str, runs["runs"]), "--base", str(runs["base"]), "--weights",
                              "1e308,1e308", "--method", "linear", "--out", str(out)])
    assert res.exit_code == 2
    _one_error_line(res)
    assert "finite" in res.output
    assert not out.exists()
    assert not [p for p in runs["root"].iterdir() if p.name.startswith(".m8")]  # no staging left


def test_save_checkpoint_refuses_nan_weights(tmp_path: Path) -> None:
    m = tiny_model()
    with torch.no_grad():
        m.head.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="head.weight"):
        save_checkpoint(tmp_path / "c", m, {"kind": "base", "class_names": CLASSES})
    assert not (tmp_path / "c").exists()


def _poison(ckpt: Path) -> None:
    state = load_file(str(ckpt / "model.safetensors"))
    state["head.bias"] = torch.full_like(state["head.bias"], float("inf"))
    save_file(state, str(ckpt / "model.safetensors"))


def test_export_and_evaluate_refuse_a_nan_checkpoint_on_disk(runs) -> None:
    _poison(runs["runs"][0])
    with pytest.raises(CheckpointError, match="finite"):
        load_checkpoint(runs["runs"][0])
    res = runner.invoke(app, ["export-bundle", str(runs["runs"][0]), str(runs["root"] / "bundle")])
    assert res.exit_code == 2
    _one_error_line(res)
    assert not (runs["root"] / "bundle").exists()


def test_finite_weights_with_overflowing_outputs_are_refused(tmp_path: Path) -> None:
    m = tiny_model()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(1e30)  # finite, but the products overflow float32
    assert nonfinite_tensors(m.state_dict()) == []
    with pytest.raises(DivergenceError, match="outputs"):
        check_finite_outputs(m, "the model")
    save_checkpoint(tmp_path / "c", m, {"kind": "base", "class_names": CLASSES})
    with pytest.raises(DivergenceError):
        export_bundle(tmp_path / "c", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_finite_model_still_exports(runs) -> None:
    path = export_bundle(runs["runs"][0], runs["root"] / "bundle")
    assert json.loads((path / "configs" / "metadata.json").read_text())["name"]
