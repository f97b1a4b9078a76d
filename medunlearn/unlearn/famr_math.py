"""FAMR math (pure functions): the uniform-prediction loss, L_f, its gradient, Hessian-vector products, CG.

ℓ_u: "ce_uniform" CE(u, p) = KL(u‖p) + log|U| (bounded logit gradient p_k − u_k) or "kl_p_u" KL(p‖u) =
log K − H(p); u is uniform on the support mask U.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from medunlearn.errors import ConfigError


def support_mask(support: str, forget_labels: torch.Tensor, k: int) -> torch.Tensor:
    """(K,) bool mask of the uniform target's classes."""
    if support == "all":
        return torch.ones(k, dtype=torch.bool)
    mask = torch.ones(k, dtype=torch.bool)
    mask[forget_labels.unique()] = False
    if not bool(mask.any()):
        raise ConfigError('Expected support="remaining" only when the forget set lacks some class (class '
                          'forgetting), but the forget set contains every class; use support="all".')
    return mask


def loss_floor(loss: str, mask: torch.Tensor) -> float:
    """L_min: log|U| for ce_uniform, 0 for kl_p_u."""
    return math.log(int(mask.sum())) if loss == "ce_uniform" else 0.0


def uniform_loss(logits: torch.Tensor, loss: str, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample ℓ_u, (B, K) -> (B,)."""
    logp = F.log_softmax(logits.float(), 1)
    if loss == "ce_uniform":
        return -(logp * mask).sum(1) / mask.sum()
    return (logp.exp() * logp).sum(1) + math.log(logits.shape[1])


def kl_u_p(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(u‖p) with u uniform on the mask, (B, K) -> (B,)."""
    logp = F.log_softmax(logits.float(), 1)
    return -(logp * mask).sum(1) / mask.sum() - math.log(int(mask.sum()))


def _chunks(images: torch.Tensor, bs: int):
    for i in range(0, len(images), bs):
        yield images[i:i + bs]


@torch.no_grad()
def forget_objective(model: nn.Module, images: torch.Tensor, loss: str, mask: torch.Tensor,
                     dev: torch.device, params: dict | None = None, bs: int = 256) -> float:
    """L_f = mean ℓ_u over images (N, C, H, W); `params` overrides named parameters (functional_call)."""
    total = 0.0
    for x in _chunks(images, bs):
        out = functional_call(model, params, (x.to(dev),)) if params else model(x.to(dev))
        total += float(uniform_loss(out, loss, mask).sum())
    return total / max(1, len(images))


def forget_gradient(model: nn.Module, params: list[nn.Parameter], images: torch.Tensor, loss: str,
                    mask: torch.Tensor, dev: torch.device, bs: int = 256) -> list[torch.Tensor]:
    """∇_θS L_f over all of `images`."""
    grads = [torch.zeros_like(p) for p in params]
    for x in _chunks(images, bs):
        part = uniform_loss(model(x.to(dev)), loss, mask).sum() / len(images)
        for g, d in zip(grads, torch.autograd.grad(part, params)):
            g += d
    return grads


def hvp_fn(model: nn.Module, params: list[nn.Parameter], images: torch.Tensor, loss: str, mask: torch.Tensor,
           dev: torch.device, bs: int):
    """v -> H_f v by double backward over `images` (chunked)."""

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [torch.zeros_like(p) for p in params]
        for x in _chunks(images, bs):
            part = uniform_loss(model(x.to(dev)), loss, mask).sum() / len(images)
            g = torch.autograd.grad(part, params, create_graph=True)
            dot = sum(((gi * vi).sum() for gi, vi in zip(g, v)), part.new_zeros(()))
            for o, h in zip(out, torch.autograd.grad(dot, params)):
                o += h
        return out

    return hvp


def conjugate_gradient(hvp, b: list[torch.Tensor], lam: float, iters: int, rtol: float = 1e-4):
    """Solve (H + λI) x = b by CG; stops early on convergence or non-positive curvature. -> (x, iterations)."""
    dot = lambda a, c: sum(float((ai * ci).sum()) for ai, ci in zip(a, c))  # noqa: E731
    x = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rr, b_norm, done = dot(r, r), math.sqrt(dot(b, b)), 0
    for it in range(1, max(1, iters) + 1):
        done = it
        ap = [h + lam * pi for h, pi in zip(hvp(p), p)]
        pap = dot(p, ap)
        if pap <= 0:  # negative curvature: keep the iterate so far (truncated Newton)
            break
        alpha = rr / pap
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * ai for ri, ai in zip(r, ap)]
        rr_new = dot(r, r)
        if math.sqrt(rr_new) <= rtol * b_norm:
            break
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p)]
        rr = rr_new
    return x, done



def resolve_lam(lam: float | str | None, budget: float, lf0: float, floor: float) -> tuple[float, str]:
    """λ and where it came from ("given" | "budget": λ = 2(L_f(θ0) − L_min)/budget²)."""
    if lam is not None and str(lam).lower() not in ("none", "null", ""):
        try:
            value = float(lam)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Expected lam to be a positive number or null, but got {lam!r}.") from exc
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"Expected lam > 0, but got {lam!r}.")
        return value, "given"
    if not budget > 0:
        raise ConfigError(f"Expected budget > 0 when lam is null, but got {budget}.")
    return 2.0 * max(lf0 - floor, 1e-12) / budget ** 2, "budget"
