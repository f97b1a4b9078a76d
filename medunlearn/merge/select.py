"""Choose a merge method on validation data: try candidates cheapest first, keep the first that meets every
policy's criteria and retain (none met: the one closest to its thresholds, marked not met).

Candidates are ordered by cost (forward/backward passes they spend): plain arithmetic merges first, then the
learned coefficients (a few hundred validation forwards), then merge + repair (guarded fine-tuning steps); the
search stops at the first candidate that meets. merge_repair starts from the learned coefficients the search
already fitted (same runs, seed and config: `MergeEnv.done`) instead of fitting them a second time.
Test rows are never read: both the methods and the acceptance use training and validation rows only.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.errors import ConfigError
from medunlearn.merge.base import MERGES, StateDict
from medunlearn.merge.policies import Policy, PolicyJudge, violation_total
from medunlearn.merge.runner import load_sources, merge_runs
from medunlearn.runtime import RunContext

DEFAULT_CANDIDATES = ("linear", "task_arithmetic", "ties", "learned_coefficients", "merge_repair")


def check_candidates(candidates: Sequence[str]) -> list[str]:
    names = [str(c).strip() for c in candidates if str(c).strip()]
    if not names:
        raise ConfigError("Expected at least one candidate merge method, but got none.")
    for n in names:
        MERGES.get(n)  # did-you-mean on a typo
    return names


def select_merge(run_dirs: Sequence[str | Path], base_dir: str | Path, base: nn.Module, policies: Sequence[Policy],
                 union: SplitData, candidates: Sequence[str] = DEFAULT_CANDIDATES, seed: int = 0,
                 device: str | None = None) -> tuple[nn.Module, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Returns (model, merge_info, acceptance, selection record {candidates: [...], chosen, why})."""

    done: dict[str, tuple[dict[str, Any], StateDict]] = {}  # each candidate's merge, for merge_repair's first merge
    sources = load_sources(run_dirs, base_dir)  # read once for every candidate

    def merge_one(name: str) -> tuple[nn.Module, dict[str, Any], Any]:
        ctx = RunContext.create(seed=seed, device=device)
        model, info = merge_runs(run_dirs, base_dir, name, data=union, seed=seed, ctx=ctx, policies=policies,
                                 done=done, sources=sources)
        done[name] = (info["config"], {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return model, info, ctx.device

    return select_by(merge_one, base, policies, union, candidates)


MergeOne = Callable[[str], tuple[nn.Module, dict[str, Any], Any]]  # name -> (model, info, device)


def select_by(merge_one: MergeOne, base: nn.Module, policies: Sequence[Policy], union: SplitData,
              candidates: Sequence[str] = DEFAULT_CANDIDATES) -> tuple[nn.Module, dict, dict, dict]:
    """The selection loop over any way of merging (checkpoint folders, or in-memory state dicts)."""
    tried: list[dict[str, Any]] = []
    best: tuple[float, nn.Module, dict, dict] | None = None
    judge: PolicyJudge | None = None  # built on the first candidate's device, then reused for every candidate
    for name in check_candidates(candidates):
        t0 = time.perf_counter()
        try:
            model, info, device = merge_one(name)
        except ConfigError as exc:  # e.g. merge_repair with policies of two goals: not a candidate here
            tried.append({"method": name, "met": False, "violation": None, "time_s": round(time.perf_counter() - t0, 3),
                          "reason": f"skipped: {exc}"})
            continue
        judge = judge or PolicyJudge(base, policies, union, device)
        acceptance = judge(model)
        gap = violation_total(acceptance)
        gap = gap if math.isfinite(gap) else math.inf  # a diverged candidate (NaN outputs) ranks last
        tried.append({"method": name, "met": acceptance["met"],
                      "violation": round(gap, 3) if math.isfinite(gap) else None,
                      "time_s": round(time.perf_counter() - t0, 3), "reason": acceptance["reason"]})
        if best is None or gap < best[0] - 1e-9 or acceptance["met"]:
            best = (gap, model, info, acceptance)
        if acceptance["met"]:
            break
    if best is None:
        raise ConfigError(f"Expected at least one candidate merge method to apply, but all were skipped: "
                          f"{'; '.join(t['reason'] for t in tried)}")
    _, model, info, acceptance = best
    chosen = info["method"]
    failed = [t["method"] for t in tried if not t["met"]]
    if acceptance["met"]:
        why = (f"{chosen}: the cheapest candidate that meets every policy's criteria and retain on validation data"
               + (f" ({', '.join(failed)} did not)" if failed else ""))
    else:
        why = f"no candidate met every criterion; kept {chosen}, the closest ({best[0]:.1f} points short in total)"
    return model, info, acceptance, {"candidates": tried, "chosen": chosen, "why": why}
