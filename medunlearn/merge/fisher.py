"""Fisher-weighted averaging (Matena & Raffel 2022): θ_k = Σ_i w_i F_i,k θ_i,k / Σ_i w_i F_i,k.

F_i is the diagonal Fisher of run i, estimated on ``fisher_samples`` retain-train images in eval mode:
``expected``: F = mean_x Σ_y p(y|x) (∂ log p(y|x)/∂θ)² (exact expectation over the K classes), or
``empirical``: the same with only the true label. ``eps`` is added to every F_i so entries with no
Fisher mass (frozen tensors, constant buffers) fall back to the plain weighted average.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from medunlearn.bounds import bounded
from medunlearn.data.imageset import ImageSet
from medunlearn.errors import DataError
from medunlearn.merge.base import MERGES, MergeConfig, MergeEnv, MergeMethod, StateDict, check_choice


@dataclasses.dataclass
class FisherConfig(MergeConfig):
    fisher_samples: int = bounded(64, 1)  # retain-train images used per run (the first n, in a seeded order)
    fisher_labels: str = "expected"  # "expected" (sum over classes weighted by p) or "empirical" (true label)
    eps: float = bounded(1e-8, 0, 1, open_lo=True)  # added to every Fisher entry


def diagonal_fisher(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    mode: str = "expected") -> dict[str, torch.Tensor]:
    """Diagonal Fisher per named parameter, averaged over samples. images: (N, C, H, W); labels: (N,)."""
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for x, y in zip(images, labels):
        logp = F.log_softmax(model(x.unsqueeze(0)), dim=1)[0]
        classes = range(logp.shape[0]) if mode == "expected" else [int(y)]
        for k in classes:
            grads = torch.autograd.grad(logp[k], list(params.values()), retain_graph=True, allow_unused=True)
            weight = float(logp[k].detach().exp()) if mode == "expected" else 1.0
            for (n, _), g in zip(params.items(), grads):
                if g is not None:
                    fisher[n] += weight * g.detach().double() ** 2
    return {n: f / max(1, len(images)) for n, f in fisher.items()}


def fisher_average(runs: list[StateDict], fishers: list[dict[str, torch.Tensor]], weights: list[float],
                   eps: float) -> StateDict:
    """Σ w_i (F_i + eps) θ_i / Σ w_i (F_i + eps) per tensor; keys without a Fisher use F = 0."""
    out = {}
    for k in runs[0]:
        num = torch.zeros_like(runs[0][k], dtype=torch.float64)
        den = torch.zeros_like(num)
        for sd, fi, w in zip(runs, fishers, weights):
            f = fi.get(k, torch.zeros_like(num)).to(num.device) + eps
            num += float(w) * f * sd[k].double()
            den += float(w) * f
        out[k] = num / den
    return out


def _sample(retain: ImageSet, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(retain), generator=torch.Generator().manual_seed(seed))[:n]
    return retain.images[order], retain.labels[order]


@MERGES.register("fisher")
class Fisher(MergeMethod):
    name = "fisher"
    summary = "Per-parameter weighted average with each run's diagonal Fisher on retain data"
    Config = FisherConfig

    def validate(self) -> None:
        check_choice("fisher_labels", self.config.fisher_labels, ("expected", "empirical"))

    def _merge_floats(self, base: StateDict, runs: list[StateDict], weights: list[float], env: MergeEnv) -> StateDict:
        data, build = env.need_data(self.name), env.need_builder(self.name)
        if len(data.train_retain) == 0:
            raise DataError("Expected retain-train images to estimate the Fisher, but the retain set is empty.")
        x, y = _sample(data.train_retain, int(self.config.fisher_samples), int(env.ctx.seed))
        x, y = x.to(env.ctx.device), y.to(env.ctx.device)
        fishers = []
        for sd in env.run_sds:  # whole state dicts: the model needs its BatchNorm buffers
            model = build(sd).to(env.ctx.device)
            fisher = diagonal_fisher(model, x, y, self.config.fisher_labels)
            fishers.append({k: v.cpu() for k, v in fisher.items()})
        return fisher_average(runs, fishers, weights, float(self.config.eps))

