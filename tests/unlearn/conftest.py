"""Shared unlearning fixtures: one tiny trained base model per test session."""
from __future__ import annotations

import pytest

from medunlearn.models.train import TrainConfig, train_model
from medunlearn.runtime import RunContext
from tests.conftest import make_tiny_split


@pytest.fixture(scope="session")
def trained_tiny():
    """(model, split): small_cnn (width 8) trained on the 3-class, 16 px, 600-row four-device tiny split.

    The forget set is device ScannerX. Tests must not modify the returned model (unlearners copy it)."""
    split = make_tiny_split(num_classes=3, size=16, n_train=600, seed=0)
    cfg = TrainConfig(model="small_cnn", model_kwargs={"width": 8}, epochs=6, batch_size=32, lr=0.05,
                      image_size=16, amp=False)
    model, _ = train_model(split, cfg, RunContext(seed=0))
    return model.eval(), split


def run_plan(name: str, model, split, goal: str = "suppression", seed: int = 0, **overrides):
    """A method's plan run to its budget without the controller: the method's own mechanics, no rollback.

    Returns (unlearned copy, ctx)."""
    import copy

    from medunlearn.unlearn import METHODS
    from medunlearn.unlearn.base import release

    ctx = RunContext(seed=seed)
    ctx.seed_everything()
    work = copy.deepcopy(model)
    plan = METHODS.get(name)(**overrides).plan(work, copy.deepcopy(model).eval(), split, ctx, goal)
    for t in range(1, plan.budget + 1):
        plan.update(t)
    if plan.finalize is not None:
        work = plan.finalize(work)
    return release(work), ctx


def untrained_teacher(split):
    """ref_distill's reference teachers for tests: one untrained small_cnn that saw no training row."""
    import numpy as np
    import torch

    from medunlearn.audit.teachers import ReferenceTeachers
    from medunlearn.models.zoo import create_model

    torch.manual_seed(1)
    teacher = create_model("small_cnn", split.num_classes, split.in_shape[0], split.in_shape[1], width=8).eval()
    ids = split.train.meta["image_id"].astype(str).tolist()
    return ReferenceTeachers([teacher], [1], ids, np.zeros((1, len(ids)), dtype=bool))
