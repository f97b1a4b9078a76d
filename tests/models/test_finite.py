"""models/finite: one non-finite check for weights, losses and outputs (the unlearner's run uses it too)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from medunlearn.errors import DivergenceError
from medunlearn.models.finite import check_finite_loss, check_finite_model, check_finite_outputs
from medunlearn.models.modes import freeze_batchnorm


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_overflowing_outputs_are_refused_with_the_hint_and_modes_restored() -> None:
    model = _net().train()
    freeze_batchnorm(model)
    flags = [m.training for m in model.modules()]
    x = torch.rand(70, 4)  # more rows than one forward pass takes
    check_finite_outputs(model, "the model", x)
    with torch.no_grad():
        model[1].weight.fill_(1e30)
        model[1].bias.fill_(1e30)
    with pytest.raises(DivergenceError, match="the model to produce finite outputs.*lower the learning rate"):
        check_finite_outputs(model, "the model", x * 1e10, hint="lower the learning rate")
    assert [m.training for m in model.modules()] == flags


def test_nonfinite_weights_and_losses_are_refused() -> None:
    model = _net()
    check_finite_model(model)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match=r"1\.weight"):
        check_finite_model(model)
    check_finite_loss(torch.tensor(1.0), "m", 1)
    with pytest.raises(DivergenceError, match="m diverged: non-finite loss at step 3"):
        check_finite_loss(torch.tensor(float("inf")), "m", 3)


def test_the_unlearner_check_reads_forget_and_retain_rows(tiny_split) -> None:
    from medunlearn.runtime import RunContext
    from medunlearn.unlearn.base import check_finite_outputs as unlearned_outputs_are_finite

    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(tiny_split.num_classes))
    model(tiny_split.train_forget.images[:1])
    unlearned_outputs_are_finite(model, tiny_split, RunContext())
    bad = dataclasses.replace(tiny_split, train_retain=tiny_split.train_retain.subset([0]))
    bad.train_retain.images[0].fill_(float("inf"))
    with pytest.raises(DivergenceError, match="unlearned model.*lower the learning rate"):
        unlearned_outputs_are_finite(model, bad, RunContext())
