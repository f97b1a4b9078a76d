from __future__ import annotations

import json

import pytest

import medunlearn.benchmarking.runner as runner
from medunlearn.benchmarking.runner import run_bench
from medunlearn.errors import ConfigError, OutputExistsError


@pytest.fixture
def spy(monkeypatch):
    calls: list[tuple[str, str, int]] = []
    real = runner.unlearn_cell

    def counting(method, cfg, original, data, seed, goal):
        calls.append((method, goal, seed))
        return real(method, cfg, original, data, seed, goal)

    monkeypatch.setattr(runner, "unlearn_cell", counting)
    return calls


def _run(out, fake, cfg, **kw):
    return run_bench("fashion-mnist", methods=["finetune", "neggrad"], seeds=2, out=out, data_dir=fake,
                     scenarios=["class"], subset=120, config=cfg, **kw)


def test_resume_recomputes_only_missing_cell(tmp_path, fake_fashion, tiny_config, spy):
    out = tmp_path / "bench"
    _run(out, fake_fashion, tiny_config)
    cells = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert cells == ["class__finetune__suppression__s0.json", "class__finetune__suppression__s1.json",
                     "class__neggrad__suppression__s0.json", "class__neggrad__suppression__s1.json"]
    assert len(spy) == 4
    (out / "cells" / "class__neggrad__suppression__s1.json").unlink()
    _run(out, fake_fashion, tiny_config)
    assert spy[4:] == [("neggrad", "suppression", 1)]


def test_changed_hyperparameter_invalidates_only_that_method(tmp_path, fake_fashion, tiny_config, spy):
    out = tmp_path / "bench"
    _run(out, fake_fashion, tiny_config)
    tiny_config["methods"]["finetune"]["lr"] = 0.001
    _run(out, fake_fashion, tiny_config)
    assert sorted(spy[4:]) == [("finetune", "suppression", 0), ("finetune", "suppression", 1)]
    cell = json.loads((out / "cells" / "class__finetune__suppression__s0.json").read_text())
    assert cell["config"]["lr"] == 0.001


def test_models_are_cached_and_reused(tmp_path, fake_fashion, tiny_config, monkeypatch):
    out = tmp_path / "bench"
    _run(out, fake_fashion, tiny_config)
    cached = sorted(p.name.split("-")[0] for p in (out / "cache").iterdir())
    assert cached == ["original", "retrain"]
    import medunlearn.models.train as train_mod

    def boom(*a, **k):
        raise AssertionError("a cached model was retrained")

    monkeypatch.setattr(train_mod, "train_model", boom)
    res = _run(out, fake_fashion, tiny_config, overwrite=True)  # cells recomputed, models loaded from cache
    assert res["scenarios"]["class"]["retrain"]["wall_time_s"] > 0


def test_results_markdown_and_json(tmp_path, fake_fashion, tiny_config):
    out = tmp_path / "bench"
    res = _run(out, fake_fashion, tiny_config, command="medunlearn bench fashion-mnist --test")
    md = (out / "results.md").read_text()
    assert "## class — goal: suppression" in md
    assert ("| method | criteria met | FA | RA | TA-retain | TA-forget | conf test-forget | conf val-retain (d) | "
            "conf test-retain | routed test-retain | MIA-eff | Avg-Gap | time s | RTE | RTE compute |") in md
    assert "medunlearn bench fashion-mnist --test" in md and "CPUs" in md
    assert md.count("| finetune |") == 1 and "| retrain |" in md and " ± " in md  # two seeds: mean ± std
    rows = res["scenarios"]["class"]["goals"]["suppression"]
    assert rows["finetune"]["avg_gap"]["n"] == 2 and rows["finetune"]["rte"]["mean"] > 0
    # compute RTE: the retrain's image passes over the method's, from counters, never from clocks
    assert rows["finetune"]["rte_compute"]["n"] == 2 and rows["finetune"]["rte_compute"]["mean"] > 0
    assert res["scenarios"]["class"]["retrain"]["cost"]["total"]["grad"] > 0
    # class forgetting: the retrain reference never predicts class 0
    assert res["scenarios"]["class"]["retrain"]["forget_acc"] == 0.0
    assert (out / "avg_gap_vs_rte.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "results.json").read_text())
    n_forget = saved["scenarios"]["class"]["counts"]["train_forget"]
    assert n_forget > 0 and f"train forget {n_forget}" in md
    assert saved["machine"]["torch"].startswith("2.")


def test_refuses_other_suite_folder(tmp_path, fake_fashion, tiny_config):
    out = tmp_path / "bench"
    (out).mkdir()
    (out / "bench.json").write_text(json.dumps({"suite": "device"}))
    with pytest.raises(OutputExistsError, match="suite 'device'"):
        _run(out, fake_fashion, tiny_config)


def test_unknown_names_suggest(tmp_path, fake_fashion, tiny_config):
    with pytest.raises(ConfigError, match='Did you mean "psg"'):
        run_bench("fashion-mnist", methods=["pgs"], out=tmp_path / "b", data_dir=fake_fashion, config=tiny_config)
    with pytest.raises(ConfigError, match='Did you mean "fashion-mnist"'):
        run_bench("fashion-mnst", out=tmp_path / "b")
    with pytest.raises(ConfigError, match='Did you mean "random"'):
        run_bench("fashion-mnist", scenarios=["randm"], out=tmp_path / "b", config=tiny_config)


def test_scenario_splits(fake_fashion):
    from medunlearn.benchmarking.suites import SuiteOptions, fashion_prepare, fashion_split

    opts = SuiteOptions(data_dir=fake_fashion)
    raw = fashion_prepare(opts)
    assert len(raw["val"]) == 20 and len(raw["train"]) == 220 and len(raw["test"]) == 60
    cls = fashion_split(raw, "class", opts)
    assert set(cls.train_forget.labels.tolist()) == {0} and 0 not in cls.train_retain.labels.tolist()
    sel = fashion_split(raw, "selective", opts)
    n0 = int((raw["train"].labels == 0).sum())
    assert len(sel.train_forget) == round(0.1 * n0) and len(sel.test_forget) == int((raw["test"].labels == 0).sum())
    rnd = fashion_split(raw, "random", opts)
    assert len(rnd.train_forget) == 22 and len(rnd.test_forget) == 6
    assert len(rnd.train_forget) + len(rnd.train_retain) == 220


def test_override_layers_and_shipped_configs_load():
    from medunlearn.benchmarking.runner import method_overrides, resolve_settings

    cfg = {"methods": {"psg": {"lr": 1.0, "epochs": 2.0}}, "goals": {"equivalence": {"psg": {"lr": 2.0}}},
           "scenarios": {"class": {"psg": {"lr": 3.0}}}}
    st = resolve_settings("fashion-mnist", ["psg"], 1, None, False, None, None, cfg)
    assert method_overrides(st, "psg", "random", "suppression") == {"lr": 1.0, "epochs": 2.0}
    assert method_overrides(st, "psg", "random", "equivalence") == {"lr": 2.0, "epochs": 2.0}
    assert method_overrides(st, "psg", "class", "equivalence") == {"lr": 3.0, "epochs": 2.0}
    for suite in ("fashion-mnist", "device", "site", "outlier"):  # the shipped YAML resolves and validates
        st = resolve_settings(suite, None, 1, None, True, None, None, None)
        assert st.train["model"] == "allcnn" and st.methods


def test_bad_override_fails_before_training(tmp_path, fake_fashion, tiny_config, monkeypatch):
    import medunlearn.models.train as train_mod

    monkeypatch.setattr(train_mod, "train_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    tiny_config["methods"]["finetune"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match='Did you mean "lr"'):
        _run(tmp_path / "bench", fake_fashion, tiny_config)


def test_scenarios_share_one_cached_original(tmp_path, fake_fashion, tiny_config):
    out = tmp_path / "bench"
    run_bench("fashion-mnist", methods=["finetune"], out=out, data_dir=fake_fashion, subset=120,
              scenarios=["class", "random"], config=tiny_config)
    kinds = sorted(p.name.split("-")[0] for p in (out / "cache").iterdir())
    assert kinds == ["original", "retrain", "retrain"]
