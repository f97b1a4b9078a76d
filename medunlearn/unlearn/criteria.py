"""Acceptance criteria: what a policy requires of the forget domain and the retain guard (pure math).

Suppression (a device, site or outlier group is retired; or a class is withdrawn):
  (a) forget_accuracy   held-out forget-domain accuracy (val_forget) within ±forget_tol points of the target:
                        chance 100/K for a domain, 0 for a removed class (its images must never be called it).
                        `forget_measure` says which accuracy: "argmax" (top-1), or "expected" (the mean
                        probability given to the true label, i.e. the accuracy of the model's own predictive
                        distribution). "auto" (default) = expected for a domain, argmax for a removed class.
                        Why: a domain's class mix is rarely balanced (the synthetic ScannerX is 60/40/0 on the
                        demo's val_forget, by design), and a label-blind model's top-1 accuracy there is the
                        share of whichever class it happens to favour (0–60 %), never reliably 100/K; its
                        expected accuracy is 100/K for every label-blind output, whatever the class mix;
  (b) forget_confidence mean max-softmax on val_forget <= 100/K + confidence_margin (domains only): the model is
                        uncertain there, not confidently wrong, so a deployment can route such images to a human;
  (c) retain_accuracy   val_retain accuracy >= the original's − retain_drop, where the drop is at least one probe
                        row (100/n points): on the demo's 84 val_retain rows a 1-point guard would fail on a
                        single image, a change finer than the probe can measure (`retain_drop_requested`
                        keeps the setting);
  (d) retain_confidence mean max-softmax on val_retain >= the original's − selectivity_margin (domain suppression
                        only): the suppression is selective, the retain domain keeps its confidence. Why: FAMR's
                        uniform target is cheapest to reach by flattening every output, and (c) reads argmax only,
                        so a model uncertain on everything passed (a)–(c) (issue 31: the demo's merge, 41 % on
                        retain against the original's 98 %). Beside it, the clinical form is reported, not gated:
                        the share of val_retain rows whose max-softmax falls under the routing threshold
                        100/K + confidence_margin (the images a deployment would send to a human), for the model
                        and the original. Mean confidence was chosen as the gate because it moves smoothly with
                        every row (a share counts only the rows that cross one line, so it is blind to a retain
                        domain sliding from 98 % to 60 % while staying above a 43 % line) and it is the figure the
                        issue's test target states (within 5 points of the original's).
Equivalence (consent withdrawn: look as if the forget rows were never seen):
  (a) membership_accuracy_gap  acc(train_forget) − acc(val_forget): its bootstrap interval covers 0;
  (b) membership_loss_auc      P(loss on val_forget > loss on train_forget): its interval covers 0.5;
  (c) retain_accuracy          as above.
Every number is a percentage (the AUC too, 50 = indistinguishable). Test rows are never read here.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from medunlearn.bounds import bounded, check_config_bounds
from medunlearn.errors import ConfigError

FORGET_MEASURES = ("auto", "argmax", "expected")
MEASURE_KEYS = {"argmax": "forget_acc", "expected": "forget_expected"}  # the measurement each one reads


@dataclasses.dataclass
class CriteriaConfig:
    """Criteria knobs shared by every method's Config (settable with --set or the config YAML)."""

    forget_tol: float = bounded(5.0, 0, 100)  # (a) half-width of the accepted band around the target, points
    forget_target: float | None = bounded(None, 0, 100)  # (a) target accuracy %; None = chance (domain) or 0 (class)
    forget_measure: str = "auto"  # (a) auto | argmax | expected (mean true-label probability); see the docstring
    confidence_margin: float | None = bounded(10.0, 0, 100)  # (b) mean max-softmax <= 100/K + margin; null = off
    retain_drop: float = bounded(1.0, 0, 100)  # (c) val_retain accuracy may fall at most this many points
    # (d) val_retain mean max-softmax may fall at most this many points below the original's (domain suppression);
    # null = criterion off. 5 = the issue-31 target (planning's decision), not tuned on any rows
    selectivity_margin: float | None = bounded(5.0, 0, 100)
    ci_level: float = bounded(0.95, 0.5, 1, open_hi=True)  # equivalence: two-sided bootstrap interval level
    bootstrap: int = bounded(200, 20, 10_000)  # equivalence: bootstrap resamples per check


@dataclasses.dataclass(frozen=True)
class Criteria:
    """Resolved criteria of one run (all in percent)."""

    goal: str
    forget_target: float
    forget_tol: float
    max_confidence: float | None  # None: no confidence criterion (a removed class, or switched off)
    retain_drop: float
    retain_original: float  # the original model's val_retain accuracy on the same probe
    ci_level: float = 0.95
    bootstrap: int = 200
    policy_kind: str = "domain"  # domain | class
    forget_measure: str = "argmax"  # argmax | expected: which accuracy (a) reads (resolved from "auto")
    retain_drop_requested: float | None = None  # the configured retain_drop when one probe row is coarser
    min_retain_confidence: float | None = None  # (d) threshold; None: off (equivalence, a removed class, null)
    retain_confidence_original: float | None = None  # the original's val_retain mean max-softmax
    routing_threshold: float | None = None  # 100/K + confidence_margin: a row under it is routed to a human
    retain_routed_original: float | None = None  # the original's share of val_retain rows under that threshold

    def band(self) -> tuple[float, float]:
        """Criterion (a)'s accepted interval, clipped to [0, 100]."""
        return max(0.0, self.forget_target - self.forget_tol), min(100.0, self.forget_target + self.forget_tol)

    def retain_guard(self) -> float:
        """Criterion (c)'s threshold: the lowest val_retain accuracy that passes (within TOLERANCE)."""
        return self.retain_original - self.retain_drop

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate_criteria(cfg: CriteriaConfig) -> None:
    """The choices; the ranges are field metadata (bounds.bounded), checked where a Config enters (method_config,
    Unlearner) and here again, as resolve_criteria may be handed a Config built without either."""
    if cfg.forget_measure not in FORGET_MEASURES:
        raise ConfigError(f"Expected forget_measure in {list(FORGET_MEASURES)}, but got {cfg.forget_measure!r}.")
    if cfg.forget_target is not None and not isinstance(cfg.forget_target, (int, float)):
        raise ConfigError(f"Expected forget_target to be a percentage or null, but got {cfg.forget_target!r}.")
    check_config_bounds(cfg, "controller", caps=False)


def resolve_criteria(cfg: CriteriaConfig, goal: str, num_classes: int, class_removal: bool,
                     retain_original: float, retain_rows: int = 0,
                     retain_original_stats: dict[str, float] | None = None) -> Criteria:
    """The run's criteria from its knobs, its goal and its policy kind (a removed class or a domain).
    `retain_original_stats`: the original's {retain_conf, retain_routed} on the same probe (criterion (d))."""
    validate_criteria(cfg)
    chance = 100.0 / num_classes
    if cfg.forget_target is not None:
        target = float(cfg.forget_target)
    else:
        target = 0.0 if class_removal else chance
    margin = None if cfg.confidence_margin is None else float(cfg.confidence_margin)
    max_conf = None if class_removal or margin is None else min(100.0, chance + margin)
    measure = cfg.forget_measure if cfg.forget_measure != "auto" else ("argmax" if class_removal else "expected")
    drop = max(cfg.retain_drop, 100.0 / retain_rows) if retain_rows else cfg.retain_drop
    stats = retain_original_stats or {}
    route = None if margin is None else min(100.0, chance + margin)
    sel_margin = cfg.selectivity_margin
    selective = goal == "suppression" and not class_removal and "retain_conf" in stats
    min_conf = max(0.0, stats["retain_conf"] - float(sel_margin)) if selective and sel_margin is not None else None
    return Criteria(min_retain_confidence=min_conf, retain_confidence_original=stats.get("retain_conf"),
                    routing_threshold=route,
                    retain_routed_original=stats.get("retain_routed") if route is not None else None,
                    goal=goal, forget_target=target, forget_tol=cfg.forget_tol, max_confidence=max_conf,
                    retain_drop=drop, retain_original=retain_original, ci_level=cfg.ci_level, bootstrap=cfg.bootstrap,
                    policy_kind="class" if class_removal else "domain", forget_measure=measure,
                    retain_drop_requested=cfg.retain_drop if drop != cfg.retain_drop else None)


TOLERANCE = 1e-9  # every check's slack for float rounding (points)
NO_ROWS_VIOLATION = 100.0  # a check on an empty probe misses by the most a percentage can


def _check(name: str, label: str, value: float, op: str, threshold: Any,
           interval: tuple[float, float] | None = None) -> dict[str, Any]:
    """One check record. op: "within" (threshold [lo, hi]), "<=", ">=", or "ci_covers" (the bootstrap
    `interval` of `value` must contain the threshold). A NaN value (an empty probe) fails, with reason "no rows"."""
    eps = TOLERANCE
    if math.isnan(value):
        passed = False
    elif op == "within":
        passed = threshold[0] - eps <= value <= threshold[1] + eps
    elif op == "ci_covers":
        assert interval is not None, f"the ci_covers check {name!r} needs its bootstrap interval"
        passed = interval[0] - eps <= threshold <= interval[1] + eps
    elif op == "<=":
        passed = value <= threshold + eps
    else:
        passed = value >= threshold - eps
    rec = {"name": name, "label": label, "value": round(float(value), 3), "op": op,
           "threshold": [round(float(t), 3) for t in threshold] if op == "within" else round(float(threshold), 3),
           "unit": "%", "passed": bool(passed)}
    if interval is not None:
        rec["interval"] = [round(float(interval[0]), 3), round(float(interval[1]), 3)]
    if math.isnan(value):
        rec["reason"] = f"no rows: the probe behind {name} is empty, so it cannot pass"
    return rec


def evaluate_checks(criteria: Criteria, m: dict[str, float]) -> list[dict[str, Any]]:
    """The criteria's checks on one measurement `m` (see controller.measure for its keys)."""
    out = []
    if criteria.goal == "suppression":
        band = list(criteria.band())
        label = ("held-out forget-domain accuracy" if criteria.forget_measure == "argmax"
                 else "held-out forget-domain expected accuracy (mean true-label probability)")
        out.append(_check("forget_accuracy", label, m[MEASURE_KEYS[criteria.forget_measure]], "within", band))
        if criteria.max_confidence is not None:
            out.append(_check("forget_confidence", "mean max-softmax on the forget domain", m["forget_conf"], "<=",
                              criteria.max_confidence))
    else:
        out.append(_check("membership_accuracy_gap", "train_forget − held-out forget accuracy", m["acc_gap"],
                          "ci_covers", 0.0, (m["acc_gap_lo"], m["acc_gap_hi"])))
        out.append(_check("membership_loss_auc", "loss AUC, held-out vs train_forget", m["auc"], "ci_covers", 50.0,
                          (m["auc_lo"], m["auc_hi"])))
    out.append(_check("retain_accuracy", "val_retain accuracy", m["retain_acc"], ">=", criteria.retain_guard()))
    if criteria.min_retain_confidence is not None:
        rec = _check("retain_confidence", "mean max-softmax on val_retain (selectivity)", m["retain_conf"], ">=",
                     criteria.min_retain_confidence)
        if criteria.routing_threshold is not None and "retain_routed" in m:
            rec.update(routing_threshold=round(criteria.routing_threshold, 3),
                       routed=round(float(m["retain_routed"]), 3),
                       routed_original=round(float(criteria.retain_routed_original or 0.0), 3))
        out.append(rec)
    return out


def confidence_stats(probs: torch.Tensor, routing_threshold: float | None) -> dict[str, float]:
    """Criterion (d)'s figures from softmax rows (N, K): mean max-softmax and the share of rows whose max-softmax
    is under `routing_threshold` (percent; rows a deployment routes to a human). No rows give NaN."""
    if len(probs) == 0:
        return {"retain_conf": float("nan"), "retain_routed": float("nan")}
    top = 100.0 * probs.double().amax(1)
    routed = float((top < routing_threshold).double().mean() * 100) if routing_threshold is not None else 0.0
    return {"retain_conf": float(top.mean()), "retain_routed": routed}


def retain_ok(checks: list[dict[str, Any]]) -> bool:
    """The retain side holds: criterion (c), and (d) where it applies."""
    return all(c["passed"] for c in checks if c["name"] in RETAIN_CHECKS)


RETAIN_CHECKS = ("retain_accuracy", "retain_confidence")


def violation(checks: list[dict[str, Any]]) -> float:
    """Total distance (points) by which the failed checks miss their thresholds; 0 when every check passes. A check
    with no rows counts NO_ROWS_VIOLATION."""
    total = 0.0
    for c in checks:
        if c["passed"] or not c.get("required", True):  # a recorded check that is not part of the verdict
            continue
        v, t = c["value"], c["threshold"]
        if math.isnan(v):
            total += NO_ROWS_VIOLATION
        elif c["op"] == "within":
            total += max(t[0] - v, v - t[1])
        elif c["op"] == "ci_covers":
            total += max(c["interval"][0] - t, t - c["interval"][1])
        else:
            total += abs(v - t)
    return total


def forget_shortfall(criteria: Criteria, m: dict[str, float]) -> float:
    """Signed distance of forgetting from its band: > 0 not forgotten enough yet, < 0 overshot, 0 inside (points)."""
    if criteria.goal == "suppression":
        acc = m[MEASURE_KEYS[criteria.forget_measure]]
        lo, hi = criteria.band()  # measures are percentages, so clipping cannot change the sign
        return acc - hi if acc > hi else (acc - lo if acc < lo else 0.0)
    return m["acc_gap_lo"] if m["acc_gap_lo"] > 0 else min(0.0, m["acc_gap_hi"])


# ---------------------------------------------------------------- bootstrap (equivalence)
def _resample_counts(n: int, resamples: int, gen: torch.Generator) -> torch.Tensor:
    """(resamples, n) float64: how often each of n rows is drawn in each bootstrap resample."""
    return torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
        1, torch.randint(0, n, (resamples, n), generator=gen), torch.ones(resamples, n, dtype=torch.float64))


def bootstrap_mean(values: torch.Tensor, resamples: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-row `values` (N,): how finely a probe of N rows resolves
    a measurement such as criterion (a)'s."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    means = _resample_counts(n, resamples, torch.Generator().manual_seed(seed)) @ values.double() / n
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return lo, hi


def bootstrap_membership(correct_f: torch.Tensor, loss_f: torch.Tensor, correct_h: torch.Tensor,
                         loss_h: torch.Tensor, resamples: int, level: float, seed: int) -> dict[str, float]:
    """Accuracy gap and loss AUC between train_forget (f) and held-out (h) rows, with bootstrap intervals.

    correct_*: (N,) 0/1; loss_*: (N,) per-row CE. Returns percent values: acc_gap = acc_f − acc_h,
    auc = 100·P(loss_h > loss_f) (+ half ties), each with [lo, hi] percentile intervals.
    """
    nf, nh = len(loss_f), len(loss_h)
    gen = torch.Generator().manual_seed(seed)
    cf, ch = _resample_counts(nf, resamples, gen), _resample_counts(nh, resamples, gen)
    cor_f, cor_h = correct_f.double(), correct_h.double()
    gap = 100.0 * (cf @ cor_f / nf - ch @ cor_h / nh)
    lf, lh = loss_f.double(), loss_h.double()
    wins = (lh[:, None] > lf[None, :]).double() + 0.5 * (lh[:, None] == lf[None, :]).double()  # (nh, nf)
    auc = 100.0 * ((ch @ wins) * cf).sum(1) / (nf * nh)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    g_lo, g_hi = torch.quantile(gap, q).tolist()
    a_lo, a_hi = torch.quantile(auc, q).tolist()
    return {"acc_gap": 100.0 * float(cor_f.mean() - cor_h.mean()), "acc_gap_lo": g_lo, "acc_gap_hi": g_hi,
            "auc": 100.0 * float(wins.mean()), "auc_lo": a_lo, "auc_hi": a_hi}
