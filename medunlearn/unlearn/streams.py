"""Pieces the baseline unlearners share: batch streams, step counts, label noise, parameter subsets, the update step.

A method builds a `loss(t)` closure and turns it into a controller update with `gradient_update`, which
back-propagates, applies an optional gradient hook (SalUn's mask) and steps the optimiser. When to check,
repair, roll back and stop is the controller's business (`unlearn/controller.py`), never a method's.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.zoo import parameter_subset
from medunlearn.runtime import RunContext
from medunlearn.unlearn.types import Plan

Batch = tuple[torch.Tensor, torch.Tensor]  # images (B, C, H, W), labels (B,)
LossFn = Callable[[int], torch.Tensor]  # loss(t) for step t = 1..budget


def n_steps(n_items: int, batch_size: int, epochs: float) -> int:
    """Number of optimiser steps for `epochs` (fractional allowed) passes over `n_items`."""
    per_epoch = max(1, math.ceil(n_items / batch_size))
    return max(1, int(round(per_epoch * epochs)))


def cycle(loader):
    """Yield batches forever, re-iterating the loader (re-shuffled each pass)."""
    while True:
        yield from loader


def batches(images: ImageSet, batch_size: int, seed: int, device: torch.device) -> Iterator[Batch]:
    """An endless, re-shuffled stream of (x, y) batches on `device`; the order depends only on `seed`."""
    for b in cycle(images.loader(batch_size, shuffle=True, seed=seed)):
        yield b["image"].to(device), b["label"].to(device)


def paired_batches(forget: ImageSet, retain: ImageSet, batch_size: int, seed: int,
                   device: torch.device) -> Iterator[tuple[Batch, Batch]]:
    """Endless (forget batch, retain batch) pairs; each stream cycles independently (retain is usually larger)."""
    return zip(batches(forget, batch_size, seed, device), batches(retain, batch_size, seed + 1, device))


def random_wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """(B,) labels -> (B,) labels drawn uniformly from the K-1 classes that differ from each true label."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator, device="cpu").to(labels.device)
    return (labels + shift) % num_classes


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on (B, K) logits softened by `temperature`, scaled by T² (Hinton), batch mean."""
    t = float(temperature)
    log_s = F.log_softmax(student_logits / t, dim=1)
    log_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * t * t


def label_generator(ctx: RunContext, offset: int = 0) -> torch.Generator:
    """A CPU generator for label noise, derived from the run seed so two runs draw the same labels."""
    return torch.Generator().manual_seed(ctx.rank_seed * 7919 + 17 + offset)


def sgd(params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> torch.optim.SGD:
    return torch.optim.SGD(list(params), lr=lr, momentum=momentum, weight_decay=weight_decay)


def train_only(model: nn.Module, which: str) -> list[nn.Parameter]:
    """Make only `parameter_subset(model, which)` trainable; BatchNorm outside it keeps its running stats.

    Returns the trainable parameters. Call `release(model)` afterwards to restore requires_grad.
    """
    chosen = parameter_subset(model, which)
    keep = {id(p) for _, p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(id(p) in keep for p in m.parameters()):
            m.eval()
    return [p for _, p in chosen]


def gradient_update(optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                    grad_hook: Callable[[int], None] | None = None) -> Callable[[int], float]:
    """A controller update: loss_fn(t), backward, optional gradient hook (e.g. a weight mask), optimiser step."""

    def update(t: int) -> float:
        loss = loss_fn(t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_hook is not None:
            grad_hook(t)
        optimizer.step()
        return float(loss.detach())

    return update


def retain_finetune_plan(model: nn.Module, data: SplitData, ctx: RunContext, *, params: list[nn.Parameter],
                         epochs: float, batch_size: int, lr: float, momentum: float, weight_decay: float,
                         warmup_epochs: float = 0.0,
                         penalty: Callable[[int, int], torch.Tensor] | None = None) -> Plan:
    """Minimise CE on D_r (+ `penalty(t, steps)`) over `params` for `epochs` passes of the retain set.

    No state before `warmup_epochs` passes may be accepted (EU-k's fresh blocks start at chance)."""
    stream = batches(data.train_retain, batch_size, ctx.rank_seed, ctx.device)
    steps = n_steps(len(data.train_retain), batch_size, epochs)
    opt = sgd(params, lr, momentum, weight_decay)

    def loss_fn(t: int) -> torch.Tensor:
        x, y = next(stream)
        loss = F.cross_entropy(model(x), y)
        return loss + penalty(t, steps) if penalty is not None else loss

    warmup = n_steps(len(data.train_retain), batch_size, warmup_epochs) if warmup_epochs > 0 else 0
    return Plan(gradient_update(opt, loss_fn), steps, warmup=warmup, rows_per_step=3 * batch_size, params=params,
                optimizer=opt)


def random_label_loss(model: nn.Module, data: SplitData, ctx: RunContext, batch_size: int,
                      retain_weight: float) -> LossFn:
    """Step closure for random-label forgetting: CE(f(x_f), ỹ) + w·CE(f(x_r), y_r), ỹ ≠ y re-drawn every step."""
    pairs = paired_batches(data.train_forget, data.train_retain, batch_size, ctx.rank_seed, ctx.device)
    gen = label_generator(ctx)

    def loss_fn(t: int) -> torch.Tensor:
        (xf, yf), (xr, yr) = next(pairs)
        loss = F.cross_entropy(model(xf), random_wrong_labels(yf, data.num_classes, gen))
        if retain_weight > 0:
            loss = loss + retain_weight * F.cross_entropy(model(xr), yr)
        return loss

    return loss_fn
