"""Loop pieces the baseline unlearners share: batch streams, label noise, parameter subsets, one step driver.

Every method builds a `step(t) -> loss` closure and hands it to `run_steps`, which checks the loss is finite,
applies an optional gradient hook (SalUn's mask, ℓ1 sub-gradient), steps the optimiser, consults the goal's
stop rule and logs what happened in `ctx.log[<method>]`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.zoo import parameter_subset
from medunlearn.runtime import RunContext
from medunlearn.unlearn.base import check_finite_loss, cycle, n_steps
from medunlearn.unlearn.stopping import StopConfig, StopRule, make_stop_rule

Batch = tuple[torch.Tensor, torch.Tensor]  # images (B, C, H, W), labels (B,)
StepOut = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # loss, forget logits (B, K), labels


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


def release(model: nn.Module) -> nn.Module:
    """Restore requires_grad on every parameter and switch to eval mode (the state a caller expects back)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, step: Callable[[int], StepOut], steps: int,
              method: str, ctx: RunContext, stop: StopRule | None = None,
              grad_hook: Callable[[int], None] | None = None, stop_after: int = 0) -> dict:
    """Run up to `steps` optimiser steps; `step(t)` returns (loss, forget logits or None, forget labels or None).

    The forget logits (computed before the update) feed the goal's stop rule, which is asked after every
    update (from step `stop_after` on) and may end the run early.
    Returns (and logs in ctx.log[method]) {steps, budget, last_loss}.
    """
    record = {"steps": 0, "budget": steps, "last_loss": float("nan")}
    with ctx.progress(method, steps) as advance:
        for t in range(steps):
            loss, logits_f, labels_f = step(t)
            check_finite_loss(loss.detach(), method, t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_hook is not None:
                grad_hook(t)
            optimizer.step()
            advance(1)
            record["steps"], record["last_loss"] = t + 1, float(loss.detach())
            if stop is not None and t >= stop_after and stop.update(t, model, logits_f, labels_f):
                break
    if stop is not None:
        stop.finish(record["steps"] - 1)
    ctx.log.setdefault(method, {}).update(record)
    return record


def goal_stop(goal: str, config: StopConfig, original: nn.Module, data: SplitData, ctx: RunContext,
              method: str) -> StopRule:
    """The retrain-free stop rule of `goal` (SuppressionStop / EquivalenceStop) with the method's stop knobs."""
    knobs = {f.name: getattr(config, f.name) for f in dataclasses.fields(StopConfig)}
    return make_stop_rule(goal, StopConfig(**knobs), data, original, ctx, method)


def retain_finetune_loop(model: nn.Module, data: SplitData, ctx: RunContext, *, params: list[nn.Parameter],
                         epochs: float, batch_size: int, lr: float, momentum: float, weight_decay: float,
                         method: str, stop: StopRule | None = None, stop_after_epochs: float = 0.0,
                         penalty: Callable[[int, int], torch.Tensor] | None = None) -> dict:
    """Minimise CE on D_r (+ `penalty(t, steps)`) over `params` for `epochs` passes of the retain set.

    The stop rule is consulted only after `stop_after_epochs` passes (EU-k's fresh blocks start at chance).
    """
    stream = batches(data.train_retain, batch_size, ctx.rank_seed, ctx.device)
    steps = n_steps(len(data.train_retain), batch_size, epochs)
    opt = sgd(params, lr, momentum, weight_decay)

    def step(t: int) -> StepOut:
        x, y = next(stream)
        loss = F.cross_entropy(model(x), y)
        return (loss + penalty(t, steps) if penalty is not None else loss), None, None

    warmup = n_steps(len(data.train_retain), batch_size, stop_after_epochs) if stop_after_epochs > 0 else 0
    return run_steps(model, opt, step, steps, method, ctx, stop=stop, stop_after=warmup)



def random_label_step(model: nn.Module, data: SplitData, ctx: RunContext, batch_size: int,
                      retain_weight: float) -> Callable[[int], StepOut]:
    """Step closure for random-label forgetting: CE(f(x_f), ỹ) + w·CE(f(x_r), y_r), ỹ ≠ y re-drawn every step."""
    pairs = paired_batches(data.train_forget, data.train_retain, batch_size, ctx.rank_seed, ctx.device)
    gen = label_generator(ctx)

    def step(t: int) -> StepOut:
        (xf, yf), (xr, yr) = next(pairs)
        logits_f = model(xf)
        loss = F.cross_entropy(logits_f, random_wrong_labels(yf, data.num_classes, gen))
        if retain_weight > 0:
            loss = loss + retain_weight * F.cross_entropy(model(xr), yr)
        return loss, logits_f.detach(), yf

    return step
