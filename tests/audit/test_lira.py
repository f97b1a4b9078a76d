"""LiRA math on hand-worked numbers, and the verdict statistics' calibration."""
from __future__ import annotations

import math

import numpy as np
import torch

from medunlearn.audit.lira import (
    logit_confidence,
    offline_lira,
    online_lira,
    out_moments,
    pooled_sigma,
    threshold_at_fpr,
    tpr_at_fpr,
)
from medunlearn.audit.verdict import (
    calibration_fpr,
    clopper_pearson,
    null_model,
    patient_test,
    set_test,
    verdict_word,
)


def test_logit_confidence_is_log_odds_of_the_true_class_and_stable():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 100.0, -50.0]])
    labels = torch.tensor([0, 1])
    phi = logit_confidence(logits, labels)
    p = torch.softmax(logits.double(), 1)[0, 0]
    assert math.isclose(float(phi[0]), float(torch.log(p / (1 - p))), rel_tol=1e-9)
    assert math.isfinite(float(phi[1])) and float(phi[1]) > 99  # p_y rounds to 1.0, phi does not overflow


def test_offline_statistic_uses_only_out_models_and_the_predictive_scale():
    ref = torch.tensor([[1.0, 5.0], [3.0, 7.0], [100.0, 6.0]])  # model 2 saw row 0 (IN): its 100 must be ignored
    member = torch.tensor([[False, False], [False, False], [True, False]])
    mu, n_out = out_moments(ref, member)
    assert mu.tolist() == [2.0, 6.0] and n_out.tolist() == [2.0, 3.0]
    # pooled within-row sd over OUT entries: row 0 ss=2 (dof 1), row 1 ss=2 (dof 2) -> sqrt(4/3)
    assert math.isclose(pooled_sigma(ref, ~member), math.sqrt(4 / 3))
    z = offline_lira(torch.tensor([4.0, 6.0]), ref, member, sigma=1.0, prior_dof=None)  # fixed variance
    assert math.isclose(float(z[0]), 2.0 / math.sqrt(1.5)) and float(z[1]) == 0.0
    # per-row variance shrunk toward sigma: row 0 has ss = 2 on 1 dof; with nu0 = 1: (1*1 + 2) / (1 + 1) = 1.5
    z = offline_lira(torch.tensor([4.0, 6.0]), ref, member, sigma=1.0, prior_dof=1.0)
    assert math.isclose(float(z[0]), 2.0 / math.sqrt(1.5 * 1.5))
    assert torch.isnan(offline_lira(torch.tensor([0.0]), ref[:, :1], torch.ones(3, 1, dtype=torch.bool)))[0]


def test_online_ratio_favours_in_when_the_score_sits_on_the_in_mean():
    ref = torch.tensor([[10.0], [0.0], [11.0], [1.0]])
    member = torch.tensor([[True], [False], [True], [False]])
    assert float(online_lira(torch.tensor([10.5]), ref, member)[0]) > 0
    assert float(online_lira(torch.tensor([0.5]), ref, member)[0]) < 0


def test_threshold_and_tpr_at_fpr():
    non = torch.arange(100, dtype=torch.float64)  # 0..99
    t = threshold_at_fpr(non, 0.05)
    assert (non > t).sum() == 5
    tpr, fpr, _ = tpr_at_fpr(torch.tensor([96.5, 50.0, 99.5, 1.0]), non, 0.05)
    assert tpr == 0.5 and fpr == 0.05


def test_patient_test_is_calibrated_on_null_patients_and_detects_a_shift():
    rng = np.random.default_rng(0)
    pats = np.repeat([f"p{i}" for i in range(300)], 4)
    scores = rng.normal(0, 1, len(pats)) + np.repeat(rng.normal(0, 0.5, 300), 4)  # correlated within patient
    null = null_model(scores, pats)
    assert abs(null["sigma_b"] - 0.5) < 0.15 and abs(null["sigma_w"] - 1.0) < 0.1
    cal = calibration_fpr(scores, pats, 0.05)
    assert cal["within_bound"] and cal["fpr"] < 0.1
    shifted = patient_test(np.full(4, 3.0), null, 0.01)
    assert shifted["detected"] and shifted["min_detectable_effect"] < 3.0
    assert not patient_test(np.zeros(4), null, 0.01)["detected"]
    low = patient_test(np.full(4, -3.0), null, 0.01)
    assert low["below"] and not low["detected"]


def test_set_test_and_verdict_words():
    rng = np.random.default_rng(1)
    cal = rng.normal(0, 1, 1000)
    assert set_test(rng.normal(3, 1, 200), cal, 0.01)["detected"]
    assert not set_test(rng.normal(0, 1, 200), cal, 0.01)["detected"]
    assert set_test(rng.normal(-3, 1, 200), cal, 0.01)["below"]
    assert not set_test(rng.normal(0, 1, 200), cal, 0.01)["below"]
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0 and 0.25 < hi < 0.35
    assert verdict_word(False, True) == "nothing to forget at this power"
    assert verdict_word(True, True) == "not forgotten" and verdict_word(True, False) == "forgotten"
    assert verdict_word(True, False, True) == "over-forgotten"


def test_normal_quantiles_make_a_heavy_tailed_null_calibrated():
    from medunlearn.audit.verdict import to_normal

    rng = np.random.default_rng(2)
    heavy = rng.standard_t(1.5, 2000)  # far heavier tails than a normal
    pats = np.array([f"p{i}" for i in range(2000)])
    q = to_normal(heavy, heavy)
    assert abs(q.mean()) < 0.01 and abs(q.std() - 1) < 0.05
    assert np.all(np.diff(q[np.argsort(heavy)]) >= 0)  # order preserved
    cal = calibration_fpr(heavy[:1000], pats[:1000], 0.01)
    assert cal["within_bound"] and cal["fpr"] <= 0.02


def test_holm_controls_the_family_and_rejects_strong_signals():
    from medunlearn.audit.verdict import holm

    assert holm([0.001, 0.02, 0.5], 0.05) == [True, True, False]  # 0.001 <= 0.05/3, 0.02 <= 0.05/2
    assert holm([0.02, 0.02, 0.02], 0.05) == [False, False, False]  # 0.02 > 0.05/3: stop at the first
    rng = np.random.default_rng(3)
    flagged = sum(any(holm(rng.uniform(size=100), 0.01)) for _ in range(300))
    assert flagged / 300 <= 0.03  # family-wise rate near 1 %, not the ~63 % of 100 uncorrected tests
