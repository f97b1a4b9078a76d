"""The types every unlearning method and the controller share: the controller's settings (`ControlConfig`),
what a method hands the controller (`Plan`), what a run returns (`Outcome`) and its verdict (`Acceptance`).

This module imports only torch and `unlearn/criteria.py`, so any piece of the unlearning core may import it."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from medunlearn.bounds import bounded, check_config_bounds
from medunlearn.unlearn.criteria import CriteriaConfig


@dataclasses.dataclass
class ControlConfig(CriteriaConfig):
    """Controller fields shared by every method's Config."""

    check_every: int = bounded(0, 0)  # check every this many steps; 0 = auto (every step, thinned to keep checks < 1/3)
    max_eval: int = bounded(512, 8)  # rows per fixed probe (val_forget, val_retain; train_forget: see membership_rows)
    # equivalence: rows of each membership probe (train_forget members, held-out forget rows). 512 cannot resolve a
    # model's train/held-out gap: on Fashion-MNIST random 10 % the original's accuracy-gap CI was [-0.0, 6.9] (covers
    # 0: vacuous); with 2048 it is [1.6, 6.8] (fails) while the retrain's [-2.9, 2.3] passes
    # (docs/results/fm-random-equivalence.md)
    membership_rows: int = bounded(2048, 8)
    patience: int = bounded(3, 0)  # checks to go on after the first met state (see polish) or while overshooting
    # False: stop `patience` checks after the first state that meets every criterion (stop when done, issue 31);
    # True: go on while the best state improves (`patience` checks after the last improvement, the earlier rule)
    polish: bool = False
    repair: bool = True  # run retain repair when val_retain falls below its guard
    repair_steps: int = bounded(20, 0)  # most repair steps per guard breach
    # Adam learning rate of the repair steps (gradient norm clipped at 5)
    repair_lr: float = bounded(1e-4, 0, open_lo=True)
    repair_batch_size: int = bounded(64, 1)
    # repair also distils train_forget rows toward the model as it entered repair (KL, this weight), so restoring
    # retain does not undo the forgetting already done; 0 = retain-only repair (docs/results/repair-hold.md)
    repair_hold: float = bounded(0.0, 0, 100)
    # overshoot: return to the last good state and scale the lr, at most this many times
    backtracks: int = bounded(4, 0)
    backtrack_factor: float = bounded(0.5, 0, 1, open_lo=True, open_hi=True)  # lr multiplier per backtrack


@dataclasses.dataclass
class Plan:
    """What a method hands the controller. `update(t)` performs optimiser step t (1-based), returns its loss."""

    update: Callable[[int], float]
    budget: int
    warmup: int = 0  # no state before this step may be accepted (EU-k's fresh blocks start at chance)
    rows_per_step: int = 0  # forward-equivalent rows one step processes (auto check interval); 0 = unknown
    finalize: Callable[[nn.Module], nn.Module] | None = None  # applied to the returned state (e.g. prune a head)
    params: list[nn.Parameter] | None = None  # what retain repair may update (the method's subset); None = all
    optimizer: torch.optim.Optimizer | None = None  # the method's optimiser: lets the controller backtrack


@dataclasses.dataclass
class Outcome:
    model: nn.Module
    acceptance: Acceptance
    trace: list[dict[str, Any]]


def validate_control(cfg: ControlConfig) -> None:
    """The controller's ranges, declared on its fields (bounds.bounded), checked by the one bounds checker."""
    check_config_bounds(cfg, "controller", caps=False)


@dataclasses.dataclass(frozen=True)
class ProbeSources:
    """Which rows a verdict's probes read, e.g. "val_forget (148 rows)"."""

    forget: str
    retain: str


@dataclasses.dataclass(frozen=True)
class Acceptance(Mapping[str, Any]):
    """A run's verdict (the controller's `result`); `to_json` is its one serialiser (metrics.json "acceptance").

    Callers add to it with dataclasses.replace, never in place. It reads like its JSON form too (acc["met"],
    acc.get("cost")) so that readers of the old dict move to attributes one at a time."""

    met: bool
    goal: str
    judged_on: str  # "validation"
    probes: ProbeSources
    criteria: dict[str, Any]  # Criteria.to_dict()
    checks: list[dict[str, Any]]  # name, label, value, op, threshold, passed, ... (criteria.evaluate_checks)
    state: str  # "best (criteria met)" | "closest (criteria not met)" | "best checked state (criteria vacuous: ...)"
    step: int  # the returned state's step
    chosen_phase: str | None  # its check's phase ("original", "method", "repair"); None when no state was kept
    steps_run: int
    budget: int
    check_every: int
    repair_steps: int
    backtracks: int
    vacuous: bool
    check_time_fraction: float
    reason: str
    trace_file: str = "trace.csv"
    first_met_step: int | None = None
    polish: bool = False
    selectivity: dict[str, Any] = dataclasses.field(default_factory=dict)
    cost: dict[str, Any] | None = None  # image passes per phase (unlearn/cost.py)
    # suppression: criterion (a)'s interval on the returned state (judging.probe_resolution)
    forget_interval: list[float] | None = None
    underpowered: bool | None = None
    resolution_hint: str | None = None
    # set after the run, in this order: the auto chain (workflow/auto_method.py, steps_forget), forget --audit
    # (steps_audit.judge_forget), forget --reference
    cost_chain: dict[str, Any] | None = None
    auto: list[dict[str, Any]] | None = None
    interval_checks: list[dict[str, Any]] | None = None
    interval_met: bool | None = None
    judged_by: str | None = None
    audit: dict[str, Any] | None = None
    reference_hint: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # keys this version does not know, as read

    def to_json(self) -> dict[str, Any]:
        """The metrics.json form: every field in order, the optional ones only when set, then `extra`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "extra" or (f.name in OPTIONAL_KEYS and v is None):
                continue
            out[f.name] = dataclasses.asdict(v) if isinstance(v, ProbeSources) else v
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Acceptance:
        """Read a metrics.json record (older ones too: a missing field takes its default, unknown keys go to extra)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in names}
        probes = kw.get("probes") or {}
        kw["probes"] = ProbeSources(str(probes.get("forget", "")), str(probes.get("retain", "")))
        required = {f.name: _MISSING_READ.get(f.name) for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        return cls(**{**required, **kw}, extra={k: v for k, v in d.items() if k not in names})

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


# fields to_json leaves out while they are None (absent from the records of runs they do not apply to)
OPTIONAL_KEYS = frozenset({"forget_interval", "underpowered", "resolution_hint", "cost_chain", "auto",
                           "interval_checks", "interval_met", "judged_by", "audit", "reference_hint"})
# what from_json gives a required field an old record lacks
_MISSING_READ: dict[str, Any] = {"met": False, "goal": "", "judged_on": "validation", "criteria": {}, "checks": [],
                                 "state": "", "step": 0, "chosen_phase": None, "steps_run": 0, "budget": 0,
                                 "check_every": 0, "repair_steps": 0, "backtracks": 0, "vacuous": False,
                                 "check_time_fraction": 0.0, "reason": ""}
