"""Train/eval modes and frozen copies: the one place that switches a model's modes and restores them.

Every module's flag is saved and restored, not only the top-level one: `model.train(was_training)` would turn a
BatchNorm that a method froze (`freeze_batchnorm`) back to train mode.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

FROZEN_IN_TRAINING = (nn.modules.batchnorm._BatchNorm, nn.Dropout)  # kept in eval mode by freeze_batchnorm


@contextlib.contextmanager
def _restoring(model: nn.Module) -> Iterator[nn.Module]:
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, f in flags:
            m.train(f)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode (BatchNorm running statistics, no dropout), then restore every module's mode."""
    with _restoring(model):
        model.eval()
        yield model


def freeze_batchnorm(model: nn.Module) -> None:
    """Put BatchNorm / Dropout in eval mode so batches of one part of the data do not move running statistics."""
    for m in model.modules():
        if isinstance(m, FROZEN_IN_TRAINING):
            m.eval()


@contextlib.contextmanager
def training_frozen_bn(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in train mode with BatchNorm / Dropout in eval mode, then restore every module's mode."""
    with _restoring(model):
        model.train()
        freeze_batchnorm(model)
        yield model


def frozen_teacher(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """A copy of `model` in eval mode whose parameters require no gradient (a teacher builds no graph)."""
    teacher = copy.deepcopy(model)
    if device is not None:
        teacher = teacher.to(device)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
