"""`bench --tuned DIR`: a "<method>+tuned" row per tuned YAML, run with that YAML, cached apart from the default row."""
from __future__ import annotations

import json

import pytest

import medunlearn.benchmarking.runner as runner
from medunlearn.benchmarking.runner import run_bench
from medunlearn.errors import ConfigError


def test_tuned_yaml_adds_a_row_run_with_its_config(tmp_path, fake_fashion, tiny_config, monkeypatch):
    calls = []
    real = runner.unlearn_cell

    def spy(method, cfg, original, data, seed, goal):
        calls.append((method, cfg.lr))
        return real(method, cfg, original, data, seed, goal)

    monkeypatch.setattr(runner, "unlearn_cell", spy)
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "finetune.yaml").write_text("# tuned by medunlearn tune\nlr: 0.0013\nepochs: 1.0\n")
    out = tmp_path / "bench"
    run_bench("fashion-mnist", methods=["finetune", "neggrad"], seeds=1, out=out, data_dir=fake_fashion,
              scenarios=["class"], subset=120, config=tiny_config, tuned=tuned)
    cell = json.loads((out / "cells" / "class__finetune+tuned__suppression__s0.json").read_text())
    assert cell["method"] == "finetune+tuned" and cell["config"]["lr"] == 0.0013
    assert ("finetune", 0.0013) in calls and len(calls) == 3  # finetune, neggrad, finetune+tuned
    assert not (out / "cells" / "class__neggrad+tuned__suppression__s0.json").exists()
    md = (out / "results.md").read_text()
    assert "| finetune+tuned |" in md and "medunlearn tune" in md


def test_tuned_folder_without_yaml_is_refused(tmp_path, fake_fashion, tiny_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="tuned YAML"):
        run_bench("fashion-mnist", methods=["finetune"], seeds=1, out=tmp_path / "b", data_dir=fake_fashion,
                  scenarios=["class"], subset=120, config=tiny_config, tuned=tmp_path / "empty")
    assert not (tmp_path / "b").exists()
