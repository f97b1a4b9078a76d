"""EU-k (Goel et al. 2022): exact-unlearning proxy that re-initialises the last k blocks and retrains them.

The last k blocks (head counts as one) get fresh random weights (and fresh BatchNorm statistics); they are
then trained on D_r with all earlier blocks frozen. Whatever those blocks encoded about D_f is gone by
construction; what the frozen early blocks encode stays. The goal's stop rule is consulted only after one
retain pass: freshly initialised blocks are at chance on everything, which is not forgetting.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.errors import ConfigError
from medunlearn.models.zoo import Classifier
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner
from medunlearn.unlearn.space import Choice, Float, Int
from medunlearn.unlearn.streams import retain_finetune_plan, train_only
from medunlearn.unlearn.types import ControlConfig, Plan


def reinitialise_blocks(model: Classifier, blocks: list[str]) -> None:
    """Reset every sub-module of the named blocks ("head" or a `features` child) with its own initialiser."""
    for name in blocks:
        block = model.head if name == "head" else model.features.get_submodule(name)
        for m in block.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()  # BatchNorm's also resets its running statistics


@dataclass
class EUkConfig(BaseConfig, ControlConfig):
    epochs: float = 5.0  # passes over the retain set (retraining from scratch needs more than fine-tuning)
    batch_size: int = 64
    lr: float = 0.05  # SGD
    momentum: float = 0.9
    weight_decay: float = 5e-4
    k: int = 2  # number of trailing blocks to re-initialise and retrain, head included


@METHODS.register("eu_k")
class EUk(Unlearner):
    name = "eu_k"
    summary = "EU-k: re-initialise the last k blocks and retrain them on the retain set, others frozen."
    Config = EUkConfig
    search_space = {"lr": Float(5e-3, 0.2, log=True), "k": Int(1, 2),
                    "batch_size": Choice(32, 64, 128)}  # what `medunlearn tune` varies

    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
        c = self.config
        params = train_only(model, f"last-{c.k}")  # validates k before anything is reset
        if not isinstance(model, Classifier):
            raise ConfigError(f"Expected a Classifier (features + head), but got {type(model).__name__}.")
        reinitialise_blocks(model, model.block_names()[-c.k:])
        return retain_finetune_plan(model, data, ctx, params=params, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                             momentum=c.momentum, weight_decay=c.weight_decay, warmup_epochs=1.0)
