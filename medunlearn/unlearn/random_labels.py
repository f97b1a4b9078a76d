"""Random labels (Golatkar et al. 2020; Hayase et al.): fine-tune forget rows towards random wrong labels.

Each step pairs a forget batch relabelled with fresh wrong classes (ỹ ≠ y, re-drawn every step so the model
cannot simply learn a new mapping) with a retain batch under its true labels, which holds D_r in place.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner, freeze_batchnorm
from medunlearn.unlearn.space import Choice, Float
from medunlearn.unlearn.streams import gradient_update, n_steps, random_label_loss, sgd, train_only
from medunlearn.unlearn.types import ControlConfig, Plan


@dataclass
class RandomLabelsConfig(BaseConfig, ControlConfig):
    epochs: float = 6.0  # passes over the forget set
    batch_size: int = 64
    lr: float = 0.005  # SGD; larger steps collapse every domain before the retain term can separate them
    momentum: float = 0.9
    weight_decay: float = 0.0
    # weight of CE on the paired retain batch (0 = forget term only). A wrong-label CE on a confident model
    # starts large; at 1.0 it drags retain accuracy down with the forget domain, 2.0 holds it.
    retain_weight: float = 2.0
    params: str = "all"  # parameter subset: "all", "head" or "last-N"


@METHODS.register("random_labels")
class RandomLabels(Unlearner):
    name = "random_labels"
    summary = "Fine-tune forget rows on random wrong labels (re-drawn per step) plus a retain term."
    Config = RandomLabelsConfig
    search_space = {"lr": Float(5e-4, 0.02, log=True), "retain_weight": Float(0.5, 8.0, log=True),
                    "batch_size": Choice(32, 64, 128)}  # what `medunlearn tune` varies

    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
        c = self.config
        params = train_only(model, c.params)
        opt = sgd(params, c.lr, c.momentum, c.weight_decay)
        freeze_batchnorm(model)  # forget batches come from one domain: keep θ0's running statistics
        loss_fn = random_label_loss(model, data, ctx, c.batch_size, c.retain_weight)
        steps = n_steps(len(data.train_forget), c.batch_size, c.epochs)
        return Plan(gradient_update(opt, loss_fn), steps, rows_per_step=6 * c.batch_size, params=params, optimizer=opt)
