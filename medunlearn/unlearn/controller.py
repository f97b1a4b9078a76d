"""The one stop-and-guard controller every unlearning method runs under.

A method supplies a `Plan` (its update step and step budget); the controller owns everything else:
  checks   after every `check_every` steps, on fixed seeded probes of VALIDATION rows (val_forget, val_retain;
           equivalence also train_forget) — test rows are never read; `check_every=0` (auto) checks every
           step unless the probes' forward passes would exceed a third of the run (estimated from row counts);
  repair   when val_retain falls below its guard (accuracy (c), or mean confidence (d) where it applies), up to `repair_steps` steps of retain CE + distillation from
           the original (a removed class's logit masked out of the teacher), then the method goes on;
           `repair_hold` > 0 adds distillation of train_forget rows toward the state that entered repair;
  rollback the best checked state that meets every criterion (highest val_retain accuracy) is returned; when
           none does, the closest one is returned (a state within the retain guard first, then the smallest total
           violation: a model that forgot but lost the retain domain is worse than one that did not) and the run
           is marked not met;
  backtrack when a check finds forgetting past its band (overshoot), the model goes back to the last checked state
           that was neither past the band nor below the retain guard (its optimiser state too) and the method's
           learning rate is multiplied by `backtrack_factor`, at most `backtracks` times (methods that hand over
           their optimiser; a step too large for the model jumps over the band, a smaller one lands in it);
  stop     `patience` checks after the FIRST state that meets every criterion (the best of those is returned;
           `polish=True` asks for more: `patience` checks after the last improvement), after `patience`
           consecutive overshooting checks (forgotten past the band: going on cannot help), or at the budget;
  cost     images through the model with a gradient and forward only, per phase (method, checks, repair,
           certificate; `setup` = the method's plan), in the caller's `ImageCounter` (unlearn/cost.py);
  trace    one row per check (step, phase, measurements, decision) for the run folder and the report.
  vacuous  equivalence criteria that the original model already meets cannot show forgetting: the run is marked
           not met (acceptance["vacuous"]), whatever it does.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.errors import DivergenceError
from medunlearn.runtime import RunContext
from medunlearn.unlearn.cost import ImageCounter, counting
from medunlearn.unlearn.criteria import (
    TOLERANCE,
    Criteria,
    evaluate_checks,
    forget_shortfall,
    resolve_criteria,
    retain_ok,
    violation,
)
from medunlearn.unlearn.probes import Probes
from medunlearn.unlearn.repair import Repairer
from medunlearn.unlearn.types import ControlConfig, Outcome, Plan, validate_control

# ControlConfig, Plan, Outcome and validate_control live in unlearn/types.py; imported from here too for one release


def removed_classes(data: SplitData) -> list[int]:
    """Classes present in train_forget but absent from train_retain (a class withdrawal)."""
    forget = set(data.train_forget.labels.tolist())
    return sorted(forget - set(data.train_retain.labels.tolist()))


def is_class_removal(data: SplitData, removed: list[int] | None = None) -> bool:
    """A class withdrawal: every forget row's class (`removed`, from removed_classes) left the retain set."""
    removed = removed_classes(data) if removed is None else removed
    return bool(removed) and set(data.train_forget.labels.tolist()) <= set(removed)


def run_criteria(cfg: ControlConfig, goal: str, data: SplitData, probes: Probes, original: nn.Module,
                 removed: list[int]) -> Criteria:
    """The criteria of a run on `data` (a class withdrawal per is_class_removal)."""
    stats = probes.retain_stats(original)
    return resolve_criteria(cfg, goal, data.num_classes, is_class_removal(data, removed), stats["retain_acc"],
                            len(probes.retain), retain_original_stats=stats)


def judged_probes(data: SplitData, cfg: ControlConfig, goal: str, seed: int, device: torch.device,
                  original: nn.Module) -> tuple[Probes, Criteria]:
    """The fixed validation probes and criteria a model is judged on for (data, cfg, goal, seed)."""
    probes = Probes(data, cfg, goal, seed, device)
    return probes, run_criteria(cfg, goal, data, probes, original, removed_classes(data))


def check_interval(cfg: ControlConfig, plan: Plan, probe_rows: int) -> int:
    """check_every, or (auto) the smallest interval keeping probe rows under CHECK_SHARE of the steps' rows
    (forward-equivalent). Deterministic (row counts, not clocks), so a seed gives one trajectory."""
    if cfg.check_every > 0:
        return cfg.check_every
    if plan.rows_per_step <= 0:
        return 1
    return max(1, math.ceil(probe_rows / (CHECK_SHARE * plan.rows_per_step)))


# Probe rows per step row. 0.5 was the first estimate (checks ~1/3 of a run); on the 700-patient device bench a
# check also snapshots model and optimiser and checks took 49 % of FAMR's time, so a quarter keeps them ~1/3.
CHECK_SHARE = 0.25


def _note(row: dict[str, Any], text: str) -> None:
    """Append a decision to a trace row."""
    row["decision"] = f"{row['decision']}; {text}" if row["decision"] else text


def closer(checks: list[dict[str, Any]], v: float, closest: dict[str, Any]) -> bool:
    """Is a state with these checks closer to acceptance than `closest`? Retain guard first, then violation."""
    return (not retain_ok(checks), v) < (not retain_ok(closest["checks"]), closest["violation"] - 1e-9)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_finite_loss(loss: torch.Tensor, method: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergenceError(
            f"{method} diverged: non-finite loss at step {step}; lower the learning rate. No checkpoint was written."
        )


def probe_resolution(probes: Probes, model: nn.Module, criteria: Criteria) -> dict[str, Any]:
    """How finely the held-out forget probe resolves criterion (a) on the returned state: its bootstrap interval,
    and a note when that interval is wider than the band (a handful of rows, e.g. 4 outliers in a small
    cohort: the verdict, met or not, is then mostly sampling noise)."""
    lo, hi = probes.forget_interval(model, criteria)
    out: dict[str, Any] = {"forget_interval": [round(lo, 3), round(hi, 3)],
                           "underpowered": bool(hi - lo > 2 * criteria.forget_tol)}
    if out["underpowered"]:
        out["resolution_hint"] = (
            f"criterion (a) rests on {len(probes.forget)} held-out forget rows: its {criteria.ci_level:.0%} interval "
            f"[{lo:.1f}, {hi:.1f}] is wider than the band (±{criteria.forget_tol:g} points), so this verdict is "
            f"mostly sampling noise; judge on more rows (a larger cohort or validation fraction)")
    return out


def is_vacuous(goal: str, original_meets: bool) -> bool:
    """Equivalence criteria the untouched model already meets cannot show forgetting (a whole domain the model
    generalises to: its members and held-out rows look alike before any step); such a verdict is never "met"."""
    return goal == "equivalence" and original_meets


def run_controlled(model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str,
                   cfg: ControlConfig, plan: Plan, name: str,
                   extra_checks: Callable[[nn.Module], list[dict[str, Any]]] | None = None,
                   counter: ImageCounter | None = None) -> Outcome:
    """Drive `plan` on `model` (a private copy of `original`) under the goal's acceptance criteria.

    `extra_checks(model)` adds checks every checked state must also pass (merge_repair: each policy's own
    criteria, so a state that meets the union's pooled criteria but not one policy's is not accepted).
    `counter`: where the image passes are counted (a caller's, e.g. Unlearner.run's; else the run's own), its
    record in acceptance["cost"]."""
    with counting(counter) as counter:
        return _run(model, original, data, ctx, goal, cfg, plan, name, extra_checks, counter)


def _run(model, original, data, ctx, goal, cfg, plan, name, extra_checks, counter) -> Outcome:

    validate_control(cfg)
    probes = Probes(data, cfg, goal, ctx.seed, ctx.device)
    removed = removed_classes(data)
    with counter.phase("checks"):
        criteria = run_criteria(cfg, goal, data, probes, original, removed)
    guard = criteria.retain_guard() - TOLERANCE  # the same test as criterion (c)'s check
    min_conf = None if criteria.min_retain_confidence is None else criteria.min_retain_confidence - TOLERANCE

    def retain_low(m: dict[str, float]) -> bool:  # below (c)'s guard or (d)'s confidence floor
        return m["retain_acc"] < guard or (min_conf is not None and m["retain_conf"] < min_conf)
    every = check_interval(cfg, plan, probes.rows())
    repairer = Repairer(model, original, data, cfg, ctx, removed, plan.params) \
        if cfg.repair and len(data.train_retain) else None
    trace: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    closest: dict[str, Any] = {}
    timing = {"steps_s": 0.0, "checks_s": 0.0, "repair_s": 0.0}
    state = {"since_best": 0, "since_first": 0, "first_met": None, "overshoot": 0, "reason": "", "repair_steps": 0,
             "backtracks": 0}
    anchor: dict[str, Any] = {}  # last checked state neither past the band nor below the guard (backtrack target)

    def check(step: int, phase: str, retain: dict[str, float] | None = None) -> dict[str, Any]:
        with counter.phase("checks"):
            return _check_state(step, phase, retain)

    def _check_state(step: int, phase: str, retain: dict[str, float] | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        m = probes.measure(model, criteria, retain)
        checks = evaluate_checks(criteria, m) + (extra_checks(model) if extra_checks is not None else [])
        met = all(c["passed"] for c in checks)
        row = {"step": step, "phase": phase, **{k: round(v, 4) for k, v in m.items()}, "met": met,
               "violation": round(violation(checks), 4), "decision": ""}
        eligible = step >= plan.warmup
        shortfall = forget_shortfall(criteria, m)
        snap: dict[str, torch.Tensor] = {}  # one copy of the state per check, shared by best/closest/anchor

        def taken() -> dict[str, torch.Tensor]:
            if not snap:
                snap.update(_snapshot(model))
            return snap

        if not eligible:
            row["decision"] = "warm-up (not eligible)"
        elif met and (not best or m["retain_acc"] > best["m"]["retain_acc"] + 1e-9):
            best.update(step=step, phase=phase, m=m, checks=checks, state=taken())
            state["since_best"] = 0
            row["decision"] = "new best (criteria met)"
        elif not best and (not closest or closer(checks, row["violation"], closest)):
            closest.update(step=step, phase=phase, m=m, checks=checks, violation=row["violation"], state=taken())
            row["decision"] = "closest so far"
        if plan.optimizer is not None and shortfall >= 0 and not retain_low(m):
            anchor.update(step=step, state=taken(), opt=copy.deepcopy(plan.optimizer.state_dict()))
        timing["checks_s"] += time.perf_counter() - t0
        trace.append(row)
        return {"m": m, "met": met, "eligible": eligible, "row": row, "overshoot": shortfall < 0}

    def repair(step: int) -> None:
        # Between repair steps only the retain probe is read (the loop's exit test); the full check, which may
        # keep the state as best or closest, runs once: when retain is restored or the repair budget is spent.
        repairer.begin()
        for i in range(cfg.repair_steps):
            t0 = time.perf_counter()
            with counter.phase("repair"):
                check_finite_loss(torch.tensor(repairer.step()), f"{name} (retain repair)", step)
            state["repair_steps"] += 1
            timing["repair_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            with counter.phase("checks"):  # its accuracy, or None while below the guard (or (d)'s floor)
                restored = probes.retain_at_least(model, guard, min_conf)
            timing["checks_s"] += time.perf_counter() - t0
            if restored is not None or i == cfg.repair_steps - 1:
                c = check(step, "repair", probes.last_retain if restored is not None else None)
                _note(c["row"], f"retain {'still below guard' if retain_low(c['m']) else 'restored'} "
                                f"after {i + 1} repair steps")
                break

    def backtrack(row: dict[str, Any]) -> None:
        model.load_state_dict(anchor["state"])
        plan.optimizer.load_state_dict(anchor["opt"])  # restores the lr too: scale after loading
        state["backtracks"] += 1
        scale = cfg.backtrack_factor ** state["backtracks"]
        for group, base_lr in zip(plan.optimizer.param_groups, base_lrs):
            group["lr"] = base_lr * scale
        _note(row, f"overshoot: back to step {anchor['step']}, lr x{scale:g}")

    base_lrs = [g["lr"] for g in plan.optimizer.param_groups] if plan.optimizer is not None else []
    vacuous = is_vacuous(goal, check(0, "original")["met"])
    step = 0
    with ctx.progress(name, plan.budget) as advance:
        for step in range(1, plan.budget + 1):
            t0 = time.perf_counter()
            with counter.phase("method"):
                check_finite_loss(torch.tensor(plan.update(step)), name, step)
            timing["steps_s"] += time.perf_counter() - t0
            advance(1)
            if step % every and step != plan.budget:
                continue
            c = check(step, "method")
            if not c["eligible"]:
                continue
            if best:
                if state["first_met"] is None:
                    state["first_met"] = best["step"]
                else:
                    state["since_first"] += 1
                state["since_best"] += 0 if c["row"]["decision"].startswith("new best") else 1
                if not cfg.polish and state["since_first"] >= cfg.patience:
                    state["reason"] = (f"criteria met (first at step {state['first_met']}); stopped {cfg.patience} "
                                       "checks later (patience; polish=true goes on while the best improves)")
                    break
                if cfg.polish and state["since_best"] > cfg.patience:
                    state["reason"] = f"criteria met; no better state in {cfg.patience} further checks"
                    break
            overshoot = c["overshoot"]
            if overshoot and anchor and state["backtracks"] < cfg.backtracks:
                backtrack(c["row"])
                continue
            state["overshoot"] = state["overshoot"] + 1 if overshoot else 0
            if overshoot and state["overshoot"] > cfg.patience:
                state["reason"] = f"forgetting overshot its band for {cfg.patience + 1} checks; rolled back"
                break
            if repairer is not None and retain_low(c["m"]):
                _note(c["row"], "retain below guard: repair")
                repair(step)
        else:
            state["reason"] = "step budget reached"
    chosen = best or closest
    if chosen:
        model.load_state_dict(chosen["state"])
    if plan.finalize is not None:
        with counter.phase("certificate"):
            model = plan.finalize(model)
    met = bool(best) and not vacuous
    if vacuous:
        state["reason"] += ("; the original model already meets the equivalence criteria (its forget rows and the "
                            "held-out rows of their domain look alike), so they cannot show forgetting here: use "
                            "goal suppression, or judge against a retrained reference")
    elif met and not state["reason"].startswith("criteria met"):
        state["reason"] += "; returned the best state that met the criteria"
    elif not met:
        state["reason"] += "; no checked state met every criterion: returned the closest"
    with counter.phase("checks"):
        chosen_m = chosen["m"] if chosen else probes.measure(model, criteria)
        final = chosen["checks"] if chosen else evaluate_checks(criteria, chosen_m)
        resolution = probe_resolution(probes, model, criteria) if goal == "suppression" else {}
    total = sum(timing.values()) or 1.0
    acceptance = {
        "met": met, "goal": goal, "judged_on": "validation",
        "probes": {"forget": f"{probes.forget_source} ({len(probes.forget)} rows)",
                   "retain": f"{probes.retain_source} ({len(probes.retain)} rows)"},
        "criteria": criteria.to_dict(), "checks": final,
        "state": "best (criteria met)" if met else (
            "best checked state (criteria vacuous: not met)" if vacuous and best else "closest (criteria not met)"),
        "step": chosen.get("step", step) if chosen else step, "chosen_phase": chosen.get("phase") if chosen else None,
        "steps_run": step, "budget": plan.budget, "check_every": every, "repair_steps": state["repair_steps"],
        "backtracks": state["backtracks"], "vacuous": vacuous,
        "check_time_fraction": round(timing["checks_s"] / total, 4), "reason": state["reason"].lstrip("; "),
        "trace_file": "trace.csv", "first_met_step": state["first_met"], "polish": bool(cfg.polish),
        "selectivity": selectivity(criteria, chosen_m), "cost": counter.record(), **resolution,
    }
    ctx.log.setdefault(name, {}).update({"steps": step, "budget": plan.budget, "timing_s": timing})
    return Outcome(model=model, acceptance=acceptance, trace=trace)


def assess(model: nn.Module, original: nn.Module, data: SplitData, goal: str, cfg: ControlConfig | None = None,
           seed: int = 0, device: torch.device | None = None) -> dict[str, Any]:
    """Judge one finished model against the goal's criteria on the same validation probes a run uses
    (e.g. a merged checkpoint, per policy). Returns {met, goal, judged_on, vacuous, criteria, checks, measurement,
    and for suppression forget_interval, underpowered, resolution_hint?};
    an equivalence judgement the original model also passes is vacuous and never met."""
    cfg = cfg or ControlConfig()
    validate_control(cfg)
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    probes, criteria = judged_probes(data, cfg, goal, seed, device, original)
    m = probes.measure(model, criteria)
    sel = selectivity(criteria, m)
    checks = evaluate_checks(criteria, m)
    original_checks = evaluate_checks(criteria, probes.measure(original, criteria))
    vacuous = is_vacuous(goal, all(c["passed"] for c in original_checks))
    resolution = probe_resolution(probes, model, criteria) if goal == "suppression" else {}
    return {"met": all(c["passed"] for c in checks) and not vacuous, "goal": goal, "judged_on": "validation",
            "vacuous": vacuous, "criteria": criteria.to_dict(), "checks": checks,
            "measurement": {k: round(v, 4) for k, v in m.items()}, "selectivity": sel, **resolution}


def selectivity(criteria: Criteria, m: dict[str, float]) -> dict[str, Any]:
    """Both figures of criterion (d), reported whatever the policy: val_retain mean max-softmax and the share of
    val_retain rows under the routing threshold, for the model and the original (percent; None when not read)."""
    return {"retain_confidence": round(m["retain_conf"], 3) if "retain_conf" in m else None,
            "retain_confidence_original": None if criteria.retain_confidence_original is None
            else round(criteria.retain_confidence_original, 3),
            "threshold": None if criteria.min_retain_confidence is None else round(criteria.min_retain_confidence, 3),
            "routing_threshold": None if criteria.routing_threshold is None else round(criteria.routing_threshold, 3),
            "routed": round(m["retain_routed"], 3) if "retain_routed" in m else None,
            "routed_original": None if criteria.retain_routed_original is None
            else round(criteria.retain_routed_original, 3)}
