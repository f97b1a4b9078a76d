"""DARE-TIES (Yu et al. 2024): random drop-and-rescale of each delta, then TIES sign election.

Each entry of τ_i is kept with probability ``density`` (drop probability p = 1 − density) and kept entries
are rescaled by 1/(1 − p), so E[τ̂_i] = τ_i. The masks come from a torch.Generator seeded with
``ctx.seed`` (one stream per run, tensors in state-dict order), so a merge is reproducible.
Then: elect sign by total mass and take the disjoint mean (see ``ties.py``); θ = θ0 + s · τ_m.
"""
from __future__ import annotations

import dataclasses

import torch

from medunlearn.merge.base import MERGES, MergeEnv, StateDict, deltas
from medunlearn.merge.ties import Ties, TiesConfig, run_densities, sign_consensus_merge


@dataclasses.dataclass
class DareTiesConfig(TiesConfig):
    density: float = 0.2  # keep probability 1 − p; kept entries are scaled by 1/density


def dare_sparsify(tau: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability `density`, rescale kept ones by 1/density. Same shape as tau."""
    if density >= 1.0:
        return tau.clone()
    keep = torch.rand(tau.shape, generator=generator, dtype=torch.float64) < density
    return torch.where(keep, tau / density, torch.zeros_like(tau))


@MERGES.register("dare_ties")
class DareTies(Ties):
    """TIES with DARE's random drop-and-rescale in place of magnitude trimming (same knobs and checks)."""

    name = "dare_ties"
    summary = "DARE: randomly drop delta entries and rescale the rest, then TIES sign election"
    Config = DareTiesConfig

    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        dens = run_densities(self.config.density, env.run_params, len(runs))
        taus = []
        for i, (tau, d) in enumerate(zip(deltas(base, runs), dens)):
            gen = torch.Generator().manual_seed(int(env.ctx.seed) * 1_000_003 + i)
            taus.append({k: dare_sparsify(v, d, gen) for k, v in tau.items()})
        return sign_consensus_merge(base, taus, weights, float(self.config.scaling))
