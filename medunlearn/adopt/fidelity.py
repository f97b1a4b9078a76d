"""Fidelity: the adopted model against the bundle's own MONAI pipeline + network, refusing on failure.

The reference is built from the statically resolved, allow-listed spec (never ConfigParser): the bundle's
preprocessing steps as written, its MONAI network with model.pt loaded under its original names, and its
activation (softmax, or sigmoid for a single logit). On N cohort images per class the adopted model
(medunlearn loader + Classifier, softmax) must give the same argmax and probabilities within PROB_TOL.
A `monai.bundle run` predictions.csv (`--expected`) is compared within EXPECTED_TOL (amp runs differ by
~1e-4..1e-3).
"""
from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medunlearn.adopt.resolver import Component
from medunlearn.errors import CheckpointError, DataError

PROB_TOL = 1e-4
EXPECTED_TOL = 1e-3


def sample_rows(df: pd.DataFrame, class_names: list[str], per_class: int) -> pd.DataFrame:
    """The first `per_class` rows of each class by image_id (deterministic)."""
    parts = [df[df["label"].astype(str) == c].sort_values("image_id").head(per_class) for c in class_names]
    out = pd.concat(parts) if parts else df.head(0)
    if out.empty:
        raise DataError("Expected cohort rows with the bundle's classes for the fidelity check, but got none.")
    return out


def reference_transforms(steps: list[Component]):
    import monai.transforms as mt

    built = []
    for s in steps:
        args = dict(s.args)
        if args.get("dtype") is not None:
            args["dtype"] = getattr(torch, args["dtype"])
        built.append(getattr(mt, s.name)(**args))
    return mt.Compose(built)


def reference_probs(steps: list[Component], key: str, net: torch.nn.Module, head: str,
                    paths: list[str]) -> torch.Tensor:
    """(N, K) probabilities of the bundle's own pipeline + network on `paths`; K = 2 for a sigmoid head."""
    pipeline = reference_transforms(steps)
    with torch.no_grad():
        x = torch.stack([torch.as_tensor(pipeline({key: p})[key]).as_subclass(torch.Tensor).float() for p in paths])
        z = net(x)
    if head == "sigmoid1":
        p1 = torch.sigmoid(z[:, 0])
        return torch.stack([1 - p1, p1], 1)
    return torch.softmax(z, 1)


def adopted_probs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(images), 1)


def agreement(got: torch.Tensor, want: torch.Tensor, tol: float) -> dict[str, Any]:
    """{"n_images", "max_prob_diff", "argmax_equal", "tolerance", "passed"} of two (N, K) probability tables."""
    diff = float((got - want).abs().max()) if got.numel() else 0.0
    same = bool(torch.equal(got.argmax(1), want.argmax(1)))
    return {"n_images": int(len(got)), "max_prob_diff": diff, "argmax_equal": same, "tolerance": tol,
            "passed": bool(same and diff <= tol)}


def compare(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> dict[str, Any]:
    """`agreement`, refusing the adoption on failure."""
    rec = agreement(got, want, tol)
    diff, same = rec["max_prob_diff"], rec["argmax_equal"]
    if not rec["passed"]:
        raise CheckpointError(f"Expected the adopted model to reproduce {what} (same argmax, probabilities within "
                              f"{tol:g}), but the largest difference is {diff:.3g}"
                              f"{'' if same else ' and the argmax differs'}; refusing to adopt it.")
    return rec


def read_expected(path: Path, n_classes: int) -> dict[str, list[float]]:
    """predictions.csv of `monai.bundle run` (ClassificationSaver: file, then one value per class)."""
    out: dict[str, list[float]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if not row or row[0].strip().lower() in ("filename", "file"):
                continue
            try:
                values = [float(v) for v in row[1:]]
            except ValueError as exc:
                raise DataError(f"Expected numeric predictions in {path.name}, but a row has {row[1:3]}.") from exc
            if len(values) != n_classes:
                raise DataError(f"Expected {n_classes} probabilities per row in {path.name}, but a row has "
                                f"{len(values)}.")
            out[row[0]] = values
    return out


def check_expected(expected: Mapping[str, list[float]], paths: list[str], probs: torch.Tensor) -> dict[str, Any]:
    """Match predictions.csv rows to cohort paths (full path, else a unique file name) and compare."""
    by_name: dict[str, list[str]] = {}
    for f in expected:
        by_name.setdefault(Path(f).name, []).append(f)
    got, want = [], []
    for i, p in enumerate(paths):
        key = p if p in expected else (by_name.get(Path(p).name, [None])[0]
                                       if len(by_name.get(Path(p).name, [])) == 1 else None)
        if key is not None:
            got.append(probs[i])
            want.append(torch.tensor(expected[key], dtype=probs.dtype))
    if not got:
        raise DataError("Expected --expected predictions for some of the cohort's images, but none matched by path "
                        "or file name.")
    rec = compare(torch.stack(got), torch.stack(want), EXPECTED_TOL, "the bundle's own predictions.csv")
    return {**rec, "matched": len(got), "rows": len(expected)}
