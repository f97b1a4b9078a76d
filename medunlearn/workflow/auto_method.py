"""`forget --method auto`: try the recommended methods for the policy in order, keep the first that meets its
acceptance criteria on VALIDATION rows; when none does, keep the closest (retain guard first, then the smallest
total violation, as the controller ranks states) and say so.

Where each chain comes from (validation verdicts only; docs/results/repair-hold.md section 4, psg-ab.md,
fashion-mnist-class.md):
  domain (device, site, outliers; suppression or equivalence)
      famr_budget              met device suppression under (d) 3/3 at 5k and 20k images, 700 and 120 patients
                               and on an adopted DenseNet121 bundle, at a cost that does not grow with the archive
                               (docs/results/domain-cost.md, adopt.md); first because where it meets it is the
                               cheapest; where it misses (the demo's site policy, site-policy.md; the 200-patient
                               site and outlier policies, merge-synthetic.md) the methods below still run, at the
                               price of its budget (300 steps on the last three blocks)
      famr                     met every device policy measured and the site policy on 3 of 4 synthetic
                               cohorts (demo 3/3 seeds, seed-7 3/3, seed-3 1/1; not the 200-patient merge cohort)
      famr_retain, lr 1e-3     the retain anchor allows a 10x step: met that cohort's site policy on 3/3 seeds where
                               famr met 0; not first because it missed the demo's site policy on 1/3 seeds
  class withdrawal
      psg_frozen               met on every seed on Fashion-MNIST (README "which method for which policy")
      famr, last-2 blocks, lr 3e-4, support remaining   the same, the second recommendation there
"""
from __future__ import annotations

import dataclasses
from typing import Any

from medunlearn.errors import ConfigError

AUTO = "auto"
CHAINS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "domain": [("famr_budget", {}), ("famr", {}), ("famr_retain", {"lr": 1e-3})],
    "class": [("psg_frozen", {}), ("famr", {"params": "last-2", "lr": 3e-4, "support": "remaining"})],
}


def chain_configs(config_path, overrides: dict | None) -> dict[str, list[tuple[str, dict[str, Any], Any]]]:
    """Every chain's (method, preset, resolved config); the user's --set applies to every candidate and is checked
    against all of them before anything runs (an override one candidate lacks is an error, said once)."""
    from medunlearn.configio import method_config
    from medunlearn.unlearn import METHODS

    if config_path is not None:
        raise ConfigError("Expected --method with --config: a config YAML is one method's settings, and the default "
                          "--method auto tries several (e.g. --method psg --config tuned/psg.yaml); with auto, "
                          "use --set for the criteria.")
    out: dict[str, list[tuple[str, dict[str, Any], Any]]] = {}
    for kind, chain in CHAINS.items():
        out[kind] = [(name, preset, method_config(METHODS.get(name), None, {**preset, **(overrides or {})}))
                     for name, preset in chain]
    return out


def run_chain(candidates, base, data, ctx, goal: str, extra_checks=None):
    """Run the candidates (one, for a named method) in order under the controller; returns (name, cfg, outcome,
    attempts). extra_checks: passed to every candidate's controller (`forget --audit`)."""
    import time

    from medunlearn.unlearn import METHODS
    from medunlearn.unlearn.controller import closer
    from medunlearn.unlearn.cost import ImageCounter
    from medunlearn.unlearn.criteria import violation

    attempts: list[dict[str, Any]] = []
    chain_cost = ImageCounter()  # every candidate's image passes: what the user paid for (acceptance["cost_chain"])
    kept: dict[str, Any] = {}
    for name, preset, cfg in candidates:
        start = time.perf_counter()
        method = METHODS.get(name)(cfg)
        method.extra_checks = extra_checks
        outcome = method.run(base, data, ctx, goal=goal)
        acc = outcome.acceptance
        v = violation(acc["checks"])
        cost = acc.get("cost") or {}
        chain_cost.merge(cost.get("phases", {}))
        attempts.append({"method": name, "preset": preset, "met": bool(acc["met"]), "violation": round(v, 4),
                         "wall_time_s": round(time.perf_counter() - start, 2), "reason": acc["reason"],
                         "forward_equivalents": cost.get("forward_equivalents")})
        if acc["met"] or not kept or (not kept["met"] and closer(acc["checks"], v, kept)):
            kept = {"name": name, "cfg": cfg, "outcome": outcome, "checks": acc["checks"], "violation": v,
                    "met": bool(acc["met"])}
        if acc["met"]:
            break
    kept["outcome"].acceptance = dataclasses.replace(kept["outcome"].acceptance, cost_chain=chain_cost.record())
    return kept["name"], kept["cfg"], kept["outcome"], attempts


def policy_kind(data) -> str:
    from medunlearn.unlearn.judging import is_class_removal

    return "class" if is_class_removal(data) else "domain"
