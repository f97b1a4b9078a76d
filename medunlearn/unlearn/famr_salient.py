"""famr_salient: famr_retain restricted to the weights the forget domain needs and the retain domain does not —
an EXTENSION (SalUn's saliency idea applied to FAMR), not the paper's method.

Why: FAMR's uniform objective on a domain that shares every class feature with the retain domains (a device, a
site) is cheapest to reach by flattening every output; retain repair then pulls confidence back and undoes part of
the forgetting (issue 31: the method fights its repair). Moving only weights whose forget-loss gradient is large
where the retain loss is flat leaves less for repair to undo.

Mask (computed once at θ0, like SalUn): per weight, with g_f = ∇ L_f (FAMR's uniform loss over D_f) and
g_r = ∇ CE on up to `saliency_rows` retain rows,
    saliency "contrast" (default): s = |g_f| / (|g_r| + median|g_r|)   (forget-specific weights)
    saliency "forget"            : s = |g_f|                            (SalUn's ranking)
the top `density` fraction of s over the method's parameter subset (one global threshold) may move. Every gradient
of a masked-out weight is zeroed by a tensor hook, so Adam never moves it (its state stays 0): the method's step,
its retain term and the controller's retain repair all act inside the mask; the hooks are removed when the run
ends. J(θ) is famr_retain's (retain_weight = 0: FAMR proper inside the mask).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.bounds import bounded
from medunlearn.errors import ConfigError
from medunlearn.unlearn.base import METHODS
from medunlearn.unlearn.famr_math import forget_gradient, support_mask
from medunlearn.unlearn.famr_retain import FAMRRetain, FAMRRetainConfig
from medunlearn.unlearn.probes import subsample
from medunlearn.unlearn.space import Choice, Float
from medunlearn.unlearn.types import Plan

SALIENCY = ("contrast", "forget")


@dataclasses.dataclass
class FAMRSalientConfig(FAMRRetainConfig):
    density: float = bounded(0.1, 0, 1, open_lo=True)  # fraction of the trainable weights the mask lets move
    saliency: str = "contrast"  # contrast | forget (see the module docstring)
    saliency_rows: int = bounded(512, 1)  # retain rows for g_r (forget: all of D_f, as FAMR's own gradient)


def saliency_masks(g_forget: list[torch.Tensor], g_retain: list[torch.Tensor] | None,
                   density: float) -> list[torch.Tensor]:
    """Boolean masks (shapes of the gradients): the top `density` fraction of the saliency score over all tensors;
    g_retain None = rank |g_forget| alone."""
    if g_retain is None:
        scores = [g.abs() for g in g_forget]
    else:
        delta = torch.cat([g.abs().flatten() for g in g_retain]).median()
        scores = [gf.abs() / (gr.abs() + delta + 1e-12) for gf, gr in zip(g_forget, g_retain)]
    flat = torch.cat([s.flatten() for s in scores])
    keep = max(1, math.ceil(density * flat.numel()))
    threshold = torch.topk(flat, keep, sorted=False).values.min()
    return [s >= threshold for s in scores]


def retain_gradient(model: nn.Module, params: list[nn.Parameter], data, rows: int, seed: int,
                    dev: torch.device, bs: int = 256) -> list[torch.Tensor]:
    """∇ of the mean CE over a fixed subsample of train_retain (model in eval mode, no update)."""
    s = subsample(data.train_retain, rows, seed)
    grads = [torch.zeros_like(p) for p in params]
    for i in range(0, len(s), bs):
        part = F.cross_entropy(model(s.images[i:i + bs].to(dev)), s.labels[i:i + bs].to(dev), reduction="sum") / len(s)
        for g, d in zip(grads, torch.autograd.grad(part, params)):
            g += d
    return grads


@METHODS.register("famr_salient")
class FAMRSalient(FAMRRetain):
    name = "famr_salient"
    summary = ("famr_retain inside a saliency mask of forget-specific weights (extension: SalUn's mask on FAMR, "
               "not the paper's method)")
    Config = FAMRSalientConfig
    search_space = {**{k: v for k, v in FAMRRetain.search_space.items() if k != "solver"},  # iterative only
                    "density": Float(0.01, 0.5, log=True), "saliency": Choice(*SALIENCY)}  # what `medunlearn tune` varies

    def plan(self, model, original, data, ctx, goal) -> Plan:
        cfg = self.config
        if cfg.saliency not in SALIENCY:
            raise ConfigError(f"Expected saliency in {list(SALIENCY)}, but got {cfg.saliency!r}.")
        if cfg.solver != "iterative":
            raise ConfigError(f"Expected solver 'iterative' for famr_salient (the mask acts on gradient steps), "
                              f"but got {cfg.solver!r}.")
        plan = super().plan(model, original, data, ctx, goal)  # model: eval mode, requires_grad = the subset S
        params = plan.params
        k_mask = support_mask(cfg.support, data.train_forget.labels, data.num_classes).to(ctx.device)
        g_f = forget_gradient(model, params, data.train_forget.images, cfg.loss, k_mask, ctx.device)
        g_r = retain_gradient(model, params, data, cfg.saliency_rows, ctx.seed, ctx.device) \
            if cfg.saliency == "contrast" and len(data.train_retain) else None
        masks = saliency_masks(g_f, g_r, cfg.density)
        handles = [p.register_hook(lambda g, m=m: g * m) for p, m in zip(params, masks)]
        ctx.log.setdefault(self.name, {})["mask_fraction"] = float(
            sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks))
        inner = plan.finalize

        def finalize(m: nn.Module) -> nn.Module:
            for h in handles:
                h.remove()
            return inner(m) if inner is not None else m

        return dataclasses.replace(plan, finalize=finalize)
