"""Judging a model against a run's acceptance criteria, outside or inside a controlled run.

The controller (unlearn/controller.py) and every caller that judges a finished model (a merge per policy,
tune's monitor, the auto chain) share these: which classes a split removes, the fixed validation probes and
criteria a model is judged on, criterion (a)'s resolution, the vacuous-equivalence rule and criterion (d)'s two
figures. Test rows are never read here.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.evaluate.functional import model_device
from medunlearn.unlearn.criteria import Criteria, evaluate_checks, resolve_criteria
from medunlearn.unlearn.probes import Probes
from medunlearn.unlearn.types import ControlConfig, validate_control


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


def probe_resolution(probes: Probes, model: nn.Module, criteria: Criteria,
                     forget_logits: torch.Tensor | None = None) -> dict[str, Any]:
    """How finely the held-out forget probe resolves criterion (a) on the returned state: its bootstrap interval,
    and a note when that interval is wider than the band (a handful of rows, e.g. 4 outliers in a small
    cohort: the verdict, met or not, is then mostly sampling noise). `forget_logits`: the model's logits on the
    forget probe when the caller has them."""
    lo, hi = probes.forget_interval(model, criteria, forget_logits)
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


class Judge:
    """Judges models against one goal's criteria on fixed validation probes, for (original, data, goal, cfg, seed).

    The probes, the criteria (resolved from the original's retain figures) and whether the original already
    meets them (the vacuous rule) are computed once, so judging many models (a merge search's candidates, the
    learned coefficients' checks) reads the original a single time."""

    def __init__(self, original: nn.Module, data: SplitData, goal: str, cfg: ControlConfig | None = None,
                 seed: int = 0, device: torch.device | None = None) -> None:
        cfg = cfg or ControlConfig()
        validate_control(cfg)
        device = device or model_device(original)
        self.goal = goal
        self.probes, self.criteria = judged_probes(data, cfg, goal, seed, device, original)
        original_checks = evaluate_checks(self.criteria, self.probes.measure(original, self.criteria))
        self.vacuous = is_vacuous(goal, all(c["passed"] for c in original_checks))

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        """{met, goal, judged_on, vacuous, criteria, checks, measurement, selectivity, and for suppression
        forget_interval, underpowered, resolution_hint?}; a vacuous equivalence judgement is never met."""
        probes, criteria = self.probes, self.criteria
        forget_logits = probes.forget_logits(model)
        m = probes.measure(model, criteria, forget_logits=forget_logits)
        checks = evaluate_checks(criteria, m)
        resolution = (probe_resolution(probes, model, criteria, forget_logits) if self.goal == "suppression"
                      else {})
        return {"met": all(c["passed"] for c in checks) and not self.vacuous, "goal": self.goal,
                "judged_on": "validation", "vacuous": self.vacuous, "criteria": criteria.to_dict(),
                "checks": checks, "measurement": {k: round(v, 4) for k, v in m.items()},
                "selectivity": selectivity(criteria, m), **resolution}


def assess(model: nn.Module, original: nn.Module, data: SplitData, goal: str, cfg: ControlConfig | None = None,
           seed: int = 0, device: torch.device | None = None) -> dict[str, Any]:
    """Judge one finished model against the goal's criteria on the same validation probes a run uses
    (e.g. a merged checkpoint, per policy): `Judge(...)(model)`, on the model's device unless `device`."""
    device = device or model_device(model)
    return Judge(original, data, goal, cfg, seed, device)(model)


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
