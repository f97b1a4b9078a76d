"""SCRUB (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023).

Teacher = the frozen original θ0; student = the model being unlearned. Each round: (while round < msteps)
one max-pass over D_f that pushes the student away from the teacher, loss −KL(teacher‖student); then one
min-pass over D_r that keeps it close, loss kd_weight·KL(teacher‖student) + ce_weight·CE(y). KL is taken on
temperature-T softened outputs. Stopping the max-steps early is what keeps retention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.models.modes import frozen_teacher
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner
from medunlearn.unlearn.space import Float, Int
from medunlearn.unlearn.streams import batches, gradient_update, kl_teacher_student, n_steps, sgd, train_only
from medunlearn.unlearn.types import ControlConfig, Plan


def scrub_schedule(rounds: int, msteps: int, forget_steps: int, retain_steps: int) -> list[bool]:
    """Per optimiser step: True = max-step on D_f, False = min-step on D_r."""
    plan: list[bool] = []
    for r in range(rounds):
        plan += [True] * (forget_steps if r < msteps else 0) + [False] * retain_steps
    return plan


@dataclass
class ScrubConfig(BaseConfig, ControlConfig):
    epochs: float = 3.0  # rounds; each round is one pass over D_r (fractional: rounded up)
    batch_size: int = 64
    lr: float = 0.01  # SGD (the SCRUB paper: 5e-4 on large nets with many more steps)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    msteps: int = 2  # the first `msteps` rounds also run a max-pass over D_f
    temperature: float = 4.0  # distillation temperature T
    kd_weight: float = 1.0  # weight of KL(teacher‖student) on retain in the min-step
    ce_weight: float = 1.0  # weight of CE(retain) in the min-step
    params: str = "all"  # parameter subset: "all", "head" or "last-N"


@METHODS.register("scrub")
class Scrub(Unlearner):
    name = "scrub"
    summary = "SCRUB: teacher-student distillation, max-KL on forget and min-KL + CE on retain."
    Config = ScrubConfig
    search_space = {"lr": Float(1e-3, 0.05, log=True), "temperature": Float(1.0, 8.0),
                    "kd_weight": Float(0.25, 4.0, log=True), "msteps": Int(1, 3)}  # what `medunlearn tune` varies

    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
        c = self.config
        teacher = frozen_teacher(original, ctx.device)  # θ0; the caller's model stays as it was
        params = train_only(model, c.params)
        opt = sgd(params, c.lr, c.momentum, c.weight_decay)
        # BatchNorm stays in train mode as in SCRUB: batch statistics make the student differ from the teacher,
        # without which KL(teacher‖student) and its gradient start at exactly 0 and the max-steps do nothing.
        forget = batches(data.train_forget, c.batch_size, ctx.rank_seed, ctx.device)
        retain = batches(data.train_retain, c.batch_size, ctx.rank_seed + 1, ctx.device)
        schedule = scrub_schedule(max(1, math.ceil(c.epochs)), c.msteps, n_steps(len(data.train_forget), c.batch_size, 1),
                              n_steps(len(data.train_retain), c.batch_size, 1))

        def loss_fn(t: int) -> torch.Tensor:
            x, y = next(forget if schedule[t - 1] else retain)
            logits = model(x)
            with torch.no_grad():
                target = teacher(x)
            kl = kl_teacher_student(logits, target, c.temperature)
            if schedule[t - 1]:  # max-step: move away from the teacher on D_f
                return -kl
            return c.kd_weight * kl + c.ce_weight * F.cross_entropy(logits, y)

        return Plan(gradient_update(opt, loss_fn), len(schedule), rows_per_step=4 * c.batch_size, params=params,
                    optimizer=opt)
