"""The perturbed-sign-gradient inner search shared by PSG and Boundary Shrink (pure functions).

Input space: images are [0, 1] pixels (B, C, H, W); every zoo model normalises inside its forward, so
the ε-ball, the closeness term and the 1/255 quantisation are all in [0, 1] pixel units. (The authors'
code mixed normalised and pixel tensors; we do not.)

Inner problem per forget sample:  δ* ∈ argmax_{‖δ‖∞ ≤ ε, x+δ ∈ [0,1]}  CE(f0(x+δ), y) − (λ/2)‖δ‖²,
solved by T perturbed sign-gradient ascent steps
    δ_t = Π(δ_{t-1} + η_t · sign(g − λ·δ + γ·s·z)),   η_t = step_size·ε/√t,  g = ∇_x CE(f0(x+δ), y)
with the per-sample gradient of a SUM loss (so each sample's gradient is its own, not 1/B of it).
Noise scale convention (`noise_scale`):
  "relative" (default): s = mean|g| of that sample, and the closeness term is λ·s·δ/ε, so γ = 1 means
      noise as large as the gradient's typical entry and λ = 1 a pull as large as it at the ball's edge;
  "absolute": s = 1 and the closeness term is λ·δ (the paper's formula; γ then depends on the model's
      gradient scale, which is tiny: γ = 1e-4 already hides the sign — see docs/background.md, trap 3).
T = 1, step_size = 1 is one FGSM step of size ε applied to every sample (Boundary Shrink; δ starts at 0, so
λ has no effect then). With T > 1 λ acts from the second step on, and before every step (the first included) a
sample whose p_y(x+δ) <= κ under the searched model stops moving: when the search runs at the CURRENT model
(`psg`), a forget image the model already doubts keeps δ = 0, so its soft target is the model's own output
and it stops pulling. γ = 0 draws no random numbers. `teacher` is the model the inner problem is solved at:
the original θ0 (`psg_frozen`, Boundary Shrink) or the model being unlearned (`psg`).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.errors import ConfigError

NOISES = ("gaussian", "laplace", "cauchy", "uniform")
NOISE_SCALES = ("relative", "absolute")


def sample_noise(kind: str, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Zero-centred noise with unit scale: N(0,1), Laplace(0,1), Cauchy(0,1) or U(-1,1)."""
    if kind == "gaussian":
        return torch.randn(shape, device=device)
    u = torch.rand(shape, device=device)
    if kind == "uniform":
        return 2 * u - 1
    if kind == "laplace":
        u = (u - 0.5).clamp(-0.5 + 1e-7, 0.5 - 1e-7)
        return -u.sign() * torch.log1p(-2 * u.abs())
    if kind == "cauchy":
        return torch.tan(math.pi * (u.clamp(1e-7, 1 - 1e-7) - 0.5))
    raise ConfigError(f"Expected noise in {list(NOISES)}, but got {kind!r}.")


def psg_perturb(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, steps: int = 1,
                step_size: float = 1.0, gamma: float = 0.0, lam: float = 0.0, noise: str = "gaussian",
                noise_scale: str = "relative", kappa: float = 0.2, quantise: bool = True) -> torch.Tensor:
    """x' = x + δ* for a batch. x: (B, C, H, W) or volumes (B, C, D, H, W) in [0, 1]; y: (B,). Same shape out.

    `teacher` must be in eval mode; its weights and their .grad are not touched (only ∂/∂x is taken)."""
    if noise_scale not in NOISE_SCALES:
        raise ConfigError(f"Expected noise_scale in {list(NOISE_SCALES)}, but got {noise_scale!r}.")
    x = x.detach()
    delta = torch.zeros_like(x)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    dims = tuple(range(1, x.dim()))
    for t in range(1, steps + 1):
        xin = (x + delta).requires_grad_(True)
        with torch.enable_grad():
            logits = teacher(xin)
            loss = F.cross_entropy(logits, y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xin)
        if steps > 1:  # confidence stop, before each step: a sample the model no longer believes stays put
            with torch.no_grad():
                p_y = F.softmax(logits.detach().float(), 1).gather(1, y[:, None]).squeeze(1)
            active = active & (p_y > kappa)
            if not bool(active.any()):
                break
        direction = g
        if gamma != 0.0 or lam != 0.0:
            if noise_scale == "relative":
                s = g.abs().mean(dim=dims, keepdim=True)
                pull = lam * s * delta / epsilon
            else:
                s, pull = g.new_ones((len(g),) + (1,) * len(dims)), lam * delta  # (B, 1, ...): any rank
            direction = g - pull
            if gamma != 0.0:
                direction = direction + gamma * s * sample_noise(noise, g.shape, g.device)
        step = step_size * epsilon / math.sqrt(t)
        moved = (delta + step * direction.sign()).clamp(-epsilon, epsilon)
        moved = (x + moved).clamp(0.0, 1.0) - x
        mask = active.view(-1, *([1] * len(dims)))
        delta = torch.where(mask, moved, delta)
    x_adv = x + delta
    if quantise:
        x_adv = torch.round(x_adv * 255.0) / 255.0
    return x_adv.clamp(0.0, 1.0).detach()


@torch.no_grad()
def relabel(teacher: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: str = "hard",
            nearest_wrong: bool = True, top_k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """New targets from the teacher at x'. Returns (targets, raw_pred).

    hard: (B,) class = argmax f0(x') — over classes ≠ y when `nearest_wrong` (the nearest wrong class even
    if the attack did not cross the boundary); soft: (B, K) top-k probabilities of f0(x') renormalised
    (y's probability removed first when `nearest_wrong`). raw_pred: (B,) plain argmax f0(x')."""
    logits = teacher(x_adv).float()
    raw = logits.argmax(1)
    if nearest_wrong:
        logits = logits.scatter(1, y[:, None], float("-inf"))
    if target == "hard":
        return logits.argmax(1), raw
    if target == "soft":
        probs = F.softmax(logits, 1)
        k = min(top_k, probs.shape[1] - int(nearest_wrong))
        vals, idx = probs.topk(k, dim=1)
        soft = torch.zeros_like(probs).scatter(1, idx, vals)
        return soft / soft.sum(1, keepdim=True).clamp_min(1e-12), raw
    raise ConfigError(f"Expected target in ['hard', 'soft'], but got {target!r}.")
