"""ref_distill: distil the forget rows toward reference models that never saw them (a medunlearn method, not a
paper's; it borrows the idea of "as if never trained" = the OUT models' predictions from LiRA / U-LiRA audits).

Teachers = the second half of the `audit prepare` reference models (audit.teachers): for each forget row, the
mean softmax of the teachers that did not train on it (a row every teacher saw gets no forget term). Each step:
forget_weight · KL(teacher mean ‖ student) on a forget batch + retain_weight · KL(original ‖ student) +
ce_weight · CE on a retain batch (temperature T, scaled by T²), gradient norm clipped. BatchNorm statistics stay
frozen, so the eval-mode outputs an audit scores are what is distilled (with frozen BatchNorm the over-fitted
originals are sharp: lr 0.01 unclipped diverged).
The teachers never audit: `forget --method ref_distill --audit audit/` judges the result on the other half only.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medunlearn.audit.teachers import ReferenceTeachers, load_teachers
from medunlearn.bounds import bounded
from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import ConfigError
from medunlearn.models.modes import frozen_teacher
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import METHODS, BaseConfig, Unlearner, freeze_batchnorm
from medunlearn.unlearn.space import Float
from medunlearn.unlearn.streams import batches, gradient_update, kl_teacher_student, n_steps, sgd, train_only
from medunlearn.unlearn.types import ControlConfig, Plan

MISSING = ("ref_distill distils toward reference models that never saw the forget rows: pass --audit audit/ "
           "(a folder written by `medunlearn audit prepare`), or set its `audit` field to one")


@dataclass
class RefDistillConfig(BaseConfig, ControlConfig):
    epochs: float = bounded(10.0, 0, open_lo=True)  # passes over the forget set
    batch_size: int = bounded(64, 1)
    lr: float = bounded(0.001, 0, open_lo=True)  # SGD; at 0.01 the synthetic-cohort pilot diverged in 6 steps
    momentum: float = bounded(0.9, 0, 1, open_hi=True)
    weight_decay: float = bounded(0.0, 0)
    temperature: float = bounded(1.0, 0, open_lo=True)
    forget_weight: float = bounded(1.0, 0)  # KL(teachers' mean ‖ student) on forget rows
    retain_weight: float = bounded(1.0, 0)  # KL(original ‖ student) on retain rows
    ce_weight: float = bounded(0.0, 0)  # CE(retain labels)
    max_grad_norm: float = bounded(1.0, 0)  # clip the gradient's L2 norm (0 = no clipping)
    params: str = "all"  # parameter subset: "all", "head" or "last-N"
    audit: str | None = None  # `audit prepare` folder the teachers come from (forget --audit sets it)


def target_stream(s: ImageSet, q: torch.Tensor, batch_size: int, seed: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless re-shuffled (x, teacher target) batches of the forget rows."""
    g = torch.Generator().manual_seed(seed)
    while True:
        for idx in torch.randperm(len(s), generator=g).split(batch_size):
            yield s.images[idx].to(device), q[idx].to(device)


@METHODS.register("ref_distill")
class RefDistill(Unlearner):
    name = "ref_distill"
    summary = "Distil forget rows toward reference models that never saw them (needs --audit); KL to θ0 on retain."
    Config = RefDistillConfig
    search_space = {"lr": Float(2e-4, 0.01, log=True), "retain_weight": Float(0.25, 4.0, log=True)}
    teachers: ReferenceTeachers | None = None  # set by the caller, else loaded from config.audit
    untaught = 0  # forget rows every teacher saw: no target, left to the retain term

    def plan(self, model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, goal: str) -> Plan:
        c = self.config
        if self.teachers is None:
            if c.audit is None:
                raise ConfigError(f"Expected teacher reference models, but got none: {MISSING}.")
            self.teachers = load_teachers(c.audit)
        q, has = self.teachers.targets(data.train_forget, ctx.device, c.temperature)
        taught = data.train_forget.subset(torch.nonzero(has).flatten())  # rows some teacher never saw
        self.untaught = int((~has).sum())
        anchor = frozen_teacher(original, ctx.device)
        params = train_only(model, c.params)
        freeze_batchnorm(model)
        opt = sgd(params, c.lr, c.momentum, c.weight_decay)
        forget = target_stream(taught, q[has], c.batch_size, ctx.rank_seed, ctx.device)
        retain = batches(data.train_retain, c.batch_size, ctx.rank_seed + 1, ctx.device)
        t2 = c.temperature ** 2

        def loss_fn(t: int) -> torch.Tensor:
            xf, qf = next(forget)
            log_s = F.log_softmax(model(xf) / c.temperature, dim=1)
            loss = c.forget_weight * F.kl_div(log_s, qf, reduction="batchmean") * t2
            if c.retain_weight > 0 or c.ce_weight > 0:
                xr, yr = next(retain)
                logits = model(xr)
                with torch.no_grad():
                    ref = anchor(xr)
                loss = loss + c.retain_weight * kl_teacher_student(logits, ref, c.temperature)
                loss = loss + c.ce_weight * F.cross_entropy(logits, yr)
            return loss

        steps = n_steps(len(data.train_forget), c.batch_size, c.epochs)
        def clip(t: int) -> None:
            if c.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)

        return Plan(gradient_update(opt, loss_fn, clip), steps, rows_per_step=4 * c.batch_size, params=params,
                    optimizer=opt)
