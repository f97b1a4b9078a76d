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

from medunlearn.errors import ConfigError, DataError
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner, check_finite_loss, cycle, freeze_batchnorm, n_steps
from medunlearn.unlearn.stopping import StopConfig, make_stop_rule


@dataclasses.dataclass
class BoundaryExpandingConfig(BaseConfig, StopConfig):
    """Boundary Expanding hyperparameters."""

    epochs: float = 20.0  # budget in passes over D_f; the goal's stop rule usually ends earlier
    batch_size: int = 32
    lr: float = 3e-4  # SGD learning rate (authors: 1e-5 for 10 epochs)
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

    def _run(self, model, original, data, ctx, goal):
        cfg, k, dev = self.config, data.num_classes, ctx.device
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Linear) or head.out_features != k:
            raise ConfigError(f"Expected a model whose .head is nn.Linear(F, {k}), but got {type(head).__name__}.")
        if len(data.train_forget) == 0:
            raise DataError("Expected at least one forget image, but got an empty forget set.")
        if cfg.lr <= 0 or cfg.epochs <= 0:
            raise ConfigError(f"Expected lr > 0 and epochs > 0, but got {cfg.lr} and {cfg.epochs}.")
        model.head = expand_head(head)
        model.train()
        if cfg.freeze_bn:
            freeze_batchnorm(model)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        total = n_steps(len(data.train_forget), cfg.batch_size, cfg.epochs)
        forget_it = cycle(data.train_forget.loader(cfg.batch_size, shuffle=True, seed=ctx.rank_seed))
        rule = make_stop_rule(goal, cfg, data, original, ctx, self.name)
        step = 0
        for step in range(1, total + 1):
            batch = next(forget_it)
            x, y = batch["image"].to(dev), batch["label"].to(dev)
            logits = model(x)
            loss = F.cross_entropy(logits, torch.full_like(y, k))
            check_finite_loss(loss, self.name, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if rule.update(step, model, logits, y):
                break
        rule.finish(step)
        model.head = prune_head(model.head)
        model.eval()
        ctx.log[self.name].update({"steps": step, "steps_budget": total, "stop_reason": rule.record.get("reason", "")})
        return model
