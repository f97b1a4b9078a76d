"""models/modes: eval / frozen-BN training contexts restore every module's mode; a frozen teacher builds no graph."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medunlearn.models.modes import evaluating, freeze_batchnorm, frozen_teacher, training_frozen_bn


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))


def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_evaluating_restores_a_frozen_batchnorm() -> None:
    model = _net().train()
    freeze_batchnorm(model)
    before = _flags(model)
    assert before == [True, True, False, False, True]
    with evaluating(model):
        assert not any(_flags(model))
    assert _flags(model) == before


def test_modes_are_restored_after_an_exception() -> None:
    model = _net().eval()
    with pytest.raises(RuntimeError), training_frozen_bn(model):
        raise RuntimeError("boom")
    assert not any(_flags(model))


def test_training_frozen_bn_keeps_running_statistics() -> None:
    model = _net().eval()
    stats = model[1].running_mean.clone()
    with training_frozen_bn(model):
        assert _flags(model) == [True, True, False, False, True]
        model(torch.rand(8, 4)).sum().backward()
    assert torch.equal(model[1].running_mean, stats) and not any(_flags(model))


def test_frozen_teacher_is_an_eval_copy_without_grad() -> None:
    model = _net().train()
    teacher = frozen_teacher(model, "cpu")
    assert teacher is not model and not any(_flags(teacher)) and _flags(model)[0]
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not teacher(torch.rand(3, 4)).requires_grad
