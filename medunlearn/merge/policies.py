"""Per-policy acceptance of a merged model: every source run's own criteria, judged on VALIDATION rows.

A policy is what one unlearning run forgot (its rule), under which goal, and with which criteria settings
(the run's forget_tol, confidence_margin, retain_drop, ... read from its meta.json). A merged model meets
a policy when `judging.assess` passes every check of that policy on its fixed validation probes (the
same probes and seed its run was judged on). Retain is judged on the rows NO policy forgets (the union's
val_retain): one policy's retain set holds another policy's forget rows, which the merge must forget.
Test rows are never read here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.evaluate.functional import model_device
from medunlearn.unlearn.judging import Judge, is_class_removal
from medunlearn.unlearn.types import ControlConfig


@dataclasses.dataclass
class Policy:
    """One source run's policy: its rule, goal, criteria settings and validation data."""

    name: str  # the rule text, e.g. "device = ScannerX"
    goal: str  # suppression | equivalence
    control: ControlConfig  # the run's criteria and probe settings
    data: SplitData  # the policy's split with train/val retain replaced by the rows no policy forgets
    seed: int = 0  # the run's seed: same probes as the run's own checks
    rule: dict[str, Any] = dataclasses.field(default_factory=dict)
    run_dir: str = ""
    run_sha256: str = ""
    accepted: bool | None = None  # the run's own verdict (None: an older run without acceptance)
    source_checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the run's own checks


def control_from_meta(meta: Mapping[str, Any]) -> ControlConfig:
    """The ControlConfig a run was judged with, from meta.json's unlearn_config (defaults for older runs)."""
    cfg = meta.get("unlearn_config")
    if not isinstance(cfg, Mapping):
        cfg = {}
    names = {f.name for f in dataclasses.fields(ControlConfig)}
    return ControlConfig(**{k: v for k, v in cfg.items() if k in names})


def shared_retain(policy: SplitData, union: SplitData) -> SplitData:
    """`policy` with train/val retain rows replaced by the union's (rows matching no policy's rule)."""
    return dataclasses.replace(policy, train_retain=union.train_retain, val_retain=union.val_retain)


def strictest(policies: Sequence[Policy]) -> ControlConfig:
    """Retain settings for the union: the smallest retain_drop and selectivity_margin (null when no policy is a
    domain suppression with (d) on: a class withdrawal's merge keeps (c) only) and the largest probe."""
    margins = [p.control.selectivity_margin for p in policies
               if p.control.selectivity_margin is not None and p.goal == "suppression" and not is_class_removal(p.data)]
    return ControlConfig(retain_drop=min(p.control.retain_drop for p in policies),
                         max_eval=max(p.control.max_eval for p in policies),
                         selectivity_margin=min(margins) if margins else None,
                         confidence_margin=min((p.control.confidence_margin for p in policies
                                                if p.control.confidence_margin is not None), default=None))


def _failures(checks: list[dict[str, Any]]) -> list[str]:
    out = []
    for c in checks:
        if not c["passed"]:
            t = c["threshold"]
            want = f"within [{t[0]:.1f}, {t[1]:.1f}]" if c["op"] == "within" else (
                f"CI {c.get('interval')} to cover {t}" if c["op"] == "ci_covers" else f"{c['op']} {t:.1f}")
            out.append(f"{c['label']} {c['value']:.1f} % (required {want})")
    return out


class PolicyJudge:
    """Judges merged models against every policy's criteria and retain, on validation rows.

    Retain: val_retain accuracy of the rows no policy forgets vs the base's, minus the strictest retain_drop; and
    their mean max-softmax (criterion (d)) vs the base's, minus the strictest selectivity_margin, when any policy
    is a domain suppression with (d) on. Each policy's probes and the base's figures are read once
    (`judging.Judge`), so a merge search judges its candidates on one read of the base."""

    def __init__(self, base: nn.Module, policies: Sequence[Policy], union: SplitData,
                 device: torch.device | None = None) -> None:
        self.policies = list(policies)
        self.judges = [Judge(base, p.data, p.goal, p.control, seed=p.seed, device=device) for p in self.policies]
        self.retain_cfg = strictest(self.policies)
        self.retain_rows = min(len(union.val_retain), self.retain_cfg.max_eval)
        seed = self.policies[0].seed if self.policies else 0
        self.retain_judge = Judge(base, union, "suppression", self.retain_cfg, seed=seed, device=device)

    def retain(self, model: nn.Module) -> dict[str, Any]:
        a = self.retain_judge(model)
        check = next(c for c in a["checks"] if c["name"] == "retain_accuracy")
        checks = [check] + [c for c in a["checks"] if c["name"] == "retain_confidence"]
        return {"met": all(c["passed"] for c in checks), "judged_on": "validation",
                "label": "val_retain accuracy (rows no policy forgets)",
                "value": check["value"], "threshold": check["threshold"],
                "original": round(a["criteria"]["retain_original"], 3),
                "retain_drop": self.retain_cfg.retain_drop, "rows": self.retain_rows, "checks": checks,
                "selectivity": a["selectivity"],
                "union_forget": {"accuracy": a["measurement"]["forget_acc"],
                                 "confidence": a["measurement"]["forget_conf"]}}

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        """The merged model's acceptance: {met, judged_on, policies: [...], retain: {...}, state, reason}."""
        model = model.eval()
        records = [{"policy": p.name, "rule": p.rule, "run": p.run_dir, "run_sha256": p.run_sha256,
                    "run_accepted": p.accepted, **judge(model), "source_checks": p.source_checks}
                   for p, judge in zip(self.policies, self.judges)]
        retain = self.retain(model)
        reasons = [f"{r['policy']}: {f}" for r in records for f in _failures(r["checks"])]
        reasons += [f"{r['policy']}: the base model already meets its equivalence criteria, so they cannot show "
                    "forgetting (vacuous)" for r in records if r.get("vacuous")]
        if not retain["met"]:
            reasons += [f"retain: {f}" for f in _failures(retain["checks"])]
        met = not reasons
        return {"met": met, "judged_on": "validation", "policies": records, "retain": retain,
                "state": "merged (criteria met)" if met else "merged (criteria not met)",
                "reason": "every policy's criteria and retain are met" if met else "; ".join(reasons)}


def assess_policies(model: nn.Module, base: nn.Module, policies: Sequence[Policy], union: SplitData,
                    device: torch.device | None = None) -> dict[str, Any]:
    """One merged model's acceptance (`PolicyJudge`; build one to judge several models)."""
    device = device or model_device(model)
    return PolicyJudge(base, policies, union, device)(model)


def policy_checks(policies: Sequence[Policy], base: nn.Module,
                  device: torch.device) -> Callable[[nn.Module], list[dict[str, Any]]]:
    """Checks for `controller.ExtraChecks` (a run's observer): every policy's forget-side checks on the same
    validation probes `assess_policies` judges the merge on (retain is left to the caller's own check)."""
    from medunlearn.unlearn.criteria import RETAIN_CHECKS, evaluate_checks
    from medunlearn.unlearn.judging import judged_probes

    judges = [(p.name, *judged_probes(p.data, p.control, p.goal, p.seed, device, base)) for p in policies]

    def checks(model: nn.Module) -> list[dict[str, Any]]:
        out = []
        for name, probes, criteria in judges:
            m = probes.measure(model, criteria, retain=dict(RETAIN_UNREAD))  # the retain probe is the caller's
            out += [{**c, "name": f"{name}: {c['name']}", "label": f"{name}: {c['label']}"}
                    for c in evaluate_checks(criteria, m) if c["name"] not in RETAIN_CHECKS]
        return out

    return checks


RETAIN_UNREAD = {"retain_acc": 0.0, "retain_conf": 0.0, "retain_routed": 0.0}  # placeholders, checks dropped


def violation_total(acceptance: Mapping[str, Any]) -> float:
    """Total points by which a merged model misses its policies' and retain's thresholds (0 when met)."""
    from medunlearn.unlearn.criteria import violation

    checks = [c for r in acceptance.get("policies", []) for c in r["checks"]] + acceptance["retain"]["checks"]
    return float(violation(checks))
