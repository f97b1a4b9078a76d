"""Boundary Expanding (Chen et al., "Boundary Unlearning", CVPR 2023).

Widen the head from K to K+1 logits (a "shadow" class with a freshly initialised row), fine-tune on the
forget images labelled as the shadow class, so their features move into a region the K real classes do
not own, then prune the shadow unit. The result has the same architecture and K outputs as the input;
forget images fall to whichever real class lies nearest to where the shadow class pulled them.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.bounds import bounded
from medunlearn.errors import ConfigError
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner, freeze_batchnorm
from medunlearn.unlearn.space import Choice, Float
from medunlearn.unlearn.streams import cycle, gradient_update, n_steps
from medunlearn.unlearn.types import ControlConfig, Plan


@dataclasses.dataclass
class BoundaryExpandingConfig(BaseConfig, ControlConfig):
    """Boundary Expanding hyperparameters."""

    epochs: float = bounded(20.0, 0, open_lo=True)  # budget in passes over D_f; the stop rule usually ends earlier
    batch_size: int = 32
    lr: float = bounded(3e-4, 0, open_lo=True)  # SGD learning rate (authors: 1e-5 for 10 epochs)
    momentum: float = 0.9
    weight_decay: float = 0.0
    freeze_bn: bool = True  # keep BatchNorm statistics (and dropout) in eval mode


def expand_head(head: nn.Linear) -> nn.Linear:
    """(F -> K) linear to (F -> K+1): rows 0..K-1 copied, row K (the shadow class) freshly initialised."""
    wide = nn.Linear(head.in_features, head.out_features + 1, bias=head.bias is not None)
    wide = wide.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        wide.weight[:-1].copy_(head.weight)
        if head.bias is not None:
            wide.bias[:-1].copy_(head.bias)
    return wide


def prune_head(wide: nn.Linear) -> nn.Linear:
    """(F -> K+1) linear to (F -> K): drop the shadow row."""
    head = nn.Linear(wide.in_features, wide.out_features - 1, bias=wide.bias is not None)
    head = head.to(device=wide.weight.device, dtype=wide.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(wide.weight[:-1])
        if wide.bias is not None:
            head.bias.copy_(wide.bias[:-1])
    return head


@METHODS.register("boundary_expanding")
class BoundaryExpanding(Unlearner):
    name = "boundary_expanding"
    summary = "Boundary Expanding: push forget rows into an added shadow class, then prune it"
    Config = BoundaryExpandingConfig
    search_space = {"lr": Float(3e-5, 3e-3, log=True), "batch_size": Choice(16, 32, 64)}  # what `medunlearn tune` varies

    def plan(self, model, original, data, ctx, goal) -> Plan:
        cfg, k, dev = self.config, data.num_classes, ctx.device
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Linear) or head.out_features != k:
            raise ConfigError(f"Expected a model whose .head is nn.Linear(F, {k}), but got {type(head).__name__}.")
        model.head = expand_head(head)  # checks read the first K logits; the shadow row is pruned at the end
        model.train()
        if cfg.freeze_bn:
            freeze_batchnorm(model)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        forget_it = cycle(data.train_forget.loader(cfg.batch_size, shuffle=True, seed=ctx.rank_seed))

        def loss_fn(t: int) -> torch.Tensor:
            batch = next(forget_it)
            x = batch["image"].to(dev)
            return F.cross_entropy(model(x), torch.full((len(x),), k, dtype=torch.long, device=dev))

        def finalize(m: nn.Module) -> nn.Module:
            m.head = prune_head(m.head)
            return m

        total = n_steps(len(data.train_forget), cfg.batch_size, cfg.epochs)
        return Plan(gradient_update(opt, loss_fn), total, rows_per_step=3 * cfg.batch_size, finalize=finalize,
                    optimizer=opt)
