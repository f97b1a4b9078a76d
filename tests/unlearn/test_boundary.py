"""Boundary Shrink and Boundary Expanding."""
from __future__ import annotations

import pytest
import torch

from medunlearn.errors import DivergenceError
from medunlearn.evaluate.functional import accuracy, expected_accuracy, predict
from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.boundary_expanding import expand_head, prune_head


def _acc(model, s, k):
    return accuracy(predict(model, s.images, num_classes=k), s.labels)


def _expected(model, s, k):  # what criterion (a) reads on a domain (forget_measure auto)
    return expected_accuracy(predict(model, s.images, num_classes=k), s.labels)


def test_expand_then_prune_keeps_the_real_rows():
    head = torch.nn.Linear(4, 3)
    wide = expand_head(head)
    assert wide.out_features == 4
    back = prune_head(wide)
    assert torch.equal(back.weight, head.weight) and torch.equal(back.bias, head.bias)


def test_boundary_expanding_returns_k_class_model_and_forgets(trained_tiny):
    model, split = trained_tiny
    outcome = METHODS.get("boundary_expanding")(selectivity_margin=None).run(model, split, RunContext(seed=0))
    out = outcome.model
    k = split.num_classes
    assert out.head.out_features == k and type(out) is type(model)
    assert {n: t.shape for n, t in out.state_dict().items()} == {n: t.shape for n, t in model.state_dict().items()}
    assert _expected(out, split.val_forget, k) < _expected(model, split.val_forget, k) - 30
    assert outcome.acceptance["steps_run"] >= 1 and outcome.acceptance["reason"]


def test_boundary_shrink_forgets_and_keeps_some_retain(trained_tiny):
    model, split = trained_tiny
    outcome = METHODS.get("boundary_shrink")().run(model, split, RunContext(seed=0))
    out = outcome.model
    k = split.num_classes
    assert _expected(out, split.val_forget, k) < _expected(model, split.val_forget, k) - 30
    assert _acc(out, split.test_retain, k) >= 60
    assert {c["name"] for c in outcome.acceptance["checks"]} >= {"forget_accuracy", "forget_confidence"}


@pytest.mark.parametrize("name", ["boundary_shrink", "boundary_expanding"])
def test_divergence_raises(trained_tiny, name):
    model, split = trained_tiny
    with pytest.raises(DivergenceError):
        METHODS.get(name)(lr=1e10, epochs=3.0, check_every=1).unlearn(model, split, RunContext())
