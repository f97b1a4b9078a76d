"""merge_runs on real checkpoints: refusal of foreign runs, merge_info, saving; YAML validation."""
from __future__ import annotations

import pytest
import torch

from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.merge import load_merge_config, merge_from_config, merge_runs, save_merged
from medunlearn.merge.runner import load_sources
from medunlearn.models.checkpoint import load_checkpoint, model_sha256, save_checkpoint
from medunlearn.models.zoo import create_model


def _save(path, model, **meta):
    return save_checkpoint(path, model, {"class_names": ["a", "b", "c"], **meta})


@pytest.fixture
def ckpts(tmp_path):
    torch.manual_seed(0)
    base = create_model("small_cnn", 3, 1, 16, width=4)
    _save(tmp_path / "base", base, kind="base", synthetic=True)
    sha = model_sha256(tmp_path / "base")
    runs = []
    for i in (1, 2):
        m = create_model("small_cnn", 3, 1, 16, width=4)
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            m.head.bias += float(i)
        _save(tmp_path / f"run{i}", m, kind="unlearned", base_sha256=sha, rule=f"device = Scanner{i}",
              config={"method": "psg", "goal": "suppression"})
        runs.append(tmp_path / f"run{i}")
    return tmp_path, base, runs


def test_merge_runs_linear_and_save(ckpts, tmp_path):
    root, base, runs = ckpts
    model, info = merge_runs(runs, root / "base", "linear", weights=[1.0, 3.0])
    torch.testing.assert_close(model.head.bias, base.head.bias + 1.75)
    assert [r["rule"] for r in info["runs"]] == ["device = Scanner1", "device = Scanner2"]
    assert info["runs"][0]["method"] == "psg" and info["synthetic"] is True
    assert info["runs"][0]["sha256"] == model_sha256(runs[0]) and info["base"]["sha256"] == model_sha256(root / "base")
    save_merged(tmp_path / "merged", model, info)
    loaded, meta = load_checkpoint(tmp_path / "merged")
    assert meta["kind"] == "merged" and meta["base_sha256"] == info["base"]["sha256"]
    assert meta["merge"]["weights"] == [1.0, 3.0] and "_base_meta" not in meta["merge"]
    torch.testing.assert_close(loaded.head.bias, model.head.bias)


def test_loaded_sources_serve_many_merges_unchanged(ckpts):
    root, base, runs = ckpts
    sources = load_sources(runs, root / "base")
    before = [{k: v.clone() for k, v in sd.items()} for sd in sources.runs]
    for method in ("linear", "task_arithmetic", "ties"):
        fresh, _ = merge_runs(runs, root / "base", method)
        reused, info = merge_runs(runs, root / "base", method, sources=sources)
        for k, v in fresh.state_dict().items():
            torch.testing.assert_close(reused.state_dict()[k], v)
        assert info["runs"][1]["sha256"] == model_sha256(runs[1])
    for sd, old in zip(sources.runs, before):  # no merge altered what the next one reads
        assert all(torch.equal(sd[k], old[k]) for k in old)


def test_refuses_run_from_other_base(ckpts):
    root, base, runs = ckpts
    other = create_model("small_cnn", 3, 1, 16, width=4)
    _save(root / "foreign", other, kind="unlearned", base_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="base sha256"):
        merge_runs([runs[0], root / "foreign"], root / "base", "linear")


def test_refuses_other_architecture_and_classes(ckpts):
    root, base, runs = ckpts
    sha = model_sha256(root / "base")
    _save(root / "wide", create_model("small_cnn", 3, 1, 16, width=8), kind="unlearned", base_sha256=sha)
    with pytest.raises(CheckpointError, match="architecture"):
        merge_runs([runs[0], root / "wide"], root / "base", "linear")
    m = create_model("small_cnn", 3, 1, 16, width=4)
    m.load_state_dict(base.state_dict())
    save_checkpoint(root / "names", m, {"class_names": ["x", "y", "z"], "kind": "unlearned", "base_sha256": sha})
    with pytest.raises(CheckpointError, match="class names"):
        merge_runs([root / "names"], root / "base", "linear")


def test_merge_from_yaml(ckpts, tmp_path, monkeypatch):
    root, base, runs = ckpts
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"merge_method: task_arithmetic\nbase_model: {root / 'base'}\nmodels:\n"
                   f"  - model: {runs[0]}\n    parameters: {{weight: 0.5}}\n  - model: {runs[1]}\n"
                   f"    parameters: {{weight: 0.5}}\nparameters: {{scaling: 2.0}}\n")
    model, info = merge_from_config(cfg)
    torch.testing.assert_close(model.head.bias, base.head.bias + 3.0)  # 2·(0.5·1 + 0.5·2)
    assert info["spec"]["merge_method"] == "task_arithmetic" and info["config"]["scaling"] == 2.0


@pytest.mark.parametrize("text,match", [
    ("merge_method: linaer\nbase_model: b\nmodels: [a]\n", 'Did you mean "linear"'),
    ("merge_method: linear\nbase_model: b\nmodels: [a]\nparamters: {}\n", 'Did you mean "parameters"'),
    ("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {wieght: 1}}]\n", 'Did you mean "weight"'),
    ("merge_method: linear\nbase_model: b\nmodels: [{model: a, parameters: {density: 0.5}}]\n", "density"),
    ("merge_method: ties\nbase_model: b\nmodels: [a]\nparameters: {density: 2.0}\n", "density in"),
    ("merge_method: ties\nbase_model: b\nmodels: [a]\nparameters: {scaling: .nan}\n", "finite"),
    ("merge_method: linear\nbase_model: b\nmodels: [{model: a, parameters: {weight: yes}}]\n", "finite number"),
    ("merge_method: linear\nbase_model: b\nmodels: []\n", "non-empty"),
    ("merge_method: linear\nmodels: [a]\n", "base_model"),
    ("merge_method: linear\nmerge_method: ties\nbase_model: b\nmodels: [a]\n", "twice"),
    ("!!python/object/apply:os.system ['echo pwned']\n", "could not be read"),
    ("merge_method: !!python/name:os.system\nbase_model: b\nmodels: [a]\n", "could not be read"),
    ("- just\n- a list\n", "mapping"),
    ("a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n", "merge config keys"),
    ("merge_method: linear\nbase_model: b\nmodels: [a]\nseed: -1\n", "seed"),
])
def test_hostile_and_invalid_yaml(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_merge_config(p)


def test_yaml_size_limit_and_missing(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("merge_method: linear\n# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="bytes"):
        load_merge_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_merge_config(tmp_path / "nope.yaml")


def test_shipped_configs_are_valid():
    from pathlib import Path

    from medunlearn.merge import MERGES
    files = sorted(Path(__file__).resolve().parents[2].joinpath("configs", "merge").glob("*.yaml"))
    assert sorted(f.stem for f in files) == MERGES.names()
    for f in files:
        assert load_merge_config(f).method == f.stem
