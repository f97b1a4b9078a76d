"""The split a step works on: the cohort + rule as SplitData, split settings taken from a checkpoint, an
adopted model's membership, and the check that a checkpoint was trained on this cohort's split."""
from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from medunlearn.data.imageset import SplitData
from medunlearn.errors import CheckpointError, DataError
from medunlearn.selection.split import DEFAULT_FRACTIONS
from medunlearn.workflow.cohort_checks import check_files_exist, check_spatial_dims, cohort_spatial_dims

CACHE_ENV = "MEDUNLEARN_CACHE"  # folder for decoded, transformed images (data.cache); unset = no disk cache


def split_settings(meta: dict[str, Any] | None, seed: int) -> tuple[int, tuple[float, ...], int]:
    """(split seed, fractions, image size) — from a checkpoint's meta when given, so splits always agree."""
    if not meta:
        return seed, DEFAULT_FRACTIONS, 64
    split = meta.get("split", {})
    fractions = tuple(split.get("fractions", DEFAULT_FRACTIONS))
    return int(split.get("seed", seed)), fractions, int(meta.get("image_size", 64))


def split_data_for(cohort_df: pd.DataFrame, rule, seed: int, image_size: int,
                   fractions: tuple[float, ...] = DEFAULT_FRACTIONS, class_names: list[str] | None = None,
                   spatial_dims: int | None = None, cache_dir: str | Path | None = None,
                   adopted: dict[str, Any] | None = None, decoded: dict | None = None) -> SplitData:
    """SplitData for a cohort; spatial_dims None = the cohort's own (cohort_spatial_dims).
    adopted: a checkpoint's meta; when it was adopted, its own pipeline (meta["preprocessing"]) replaces
    medunlearn's fixed one and its datalist membership (meta["adoption"]["membership"]) gives the split.

    cache_dir (default $MEDUNLEARN_CACHE): keep decoded, transformed images on disk for later runs.
    decoded: a dict the caller keeps to decode the cohort once for several rules (a merge's policies and their
    union select the same rows; only the forget mask differs)."""
    from medunlearn.data.datasets import load_images
    from medunlearn.selection.splitdata import build_split_data

    dims = check_spatial_dims(spatial_dims) if spatial_dims is not None else cohort_spatial_dims(cohort_df)
    if dims == 3 and cohort_spatial_dims(cohort_df) != 3:
        raise DataError("Expected a cohort of volumes (one row per series; index with --volumes) for a 3D model, "
                        "but some rows are single images (frames = 1).")
    if "path" not in cohort_df.columns:
        where = cohort_df.attrs.get("locator_expected", "beside the cohort table")
        raise DataError(f"Expected the private locator {where} (image id -> file) to find the images, but it is "
                        "missing; copy it with the archive, or set $MEDUNLEARN_LOCATOR to it.")
    check_files_exist(cohort_df)
    cache_dir = cache_dir or os.environ.get(CACHE_ENV) or None
    preprocessing = (adopted or {}).get("preprocessing")
    loader = partial(load_images, spatial_dims=dims, cache_dir=cache_dir, preprocessing=preprocessing)
    if decoded is not None:
        loader = _memoised(loader, decoded, (dims, json.dumps(preprocessing, sort_keys=True, default=str)))
    return build_split_data(cohort_df, rule, seed=seed, image_size=image_size, fractions=fractions,
                            class_names=class_names, loader=loader, membership=membership_rows(adopted))


def _memoised(loader, memo: dict, settings: tuple):
    """`loader`, answering a repeated (rows, classes, size, settings) from `memo` instead of decoding again."""
    def load(frame: pd.DataFrame, names: list[str], image_size: int, progress: bool = False):
        key = (tuple(frame["image_id"]), tuple(names), int(image_size), settings)
        if key not in memo:
            memo[key] = loader(frame, names, image_size, progress=progress)
        return memo[key]
    return load


def membership_rows(meta: dict[str, Any] | None) -> dict[str, str] | None:
    """{image_id: datalist split} of an adopted checkpoint whose membership is known, else None."""
    record = ((meta or {}).get("adoption") or {}).get("membership") or {}
    return dict(record["rows"]) if record.get("status") == "datalist" and record.get("rows") else None


def membership_unknown(meta: dict[str, Any] | None) -> bool:
    return (((meta or {}).get("adoption") or {}).get("membership") or {}).get("status") == "unknown"


UNKNOWN_MEMBERSHIP = {
    "status": "unknown",
    "forget_rows": "presumed training members (the deployed model's datalist was not given)",
    "mia": "not evaluable: which rows trained the model is unknown, so a membership attack cannot be validated",
    "split": "validation and test rows come from a local patient split, not the deployed model's",
    "equivalence": "refused unless a --reference retrain is given",
}


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
    want_dims, got_dims = int(meta.get("spatial_dims", 2)), data.spatial_dims
    if want_dims != got_dims:
        kinds = {2: "2D images", 3: "3D volumes"}
        raise CheckpointError(f"Expected {kinds[want_dims]} for {what} (spatial_dims={want_dims}), but this cohort "
                              f"loads as {kinds.get(got_dims, got_dims)}; index it with"
                              f"{' --volumes' if want_dims == 3 else 'out --volumes'}.")
    if meta.get("class_names") and list(meta["class_names"]) != list(data.class_names):
        raise CheckpointError(f"Expected the cohort's classes {data.class_names} to match {what}'s "
                              f"{meta['class_names']}, but they differ.")
    return warnings
