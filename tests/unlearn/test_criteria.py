"""Acceptance criteria math: resolution per policy kind, checks, violation, bootstrap intervals."""
from __future__ import annotations

import pytest
import torch

from medunlearn.errors import ConfigError
from medunlearn.unlearn.criteria import (
    CriteriaConfig,
    bootstrap_membership,
    evaluate_checks,
    forget_shortfall,
    resolve_criteria,
    violation,
)


def test_domain_and_class_targets():
    dom = resolve_criteria(CriteriaConfig(), "suppression", 4, False, 90.0)
    assert dom.forget_target == 25.0 and dom.max_confidence == 35.0 and dom.policy_kind == "domain"
    cls = resolve_criteria(CriteriaConfig(), "suppression", 4, True, 90.0)
    assert cls.forget_target == 0.0 and cls.max_confidence is None
    custom = resolve_criteria(CriteriaConfig(forget_target=40.0, confidence_margin=None), "suppression", 4, False, 90.0)
    assert custom.forget_target == 40.0 and custom.max_confidence is None


def test_checks_and_violation():
    crit = resolve_criteria(CriteriaConfig(), "suppression", 3, False, 95.0)
    assert crit.forget_measure == "expected"  # auto: a domain reads the mean true-label probability
    ok = evaluate_checks(crit, {"forget_acc": 90.0, "forget_expected": 35.0, "forget_conf": 40.0, "retain_acc": 94.5})
    assert all(c["passed"] for c in ok) and violation(ok) == 0.0
    bad = evaluate_checks(crit, {"forget_acc": 35.0, "forget_expected": 10.0, "forget_conf": 90.0, "retain_acc": 90.0})
    assert [c["passed"] for c in bad] == [False, False, False]
    assert violation(bad) == pytest.approx((100 / 3 - 5 - 10) + (90 - 100 / 3 - 10) + 4.0, abs=1e-2)
    assert forget_shortfall(crit, {"forget_expected": 10.0}) < 0 < forget_shortfall(crit, {"forget_expected": 80.0})


def test_forget_measure_auto_argmax_for_a_removed_class_and_explicit_override():
    assert resolve_criteria(CriteriaConfig(), "suppression", 3, True, 95.0).forget_measure == "argmax"
    crit = resolve_criteria(CriteriaConfig(forget_measure="argmax"), "suppression", 3, False, 95.0)
    checks = evaluate_checks(crit, {"forget_acc": 60.0, "forget_expected": 34.0, "forget_conf": 40.0, "retain_acc": 95.0})
    assert not checks[0]["passed"] and checks[0]["value"] == 60.0
    with pytest.raises(ConfigError, match="forget_measure"):
        resolve_criteria(CriteriaConfig(forget_measure="top5"), "suppression", 3, False, 95.0)


def test_expected_accuracy_is_chance_for_a_label_blind_model_whatever_the_class_mix():
    from medunlearn.evaluate.functional import accuracy, expected_accuracy

    labels = torch.tensor([1] * 15 + [2] * 10)  # the demo's ScannerX val_forget mix
    blind = torch.zeros(25, 3) + torch.tensor([0.0, 0.01, 0.0])  # near-uniform, always favours class 1
    assert accuracy(blind, labels) == pytest.approx(60.0)
    assert expected_accuracy(blind, labels) == pytest.approx(100 / 3, abs=0.5)


@pytest.mark.parametrize("bad", [{"forget_tol": -1}, {"retain_drop": 200}, {"ci_level": 1.0}, {"bootstrap": 5},
                                 {"forget_target": 150.0}])
def test_bad_criteria_are_config_errors(bad):
    with pytest.raises(ConfigError, match="Expected"):
        resolve_criteria(CriteriaConfig(**bad), "suppression", 3, False, 90.0)


def test_bootstrap_covers_equality_for_identical_samples_and_not_for_separated():
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(200, generator=g)
    correct = (torch.rand(200, generator=g) > 0.3).long()
    same = bootstrap_membership(correct, loss, correct, loss, 300, 0.95, 0)
    assert same["acc_gap_lo"] <= 0 <= same["acc_gap_hi"] and same["auc_lo"] <= 50 <= same["auc_hi"]
    assert same["auc"] == pytest.approx(50.0)
    apart = bootstrap_membership(torch.ones(200, dtype=torch.long), loss * 0.1, correct, loss + 1.0, 300, 0.95, 0)
    assert apart["acc_gap_lo"] > 0 and apart["auc_lo"] > 90


def test_confidence_criterion_switched_off_from_a_set_string():
    from medunlearn.configio import method_config
    from medunlearn.unlearn import METHODS

    cfg = method_config(METHODS.get("psg"), None, {"confidence_margin": "null", "forget_target": "20"})
    assert cfg.confidence_margin is None and cfg.forget_target == 20.0
    with pytest.raises(ConfigError, match="confidence_margin"):
        resolve_criteria(CriteriaConfig(confidence_margin=-3.0), "suppression", 3, False, 90.0)


def test_retain_guard_is_at_least_one_probe_row():
    small = resolve_criteria(CriteriaConfig(), "suppression", 3, False, 100.0, retain_rows=84)
    assert small.retain_drop == pytest.approx(100 / 84) and small.retain_drop_requested == 1.0
    ok = evaluate_checks(small, {"forget_acc": 30.0, "forget_expected": 33.0, "forget_conf": 40.0,
                                 "retain_acc": 100 * 83 / 84})
    assert ok[-1]["passed"]  # one image of 84 is within the guard; two are not
    assert not evaluate_checks(small, {"forget_acc": 30.0, "forget_expected": 33.0, "forget_conf": 40.0,
                                       "retain_acc": 100 * 82 / 84})[-1]["passed"]
    big = resolve_criteria(CriteriaConfig(), "suppression", 3, False, 100.0, retain_rows=512)
    assert big.retain_drop == 1.0 and big.retain_drop_requested is None


@pytest.mark.parametrize("n", [73, 84, 97, 99])  # 100/n > 1: one row is the drop allowed
def test_one_wrong_probe_row_is_the_drop_the_retain_guard_allows(n):
    from medunlearn.evaluate.functional import accuracy

    labels = torch.zeros(n, dtype=torch.long)
    all_right = torch.tensor([[1.0, 0.0, 0.0]]).repeat(n, 1)
    one_wrong = all_right.clone()
    one_wrong[0] = torch.tensor([0.0, 1.0, 0.0])
    crit = resolve_criteria(CriteriaConfig(), "suppression", 3, False, accuracy(all_right, labels), retain_rows=n)
    m = {"forget_acc": 40.0, "forget_expected": 33.0, "forget_conf": 40.0, "retain_acc": accuracy(one_wrong, labels)}
    assert evaluate_checks(crit, m)[-1]["passed"]  # a float32 mean put 72/73 below 100 - 100/73
    two_wrong = one_wrong.clone()
    two_wrong[1] = torch.tensor([0.0, 0.0, 1.0])
    assert not evaluate_checks(crit, {**m, "retain_acc": accuracy(two_wrong, labels)})[-1]["passed"]


def test_an_empty_probe_is_nan_and_its_check_fails_with_no_rows(tiny_split):
    import dataclasses
    import math

    from medunlearn.unlearn.controller import ControlConfig
    from medunlearn.unlearn.probes import Probes

    empty = tiny_split.train_retain.subset([])
    split = dataclasses.replace(tiny_split, train_retain=empty, val_retain=empty)
    probes = Probes(split, ControlConfig(), "suppression", 0, torch.device("cpu"))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(split.num_classes))
    model(split.train_forget.images[:1])
    m = probes.measure(model, None)
    assert math.isnan(m["retain_acc"]) and math.isnan(m["retain_conf"]) and not math.isnan(m["forget_acc"])
    assert probes.retain_at_least(model, 0.0) is None  # no rows: nothing holds, not even a 0 % guard
    crit = resolve_criteria(CriteriaConfig(), "suppression", 3, True, m["retain_acc"])
    retain = next(c for c in evaluate_checks(crit, m) if c["name"] == "retain_accuracy")
    assert not retain["passed"] and retain["reason"].startswith("no rows")
    assert violation([retain]) == 100.0
