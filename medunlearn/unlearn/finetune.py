"""Fine-tune on the retain set only: the "catastrophic forgetting" baseline (Golatkar et al. 2020; Warnecke et al.).

The forget set is never touched: whatever the model forgets comes from drifting away from θ0 while it keeps
fitting D_r. Cheap and safe for retention, weak at suppression when D_f shares features with D_r.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner
from medunlearn.unlearn.space import Choice, Float
from medunlearn.unlearn.streams import retain_finetune_plan, train_only
from medunlearn.unlearn.types import ControlConfig, Plan


@dataclass
class FinetuneConfig(BaseConfig, ControlConfig):
    epochs: float = 2.0  # passes over the retain set (the PSG protocol used 10 on CIFAR)
    batch_size: int = 64
    lr: float = 0.02  # SGD; 0.01–0.04 is the usual range (PSG protocol: 0.04)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    params: str = "all"  # parameter subset: "all", "head" or "last-N"


@METHODS.register("finetune")
class Finetune(Unlearner):
    name = "finetune"
    summary = "Fine-tune on the retain set only (catastrophic-forgetting baseline)."
    Config = FinetuneConfig
    search_space = {"lr": Float(2e-3, 0.1, log=True), "batch_size": Choice(32, 64, 128),
                    "weight_decay": Float(1e-5, 5e-3, log=True)}  # what `medunlearn tune` varies

    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
        c = self.config
        params = train_only(model, c.params)
        return retain_finetune_plan(model, data, ctx, params=params, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                             momentum=c.momentum, weight_decay=c.weight_decay)
