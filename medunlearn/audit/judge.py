"""The audit of one model against the cached reference models: offline LiRA scores of the forget rows and of
the calibration rows (held-out patients no model saw), then the set and per-patient verdicts (verdict.py).

Pure given score arrays: the workflow step (workflow/steps_audit.py) runs the models and reads the cache.
The base's scores come from the cache (computed at `audit prepare`), so "before" needs no base checkpoint.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medunlearn.audit.lira import offline_lira, pooled_sigma
from medunlearn.audit.verdict import (
    FORGOTTEN,
    NOTHING,
    calibration_fpr,
    holm,
    null_model,
    patient_test,
    set_test,
    to_normal,
    verdict_word,
)

# the stated false-positive rate, per patient and for the forget set (the field's 1 % operating point)
DEFAULT_FPR = 0.01
DEFAULT_POWER = 0.8  # power at which the smallest detectable effect is stated


@dataclass
class Rows:
    """Rows of the audit: their positions in the cache and patient pseudonyms."""

    index: np.ndarray  # (n,) positions in the cache's image_ids
    patients: np.ndarray  # (n,) patient pseudonyms


@dataclass(init=False)
class ScoreCache:
    image_ids: list[str]
    member: torch.Tensor  # (K, N) bool: model k trained on row n (False for every validation row)
    ref_phi: torch.Tensor  # (K, N) float64
    base_phi: torch.Tensor  # (N,) float64
    # (K, N) bool: entries left out of a row's OUT set: its members, and for a validation row a balanced
    # pseudo-half of the models, so every row is judged against the same number (K − K//2) of OUT models
    excluded: torch.Tensor

    def __init__(self, image_ids: list[str], member: torch.Tensor, ref_phi: torch.Tensor, base_phi: torch.Tensor,
                 excluded: torch.Tensor | None = None) -> None:
        self.image_ids, self.member, self.ref_phi, self.base_phi = image_ids, member, ref_phi, base_phi
        self.excluded = member if excluded is None else excluded  # None: the members only

    def positions(self, ids: Sequence[str], what: str) -> np.ndarray:
        from medunlearn.errors import DataError

        where = {i: n for n, i in enumerate(self.image_ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise DataError(f"Expected every {what} row in the audit's reference cache, but {len(missing)} are not "
                            f"(e.g. image {missing[0]}): was the cohort re-indexed after `audit prepare`?")
        return np.array([where[i] for i in ids], dtype=np.int64)


def lira_scores(cache: ScoreCache, rows: Rows, phi: torch.Tensor, sigma: float) -> np.ndarray:
    """Offline LiRA statistic of `phi` (n,) on `rows`, against the reference models that did not see each row."""
    idx = torch.as_tensor(rows.index)
    return offline_lira(phi, cache.ref_phi[:, idx], cache.excluded[:, idx], sigma).numpy()


def judge_model(forget: np.ndarray, calibration: np.ndarray, forget_rows: Rows, cal_rows: Rows,
                alpha: float, power: float = DEFAULT_POWER, with_power: bool = True) -> dict[str, Any]:
    """Set and per-patient tests of one model's scores (forget vs calibration). Patient tests run on the scores'
    normal quantiles among the calibration images (verdict.to_normal), so effects are in null SD units."""
    q_cal, q_forget = to_normal(calibration, calibration), to_normal(forget, calibration)
    null = null_model(q_cal, cal_rows.patients)
    patients = {}
    for p in sorted(set(forget_rows.patients)):
        patients[p] = patient_test(q_forget[forget_rows.patients == p], null, alpha, power)
    names = list(patients)
    up = holm([patients[p]["p"] for p in names], alpha)
    low = holm([patients[p]["p_low"] for p in names], alpha)
    for p, u, lo in zip(names, up, low):
        patients[p]["still_detected"] = bool(u or lo)  # family-wise (Holm) over the patients, either tail
    return {"set": set_test(forget, calibration, alpha, with_power=with_power), "patients": patients, "null": null}


def audit(cache: ScoreCache, forget_rows: Rows, cal_rows: Rows, target: dict[str, torch.Tensor],
          retrain: dict[str, torch.Tensor] | None = None, alpha: float = DEFAULT_FPR,
          power: float = DEFAULT_POWER) -> dict[str, Any]:
    """The audit record. target / retrain: {"forget": phi (n_f,), "calibration": phi (n_c,)} of those models.

    Returns {method, fpr, power, sigma, models: {original, audited[, retrain]: {set, patients, null}},
    patients: {pseudonym: {verdict, images, p_original, p_audited, effect_original, effect_audited,
    min_detectable_effect, retrain?}}, set: {verdict, ...}, calibration, forgotten}."""
    sigma = pooled_sigma(cache.ref_phi, ~cache.excluded)
    base = {"forget": cache.base_phi[torch.as_tensor(forget_rows.index)],
            "calibration": cache.base_phi[torch.as_tensor(cal_rows.index)]}
    sets = {"original": base, "audited": target, **({"retrain": retrain} if retrain is not None else {})}
    scores = {name: (lira_scores(cache, forget_rows, s["forget"], sigma),
                     lira_scores(cache, cal_rows, s["calibration"], sigma)) for name, s in sets.items()}
    models = {name: judge_model(f, c, forget_rows, cal_rows, alpha, power) for name, (f, c) in scores.items()}
    orig, aud = models["original"], models["audited"]
    per_patient = {}
    for p, rec in aud["patients"].items():
        o = orig["patients"][p]
        entry = {"verdict": verdict_word(o["detected"], rec["detected"], rec["below"]), "images": rec["n"],
                 "p_original": o["p"], "p_audited": rec["p"], "effect_original": o["effect"],
                 "effect_audited": rec["effect"], "min_detectable_effect": rec["min_detectable_effect"],
                 "power_vs_original": (rec["min_detectable_effect"] / o["effect"]) if o["effect"] > 0 else None,
                 "still_detected": rec["still_detected"]}
        if retrain is not None:
            r = models["retrain"]["patients"][p]
            entry["retrain"] = {"p": r["p"], "detected": r["detected"], "effect": r["effect"]}
        per_patient[p] = entry
    set_verdict = verdict_word(orig["set"]["detected"], aud["set"]["detected"], aud["set"]["below"])
    calib = calibration_fpr(scores["audited"][1], cal_rows.patients, alpha)
    # the set must be forgotten (the original showed membership, the audited model none, either tail) and no patient
    # may still show it (Holm over the patients); a patient the original showed none for keeps its own verdict,
    # "nothing to forget at this power", never "forgotten"
    forgotten = set_verdict == FORGOTTEN and not any(e["still_detected"] for e in per_patient.values())
    return {"method": "lira_offline", "fpr": alpha, "power": power, "sigma": sigma,
            "reference_models": int(cache.member.shape[0]),
            "models": {k: {"set": v["set"], "null": v["null"]} for k, v in models.items()},
            "set": {"verdict": set_verdict, "original": orig["set"], "audited": aud["set"],
                    **({"retrain": models["retrain"]["set"]} if retrain is not None else {})},
            "patients": per_patient, "calibration": calib, "forgotten": bool(forgotten),
            "nothing_to_forget": set_verdict == NOTHING,
            "summary": summary_line(set_verdict, per_patient, aud["set"], orig["set"], alpha)}


def summary_line(set_verdict: str, patients: dict[str, dict], aud: dict, orig: dict, alpha: float) -> str:
    counts: dict[str, int] = {}
    for e in patients.values():
        counts[e["verdict"]] = counts.get(e["verdict"], 0) + 1
    per = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    lo, hi = aud["tpr_interval"]
    return (f"forget set {set_verdict}: TPR at {alpha:.0%} FPR {100 * orig['tpr']:.1f} % on the original, "
            f"{100 * aud['tpr']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] on the audited model; patients: {per}")
