"""The study on the tiny device-forgetting problem: trial 0 = the starting config, criteria as constraints,
the best trial feasible, seeded reproducibility, pruning and the time budget, and no test row read."""
from __future__ import annotations

import pytest

from medunlearn.errors import ConfigError
from medunlearn.runtime import RunContext
from medunlearn.tune.monitor import StudyClock, TrialMonitor, TrialStopped
from medunlearn.tune.study import TuneSettings, objective_parts, run_study
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.base import apply_overrides
from tests.tune.conftest import tripwired

PSG = METHODS.get("psg")
FAST = {"epochs": 2.0, "batch_size": 16, "max_eval": 64}  # a few steps per trial on the tiny split


def _study(trained_tiny, n_trials=3, timeout_s=300.0, seed=0, **pins):
    model, split = trained_tiny
    cfg = apply_overrides(PSG.Config(), {**FAST, **pins})
    space = {k: p for k, p in PSG.search_space.items() if k != "batch_size"}
    return run_study(PSG, cfg, space, model, tripwired(split),
                     TuneSettings(n_trials=n_trials, timeout_s=timeout_s, seed=seed))


def test_study_runs_trial_zero_as_the_starting_config_and_picks_a_feasible_best(trained_tiny) -> None:
    res = _study(trained_tiny, retain_drop=100.0, forget_tol=100.0, confidence_margin=100.0)  # all feasible
    assert [r["number"] for r in res.records] == [0, 1, 2]
    start = PSG.Config()
    assert res.records[0]["params"] == {k: getattr(start, k) for k in ("lr", "phi", "epsilon", "gamma", "target")}
    assert res.records[0]["speed"] == pytest.approx(1.0)  # trial 0 is the speed reference
    for rec, trial in zip(res.records, res.study.trials):
        assert trial.constraints == {"criteria_violation": rec["violation"]}
        assert rec["feasible"] and rec["violation"] == 0.0
        assert rec["objective"] == pytest.approx(trial.value)
    assert res.best["objective"] == min(r["objective"] for r in res.records)
    assert res.best_config.lr == pytest.approx(res.best["params"]["lr"]) and res.best_config.epochs == 2.0
    assert res.study.best_trial.number == res.best["number"]


def test_criteria_are_constraints_not_a_penalty(trained_tiny) -> None:
    # forget_tol=0 around a forget target nobody reaches exactly: no trial can meet the criteria
    res = _study(trained_tiny, n_trials=2, forget_tol=0.0, forget_target=7.0)
    assert res.best is None and res.best_config is None
    for rec, trial in zip(res.records, res.study.trials):
        assert not rec["feasible"] and rec["violation"] > 0
        assert trial.constraints["criteria_violation"] == rec["violation"]
        assert rec["objective"] == pytest.approx(rec["speed"] + rec["retain_term"])  # no penalty in the value


def test_same_seed_same_trials_other_seed_other_trials(trained_tiny) -> None:
    a = _study(trained_tiny, n_trials=3, seed=5)
    b = _study(trained_tiny, n_trials=3, seed=5)
    c = _study(trained_tiny, n_trials=3, seed=6)
    assert [r["params"] for r in a.records] == [r["params"] for r in b.records]
    assert [r["params"] for r in a.records][1:] != [r["params"] for r in c.records][1:]


def test_time_budget_stops_the_trial_in_flight(trained_tiny) -> None:
    res = _study(trained_tiny, n_trials=5, timeout_s=1e-3)
    assert len(res.records) == 1 and res.records[0]["state"] == "time budget"
    assert res.best is None


def test_objective_parts() -> None:
    acc = {"criteria": {"retain_original": 98.0, "retain_drop": 2.0},
           "checks": [{"name": "retain_accuracy", "value": 97.0}]}
    parts = objective_parts(wall_s=3.0, ref_s=6.0, acceptance=acc, retain_weight=2.0)
    assert parts == {"speed": 0.5, "retain_term": 0.5, "objective": 1.5}


def test_bad_settings_are_refused(trained_tiny) -> None:
    with pytest.raises(ConfigError, match="--trials >= 1"):
        _study(trained_tiny, n_trials=0)
    with pytest.raises(ConfigError, match="time budget > 0"):
        _study(trained_tiny, timeout_s=0)


class FakeTrial:
    def __init__(self, prune_at: int | None) -> None:
        self.reports: list[tuple[float, int]] = []
        self.prune_at = prune_at

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.prune_at is not None and len(self.reports) >= self.prune_at


@pytest.mark.parametrize("prune_at", [None, 2])
def test_monitor_reports_violation_on_a_shared_grid_and_prunes(trained_tiny, prune_at) -> None:
    import time

    model, split = trained_tiny
    cfg = apply_overrides(PSG.Config(), FAST)
    trial = FakeTrial(prune_at)
    clock = StudyClock(deadline=time.monotonic() + 300, every=2)
    monitor = TrialMonitor(trial, clock, cfg, "suppression")
    if prune_at is None:
        out = PSG(cfg).run(model, tripwired(split), RunContext(seed=0), observers=[monitor])
        assert out.acceptance["steps_run"] >= 2
        assert [s for _, s in trial.reports] == list(range(1, out.acceptance["steps_run"] // 2 + 1))
    else:
        with pytest.raises(TrialStopped, match="pruned at step 4"):
            PSG(cfg).run(model, tripwired(split), RunContext(seed=0), observers=[monitor])
        assert monitor.stopped == "pruned" and monitor.step == 4
        assert [s for _, s in trial.reports] == [1, 2]
    assert all(v >= 0 for v, _ in trial.reports)


def test_equivalence_trials_are_judged_by_the_validation_membership_comparison(trained_tiny) -> None:
    model, split = trained_tiny
    cfg = apply_overrides(PSG.Config(), FAST)
    res = run_study(PSG, cfg, {"lr": PSG.search_space["lr"]}, model, tripwired(split),
                    TuneSettings(n_trials=1, timeout_s=300, goal="equivalence"))
    checks = res.records[0]["checks"]
    assert {"membership_accuracy_gap", "membership_loss_auc", "retain_accuracy"} == set(checks)
    assert res.records[0]["acceptance"]["judged_on"] == "validation"


def test_trials_table_columns_never_collide_with_parameters() -> None:
    from medunlearn.tune.output import trials_csv

    recs = [{"number": 0, "state": "complete", "feasible": True, "objective": 1.0, "budget": 40, "wall_s": 2.0,
             "params": {"budget": 5.0, "lr": 0.001}, "checks": {"retain_accuracy": 97.0}}]
    head, row = trials_csv(recs).splitlines()
    cols = head.split(",")
    assert len(cols) == len(set(cols))
    vals = dict(zip(cols, row.split(",")))
    assert vals["step_budget"] == "40" and vals["param_budget"] == "5" and vals["val_retain_accuracy"] == "97"
