"""Checks on a cohort table before a step uses it: loading, 2D/3D, labels vs a checkpoint's classes, files."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from medunlearn.errors import DataError
from medunlearn.registry import did_you_mean

log = logging.getLogger("medunlearn")


def load_cohort(cohort: str | Path | pd.DataFrame) -> pd.DataFrame:
    from medunlearn.data.cohort import read_cohort

    return cohort.copy() if isinstance(cohort, pd.DataFrame) else read_cohort(cohort)


def is_synthetic(df: pd.DataFrame) -> bool:
    """True when any image of the cohort declares itself synthetic (the built-in cohort does)."""
    return "synthetic" in df.columns and bool(df["synthetic"].astype(str).str.lower().isin(["true", "1"]).any())


def cohort_spatial_dims(df: pd.DataFrame) -> int:
    """3 when every row is a volume (a series or multi-frame file: frames > 1), else 2 (images)."""
    if "frames" not in df.columns or df.empty:
        return 2
    frames = pd.to_numeric(df["frames"], errors="coerce").fillna(1)
    return 3 if bool((frames > 1).all()) else 2


def check_spatial_dims(value: Any) -> int:
    if value not in (2, 3) or isinstance(value, bool):
        raise DataError(f"Expected spatial dims 2 (images) or 3 (volumes), but got {value!r}.")
    return int(value)


def cohort_labels(df: pd.DataFrame) -> dict[str, int]:
    """Images per non-empty label of the cohort table."""
    labels = df["label"].fillna("").astype(str).str.strip() if "label" in df.columns else pd.Series([], dtype=str)
    counts = labels[labels != ""].value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def check_label_sets(df: pd.DataFrame, class_names: list[str] | None, what: str) -> None:
    """Refuse a cohort whose labels differ from the checkpoint's classes, in either direction (did-you-mean)."""
    if not class_names:
        return
    have = cohort_labels(df)
    names = [str(c) for c in class_names]
    extra = [lab for lab in sorted(have) if lab not in names]
    if extra:
        lab = extra[0]
        raise DataError(f"Expected the cohort's labels to be {what}'s classes {names}, but label {lab!r} "
                        f"({have[lab]} image(s)) is not one of them.{did_you_mean(lab, names)}")
    missing = [c for c in names if c not in have]
    if missing:
        raise DataError(f"Expected the cohort to hold every class of {what} {names}, but class {missing[0]!r} "
                        f"has no labelled image in it (the cohort's labels: {sorted(have)}); is this the cohort "
                        "the model was trained on?")


def warn_near_miss_labels(df: pd.DataFrame, rare: int = 2) -> list[str]:
    """Warn about labels so rare and so close to another label that they are probably typos (a new class)."""
    have = cohort_labels(df)
    notes = []
    for lab, n in sorted(have.items()):
        others = [o for o in have if o != lab and have[o] > rare]
        hint = did_you_mean(lab, others) if n <= rare else ""
        if hint:
            notes.append(f"Label {lab!r} occurs on only {n} image(s) and becomes its own class.{hint}")
    for note in notes:
        log.warning(note)
    return notes


def check_files_exist(df: pd.DataFrame) -> None:
    """Refuse rows whose image file is gone, naming the image by its id (its path may identify a patient)."""
    if "path" not in df.columns:
        return
    gone = [i for i, p in zip(df["image_id"].astype(str), df["path"].astype(str)) if p and not os.path.isfile(p)]
    if gone:
        raise DataError(f"Expected every image of the cohort in the archive, but image {gone[0]} is missing "
                        f"({len(gone)} missing in all): was the archive moved or pruned? Re-run `cohort index`.")
