"""Evaluate one model on a SplitData: the metrics.json dictionary (schema_version 1, docs/ARCHITECTURE.md).

Units: accuracy-like numbers (every *_acc, per_class, per_device, per_site, sensitivity, specificity,
test_forget_confidence, mia_efficacy, agreement, flip_rate_retain, gap, avg_gap) are percentages 0–100;
auroc, ece and the loss-MIA acc/auc are fractions in [0, 1]. Undefined values (an empty split, a class
absent from the test labels) are null. Floats are rounded to 4 decimals.

Definitions:
- forget_acc / retain_acc: train_forget / train_retain rows; test_acc: all test rows (retain + forget).
- test_forget_confidence: mean max-softmax on test_forget, in percent (compare with chance_acc = 100/K).
- test_retain_confidence: mean max-softmax on test_retain (criterion (d)'s measure on test rows, percent);
  test_retain_routed: percent of test_retain rows whose max-softmax is under 100/K + `routing_margin` (default
  10, the confidence_margin default): the images a deployment would route to a human.
- cost / reference_cost (when given): image passes (unlearn/cost.py); rte_compute = the reference's
  forward-equivalents / the model's, beside the wall-time rte.
- test_forget_expected_acc: mean probability of the true label on test_forget, in percent (100/K for a label-blind
  model whatever the class mix; what acceptance criterion (a) reads on validation rows for a domain).
- per_class {split: {class: acc}} for splits train_forget, train_retain, val_forget, test_retain,
  test_forget, test. per_device / per_site: train = train_retain + train_forget, test = all test rows,
  grouped by the ImageSet.meta "device" / "site" columns (missing values are grouped as "unknown").
- auroc (macro one-vs-rest), sensitivity, specificity, ece (15 bins), confusion: all test rows.
- mia.loss_lr: members = train_forget, non-members = test_forget (same domain) or, when empty, all test.
- mia.svc: SVC shadow attack on train_retain (member) vs all test rows (non-member) with the true-label
  confidence feature, applied to train_forget; mia_efficacy = mia.svc.efficacy.
- Avg-Gap (SalUn): gap {FA, RA, TA, MIA} = |metric − reference's| with FA = forget_acc, RA = retain_acc,
  TA = test_acc over ALL test rows, MIA = mia_efficacy; avg_gap = their mean.
- dist_to_original / dist_to_reference: L2 norm of the difference of all parameters (BatchNorm running
  statistics are buffers and excluded); null when the architectures differ.

Keys added beyond the schema: goal, counts {split: n}, auroc_detail {per_class, skipped},
mia.loss_lr.{n, n_splits}, mia.svc.{shadow_acc, n_train, n_target, by_feature {confidence, entropy}},
flip_rate_retain (with original; percent of train_retain predictions that changed), gap_details (with
reference; signed model − reference for every core scalar, incl. test_retain_acc and test_forget_acc),
reference_wall_time_s.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import CheckpointError
from medunlearn.evaluate import functional as fn
from medunlearn.evaluate.mia import AttackInputs, LossLRAttack, SVCShadowAttack
from medunlearn.runtime import RunContext

SCHEMA_VERSION = 1
SPLITS = ("train_retain", "train_forget", "val_forget", "test_retain", "test_forget")
CORE_KEYS = ("forget_acc", "retain_acc", "val_forget_acc", "test_retain_acc", "test_forget_acc", "test_acc",
             "test_forget_confidence", "test_forget_expected_acc", "test_retain_confidence", "test_retain_routed",
             "mia_efficacy", "mia_loss_auc", "auroc", "ece")
ROUTING_MARGIN = 10.0  # points above chance: test_retain_routed's threshold (the confidence_margin default)
MIA_MAX_PER_SIDE = 2000
Outputs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # {split: (logits (N, K), labels (N,))}


def param_distance(a: nn.Module, b: nn.Module) -> float | None:
    """‖θ_a − θ_b‖₂ over learned float weights (BN running stats excluded); None if architectures differ."""
    from medunlearn.models.checkpoint import state_distance  # lazy: keeps evaluate importable on its own

    try:
        return state_distance(a, b)
    except CheckpointError:
        return None


def _outputs(model: nn.Module, data: SplitData, device: torch.device | None, batch_size: int) -> Outputs:
    """{split: (logits (N, K), labels (N,))} for SPLITS plus "train" and "test" concatenations."""
    k = data.num_classes
    out: Outputs = {}
    for name in SPLITS:
        s: ImageSet = getattr(data, name)
        logits = fn.predict(model, s.images, batch_size, device) if len(s) else torch.zeros(0, k)
        out[name] = (logits, s.labels.long().cpu())
    for name, parts in (("train", ("train_retain", "train_forget")), ("test", ("test_retain", "test_forget"))):
        out[name] = (torch.cat([out[p][0] for p in parts]), torch.cat([out[p][1] for p in parts]))
    return out


def _group_column(data: SplitData, parts: tuple[str, ...], column: str) -> np.ndarray | None:
    metas = [getattr(data, p).meta for p in parts]
    if any(len(m) and column not in m.columns for m in metas):
        return None
    vals = pd.concat([m[column] if len(m) else pd.Series([], dtype=object) for m in metas], ignore_index=True)
    vals = vals.fillna("").astype(str).str.strip()
    return np.where(vals.to_numpy() == "", "unknown", vals.to_numpy()).astype(str)


def _per_group(out: Outputs, data: SplitData, column: str) -> dict[str, dict[str, Any]]:
    """{group: {n_train, train_acc, n_test, test_acc}} over every group seen in train or test."""
    g_train = _group_column(data, ("train_retain", "train_forget"), column)
    g_test = _group_column(data, ("test_retain", "test_forget"), column)
    if g_train is None or g_test is None:
        return {}
    tr = fn.per_group_accuracy(out["train"][0], out["train"][1], g_train)
    te = fn.per_group_accuracy(out["test"][0], out["test"][1], g_test)
    groups = sorted(str(g) for g in set(tr) | set(te))  # _group_column gives strings
    return {g: {"n_train": tr.get(g, {}).get("n", 0), "train_acc": tr.get(g, {}).get("acc"),
                "n_test": te.get(g, {}).get("n", 0), "test_acc": te.get(g, {}).get("acc")}
            for g in groups}


def _mia(out: Outputs, seed: int) -> dict[str, Any]:
    splits = ("train_retain", "train_forget", "test_forget", "test")
    inp = {name: AttackInputs.from_logits(*out[name]) for name in splits}
    held_out = inp["test_forget"] if len(inp["test_forget"]) else inp["test"]
    loss_lr = LossLRAttack(max_per_side=MIA_MAX_PER_SIDE, seed=seed).run(inp["train_forget"], held_out)
    by_feature = {}
    for feat in ("confidence", "entropy"):
        attack = SVCShadowAttack(feature_set=(feat,), max_per_side=MIA_MAX_PER_SIDE, seed=seed)
        by_feature[feat] = attack.run(inp["train_retain"], inp["test"], inp["train_forget"])
    svc = dict(by_feature["confidence"])
    svc["by_feature"] = {f: r["efficacy"] for f, r in by_feature.items()}
    return {"loss_lr": loss_lr, "svc": svc}


def _model_metrics(out: Outputs, data: SplitData, seed: int) -> dict[str, Any]:
    """Every metric of one model that needs no other model."""
    k, names = data.num_classes, data.class_names
    acc = {name: fn.accuracy(*out[name]) for name in out}
    test_logits, test_labels = out["test"]
    test_probs = torch.softmax(test_logits, dim=1)
    tf_probs = torch.softmax(out["test_forget"][0], dim=1)
    tr_probs = torch.softmax(out["test_retain"][0], dim=1)
    auroc = fn.auroc_macro_ovr(test_probs, test_labels)
    sens, spec = fn.sensitivity_specificity(test_logits, test_labels, k)
    mia = _mia(out, seed)
    return {
        "chance_acc": 100.0 / k,
        "forget_acc": acc["train_forget"], "retain_acc": acc["train_retain"], "val_forget_acc": acc["val_forget"],
        "test_retain_acc": acc["test_retain"], "test_forget_acc": acc["test_forget"], "test_acc": acc["test"],
        "test_forget_confidence": 100.0 * fn.mean_confidence(tf_probs),
        "test_forget_expected_acc": 100.0 * fn.true_label_probability(tf_probs, out["test_forget"][1]),
        "test_retain_confidence": 100.0 * fn.mean_confidence(tr_probs),
        "test_retain_routed": fn.routed_share(tr_probs, (100.0 / k + ROUTING_MARGIN) / 100.0),
        "counts": {name: len(out[name][1]) for name in out},
        "per_class": {split: {names[c]: v for c, v in fn.per_class_accuracy(*out[split], k).items()}
                      for split in (*SPLITS, "test")},
        "per_device": _per_group(out, data, "device"),
        "per_site": _per_group(out, data, "site"),
        "auroc": auroc["auroc"],
        "auroc_detail": {"per_class": {names[c]: v for c, v in auroc["per_class"].items()},
                         "skipped": [names[c] for c in auroc["skipped"]]},
        "sensitivity": {names[c]: v for c, v in sens.items()},
        "specificity": {names[c]: v for c, v in spec.items()},
        "ece": fn.expected_calibration_error(test_probs, test_labels, n_bins=15),
        "confusion": {"labels": list(names), "matrix": fn.confusion_matrix(test_logits, test_labels, k).tolist()},
        "mia": mia,
        "mia_efficacy": mia["svc"]["efficacy"],
    }


def core_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The headline scalars of one model (CORE_KEYS); mia_loss_auc = mia.loss_lr.auc_mean."""
    core = {k: result.get(k) for k in CORE_KEYS if k != "mia_loss_auc"}
    core["mia_loss_auc"] = result.get("mia", {}).get("loss_lr", {}).get("auc_mean")
    return {k: core[k] for k in CORE_KEYS}


def _diff(a: Any, b: Any) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b):
        return None
    return float(a) - float(b)


def _preds(out: Outputs, split: str) -> torch.Tensor:
    return out[split][0].argmax(dim=1)


def evaluate_model(model: nn.Module, data: SplitData, original: nn.Module | None = None,
                   reference: nn.Module | None = None, wall_time_s: float | None = None,
                   reference_wall_time_s: float | None = None, goal: str | None = None,
                   ctx: RunContext | None = None, seed: int = 0, batch_size: int = 256,
                   cost: dict[str, Any] | None = None, reference_cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics.json dictionary for `model` (see the module docstring); models are not modified.

    original: the deployed model before unlearning; reference: the retrain-from-scratch model.
    ctx supplies the device (default: each model's own device). `seed` drives the MIA subsamples and
    folds, independent of ctx.seed, so evaluations of different runs are comparable.
    """
    device = ctx.device if ctx is not None else None
    out = _outputs(model, data, device, batch_size)
    res: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "class_names": list(data.class_names), "goal": goal}
    res.update(_model_metrics(out, data, seed))
    core = core_metrics(res)
    if original is not None:
        o_out = _outputs(original, data, device, batch_size)
        o_core = core_metrics(_model_metrics(o_out, data, seed))
        res["original"] = o_core
        res["delta_vs_original"] = {k: _diff(core[k], o_core[k]) for k in CORE_KEYS}
        res["dist_to_original"] = param_distance(model, original)
        res["flip_rate_retain"] = 100.0 - fn.prediction_agreement(_preds(out, "train_retain"),
                                                                  _preds(o_out, "train_retain"))
    if reference is not None:
        r_out = _outputs(reference, data, device, batch_size)
        r_core = core_metrics(_model_metrics(r_out, data, seed))
        res["reference"] = r_core
        pairs = {"FA": "forget_acc", "RA": "retain_acc", "TA": "test_acc", "MIA": "mia_efficacy"}
        gap = {g: _diff(core[k], r_core[k]) for g, k in pairs.items()}
        res["gap"] = {g: (abs(v) if v is not None else None) for g, v in gap.items()}
        defined = [v for v in res["gap"].values() if v is not None]
        res["avg_gap"] = float(np.mean(defined)) if len(defined) == len(gap) else None
        res["gap_details"] = {k: _diff(core[k], r_core[k]) for k in CORE_KEYS}
        res["agreement"] = fn.prediction_agreement(_preds(out, "test"), _preds(r_out, "test"))
        res["dist_to_reference"] = param_distance(model, reference)
    res["wall_time_s"] = wall_time_s
    res["reference_wall_time_s"] = reference_wall_time_s
    res["rte"] = (reference_wall_time_s / wall_time_s
                  if wall_time_s and reference_wall_time_s is not None and wall_time_s > 0 else None)
    if cost is not None or reference_cost is not None:
        from medunlearn.unlearn.cost import rte_compute

        res["cost"], res["reference_cost"] = cost, reference_cost
        res["rte_compute"] = rte_compute(reference_cost, cost)
    return clean_json(res)


def clean_json(obj: Any, ndigits: int = 4) -> Any:
    """JSON-ready copy: floats rounded, NaN/inf -> None, numpy scalars -> Python, dict keys -> str."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v, ndigits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), ndigits) if math.isfinite(obj) else None
    return obj
