"""Tiny checkpoints for the safety tests: a base and two unlearned runs that record real forget rules."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medunlearn.models.checkpoint import model_sha256, save_checkpoint
from medunlearn.models.zoo import create_model
from medunlearn.selection.rules import build_rule

CLASSES = ["a", "b", "c"]


def tiny_model(seed: int = 0, classes: int = 3, width: int = 4):
    torch.manual_seed(seed)
    return create_model("small_cnn", classes, 1, 16, width=width)


@pytest.fixture(autouse=True)
def _crash_logs_in_tmp(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.setenv("MEDUNLEARN_LOG_DIR", str(tmp_path_factory.mktemp("crashlogs")))


@pytest.fixture
def runs(tmp_path: Path) -> dict:
    base = tiny_model()
    save_checkpoint(tmp_path / "base", base, {"kind": "base", "class_names": CLASSES, "synthetic": True,
                                              "split": {"seed": 0, "fractions": [0.6, 0.2, 0.2], "train_hash": "t" * 64}})
    sha = model_sha256(tmp_path / "base")
    out = []
    for i, device in enumerate(("ScannerX", "ScannerY"), start=1):
        m = tiny_model()
        with torch.no_grad():
            m.head.bias += float(i)
        rule = build_rule(device=[device])
        save_checkpoint(tmp_path / f"run{i}", m, {"kind": "unlearned", "class_names": CLASSES, "base_sha256": sha,
                                                  "rule": rule.to_dict(), "rule_text": rule.describe(),
                                                  "method": "psg", "goal": "suppression", "synthetic": True})
        out.append(tmp_path / f"run{i}")
    return {"root": tmp_path, "base": tmp_path / "base", "runs": out}
