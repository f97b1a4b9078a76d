"""Retrain-free stop rules: where and why they stop."""
from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from medunlearn.errors import ConfigError
from medunlearn.runtime import RunContext
from medunlearn.unlearn.stopping import (EquivalenceStop, StopConfig, SuppressionStop, auc_higher,
                                         make_stop_rule)


class Constant(nn.Module):
    """Predicts class `c` for every image."""

    def __init__(self, k: int, c: int) -> None:
        super().__init__()
        self.k, self.c = k, c

    def forward(self, x):
        out = torch.zeros(len(x), self.k)
        out[:, self.c] = 1.0
        return out


def test_auc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    neg, pos = torch.randint(0, 5, (40,), generator=g).float(), torch.randint(1, 6, (30,), generator=g).float()
    ref = roc_auc_score([0] * 40 + [1] * 30, torch.cat([neg, pos]).numpy())
    assert abs(auc_higher(neg, pos) - ref) < 1e-9


def test_suppression_stops_on_chance_model_not_on_trained(trained_tiny):
    model, split = trained_tiny
    ctx = RunContext()
    rule = SuppressionStop(ctx, "m", StopConfig(check_every=3), split)
    assert not rule.update(1, Constant(3, 0))  # not a check step: no evaluation, no stop
    assert not rule.update(3, model)  # the trained model still predicts the forget domain
    assert rule.update(6, Constant(3, 0))
    rec = ctx.log["m"]["stop"]
    assert rec["step"] == 6 and rec["reason"].startswith("val_forget accuracy")
    assert rec["checks"][0][0] == 3 and rec["checks"][0][1] > 90
    assert abs(rec["target_acc"] - (100 / 3 + 5)) < 1e-9


def test_equivalence_stops_when_running_accuracy_reaches_original_heldout(trained_tiny):
    model, split = trained_tiny
    ctx = RunContext()
    cfg = StopConfig(check_every=1, window=3, mia_tol=-1.0)  # MIA criterion off
    original = Constant(3, 0)  # its val_forget accuracy (the target) is the share of class 0, about 1/3
    rule = EquivalenceStop(ctx, "m", cfg, split, original=original)
    y = torch.tensor([0, 1, 2, 0])
    right = torch.nn.functional.one_hot(y, 3).float()
    wrong = torch.nn.functional.one_hot((y + 1) % 3, 3).float()
    share = float((split.val_forget.labels == 0).float().mean() * 100)
    assert abs(rule.target - share) < 1e-4 and 20 < rule.target < 50
    assert not any(rule.update(t, model, right, y) for t in range(3))  # running accuracy 100 %
    assert not rule.update(3, model, wrong, y)  # 66.7 % > target
    stops = [t for t in (4, 5) if rule.update(t, model, wrong, y)]
    rec = ctx.log["m"]["stop"]
    assert stops and rule.stopped and rec["step"] == stops[0]
    assert rec["reason"].startswith("running forget accuracy") and rec["running_forget_acc"] <= rule.target


def test_equivalence_mia_criterion_and_budget_record(trained_tiny):
    model, split = trained_tiny
    ctx = RunContext()
    rule = EquivalenceStop(ctx, "m", StopConfig(check_every=2, window=100, mia_tol=0.5), split, model)
    auc = rule.mia_auc(model)
    assert 0.0 <= auc <= 1.0
    assert not rule.update(1, model)
    assert rule.update(2, model) and "MIA" in ctx.log["m"]["stop"]["reason"]
    ctx2 = RunContext()
    never = EquivalenceStop(ctx2, "n", StopConfig(check_every=2, window=100, mia_tol=-1.0), split, model)
    assert not never.update(2, model)
    never.finish(7)
    assert ctx2.log["n"]["stop"]["step"] == 7 and ctx2.log["n"]["stop"]["reason"] == "step budget reached"


def test_make_stop_rule_validates(trained_tiny):
    model, split = trained_tiny
    with pytest.raises(ConfigError, match="goal"):
        make_stop_rule("suppress", StopConfig(), split, model, RunContext(), "m")
    with pytest.raises(ConfigError, match="check_every"):
        make_stop_rule("suppression", StopConfig(check_every=0), split, model, RunContext(), "m")
