"""The one stop-and-guard controller every unlearning method runs under.

A method supplies a `Plan` (its update step and step budget); the controller owns everything else:
  checks   after every `check_every` steps, on fixed seeded probes of VALIDATION rows (val_forget, val_retain;
           equivalence also train_forget) — test rows are never read; `check_every=0` (auto) checks every
           step unless the probes' forward passes would exceed a third of the run (estimated from row counts);
  repair   when val_retain falls below its guard (accuracy (c), or mean confidence (d) where it applies), up to
           `repair_steps` steps of retain CE + distillation from the original (a removed class's logit masked out of
           the teacher), then the method goes on;
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
  judge    an observer that judges forgetting (`forget --audit`'s membership audit) replaces the goal's forget-side
           criteria in "met" (the retain guard stays; the replaced checks are recorded with required=False), so
           the stop rule and the returned state follow the audit.
The run is a `Controller`; `Observer`s hook into it (replace the plan, watch each step and stop the run, add
checks, see each check) instead of patching it: tune's trial monitor, merge_repair's per-policy checks,
`forget --audit`'s membership audit.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.models.finite import check_finite_loss
from medunlearn.runtime import RunContext
from medunlearn.unlearn.cost import ImageCounter, counting
from medunlearn.unlearn.criteria import (
    RETAIN_CHECKS,
    TOLERANCE,
    evaluate_checks,
    forget_shortfall,
    retain_ok,
    violation,
)
from medunlearn.unlearn.judging import is_vacuous, probe_resolution, removed_classes, run_criteria, selectivity
from medunlearn.unlearn.probes import Probes
from medunlearn.unlearn.repair import Repairer
from medunlearn.unlearn.types import Acceptance, ControlConfig, Outcome, Plan, ProbeSources, validate_control

# ControlConfig, Plan, Outcome and validate_control live in unlearn/types.py; imported from here too for one release;
# judging a model (probes, criteria, assess, selectivity) lives in unlearn/judging.py


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


class Stop(Exception):
    """Raised by an observer's `on_step` to end the run at once; it propagates to the run's caller (no outcome)."""


class Observer(Protocol):
    """A hook into a controlled run (tune's trial monitor, a merge's per-policy checks, `forget --audit`).

    Subclass it and override what you need: every hook's default does nothing. An observer whose
    `judges_forgetting` is True replaces the goal's forget-side criteria with its own checks wherever it returns
    any (the retain guard stays; the goal's forget-side checks stay in the trace, not required): `forget --audit`."""

    judges_forgetting: bool = False

    def on_plan(self, plan: Plan, run: Controller) -> Plan:
        """Once, before the first step (its image passes count as setup); returns the plan to run."""
        return plan

    def on_step(self, step: int, loss: float) -> None:
        """After every method step (its image passes count as the method's); raise Stop to end the run."""
        return None

    def extra_checks(self, model: nn.Module) -> list[dict[str, Any]]:
        """Checks every checked state must also pass, besides the goal's criteria."""
        return []

    def on_check(self, step: int, phase: str, row: dict[str, Any], met: bool) -> None:
        """After every check, with its trace row (step, phase, measurements, met, violation, decision)."""
        return None


class ExtraChecks(Observer):
    """An observer that only adds checks: `checks(model)` (e.g. `forget --audit`'s membership audit). A `checks`
    with a true `judges_forgetting` attribute judges forgetting in place of the goal's forget-side criteria."""

    def __init__(self, checks: Callable[[nn.Module], list[dict[str, Any]]]) -> None:
        self.checks = checks
        self.judges_forgetting = bool(getattr(checks, "judges_forgetting", False))

    def extra_checks(self, model: nn.Module) -> list[dict[str, Any]]:
        return self.checks(model)


@dataclasses.dataclass
class Kept:
    """A checked state kept as the best, the closest or the backtrack anchor (`opt`: the optimiser's state)."""

    step: int
    phase: str
    m: dict[str, float]
    checks: list[dict[str, Any]]
    state: dict[str, torch.Tensor]
    violation: float = 0.0
    opt: dict[str, Any] | None = None


@dataclasses.dataclass
class CheckResult:
    m: dict[str, float]
    met: bool
    eligible: bool
    row: dict[str, Any]
    overshoot: bool


@dataclasses.dataclass
class Timing:
    steps_s: float = 0.0
    checks_s: float = 0.0
    repair_s: float = 0.0


@dataclasses.dataclass
class Counters:
    since_best: int = 0  # checks since the best state last improved
    since_first: int = 0  # checks since the first state that met every criterion
    first_met: int | None = None  # that state's step
    overshoot: int = 0  # consecutive checks past the band
    repair_steps: int = 0
    backtracks: int = 0


class Controller:
    """Drive `plan` on `model` (a private copy of `original`) under the goal's acceptance criteria (module doc).

    `observers` hook into the run (Observer). `counter`: where the image passes are counted (the caller's, e.g.
    Unlearner.run's, else the run's own: `counting` must be open around `run`), its record in acceptance["cost"]."""

    def __init__(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str,
                 cfg: ControlConfig, plan: Plan, name: str, observers: Sequence[Observer] = (),
                 counter: ImageCounter | None = None) -> None:
        self.model, self.original, self.data, self.ctx, self.goal = model, original, data, ctx, goal
        self.cfg, self.name, self.observers = cfg, name, list(observers)
        self.counter = counter or ImageCounter()
        with self.counter.phase("setup"):
            for o in self.observers:
                plan = o.on_plan(plan, self)
        self.plan = plan
        validate_control(cfg)
        self.probes = Probes(data, cfg, goal, ctx.seed, ctx.device)
        self.removed = removed_classes(data)
        with self.counter.phase("checks"):
            self.criteria = run_criteria(cfg, goal, data, self.probes, original, self.removed)
        self.guard = self.criteria.retain_guard() - TOLERANCE  # the same test as criterion (c)'s check
        conf = self.criteria.min_retain_confidence
        self.min_conf = None if conf is None else conf - TOLERANCE
        self.every = check_interval(cfg, plan, self.probes.rows())
        self.repairer = Repairer(model, original, data, cfg, ctx, self.removed, plan.params) \
            if cfg.repair and len(data.train_retain) else None
        self.trace: list[dict[str, Any]] = []
        self.best: Kept | None = None  # the best checked state that meets every criterion
        self.closest: Kept | None = None  # while none does: the closest one
        self.anchor: Kept | None = None  # last checked state neither past the band nor below the guard
        self.timing = Timing()
        self.counters = Counters()
        self.reason = ""
        self.base_lrs = [g["lr"] for g in plan.optimizer.param_groups] if plan.optimizer is not None else []

    def retain_low(self, m: dict[str, float]) -> bool:
        """Below (c)'s guard or (d)'s confidence floor."""
        return m["retain_acc"] < self.guard or (self.min_conf is not None and m["retain_conf"] < self.min_conf)

    def check(self, step: int, phase: str, retain: dict[str, float] | None = None) -> CheckResult:
        """Measure the state, keep it as best / closest / anchor when it is one, append its trace row."""
        with self.counter.phase("checks"):
            c = self._check_state(step, phase, retain)
        for o in self.observers:
            o.on_check(step, phase, c.row, c.met)
        return c

    def _check_state(self, step: int, phase: str, retain: dict[str, float] | None) -> CheckResult:
        t0 = time.perf_counter()
        model, criteria = self.model, self.criteria
        m = self.probes.measure(model, criteria, retain)
        checks = self._checks(model, m)
        met = all(c["passed"] for c in checks if c.get("required", True))
        row: dict[str, Any] = {"step": step, "phase": phase, **{k: round(v, 4) for k, v in m.items()}, "met": met,
               "violation": round(violation(checks), 4), "decision": ""}
        judged = [c for c in checks if not c.get("required", True)]
        if judged:  # an observer judged forgetting: the goal's own forget-side verdict, recorded
            row["goal_forget_met"] = all(c["passed"] for c in judged)
        eligible = step >= self.plan.warmup
        shortfall = forget_shortfall(criteria, m)
        snap: dict[str, torch.Tensor] = {}  # one copy of the state per check, shared by best/closest/anchor

        def taken() -> dict[str, torch.Tensor]:
            if not snap:
                snap.update(_snapshot(model))
            return snap

        best, closest = self.best, self.closest
        if not eligible:
            row["decision"] = "warm-up (not eligible)"
        elif met and (best is None or m["retain_acc"] > best.m["retain_acc"] + 1e-9):
            self.best = Kept(step, phase, m, checks, taken())
            self.counters.since_best = 0
            row["decision"] = "new best (criteria met)"
        elif best is None and (closest is None or closer(checks, row["violation"], {
                "checks": closest.checks, "violation": closest.violation})):
            self.closest = Kept(step, phase, m, checks, taken(), violation=row["violation"])
            row["decision"] = "closest so far"
        if self.plan.optimizer is not None and shortfall >= 0 and not self.retain_low(m):
            self.anchor = Kept(step, phase, m, checks, taken(), opt=copy.deepcopy(self.plan.optimizer.state_dict()))
        self.timing.checks_s += time.perf_counter() - t0
        self.trace.append(row)
        return CheckResult(m, met, eligible, row, shortfall < 0)

    def _checks(self, model: nn.Module, m: dict[str, float]) -> list[dict[str, Any]]:
        """The state's checks: the goal's and every observer's. Where a judging observer returns checks, the goal's
        forget-side ones stay in the list marked `required: False` (recorded, not part of the verdict)."""
        goal = evaluate_checks(self.criteria, m)
        extra, judged = [], False
        for o in self.observers:
            got = o.extra_checks(model)
            extra += got
            judged = judged or (bool(got) and o.judges_forgetting)
        if judged:
            goal = [c if c["name"] in RETAIN_CHECKS else {**c, "required": False} for c in goal]
        return goal + extra

    def repair(self, step: int) -> None:
        """Retain repair until the retain probe is back above its guard or `repair_steps` are spent.

        Between repair steps only the retain probe is read (the loop's exit test); the full check, which may
        keep the state as best or closest, runs once: when retain is restored or the repair budget is spent."""
        repairer, probes, counter = self.repairer, self.probes, self.counter
        assert repairer is not None  # stop_reason repairs only with a repairer
        repairer.begin()
        for i in range(self.cfg.repair_steps):
            t0 = time.perf_counter()
            with counter.phase("repair"):
                check_finite_loss(torch.tensor(repairer.step()), f"{self.name} (retain repair)", step)
            self.counters.repair_steps += 1
            self.timing.repair_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            with counter.phase("checks"):  # its accuracy, or None while below the guard (or (d)'s floor)
                restored = probes.retain_at_least(self.model, self.guard, self.min_conf)
            self.timing.checks_s += time.perf_counter() - t0
            if restored is not None or i == self.cfg.repair_steps - 1:
                c = self.check(step, "repair", probes.last_retain if restored is not None else None)
                _note(c.row, f"retain {'still below guard' if self.retain_low(c.m) else 'restored'} "
                             f"after {i + 1} repair steps")
                break

    def backtrack(self, row: dict[str, Any]) -> None:
        """Back to the anchor (model and optimiser) with the learning rate scaled by backtrack_factor^n."""
        anchor, opt = self.anchor, self.plan.optimizer
        assert anchor is not None and anchor.opt is not None and opt is not None  # anchors need an optimiser
        self.model.load_state_dict(anchor.state)
        opt.load_state_dict(anchor.opt)  # restores the lr too: scale after loading
        self.counters.backtracks += 1
        scale = self.cfg.backtrack_factor ** self.counters.backtracks
        for group, base_lr in zip(opt.param_groups, self.base_lrs):
            group["lr"] = base_lr * scale
        _note(row, f"overshoot: back to step {anchor.step}, lr x{scale:g}")

    def stop_reason(self, c: CheckResult) -> str:
        """Why the run stops after this eligible method check ("" = go on); backtracks and repairs as it goes."""
        cfg, n = self.cfg, self.counters
        if self.best is not None:
            if n.first_met is None:
                n.first_met = self.best.step
            else:
                n.since_first += 1
            n.since_best += 0 if c.row["decision"].startswith("new best") else 1
            if not cfg.polish and n.since_first >= cfg.patience:
                return (f"criteria met (first at step {n.first_met}); stopped {cfg.patience} "
                        "checks later (patience; polish=true goes on while the best improves)")
            if cfg.polish and n.since_best > cfg.patience:
                return f"criteria met; no better state in {cfg.patience} further checks"
        if c.overshoot and self.anchor is not None and n.backtracks < cfg.backtracks:
            self.backtrack(c.row)
            return ""
        n.overshoot = n.overshoot + 1 if c.overshoot else 0
        if c.overshoot and n.overshoot > cfg.patience:
            return f"forgetting overshot its band for {cfg.patience + 1} checks; rolled back"
        if self.repairer is not None and self.retain_low(c.m):
            _note(c.row, "retain below guard: repair")
            self.repair(c.row["step"])
        return ""

    def run(self) -> Outcome:
        """The step loop: method steps, a check every `every` steps (and at the budget), until a stop rule."""
        plan, counter = self.plan, self.counter
        vacuous = is_vacuous(self.goal, self.check(0, "original").met)
        step = 0
        with self.ctx.progress(self.name, plan.budget) as advance:
            for step in range(1, plan.budget + 1):
                t0 = time.perf_counter()
                with counter.phase("method"):
                    loss = plan.update(step)
                    check_finite_loss(torch.tensor(loss), self.name, step)
                    for o in self.observers:
                        o.on_step(step, float(loss))
                self.timing.steps_s += time.perf_counter() - t0
                advance(1)
                if step % self.every and step != plan.budget:
                    continue
                c = self.check(step, "method")
                if not c.eligible:
                    continue
                self.reason = self.stop_reason(c)
                if self.reason:
                    break
            else:
                self.reason = "step budget reached"
        return self.result(step, vacuous)

    def result(self, step: int, vacuous: bool) -> Outcome:
        """Restore the chosen state, finalize it, and build the verdict."""
        best, plan, probes, criteria, counter = self.best, self.plan, self.probes, self.criteria, self.counter
        chosen = best or self.closest
        model = self.model
        if chosen is not None:
            model.load_state_dict(chosen.state)
        if plan.finalize is not None:
            with counter.phase("certificate"):
                model = plan.finalize(model)
        met = best is not None and not vacuous
        reason = self.reason
        if vacuous and "goal_forget_met" in self.trace[0]:  # a judging observer (the audit) passed the original
            reason += ("; the original model already passes the observer's judgement of forgetting (the membership "
                       "audit finds no membership): nothing to forget at this power")
        elif vacuous:
            reason += ("; the original model already meets the equivalence criteria (its forget rows and the "
                       "held-out rows of their domain look alike), so they cannot show forgetting here: use "
                       "goal suppression, or judge against a retrained reference")
        elif met and not reason.startswith("criteria met"):
            reason += "; returned the best state that met the criteria"
        elif not met:
            reason += "; no checked state met every criterion: returned the closest"
        with counter.phase("checks"):
            chosen_m = chosen.m if chosen is not None else probes.measure(model, criteria)
            final = chosen.checks if chosen is not None else evaluate_checks(criteria, chosen_m)
            resolution = probe_resolution(probes, model, criteria) if self.goal == "suppression" else {}
        timing = dataclasses.asdict(self.timing)
        total = sum(timing.values()) or 1.0
        n = self.counters
        acceptance = Acceptance(
            met=met, goal=self.goal, judged_on="validation",
            probes=ProbeSources(f"{probes.forget_source} ({len(probes.forget)} rows)",
                                f"{probes.retain_source} ({len(probes.retain)} rows)"),
            criteria=criteria.to_dict(), checks=final,
            state="best (criteria met)" if met else (
                "best checked state (criteria vacuous: not met)" if vacuous and best is not None
                else "closest (criteria not met)"),
            step=chosen.step if chosen is not None else step,
            chosen_phase=chosen.phase if chosen is not None else None,
            steps_run=step, budget=plan.budget, check_every=self.every, repair_steps=n.repair_steps,
            backtracks=n.backtracks, vacuous=vacuous, check_time_fraction=round(timing["checks_s"] / total, 4),
            reason=reason.lstrip("; "), trace_file="trace.csv", first_met_step=n.first_met,
            polish=bool(self.cfg.polish), selectivity=selectivity(criteria, chosen_m), cost=counter.record(),
            **resolution)
        self.ctx.log.setdefault(self.name, {}).update({"steps": step, "budget": plan.budget, "timing_s": timing})
        return Outcome(model=model, acceptance=acceptance, trace=self.trace)


def run_controlled(model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str,
                   cfg: ControlConfig, plan: Plan, name: str, observers: Sequence[Observer] = (),
                   counter: ImageCounter | None = None) -> Outcome:
    """Controller(...).run() with image counting open (`counter`: the caller's, else the run's own)."""
    with counting(counter) as counter:
        return Controller(model, original, data, ctx, goal, cfg, plan, name, observers, counter).run()
