"""Watch one trial from inside its run: intermediate values for the pruner, and the study's deadline.

The controller owns the run (checks, repair, rollback); a trial only wraps the method's `Plan.update` so
that every `every` optimiser steps it measures how far the model is from the acceptance criteria on a small
fixed VALIDATION probe (the controller's own Probes and criteria, at `probe_rows` rows) and reports that
violation (points, 0 = every criterion met) to Optuna. The grid `every` is one per study, so trials are
compared at the same step. A trial the pruner stops, or one still running when the study's time budget
runs out, raises optuna.TrialPruned out of the run.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.runtime import RunContext
from medunlearn.unlearn.controller import judged_probes
from medunlearn.unlearn.types import Plan
from medunlearn.unlearn.criteria import evaluate_checks, violation

REPORTS_PER_RUN = 10  # intermediate values over a default-length run (each costs one small probe pass)


@dataclasses.dataclass
class StudyClock:
    """Settings shared by every trial of one study."""

    deadline: float  # time.monotonic() after which a running trial is stopped
    every: int | None = None  # report grid in optimiser steps; set from the first trial's (the defaults') budget
    probe_rows: int = 128


class TrialMonitor:
    """Wraps an unlearner's plan for one Optuna trial; `last` holds the latest reported violation."""

    def __init__(self, trial: Any, clock: StudyClock, cfg: Any, goal: str) -> None:
        self.trial, self.clock, self.cfg, self.goal = trial, clock, cfg, goal
        self.last: float | None = None
        self.step = 0  # the last optimiser step run
        self.stopped = ""  # "" | "pruned" | "time budget"

    def attach(self, unlearner: Any) -> Any:
        """Make `unlearner.plan` return the method's plan with a watched update (instance-level, no subclass)."""
        inner = unlearner.plan

        def plan(model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
            p = inner(model, original, data, ctx, goal)
            if self.clock.every is None:
                self.clock.every = max(1, math.ceil(p.budget / REPORTS_PER_RUN))
            return dataclasses.replace(p, update=self._watch(p.update, self.clock.every, model, original, data, ctx))

        unlearner.plan = plan
        return unlearner

    def _watch(self, update: Callable[[int], float], every: int, model: nn.Module, original: nn.Module, data: SplitData,
               ctx: RunContext) -> Callable[[int], float]:
        import optuna

        small = dataclasses.replace(self.cfg, max_eval=min(self.cfg.max_eval, self.clock.probe_rows),
                                    membership_rows=min(self.cfg.membership_rows, self.clock.probe_rows),
                                    bootstrap=min(self.cfg.bootstrap, 50))
        probes, criteria = judged_probes(data, small, self.goal, ctx.seed, ctx.device, original)

        def watched(t: int) -> float:
            loss = update(t)
            self.step = t
            if time.monotonic() > self.clock.deadline:
                self.stopped = "time budget"
                raise optuna.TrialPruned(f"study time budget ran out at step {t}")
            if t % every == 0:
                self.last = violation(evaluate_checks(criteria, probes.measure(model, criteria)))
                self.trial.report(self.last, t // every)  # report index: one grid for every trial
                if self.trial.should_prune():
                    self.stopped = "pruned"
                    raise optuna.TrialPruned(f"pruned at step {t}: {self.last:.2f} points from the criteria")
            return loss

        return watched
