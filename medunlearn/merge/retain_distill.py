"""Retain distillation, merge_repair's last stage: give the rows no policy forgets back their confidence.

A merge and its repair can meet criterion (c) (retain argmax) with flattened outputs, failing (d) (val_retain
mean max-softmax ≥ the original's − margin). This stage matches the ORIGINAL model's softmax on those rows:

    loss(t) = KL(f0(x_r) ‖ fθ(x_r)) + hold · KL(f_entry(x_f) ‖ fθ(x_f))

x_r: a batch of the union split's train_retain (train rows matching no policy's rule); f0: the deployed base at
T = 1 (criterion (d) compares T = 1 confidences), a class every policy removed masked out of the teacher;
x_f: a batch of train_forget; f_entry: the model as distillation starts, whose forget outputs already sit in (or
near) the policies' bands, so the hold keeps them there while retain sharpens (without it, distilling the
original's features pulls the forgotten domains back up: they share the retain classes). Adam, BatchNorm frozen,
gradient norm clipped at 5, as the controller's retain repair (unlearn/repair.py). It is a `Plan`: the steps run
under `run_controlled` with merge_repair's criteria and per-policy checks, so step 0 is the entering state and the
best checked state that meets every criterion is returned (when none does, the closest: step 0 unless a later
state misses by less).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medunlearn.data.imageset import SplitData
from medunlearn.models.modes import frozen_teacher, training_frozen_bn
from medunlearn.runtime import RunContext
from medunlearn.unlearn.judging import removed_classes
from medunlearn.unlearn.streams import batches
from medunlearn.unlearn.types import Plan

BATCH = 64  # rows per batch (the repair's repair_batch_size default)


def distill_plan(model: nn.Module, original: nn.Module, data: SplitData, ctx: RunContext, steps: int, lr: float,
                 hold: float) -> Plan:
    """`steps` Adam steps (rate `lr`) of the loss above on `model` (trained in place), as a controller Plan."""
    k, dev = data.num_classes, ctx.device
    teacher = frozen_teacher(original, dev)
    removed = removed_classes(data)
    retain = batches(data.train_retain, BATCH, ctx.rank_seed + 21, dev)
    hold = float(hold) if len(data.train_forget) else 0.0
    entry = frozen_teacher(model, dev) if hold > 0 else None
    forget = batches(data.train_forget, BATCH, ctx.rank_seed + 22, dev) if entry is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=float(lr))

    def kl(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # probabilities, not log-probabilities: a masked class has p = 0, and 0·log 0 must count as 0
        return F.kl_div(F.log_softmax(student[:, :k].float(), 1), F.softmax(target, 1), reduction="batchmean")

    def update(t: int) -> float:
        with training_frozen_bn(model):
            x, _ = next(retain)
            with torch.no_grad():
                t0 = teacher(x)[:, :k].float()
                if removed:
                    t0[:, removed] = float("-inf")
            loss = kl(model(x), t0)
            if entry is not None and forget is not None:
                xf, _ = next(forget)
                with torch.no_grad():
                    held = entry(xf)[:, :k].float()
                loss = loss + hold * kl(model(xf), held)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
        return float(loss.detach())

    # forward-equivalent rows per step: a teacher forward and a student forward + backward per batch
    rows = 4 * BATCH * (2 if entry is not None else 1)
    return Plan(update, max(1, int(steps)), rows_per_step=rows, params=params, optimizer=opt)
