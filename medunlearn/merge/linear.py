"""Linear / uniform model soup: θ = Σ w_i θ_i / Σ w_i (uniform when no weights are given).

merge([x, x]) == x for any positive weights.
"""
from __future__ import annotations

from medunlearn.merge.base import MERGES, MergeEnv, MergeMethod, StateDict, weighted_average


@MERGES.register("linear")
class Linear(MergeMethod):
    name = "linear"
    summary = "Weighted average of the runs' weights (model soup); weights are normalised to sum 1"

    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        return {k: weighted_average([sd[k] for sd in runs], weights) for k in base}
