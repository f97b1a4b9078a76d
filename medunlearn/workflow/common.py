"""Helpers the workflow steps share: loading a cohort + rule into SplitData consistently with a checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medunlearn.data.imageset import SplitData
from medunlearn.errors import CheckpointError, DataError

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def load_cohort(cohort: str | Path | pd.DataFrame) -> pd.DataFrame:
    from medunlearn.data.cohort import read_cohort

    return cohort.copy() if isinstance(cohort, pd.DataFrame) else read_cohort(cohort)


def is_synthetic(df: pd.DataFrame) -> bool:
    """True when any image of the cohort declares itself synthetic (the built-in cohort does)."""
    return "synthetic" in df.columns and bool(df["synthetic"].astype(str).str.lower().isin(["true", "1"]).any())


def split_settings(meta: dict[str, Any] | None, seed: int) -> tuple[int, tuple[float, ...], int]:
    """(split seed, fractions, image size) — from a checkpoint's meta when given, so splits always agree."""
    if not meta:
        return seed, DEFAULT_FRACTIONS, 64
    split = meta.get("split", {})
    return int(split.get("seed", seed)), tuple(split.get("fractions", DEFAULT_FRACTIONS)), int(meta.get("image_size", 64))


def split_data_for(cohort_df: pd.DataFrame, rule, seed: int, image_size: int,
                   fractions: tuple[float, ...] = DEFAULT_FRACTIONS, class_names: list[str] | None = None) -> SplitData:
    from medunlearn.forget.splitdata import build_split_data

    return build_split_data(cohort_df, rule, seed=seed, image_size=image_size, fractions=fractions,
                            class_names=class_names)


def check_same_cohort(meta: dict[str, Any], data: SplitData, force: bool, what: str) -> list[str]:
    """Compare the checkpoint's recorded train split to this cohort's. Mismatch: refuse unless `force`."""
    warnings: list[str] = []
    want = meta.get("split", {}).get("train_hash")
    got = data.info.get("train_hash")
    if want and got and want != got:
        msg = (f"Expected {what} to come from this cohort's training split, but its recorded split hash "
               f"{want[:12]} differs from {got[:12]}; pass --force to evaluate anyway.")
        if not force:
            raise CheckpointError(msg)
        warnings.append(msg)
    if meta.get("class_names") and list(meta["class_names"]) != list(data.class_names):
        raise CheckpointError(
            f"Expected the cohort's classes {data.class_names} to match {what}'s {meta['class_names']}, but they differ."
        )
    return warnings


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"Expected {what} directory at {path}, but it does not exist.")
    return path
