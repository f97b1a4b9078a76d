"""ℓ1-sparse fine-tuning (Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023).

Fine-tune on D_r with loss CE(retain) + α_t·‖θ‖₁, α_t = α·(1 − t/T) decaying linearly to 0: the early
push towards a sparse θ erases weight mass the forget set relied on; the decay lets accuracy recover.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner
from medunlearn.unlearn.space import Choice, Float
from medunlearn.unlearn.streams import retain_finetune_plan, train_only
from medunlearn.unlearn.types import ControlConfig, Plan


def l1_weight(alpha: float, t: int, steps: int) -> float:
    """Linearly decayed ℓ1 weight α·(1 − t/T) at step t of T."""
    return alpha * max(0.0, 1.0 - t / max(1, steps))


def l1_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """‖θ‖₁ over `params` (a scalar tensor)."""
    return torch.stack([p.abs().sum() for p in params]).sum()


@dataclass
class L1SparseConfig(BaseConfig, ControlConfig):
    epochs: float = 3.0  # passes over the retain set
    batch_size: int = 64
    lr: float = 0.02  # SGD
    momentum: float = 0.9
    weight_decay: float = 0.0  # the ℓ1 term replaces ℓ2 decay
    alpha: float = 5e-4  # initial ℓ1 weight α (Jia et al. use 5e-4 on CIFAR-10), decayed linearly to 0
    params: str = "all"  # parameter subset: "all", "head" or "last-N"


@METHODS.register("l1_sparse")
class L1Sparse(Unlearner):
    name = "l1_sparse"
    summary = "ℓ1-sparse fine-tuning on retain: CE + linearly decaying α·‖θ‖₁."
    Config = L1SparseConfig
    search_space = {"lr": Float(2e-3, 0.1, log=True), "alpha": Float(1e-5, 5e-3, log=True),
                    "batch_size": Choice(32, 64, 128)}  # what `medunlearn tune` varies

    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
        c = self.config
        params = train_only(model, c.params)

        def penalty(t: int, steps: int) -> torch.Tensor:
            return l1_weight(c.alpha, t, steps) * l1_norm(params)

        return retain_finetune_plan(model, data, ctx, params=params, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                             momentum=c.momentum, weight_decay=c.weight_decay, penalty=penalty)
