"""Criterion (d) selectivity, the cost counters and stop-when-done (issue 31)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.controller import ControlConfig, Plan, run_controlled
from medunlearn.unlearn.cost import ImageCounter, counting, rte_compute
from medunlearn.unlearn.criteria import CriteriaConfig, confidence_stats, resolve_criteria
from medunlearn.unlearn.judging import assess
from tests.unlearn.test_controller import Scripted, _run, coded_split


class Flattened(nn.Module):
    """A model whose every output is the original's logits / 100: same argmax, near-uniform softmax."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / 100.0


def _by_name(checks):
    return {c["name"]: c for c in checks}


def test_a_model_that_flattens_every_output_meets_a_b_c_and_fails_d(trained_tiny):
    model, split = trained_tiny
    flat = Flattened(copy.deepcopy(model)).eval()
    checks = _by_name(assess(flat, model, split, "suppression")["checks"])
    assert checks["forget_accuracy"]["passed"] and checks["forget_confidence"]["passed"]
    assert checks["retain_accuracy"]["passed"]  # the argmax is unchanged: (c) cannot see it
    d = checks["retain_confidence"]
    assert not d["passed"] and d["value"] < 40 and d["threshold"] > 85
    assert d["routed"] == pytest.approx(100.0) and d["routed_original"] < 10  # every retain image routed
    off = assess(flat, model, split, "suppression", ControlConfig(selectivity_margin=None))
    assert off["met"] and "retain_confidence" not in _by_name(off["checks"])


def test_d_applies_to_domain_suppression_only():
    stats = {"retain_conf": 90.0, "retain_routed": 2.0}
    cfg = CriteriaConfig()
    dom = resolve_criteria(cfg, "suppression", 3, False, 99.0, 100, stats)
    assert dom.min_retain_confidence == pytest.approx(85.0) and dom.routing_threshold == pytest.approx(100 / 3 + 10)
    assert resolve_criteria(cfg, "suppression", 3, True, 99.0, 100, stats).min_retain_confidence is None
    assert resolve_criteria(cfg, "equivalence", 3, False, 99.0, 100, stats).min_retain_confidence is None


def test_confidence_stats_mean_and_routed_share():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.34, 0.33, 0.33], [0.6, 0.2, 0.2]])
    s = confidence_stats(probs, 43.33)
    assert s["retain_conf"] == pytest.approx(100 * (0.9 + 0.4 + 0.34 + 0.6) / 4)
    assert s["retain_routed"] == pytest.approx(50.0)
    empty = confidence_stats(torch.zeros(0, 3), 43.3)  # no rows: undefined, and (d) fails with "no rows"
    assert math.isnan(empty["retain_conf"]) and math.isnan(empty["retain_routed"])


class ScriptedConf(Scripted):
    """Scripted, with the retain rows' confidence also scripted (retain_conf[s])."""

    def __init__(self, forget_acc, conf, retain_conf) -> None:
        super().__init__(forget_acc, conf, [0.0] * len(forget_acc))
        self.rc = retain_conf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        s = int(round(float(self.s)))
        forget = x[:, 0, 0, 2] > 0.5
        probs = out.exp()
        pred = probs.argmax(1)
        p = torch.tensor(self.rc[s])
        flat = torch.full_like(probs, float((1 - p) / 2))
        flat[torch.arange(len(x)), pred] = p
        return torch.where(forget[:, None], probs, flat).log() + 0 * self.s


def test_the_controller_rejects_a_forgotten_state_that_flattened_retain():
    fa = [1.0, 0.33, 0.33, 0.33]
    model = ScriptedConf(fa, [0.95, 0.4, 0.4, 0.4], [0.95, 0.5, 0.93, 0.93])
    out = _run(model, coded_split(), steps=3, patience=0)
    acc = out.acceptance
    assert out.trace[1]["met"] is False and out.trace[2]["met"] is True  # step 1 flattened retain (50 % < 90 %)
    assert acc["met"] and acc["step"] == 2
    assert acc["selectivity"]["retain_confidence"] == pytest.approx(93.0, abs=0.01)
    assert acc["selectivity"]["retain_confidence_original"] == pytest.approx(95.0, abs=0.01)


def test_stops_within_its_patience_after_the_first_met_state():
    fa = [1.0, 0.8, 0.33] + [0.33] * 12
    model = Scripted(fa, [0.95, 0.8] + [0.4] * 13, [0.0] * len(fa))
    out = _run(model, coded_split(), steps=14, patience=2)
    acc = out.acceptance
    assert acc["met"] and acc["first_met_step"] == 2
    assert acc["steps_run"] == 2 + 2  # check_every 1: two further checks
    assert "patience" in acc["reason"]
    polished = _run(Scripted(fa, [0.95, 0.8] + [0.4] * 13, [0.0] * len(fa)), coded_split(), steps=14, patience=2,
                    polish=True)
    assert polished.acceptance["steps_run"] >= acc["steps_run"]


def test_cost_counters_add_up_and_count_the_steps(trained_tiny):
    model, split = trained_tiny
    cfg = dict(epochs=2.0, batch_size=16, check_every=2, retain_drop=0.0, selectivity_margin=0.0)  # forces repair
    out = METHODS.get("famr")(**cfg).run(model, split, RunContext(seed=0))
    cost = out.acceptance["cost"]
    ph = cost["phases"]
    assert {"method", "checks", "setup", "certificate"} <= set(ph)
    for kind in ("grad", "forward"):
        assert sum(p[kind] for p in ph.values()) == cost["total"][kind]
    assert out.acceptance["steps_run"] == 20  # 2 passes of 10 batches (150 forget rows, the last batch 6)
    assert ph["method"]["grad"] == 2 * len(split.train_forget)  # one forward + backward per forget image per pass
    assert ph["checks"]["grad"] == 0 and ph["checks"]["forward"] > 0
    if out.acceptance["repair_steps"]:
        # retain repair: the student's gradient pass + the frozen teacher's forward on the same batch
        assert ph["repair"]["grad"] == ph["repair"]["forward"] > 0
    assert cost["forward_equivalents"] == cost["total"]["forward"] + 3 * cost["total"]["grad"]


def test_counting_nests_and_counts_top_level_calls_only():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    outer = ImageCounter()
    with counting(outer, phase="bench"):
        with counting(phase="method") as inner:
            net(torch.zeros(5, 4)).sum().backward()
            with torch.no_grad():
                net(torch.zeros(7, 4))
    assert inner.counts == {"method": {"grad": 5, "forward": 7}}
    assert outer.counts == {"bench": {"grad": 5, "forward": 7}}
    net(torch.zeros(3, 4))  # no counter open: nothing counted, no hook left behind
    assert outer.total() == {"grad": 5, "forward": 7}
    with counting(phase="train") as loss_too:
        nn.CrossEntropyLoss()(net(torch.zeros(4, 4)), torch.zeros(4, dtype=torch.long)).backward()
    assert loss_too.counts == {"train": {"grad": 4, "forward": 0}}  # the loss module is not a model pass
    assert rte_compute({"forward_equivalents": 300}, {"forward_equivalents": 30}) == pytest.approx(10.0)
    assert rte_compute(None, {"forward_equivalents": 30}) is None


def test_repair_is_triggered_by_lost_confidence_and_restores_it(trained_tiny):
    model, split = trained_tiny
    work, original = copy.deepcopy(model), copy.deepcopy(model).eval()

    def update(t: int) -> float:
        with torch.no_grad():
            if t == 1:
                work.head.weight.mul_(0.2)
                work.head.bias.mul_(0.2)
        return 0.0

    out = run_controlled(work, original, split, RunContext(seed=0), "suppression",
                         ControlConfig(check_every=1, repair_steps=200, repair_lr=1e-3), Plan(update, 2), "flatten")
    rows = out.trace
    assert rows[1]["retain_acc"] >= 99 and "repair" in rows[1]["decision"]  # (c) held; (d) called the repair
    repaired = next(r for r in rows if r["phase"] == "repair")
    assert repaired["retain_conf"] > rows[1]["retain_conf"] + 10


def test_famr_salient_moves_only_the_masked_weights(trained_tiny):
    model, split = trained_tiny
    out = METHODS.get("famr_salient")(epochs=2.0, batch_size=16, density=0.05).run(model, split, RunContext(seed=0))
    before, after = dict(model.named_parameters()), dict(out.model.named_parameters())
    moved = sum(int((after[n] != before[n]).sum()) for n in before)
    total = sum(p.numel() for p in before.values())
    assert 0 < moved <= 0.05 * total + len(before)  # the top 5 % (ties at the threshold aside), repair included
    assert all(not p._backward_hooks for p in out.model.parameters())  # the mask's hooks do not leave the run


def test_the_retrain_counts_each_training_image_once():
    from medunlearn.models.train import TrainConfig, train_model
    from tests.conftest import make_tiny_split

    split = make_tiny_split(num_classes=3, size=16, n_train=200, seed=0)
    cfg = TrainConfig(model="small_cnn", model_kwargs={"width": 4}, epochs=2, batch_size=32, lr=0.05, image_size=16,
                      amp=False)
    _, info = train_model(split, cfg, RunContext(seed=0))
    ph = info["cost"]["phases"]
    assert ph["train"] == {"grad": 2 * (len(split.train) // 32) * 32, "forward": 0}  # drop_last batches, 2 epochs
    assert ph["validation"] == {"grad": 0, "forward": 2 * len(split.val)}


@pytest.mark.parametrize("name", ["famr", "famr_retain", "famr_salient"])
def test_runs_judged_under_d_never_read_test_rows(name, trained_tiny):
    """(d)'s threshold, the repair it triggers and the stop rule read validation rows only: a run on a split whose
    test rows are sealed (any use raises) completes, and the same run on the full split gives the same weights."""
    from medunlearn.tune.sealed import validation_only

    model, split = trained_tiny
    sealed = METHODS.get(name)(epochs=2.0, batch_size=16).run(model, validation_only(split), RunContext(seed=0))
    full = METHODS.get(name)(epochs=2.0, batch_size=16).run(model, split, RunContext(seed=0))
    a, b = sealed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "retain_confidence" in {c["name"] for c in sealed.acceptance["checks"]}
