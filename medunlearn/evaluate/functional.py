"""Pure metric math on numpy arrays or torch tensors (torchmetrics style; checked against scikit-learn).

Conventions: `preds` (N,) int class indices or (N, K) scores (argmax is taken); `labels` (N,) int;
`probs` (N, K) rows on the simplex. Accuracy-like results (accuracy, per-class / per-group accuracy,
sensitivity, specificity, agreement) are percentages 0–100; AUROC, ECE and confidences are in [0, 1].
An empty input gives NaN (undefined), never an exception; callers turn NaN into null in JSON.
`predict` / `model_accuracy` run a model (under models/modes.evaluating); everything else is pure math.
"""
from __future__ import annotations

import contextlib
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from medunlearn.errors import DataError
from medunlearn.models.modes import evaluating

ArrayLike = Any  # np.ndarray | torch.Tensor | list


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A detached CPU numpy copy of a tensor / array / list."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(preds: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (preds (N,), labels (N,)) as int arrays; (N, K) preds become argmax."""
    p, y = to_numpy(preds), to_numpy(labels)
    if p.ndim == 2:
        p = p.argmax(axis=1) if p.shape[0] else np.zeros(0, dtype=np.int64)
    if p.ndim != 1 or y.ndim != 1:
        raise DataError(f"Expected preds (N,) or (N, K) and labels (N,), but got shapes {p.shape} and {y.shape}")
    if len(p) != len(y):
        raise DataError(f"Expected preds and labels of equal length, but got {len(p)} and {len(y)}")
    return p.astype(np.int64), y.astype(np.int64)


def _probs(probs: ArrayLike, labels: ArrayLike | None = None) -> np.ndarray:
    """Validate and return probs (N, K) float64."""
    p = to_numpy(probs).astype(np.float64)
    if p.ndim != 2:
        raise DataError(f"Expected probs of shape (N, K), but got shape {p.shape}")
    if labels is not None:
        y = to_numpy(labels)
        if y.ndim != 1 or len(y) != len(p):
            raise DataError(f"Expected labels of shape ({len(p)},), but got shape {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
            raise DataError(f"Expected labels in [0, {p.shape[1] - 1}], but got values in [{y.min()}, {y.max()}]")
    return p


def _check_k(num_classes: int, *arrays: np.ndarray) -> None:
    for a in arrays:
        if len(a) and (a.min() < 0 or a.max() >= num_classes):
            raise DataError(f"Expected class indices in [0, {num_classes - 1}], but got values in "
                            f"[{a.min()}, {a.max()}]")


def percent(count: int, n: int) -> float:
    """100 · count / n from the exact count, in float64; NaN when n = 0. Every accuracy is computed this way: a
    float32 mean put 72 of 73 rows at 98.630135, below the one-row guard 100 − 100/73 = 98.630137, so the drop of
    one row that acceptance criterion (c) allows never passed."""
    return 100.0 * count / n if n else float("nan")


def accuracy(preds: ArrayLike, labels: ArrayLike) -> float:
    """Percent of preds equal to labels; NaN when empty."""
    p, y = _labels(preds, labels)
    return percent(int((p == y).sum()), len(y))


def expected_accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean softmax probability of the true label, in percent, from logits (N, K): the accuracy of the model's own
    predictive distribution (100/K for any label-blind output, whatever the class mix); NaN when empty."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * true_label_probability(torch.as_tensor(logits).float().softmax(1), labels)


def per_group_accuracy(preds: ArrayLike, labels: ArrayLike, groups: ArrayLike) -> dict[Hashable, dict[str, float]]:
    """{group: {"n": count, "acc": percent}} for every distinct value of `groups` (N,), sorted by name."""
    p, y = _labels(preds, labels)
    g = to_numpy(groups)
    if len(g) != len(y):
        raise DataError(f"Expected one group per sample ({len(y)}), but got {len(g)}")
    out: dict[Hashable, dict[str, float]] = {}
    for key in sorted(set(g.tolist()), key=str):
        mask = g == key
        out[key] = {"n": int(mask.sum()), "acc": float(100.0 * np.mean(p[mask] == y[mask]))}
    return out


def per_class_accuracy(preds: ArrayLike, labels: ArrayLike, num_classes: int) -> dict[int, float]:
    """{k: percent of class-k samples predicted k} (= recall); NaN for a class with no samples."""
    p, y = _labels(preds, labels)
    _check_k(num_classes, p, y)
    return {k: (float(100.0 * np.mean(p[y == k] == k)) if np.any(y == k) else float("nan"))
            for k in range(num_classes)}


def confusion_matrix(preds: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts; row = true class, column = predicted class (scikit-learn convention)."""
    p, y = _labels(preds, labels)
    _check_k(num_classes, p, y)
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def binary_auroc(scores: ArrayLike, positive: ArrayLike) -> float:
    """Area under the ROC curve of `scores` (N,) for boolean `positive` (N,) (Mann–Whitney U, ties averaged).

    NaN when either class is absent.
    """
    s, pos = to_numpy(scores).astype(np.float64), to_numpy(positive).astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc_macro_ovr(probs: ArrayLike, labels: ArrayLike) -> dict[str, Any]:
    """Macro one-vs-rest AUROC over the classes present in `labels`.

    probs (N, K), labels (N,). Returns {"auroc": mean over scored classes (NaN if none),
    "per_class": {k: auc or NaN}, "skipped": [k absent from labels, or the only class present]}.
    With K = 2 and both classes present this equals the binary AUROC of probs[:, 1].
    """
    p = _probs(probs, labels)
    y = to_numpy(labels).astype(np.int64)
    per_class: dict[int, float] = {}
    skipped: list[int] = []
    for k in range(p.shape[1]):
        auc = binary_auroc(p[:, k], y == k)
        per_class[k] = auc
        if np.isnan(auc):
            skipped.append(k)
    scored = [v for v in per_class.values() if not np.isnan(v)]
    return {"auroc": float(np.mean(scored)) if scored else float("nan"), "per_class": per_class, "skipped": skipped}


def sensitivity_specificity(preds: ArrayLike, labels: ArrayLike,
                            num_classes: int) -> tuple[dict[int, float], dict[int, float]]:
    """Per-class one-vs-rest sensitivity TP/(TP+FN) and specificity TN/(TN+FP), percent; NaN when undefined."""
    cm = confusion_matrix(preds, labels, num_classes).astype(np.float64)
    total = cm.sum()
    sens: dict[int, float] = {}
    spec: dict[int, float] = {}
    for k in range(num_classes):
        tp = cm[k, k]
        fn = cm[k].sum() - tp
        fp = cm[:, k].sum() - tp
        tn = total - tp - fn - fp
        sens[k] = float(100.0 * tp / (tp + fn)) if tp + fn > 0 else float("nan")
        spec[k] = float(100.0 * tn / (tn + fp)) if tn + fp > 0 else float("nan")
    return sens, spec


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """ECE in [0, 1]: Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| over equal-width confidence bins (lo, hi]."""
    if n_bins < 1:
        raise DataError(f"Expected n_bins >= 1, but got {n_bins}")
    p = _probs(probs, labels)
    y = to_numpy(labels).astype(np.int64)
    if len(y) == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # bin b holds conf in (b/n, (b+1)/n]; conf == 0 (impossible on the simplex) falls into bin 0
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def true_label_probability(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean probability given to the true label, in [0, 1] (expected accuracy); NaN when empty."""
    p = _probs(probs, labels)
    y = to_numpy(labels).astype(np.int64)
    return float(p[np.arange(len(y)), y].mean()) if len(p) else float("nan")


def mean_confidence(probs: ArrayLike) -> float:
    """Mean max-probability in [0, 1] over rows of probs (N, K); NaN when empty."""
    p = _probs(probs)
    return float(p.max(axis=1).mean()) if len(p) else float("nan")


def routed_share(probs: ArrayLike, threshold: float) -> float:
    """Percent of rows of probs (N, K) whose max-probability is under `threshold` (in [0, 1]): the images a
    deployment that routes uncertain outputs to a human would route. NaN when empty."""
    p = _probs(probs)
    return float((p.max(axis=1) < threshold).mean() * 100.0) if len(p) else float("nan")


def entropy(probs: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """Per-row Shannon entropy in nats, (N,)."""
    p = _probs(probs)
    return -(p * np.log(np.clip(p, eps, None))).sum(axis=1)


def kl_to_uniform(probs: ArrayLike) -> np.ndarray:
    """Per-row KL(p ‖ uniform) = log K − H(p) in nats, (N,); 0 for a uniform prediction."""
    p = _probs(probs)
    return np.log(p.shape[1]) - entropy(p)


def prediction_agreement(preds_a: ArrayLike, preds_b: ArrayLike) -> float:
    """Percent of rows where two models predict the same class; NaN when empty."""
    return accuracy(preds_a, preds_b)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: torch.device | str | None = None,
            num_classes: int | None = None, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Logits (N, K) float32 on CPU, under `evaluating` (every module's train/eval mode is restored) and no grad.

    device: where to run (default: the device of the model's parameters); num_classes: keep the first K logits
    (a shadow class is cut); amp_dtype: run under autocast in that dtype."""
    if device is None:
        device = model_device(model)
    dev = torch.device(device)
    amp = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with evaluating(model), amp:
        chunks = [model(images[i:i + batch_size].to(dev))[:, :num_classes].float().cpu()
                  for i in range(0, len(images), batch_size)]
        if not chunks:  # an empty set: K from the cut, else from a zero-row forward
            chunks = [torch.zeros(0, num_classes) if num_classes is not None
                      else model(images[:0].to(dev)).float().cpu()]
    return torch.cat(chunks)


def model_accuracy(model: nn.Module, images: torch.Tensor, labels: ArrayLike, batch_size: int = 256,
                   device: torch.device | str | None = None, amp_dtype: torch.dtype | None = None) -> float:
    """Top-1 accuracy in percent of `model` on `images` (N, ...) with `labels` (N,); NaN when empty."""
    return accuracy(predict(model, images, batch_size, device, amp_dtype=amp_dtype), labels)
