"""SalUn (Fan et al., ICLR 2024): saliency-masked random-label unlearning.

1. Saliency: g = |∇θ Σ_{D_f} CE(f_θ0(x), y)|; the mask keeps the top `sparsity` fraction of weights of the
   whole model (one global threshold, not per layer).
2. Random-label forgetting plus a retain term (as `random_labels`), updating only masked weights: the
   gradient (and weight decay) of every other weight is zeroed, so momentum never moves it either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medunlearn.bounds import bounded
from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner, freeze_batchnorm
from medunlearn.unlearn.space import Choice, Float
from medunlearn.unlearn.streams import gradient_update, n_steps, random_label_loss, sgd, train_only
from medunlearn.unlearn.types import ControlConfig, Plan


def saliency_mask(grads: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Boolean masks (same shapes as `grads`) marking the top `sparsity` fraction of |g| over all tensors."""
    flat = torch.cat([g.abs().flatten() for g in grads])
    keep = max(1, math.ceil(sparsity * flat.numel()))
    threshold = torch.topk(flat, keep, sorted=False).values.min()
    return [g.abs() >= threshold for g in grads]


def forget_gradients(model: nn.Module, params: list[nn.Parameter], forget: ImageSet, batch_size: int,
                     device: torch.device) -> list[torch.Tensor]:
    """∇ of the summed CE over all of D_f with respect to `params` (model in eval mode, no update)."""
    model.eval()
    total = [torch.zeros_like(p) for p in params]
    for b in forget.loader(batch_size, shuffle=False):
        loss = F.cross_entropy(model(b["image"].to(device)), b["label"].to(device), reduction="sum")
        for acc, g in zip(total, torch.autograd.grad(loss, params)):
            acc += g
    return total


@dataclass
class SalUnConfig(BaseConfig, ControlConfig):
    epochs: float = 6.0  # passes over the forget set
    batch_size: int = 64
    lr: float = 0.0025  # SGD; the mask concentrates each update on the most forget-salient weights
    momentum: float = 0.9
    weight_decay: float = 0.0  # applied to masked weights only
    sparsity: float = bounded(0.5, 0, 1, open_lo=True)  # fraction of weights (whole model) the saliency mask lets move
    retain_weight: float = 2.0  # weight of CE on the paired retain batch (as random_labels)
    params: str = "all"  # parameter subset the saliency ranking runs over: "all", "head" or "last-N"


@METHODS.register("salun")
class SalUn(Unlearner):
    name = "salun"
    summary = "SalUn: gradient-saliency weight mask, then random-label forgetting with a retain term."
    Config = SalUnConfig
    search_space = {"lr": Float(5e-4, 0.01, log=True), "sparsity": Float(0.1, 0.9),
                    "retain_weight": Float(0.5, 8.0, log=True), "batch_size": Choice(32, 64, 128)}  # what `medunlearn tune` varies

    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
        c = self.config
        params = train_only(model, c.params)
        masks = saliency_mask(forget_gradients(model, params, data.train_forget, c.batch_size, ctx.device),
                              c.sparsity)
        ctx.log.setdefault(self.name, {})["mask_fraction"] = float(
            sum(m.sum() for m in masks) / sum(m.numel() for m in masks))
        opt = sgd(params, c.lr, c.momentum, weight_decay=0.0)
        train_only(model, c.params)  # back to train mode after the eval-mode saliency pass
        freeze_batchnorm(model)

        def mask_grads(t: int) -> None:
            for p, m in zip(params, masks):
                if p.grad is not None:
                    p.grad.add_(p.detach(), alpha=c.weight_decay).mul_(m)

        loss_fn = random_label_loss(model, data, ctx, c.batch_size, c.retain_weight)
        steps = n_steps(len(data.train_forget), c.batch_size, c.epochs)
        return Plan(gradient_update(opt, loss_fn, grad_hook=mask_grads), steps, rows_per_step=6 * c.batch_size, params=params,
                    optimizer=opt)
