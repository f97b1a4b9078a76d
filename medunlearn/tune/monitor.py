"""Watch one trial from inside its run: intermediate values for the pruner, and the study's deadline.

The controller owns the run (checks, repair, rollback); a trial's `TrialMonitor` is one of its observers
(unlearn/controller.py `Observer`): every `every` optimiser steps it measures how far the model is from the
acceptance criteria on a small fixed VALIDATION probe (the controller's own Probes and criteria, at `probe_rows`
rows) and reports that violation (points, 0 = every criterion met) to Optuna. The grid `every` is one per study,
so trials are compared at the same step. A trial the pruner stops, or one still running when the study's time
budget runs out, raises `TrialStopped` (a controller `Stop`) out of the run; the study turns it into a pruned trial.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from medunlearn.unlearn.controller import Controller, Observer, Stop
from medunlearn.unlearn.criteria import evaluate_checks, violation
from medunlearn.unlearn.judging import judged_probes
from medunlearn.unlearn.types import Plan

REPORTS_PER_RUN = 10  # intermediate values over a default-length run (each costs one small probe pass)


@dataclasses.dataclass
class StudyClock:
    """Settings shared by every trial of one study."""

    deadline: float  # time.monotonic() after which a running trial is stopped
    every: int | None = None  # report grid in optimiser steps; set from the first trial's (the defaults') budget
    probe_rows: int = 128


class TrialStopped(Stop):
    """The pruner stopped the trial, or the study's time budget ran out."""


class TrialMonitor(Observer):
    """Watches one Optuna trial's run (`unlearner.run(..., observers=[monitor])`); `last` holds the latest
    reported violation."""

    def __init__(self, trial: Any, clock: StudyClock, cfg: Any, goal: str) -> None:
        self.trial, self.clock, self.cfg, self.goal = trial, clock, cfg, goal
        self.last: float | None = None
        self.step = 0  # the last optimiser step run
        self.stopped = ""  # "" | "pruned" | "time budget"
        self.run: Controller | None = None

    def on_plan(self, plan: Plan, run: Controller) -> Plan:
        """Fix the study's report grid from the first trial's budget; build the small probe on the run's data."""
        if self.clock.every is None:
            self.clock.every = max(1, math.ceil(plan.budget / REPORTS_PER_RUN))
        self.every = self.clock.every
        small = dataclasses.replace(self.cfg, max_eval=min(self.cfg.max_eval, self.clock.probe_rows),
                                    membership_rows=min(self.cfg.membership_rows, self.clock.probe_rows),
                                    bootstrap=min(self.cfg.bootstrap, 50))
        self.probes, self.criteria = judged_probes(run.data, small, self.goal, run.ctx.seed, run.ctx.device,
                                                   run.original)
        self.run = run
        return plan

    def on_step(self, step: int, loss: float) -> None:
        self.step = step
        if time.monotonic() > self.clock.deadline:
            self.stopped = "time budget"
            raise TrialStopped(f"study time budget ran out at step {step}")
        every = self.every
        if step % every == 0:
            assert self.run is not None  # on_plan came first
            self.last = violation(evaluate_checks(self.criteria, self.probes.measure(self.run.model, self.criteria)))
            self.trial.report(self.last, step // every)  # report index: one grid for every trial
            if self.trial.should_prune():
                self.stopped = "pruned"
                raise TrialStopped(f"pruned at step {step}: {self.last:.2f} points from the criteria")
