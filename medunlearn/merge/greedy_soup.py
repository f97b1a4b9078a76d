"""Greedy soup (Wortsman et al. 2022): add runs best-first, keep one only if the held-out score does not drop.

Runs are ranked by their own held-out score; the soup starts with the best and each next run is kept when
the uniform average of soup + run scores >= the current soup. The score is a callable passed to
``merge(score_fn=...)`` (higher is better); without one, ``held_out_score`` on the validation split is used:
retain accuracy − |forget accuracy − chance| (both in %), which rewards retention and suppression together.
Per-run weights are not used (the soup is uniform over the kept runs). Candidates are scored with averaged
BatchNorm stats even when ``bn_stats="recompute"`` (recomputed once, for the final soup).
The record {scores, order, kept, soup_score} goes to ``ctx.log["greedy_soup"]``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.errors import ConfigError, DataError
from medunlearn.evaluate.functional import model_accuracy
from medunlearn.merge.base import MERGES, MergeConfig, MergeEnv, MergeMethod, StateDict, merge_buffers, weighted_average
from medunlearn.runtime import RunContext


@dataclasses.dataclass
class GreedySoupConfig(MergeConfig):
    batch_size: int = 256  # evaluation batch size of the default held-out score


def held_out_score(data: SplitData, ctx: RunContext, batch_size: int = 256) -> Callable[[nn.Module], float]:
    """score(model) = val-retain acc − |val-forget acc − chance| (percentages)."""
    if len(data.val_retain) == 0 or len(data.val_forget) == 0:
        raise DataError("Expected validation retain and forget images for the greedy-soup score, but one is empty.")
    chance = 100.0 / data.num_classes

    def score(model: nn.Module) -> float:
        model = model.to(ctx.device)
        ra = model_accuracy(model, data.val_retain.images, data.val_retain.labels, batch_size, ctx.device)
        fa = model_accuracy(model, data.val_forget.images, data.val_forget.labels, batch_size, ctx.device)
        return ra - abs(fa - chance)

    return score


def soup(base: Mapping[str, torch.Tensor], runs: Sequence[Mapping[str, torch.Tensor]], bn_stats: str) -> StateDict:
    """Uniform average of whole state dicts (float tensors), buffers by the shared rules."""
    w = [1.0] * len(runs)
    out = {k: weighted_average([sd[k] for sd in runs], w).to(t.dtype)
           for k, t in base.items() if t.is_floating_point() and not k.endswith(("running_mean", "running_var"))}
    out.update(merge_buffers(base, runs, w, bn_stats))
    return out


def greedy_select(scores: list[float], score_soup: Callable[[list[int]], float]) -> tuple[list[int], float]:
    """Indices kept, best-first; a run joins only if score_soup(kept + [run]) >= the current soup score."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    kept, best = [order[0]], scores[order[0]]
    for i in order[1:]:
        s = score_soup(kept + [i])
        if s >= best:
            kept, best = kept + [i], s
    return kept, best


@MERGES.register("greedy_soup")
class GreedySoup(MergeMethod):
    name = "greedy_soup"
    summary = "Greedy soup: average runs best-first, keeping each only if a held-out score does not drop"
    Config = GreedySoupConfig
    uses_weights = False

    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        build = env.need_builder(self.name)
        score = env.score_fn
        if score is None:
            if env.data is None:
                raise ConfigError("Expected score_fn or data (with validation splits) for greedy_soup, "
                                  "but got neither.")
            score = held_out_score(env.data, env.ctx, int(self.config.batch_size))
        full = list(env.run_sds)
        bn = "average" if self.config.bn_stats == "recompute" else self.config.bn_stats
        scores = [float(score(build(sd))) for sd in full]
        kept, best = greedy_select(scores, lambda idx: float(score(build(
            soup(env.base_sd, [full[i] for i in idx], bn)))))
        env.ctx.log["greedy_soup"] = {"scores": scores, "order": sorted(range(len(scores)), key=lambda i: -scores[i]),
                                      "kept": kept, "soup_score": best}
        return {k: weighted_average([runs[i][k] for i in kept], [1.0] * len(kept)) for k in base}

    def _merge_buffers(self, base: Mapping[str, torch.Tensor], runs: Sequence[Mapping[str, torch.Tensor]],
                       weights: list[float], env: MergeEnv) -> StateDict:
        kept = env.ctx.log["greedy_soup"]["kept"]
        return merge_buffers(base, [runs[i] for i in kept], [1.0] * len(kept), self.config.bn_stats)
