"""merge_repair's retain distillation (merge/retain_distill.py): it gives a flattened merge its retain confidence
back under the controller, only when a criterion is missed, with declared bounds; no test row is read."""
from __future__ import annotations

import copy

import pytest
import torch

from medunlearn.errors import ConfigError
from medunlearn.merge import MERGES
from medunlearn.merge.base import is_bn_stat
from medunlearn.models.train import TrainConfig, train_model
from medunlearn.runtime import RunContext
from medunlearn.unlearn.probes import Probes
from medunlearn.unlearn.types import ControlConfig
from tests.conftest import make_tiny_split
from tests.merge.helpers import tiny_policies
from tests.merge.test_criteria_aware import _build, poisoned

LENIENT = {"forget_tol": 100.0, "confidence_margin": 100.0}  # forget criteria always pass: (d) is what is judged


@pytest.fixture(scope="module")
def flattened():
    """(trained tiny model, base state, two runs whose head is the base's / 100: outputs flattened, argmax kept)."""
    split = make_tiny_split(n_train=240)
    cfg = TrainConfig(model="small_cnn", model_kwargs={"width": 4}, epochs=10, batch_size=32, lr=0.1, image_size=16,
                      amp=False)
    model, _ = train_model(split, cfg, RunContext(seed=0))
    base = {k: v.detach().clone() for k, v in model.eval().state_dict().items()}
    run = {k: v / 100 if k.startswith("head.") else v.clone() for k, v in base.items()}
    return model, base, [run, copy.deepcopy(run)], poisoned(split)


def _retain_conf(model, data, state) -> float:
    probes = Probes(data, ControlConfig(), "suppression", 0, torch.device("cpu"))
    return probes.retain_stats(_build(model)(state))["retain_conf"]


def test_distillation_gives_a_flattened_merge_its_retain_confidence_back(flattened):
    model, base, runs, data = flattened
    pols = tiny_policies(data, 2, **LENIENT)
    merge = MERGES.get("merge_repair")(merge="linear", steps=0, distill_steps=30, distill_lr=3e-3)
    ctx = RunContext(seed=0)
    out = merge.merge(base, runs, None, ctx=ctx, data=data, build_model=_build(model), policies=pols)
    original, flat, after = (_retain_conf(model, data, s) for s in (base, runs[0], out))
    assert flat < 40 < original - 20  # the flattened merge sits near chance (33.3 %), the original far above
    assert after > flat + 20  # distilled toward the original's confidence
    log = ctx.log["merge_repair"]
    assert log["distill"]["trace"][0]["phase"] == "original" and log["distill"]["steps"] == 30
    assert log["union_acceptance"]["budget"] == 30 and "repair_acceptance" in log["distill"]
    assert all(torch.equal(out[k], runs[0][k]) for k in base if is_bn_stat(k))  # BatchNorm statistics untouched


def test_distillation_is_skipped_when_nothing_is_missed(flattened):
    model, base, runs, data = flattened
    pols = tiny_policies(data, 2, selectivity_margin=None, **LENIENT)  # (d) off: the flattened merge meets all
    ctx = RunContext(seed=0)
    out = MERGES.get("merge_repair")(merge="linear", steps=1, distill_steps=30).merge(
        base, runs, None, ctx=ctx, data=data, build_model=_build(model), policies=pols)
    assert "distill" not in ctx.log["merge_repair"] and ctx.log["merge_repair"]["union_acceptance"]["met"]
    assert all(torch.equal(out[k], runs[0][k]) for k in base)  # step 0 of the repair, returned unchanged


@pytest.mark.parametrize("bad", [{"distill_steps": -1}, {"distill_lr": 0.0}, {"distill_lr": 2.0},
                                 {"distill_hold": -0.5}, {"distill_steps": 10_001}])
def test_distillation_settings_are_bounded(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        MERGES.get("merge_repair")(**bad)


@pytest.mark.parametrize("guard, margin", [(2.0, 2.0), (50.0, 5.0), (None, 5.0)])
def test_guard_margin_only_tightens_criterion_d_inside_the_repair(flattened, guard, margin):
    model, base, runs, data = flattened
    ctx = RunContext(seed=0)
    MERGES.get("merge_repair")(merge="linear", steps=1, guard_margin=guard).merge(
        base, runs, None, ctx=ctx, data=data, build_model=_build(model), policies=tiny_policies(data, 2, **LENIENT))
    c = ctx.log["merge_repair"]["union_acceptance"]["criteria"]
    assert c["min_retain_confidence"] == pytest.approx(c["retain_confidence_original"] - margin)
