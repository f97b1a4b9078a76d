"""CF-k (Goel et al., "Towards Adversarial Evaluation for Inexact Machine Unlearning", 2022): catastrophic
forgetting of the last k blocks only.

Fine-tune the last k blocks (the head counts as one: k=1 is head-only) on D_r with everything before them
frozen, BatchNorm statistics included. Cheaper than full fine-tuning; forgets less.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner
from medunlearn.unlearn.space import Choice, Float, Int
from medunlearn.unlearn.streams import retain_finetune_plan, train_only
from medunlearn.unlearn.types import ControlConfig, Plan


@dataclass
class CFkConfig(BaseConfig, ControlConfig):
    epochs: float = 3.0  # passes over the retain set
    batch_size: int = 64
    lr: float = 0.02  # SGD
    momentum: float = 0.9
    weight_decay: float = 5e-4
    k: int = 2  # number of trailing blocks to fine-tune, head included (k=2: last feature block + head)


@METHODS.register("cf_k")
class CFk(Unlearner):
    name = "cf_k"
    summary = "CF-k: fine-tune only the last k blocks on the retain set, earlier blocks frozen."
    Config = CFkConfig
    search_space = {"lr": Float(2e-3, 0.1, log=True), "k": Int(1, 2),
                    "batch_size": Choice(32, 64, 128)}  # what `medunlearn tune` varies

    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
        c = self.config
        params = train_only(model, f"last-{c.k}")
        return retain_finetune_plan(model, data, ctx, params=params, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                             momentum=c.momentum, weight_decay=c.weight_decay)
