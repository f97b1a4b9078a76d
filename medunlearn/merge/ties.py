"""TIES merging (Yadav et al. 2023): trim, elect sign, disjoint mean.

1. Trim: keep the top ``density`` fraction of each τ_i = θ_i − θ0 by magnitude, per tensor (default 0.2,
   the paper's k = 20 %); the rest is zeroed.
2. Elect: per entry, the sign of the total weighted mass Σ w_i τ̂_i.
3. Disjoint mean: average (weighted) only the entries whose sign agrees with the elected one:
   τ_m = Σ w_i τ̂_i [agree_i] / Σ w_i [agree_i]  (0 where no run agrees).
θ = θ0 + s · τ_m. merge([x, x]) == x holds only for density = 1 and scaling = 1.
"""
from __future__ import annotations

import dataclasses

import torch

from medunlearn.bounds import bounded
from medunlearn.merge.base import MERGES, MergeConfig, MergeEnv, MergeMethod, StateDict, check_range, deltas


@dataclasses.dataclass
class TiesConfig(MergeConfig):
    # fraction of each delta kept (top magnitudes); per-run override: models[i].density
    density: float = bounded(0.2, 0, 1, open_lo=True)
    scaling: float = bounded(1.0, -10, 10)  # s, multiplies the merged delta


def trim_top_k(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the round(density·numel) largest-|τ| entries (ties broken by position). Same shape."""
    n = tau.numel()
    k = min(n, max(1, int(round(density * n)))) if density > 0 and n > 0 else 0
    if k == n:
        return tau.clone()
    flat = tau.reshape(-1)
    order = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
    out = torch.zeros_like(flat)
    out[order] = flat[order]
    return out.reshape(tau.shape)


def elect_sign(taus: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Per-entry sign (−1, 0, +1) of the total weighted mass Σ w_i τ_i."""
    return torch.sign(sum((float(w) * t for t, w in zip(taus, weights)), torch.zeros_like(taus[0])))


def disjoint_mean(taus: list[torch.Tensor], weights: list[float], sign: torch.Tensor) -> torch.Tensor:
    """Weighted mean over runs of the non-zero entries whose sign equals `sign`; 0 where none agree."""
    num = torch.zeros_like(sign, dtype=torch.float64)
    den = torch.zeros_like(sign, dtype=torch.float64)
    for t, w in zip(taus, weights):
        agree = ((torch.sign(t) == sign) & (t != 0)).double()
        num += float(w) * t.double() * agree
        den += float(w) * agree
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def sign_consensus_merge(base: StateDict, taus: list[StateDict], weights: list[float], scaling: float) -> StateDict:
    """θ0 + s · disjoint_mean(elect_sign(τ)) per tensor, for already-sparsified deltas τ."""
    out = {}
    for k, b in base.items():
        ts = [t[k] for t in taus]
        out[k] = b.double() + scaling * disjoint_mean(ts, weights, elect_sign(ts, weights))
    return out


def run_densities(default: float, run_params: list[dict], n: int) -> list[float]:
    """Density per run: models[i].parameters.density, else the method's default; each in (0, 1]."""
    dens = []
    for i in range(n):
        d = float(run_params[i].get("density", default)) if i < len(run_params) else float(default)
        check_range(f"density of run {i}", d, 0.0, 1.0, lo_open=True)
        dens.append(d)
    return dens


@MERGES.register("ties")
class Ties(MergeMethod):
    name = "ties"
    summary = "TIES: trim each run's change to its largest entries, elect a sign, average agreeing entries"
    Config = TiesConfig
    run_param_names = ("weight", "density")

    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        dens = run_densities(self.config.density, env.run_params, len(runs))
        taus = [{k: trim_top_k(v, d) for k, v in tau.items()} for tau, d in zip(deltas(base, runs), dens)]
        return sign_consensus_merge(base, taus, weights, float(self.config.scaling))


