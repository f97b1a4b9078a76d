"""Verdicts from LiRA scores (pure math): per patient, and for the whole forget set, at a stated FPR.

Per patient (their images' scores are averaged: a patient's few images carry more evidence together):
  the null is the held-out (calibration) patients, none of whom any model saw. Every score is first mapped to
  the normal quantile of its rank among the calibration images (`to_normal`: q = Φ⁻¹ of the empirical CDF), so
  the null is standard normal per image whatever the tails of LiRA's statistic (on a Fashion-MNIST pilot, the raw
  statistic's tails were heavy enough that a normal null flagged 2 % of held-out images at a stated 1 %). Scores of
  one patient's images are correlated, so the null variance of a patient mean of n images is σ_b² + σ_w²/n, σ_w²
  the pooled within-patient variance and σ_b² the between-patient variance (one-way random effects, method of
  moments) of the calibration patients. T = (mean − μ0) / (sqrt(σ_b² + σ_w²/n)·sqrt(1 + 1/P)), the prediction statistic
  of a new patient's mean from P calibration patients, read on Student's t with P − 1 degrees of freedom (the
  null is estimated from P patients: on a 24-patient calibration set the normal reading flagged 2 of 24 held-out
  patients at a stated 1 %); membership is detected when the one-sided p-value < α (the stated false-positive
  rate per patient).
  power: the smallest mean shift (in null SD units) detectable with probability `power` at level α,
  (t_{1−α} + t_{power})·sqrt(σ_b² + σ_w²/n)·sqrt(1 + 1/P).
Forget set (every forget image): TPR at α FPR (threshold = the calibration scores' 1 − α quantile) with a
  Clopper–Pearson interval; detected when its lower bound exceeds the calibration's realised FPR.
Both tails: a patient whose scores fall significantly BELOW the held-out patients' (1 − p < α, the same test
  mirrored) is also distinguishable from a non-member (over-forgetting, the "Streisand effect" of gradient
  ascent); the forget set likewise, by the fraction of its scores under the calibration's α quantile.
Several patients: each patient's verdict word reads its own test at α; whether ANY patient still shows
  membership (or over-forgetting) is decided by Holm's step-down over the patients at family-wise level α (with
  100 single-image "patients", one is flagged at 1 % by chance alone).
Verdict words: "forgotten" (the original showed membership, the audited model shows none on either tail),
  "not forgotten" (membership still detected), "over-forgotten" (scores below non-members'), "nothing to
  forget at this power" (the original showed none: never "met").
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from medunlearn.audit.lira import auc, tpr_at_fpr

FORGOTTEN, NOT_FORGOTTEN, NOTHING = "forgotten", "not forgotten", "nothing to forget at this power"
OVER = "over-forgotten"


def to_normal(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Φ⁻¹ of each score's mid-rank empirical CDF among `reference` (n,): in (−∞, ∞), standard normal on the
    reference itself; nan stays nan."""
    ref = np.sort(np.asarray(reference, dtype=float)[~np.isnan(np.asarray(reference, dtype=float))])
    s = np.asarray(scores, dtype=float)
    below = np.searchsorted(ref, s, side="left")
    ties = np.searchsorted(ref, s, side="right") - below
    u = (below + 0.5 * ties + 0.5) / (len(ref) + 1)
    out = stats.norm.ppf(u)
    return np.where(np.isnan(s), np.nan, out)


def null_model(scores: np.ndarray, groups: Sequence[str] | np.ndarray) -> dict[str, float]:
    """{mu, sigma_w, sigma_b, patients, images} of calibration `scores` (N,) grouped by patient `groups` (N,)."""
    s = np.asarray(scores, dtype=float)
    g = np.asarray(list(groups))
    keep = ~np.isnan(s)
    s, g = s[keep], g[keep]
    names, inv = np.unique(g, return_inverse=True)
    n = np.bincount(inv).astype(float)
    means = np.bincount(inv, weights=s) / n
    ss_w = float(((s - means[inv]) ** 2).sum())
    dof_w = float((n - 1).sum())
    var_w = ss_w / dof_w if dof_w > 0 else float(np.var(s, ddof=1)) if len(s) > 1 else 1.0
    var_means = float(np.var(means, ddof=1)) if len(means) > 1 else 0.0
    var_b = max(0.0, var_means - float(np.mean(var_w / n)))
    return {"mu": float(means.mean()) if len(means) else 0.0, "sigma_w": math.sqrt(max(var_w, 1e-12)),
            "sigma_b": math.sqrt(var_b), "patients": len(names), "images": len(s)}


def null_sd(null: dict[str, float], n: int) -> float:
    """Predictive null standard deviation of a new patient's mean score over n images."""
    within = null["sigma_b"] ** 2 + null["sigma_w"] ** 2 / max(n, 1)
    return math.sqrt(within) * math.sqrt(1 + 1 / max(null["patients"], 1))


def patient_test(scores: np.ndarray, null: dict[str, float], alpha: float, power: float = 0.8) -> dict[str, Any]:
    """One patient's test: {n, mean, effect (mean − μ0), t, p, detected, p_low, below, min_detectable_effect}."""
    s = np.asarray(scores, dtype=float)
    s = s[~np.isnan(s)]
    sd = null_sd(null, len(s))
    mean = float(s.mean()) if len(s) else float("nan")
    t = (mean - null["mu"]) / sd
    dist = stats.t(df=max(null["patients"] - 1, 1))
    p = float(dist.sf(t)) if math.isfinite(t) else float("nan")
    mde = (dist.isf(alpha) + dist.ppf(power)) * sd
    p_low = float(dist.cdf(t)) if math.isfinite(t) else float("nan")
    return {"n": len(s), "mean": mean, "effect": mean - null["mu"], "t": t, "p": p,
            "detected": bool(math.isfinite(p) and p < alpha), "p_low": p_low,
            "below": bool(math.isfinite(p_low) and p_low < alpha), "min_detectable_effect": float(mde)}


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rejections of m p-values at family-wise level alpha (nan never rejected)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(np.where(np.isnan(p), np.inf, p))
    reject = np.zeros(len(p), dtype=bool)
    m = len(p)
    for rank, i in enumerate(order):
        if not np.isfinite(p[i]) or p[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject.tolist()


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of k successes in n trials."""
    if n == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def min_detectable_tpr(n: int, fpr: float, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true TPR whose Clopper–Pearson lower bound exceeds `fpr` with probability >= `power` on n rows."""
    if n == 0:
        return float("nan")
    k_min = next((k for k in range(n + 1) if clopper_pearson(k, n, level)[0] > fpr), None)
    if k_min is None:
        return float("nan")
    for t in np.linspace(fpr, 1.0, 400):
        if stats.binom.sf(k_min - 1, n, t) >= power:
            return float(t)
    return 1.0


def set_test(member: np.ndarray, calibration: np.ndarray, alpha: float, level: float = 0.95,
             with_power: bool = True) -> dict[str, Any]:
    """The forget set's TPR at `alpha` FPR against calibration scores, with its interval and detection
    (with_power False skips min_detectable_tpr: the controller's in-loop check needs only the decision)."""
    m = torch.as_tensor(np.asarray(member, dtype=float))
    c = torch.as_tensor(np.asarray(calibration, dtype=float))
    tpr, fpr_real, thr = tpr_at_fpr(m, c, alpha)
    n = int((~torch.isnan(m)).sum())
    k = int(round(tpr * n)) if n else 0
    lo, hi = clopper_pearson(k, n, level)
    low_rate, low_real, _ = tpr_at_fpr(-m, -c, alpha)  # the lower tail: scores under the calibration's α quantile
    k_low = int(round(low_rate * n)) if n else 0
    return {"n": n, "fpr": alpha, "fpr_realised": fpr_real, "threshold": thr, "tpr": tpr, "tpr_interval": [lo, hi],
            "auc": auc(m, c), "detected": bool(n and lo > fpr_real),
            "below_rate": low_rate, "below": bool(n and clopper_pearson(k_low, n, level)[0] > low_real),
            "min_detectable_tpr": min_detectable_tpr(n, fpr_real, level) if with_power else None}


def verdict_word(original_detected: bool, audited_detected: bool, audited_below: bool = False) -> str:
    if not original_detected:
        return NOTHING
    if audited_detected:
        return NOT_FORGOTTEN
    return OVER if audited_below else FORGOTTEN


def calibration_fpr(scores: np.ndarray, groups: Sequence[str] | np.ndarray, alpha: float,
                    level: float = 0.95) -> dict[str, Any]:
    """Leave-one-patient-out on the calibration patients (raw scores): each is tested against the null of the
    others (the normal-quantile map and the null both fitted without it).

    The fraction flagged estimates the per-patient false-positive rate; `within_bound` when its interval's lower
    end does not exceed alpha (an exact binomial test that the FPR is at most alpha is not rejected)."""
    s = np.asarray(scores, dtype=float)
    g = np.asarray(list(groups))
    names = np.unique(g)
    flagged = below = 0
    for name in names:
        inside = g == name
        q_out, q_in = to_normal(s[~inside], s[~inside]), to_normal(s[inside], s[~inside])
        test = patient_test(q_in, null_model(q_out, g[~inside]), alpha)
        flagged += int(test["detected"])
        below += int(test["below"])
    lo, hi = clopper_pearson(flagged, len(names), level)
    return {"patients": len(names), "flagged": flagged, "fpr": flagged / max(len(names), 1),
            "interval": [lo, hi], "bound": alpha, "within_bound": bool(len(names) and lo <= alpha),
            "flagged_below": below, "fpr_below": below / max(len(names), 1)}
