"""Task arithmetic: θ = θ0 + s · Σ w_i τ_i with τ_i = θ_i − θ0 (Ilharco et al. 2023).

Weights are NOT normalised (mergekit convention; default 1.0 each), so merge([x, x]) == x only when
s · Σ w_i = 1, e.g. scaling = 0.5 with two unit weights. Negative weights subtract a run's change.
"""
from __future__ import annotations

import dataclasses

import torch

from medunlearn.bounds import bounded
from medunlearn.merge.base import MERGES, MergeConfig, MergeEnv, MergeMethod, StateDict, deltas


@dataclasses.dataclass
class TaskArithmeticConfig(MergeConfig):
    scaling: float = bounded(1.0, -10, 10)  # s, multiplies the weighted sum of deltas


def task_arithmetic(base: StateDict, taus: list[StateDict], weights: list[float], scaling: float) -> StateDict:
    """θ0 + s Σ w_i τ_i, tensor by tensor, in float64."""
    out = {}
    for k, b in base.items():
        acc = torch.zeros_like(b, dtype=torch.float64)
        for tau, w in zip(taus, weights):
            acc += float(w) * tau[k]
        out[k] = b.double() + scaling * acc
    return out


@MERGES.register("task_arithmetic")
class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    summary = "Base plus the scaled, weighted sum of each run's change from the base"
    Config = TaskArithmeticConfig
    allow_negative_weights = True

    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        return task_arithmetic(base, deltas(base, runs), weights, float(self.config.scaling))
