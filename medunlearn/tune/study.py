"""The tuning study: Optuna TPE (seeded) over a method's declared search space, validation rows only.

Trial 0 is the configuration the user starts from (Config defaults <- --config <- --set), so the tuned
result is compared with, and can never be worse on validation than, what would have run anyway.

Objective (minimised), for a trial whose run finished:
    wall_s / wall_ref  +  retain_weight · (retain_original − val_retain) / retain_drop
speed relative to the reference run (trial 0, or the first trial that finished), plus the val_retain accuracy
lost, in units of the allowed drop (1 = at the guard). The acceptance criteria are CONSTRAINTS, not a
penalty: each trial sets Optuna's constraint "criteria_violation" (points by which its returned state misses
the criteria, 0 when met; Trial.set_constraint), so TPE ranks every infeasible trial below every feasible
one and the best trial is chosen among feasible trials only. A penalty would have to pick an exchange rate
between a missed criterion and seconds; a constraint needs none.
A run that diverges is recorded as infeasible (violation 100) and the study goes on.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.errors import ConfigError, DivergenceError, MedUnlearnError
from medunlearn.runtime import RunContext
from medunlearn.tune.monitor import StudyClock, TrialMonitor, TrialStopped
from medunlearn.unlearn.base import Unlearner, apply_overrides
from medunlearn.unlearn.space import Choice, Float, Int, Param

DIVERGED = 100.0  # constraint value of a run that diverged (points; any value > 0 marks it infeasible)


@dataclasses.dataclass
class TuneSettings:
    n_trials: int
    timeout_s: float
    seed: int = 0
    goal: str = "suppression"
    retain_weight: float = 1.0  # weight of the retain term against speed in the objective
    device: str | None = None


def check_settings(s: TuneSettings) -> None:
    if s.n_trials < 1:
        raise ConfigError(f"Expected --trials >= 1, but got {s.n_trials}.")
    if not s.timeout_s > 0:
        raise ConfigError(f"Expected a time budget > 0, but got {s.timeout_s}.")
    if not s.retain_weight >= 0 or math.isinf(s.retain_weight):
        raise ConfigError(f"Expected --retain-weight >= 0, but got {s.retain_weight}.")


def suggest(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    """Draw one value per searched field."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        if isinstance(p, Float):
            out[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
        elif isinstance(p, Int):
            out[name] = trial.suggest_int(name, p.low, p.high, step=p.step)
        elif isinstance(p, Choice):
            out[name] = trial.suggest_categorical(name, list(p.options))
    return out


def objective_parts(wall_s: float, ref_s: float, acceptance: dict[str, Any], retain_weight: float) -> dict[str, float]:
    """The objective's two terms from a run's wall time and its acceptance record."""
    crit = acceptance["criteria"]
    retain = next(c["value"] for c in acceptance["checks"] if c["name"] == "retain_accuracy")
    speed = wall_s / max(ref_s, 1e-9)
    retain_term = (crit["retain_original"] - retain) / max(crit["retain_drop"], 0.1)
    return {"speed": speed, "retain_term": retain_term, "objective": speed + retain_weight * retain_term}


def check_values(acceptance: dict[str, Any]) -> dict[str, float]:
    """{check name: value} of the returned state, e.g. forget_accuracy, retain_accuracy."""
    return {c["name"]: c["value"] for c in acceptance.get("checks", [])}


@dataclasses.dataclass
class StudyResult:
    study: Any  # optuna.Study
    records: list[dict[str, Any]]  # one per trial, in trial order (see `_record`)
    best: dict[str, Any] | None  # the best feasible record; None when no trial met the criteria
    best_config: Any | None  # the method Config of the best trial
    reference: dict[str, Any] | None  # trial 0 (the starting configuration)
    wall_s: float
    settings: TuneSettings


def _warm_up(method_cls: type, base_cfg: Any, model: nn.Module, data: SplitData, settings: TuneSettings) -> None:
    """One single-step run before the clock starts, so that one-time costs (lazy imports, first kernels,
    allocator growth) are not charged to trial 0, whose wall time is the speed reference."""
    cfg = apply_overrides(base_cfg, {"epochs": 1e-6}) if hasattr(base_cfg, "epochs") else base_cfg
    try:
        method_cls(cfg).run(model, data, RunContext.create(seed=settings.seed, device=settings.device),
                            goal=settings.goal)
    except MedUnlearnError:  # a failing starting config shows up as trial 0's own result
        pass


def run_study(method_cls: type[Unlearner], base_cfg: Any, space: dict[str, Param], model: nn.Module, data: SplitData,
              settings: TuneSettings, on_trial: Callable[[dict[str, Any], dict[str, Any] | None], None] | None = None
              ) -> StudyResult:
    """Run the study; `data` must already be validation-only (tune.sealed.validation_only)."""
    import optuna

    check_settings(settings)
    _warm_up(method_cls, base_cfg, model, data, settings)
    optuna.logging.disable_default_handler()  # the CLI draws its own progress; trial logs would garble it
    start = time.monotonic()
    clock = StudyClock(deadline=start + settings.timeout_s)
    sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=True,
                                         n_startup_trials=min(10, max(2, settings.n_trials // 3)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner,
                                study_name=f"tune-{method_cls.name}")
    study.enqueue_trial({k: getattr(base_cfg, k) for k in space})
    records: list[dict[str, Any]] = []
    state: dict[str, Any] = {"ref_s": None, "best": None, "best_cfg": None}

    def objective(trial: Any) -> float:
        params = suggest(trial, space)
        cfg = apply_overrides(base_cfg, params)
        monitor = TrialMonitor(trial, clock, cfg, settings.goal)
        ctx = RunContext.create(seed=settings.seed, device=settings.device)
        unlearner = method_cls(cfg)
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"number": trial.number, "params": params}
        try:
            outcome = unlearner.run(model, data, ctx, goal=settings.goal, observers=[monitor])
        except TrialStopped as exc:
            rec.update(state=monitor.stopped or "pruned", wall_s=time.perf_counter() - t0, violation=monitor.last,
                       pruned_at=monitor.step)
            trial.set_constraint("criteria_violation", monitor.last if monitor.last is not None else DIVERGED)
            _finish(rec)
            raise optuna.TrialPruned(str(exc)) from exc  # the run's Stop, as Optuna's pruned trial
        except DivergenceError as exc:
            rec.update(state="diverged", wall_s=time.perf_counter() - t0, violation=DIVERGED, reason=str(exc))
            trial.set_constraint("criteria_violation", DIVERGED)
            _finish(rec)
            return 1e6
        wall = time.perf_counter() - t0
        acc = outcome.acceptance
        if state["ref_s"] is None:
            state["ref_s"] = wall
        from medunlearn.unlearn.criteria import violation

        v = 0.0 if acc["met"] else max(violation(acc["checks"]), 1e-3)
        parts = objective_parts(wall, state["ref_s"], acc.to_json(), settings.retain_weight)
        rec.update(state="complete", feasible=bool(acc["met"]), wall_s=wall, violation=v,
                   steps_run=acc["steps_run"], step=acc["step"], budget=acc["budget"], reason=acc["reason"],
                   checks=check_values(acc.to_json()), acceptance=acc.to_json(), **parts)
        trial.set_constraint("criteria_violation", v)
        trial.set_user_attr("feasible", bool(acc["met"]))
        if acc["met"] and (state["best"] is None or parts["objective"] < state["best"]["objective"]):
            state["best"], state["best_cfg"] = rec, cfg
        _finish(rec)
        return parts["objective"]

    def _finish(rec: dict[str, Any]) -> None:
        rec["elapsed_s"] = time.monotonic() - start
        records.append(rec)
        if on_trial is not None:
            on_trial(rec, state["best"])

    study.optimize(objective, n_trials=settings.n_trials, timeout=settings.timeout_s, gc_after_trial=False)
    reference = records[0] if records and records[0]["number"] == 0 else None
    return StudyResult(study=study, records=records, best=state["best"], best_config=state["best_cfg"],
                       reference=reference, wall_s=time.monotonic() - start, settings=settings)
