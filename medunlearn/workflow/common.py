"""Helpers the workflow steps share: loading a cohort + rule into SplitData consistently with a checkpoint."""
from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from medunlearn.data.imageset import SplitData
from medunlearn.errors import CheckpointError, DataError
from medunlearn.registry import did_you_mean

log = logging.getLogger("medunlearn")

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
DEFAULT_IMAGE_SIZE = {2: 64, 3: 32}  # pixels per side; 32³ volumes keep 3D training CPU-sized
# training epochs and batch per dimensionality, used when the user sets neither. 3D: chosen on the base model's
# VALIDATION accuracy (SYNTHETIC 200-volume cohort, seed 0): the 2D recipe (8 epochs at batch 64, 16 optimiser
# steps) stayed at chance (24-32 %); 30 epochs at batch 8 reached 100 % val at 24³ (docs/results/rte/rte.md)
DEFAULT_RECIPE = {2: {"epochs": 8, "batch_size": 64}, 3: {"epochs": 30, "batch_size": 8}}
CACHE_ENV = "MEDUNLEARN_CACHE"  # folder for decoded, transformed images (data.cache); unset = no disk cache


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


def split_settings(meta: dict[str, Any] | None, seed: int) -> tuple[int, tuple[float, ...], int]:
    """(split seed, fractions, image size) — from a checkpoint's meta when given, so splits always agree."""
    if not meta:
        return seed, DEFAULT_FRACTIONS, 64
    split = meta.get("split", {})
    return int(split.get("seed", seed)), tuple(split.get("fractions", DEFAULT_FRACTIONS)), int(meta.get("image_size", 64))


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
    import os

    if "path" not in df.columns:
        return
    gone = [i for i, p in zip(df["image_id"].astype(str), df["path"].astype(str)) if p and not os.path.isfile(p)]
    if gone:
        raise DataError(f"Expected every image of the cohort in the archive, but image {gone[0]} is missing "
                        f"({len(gone)} missing in all): was the archive moved or pruned? Re-run `cohort index`.")


def split_data_for(cohort_df: pd.DataFrame, rule, seed: int, image_size: int,
                   fractions: tuple[float, ...] = DEFAULT_FRACTIONS, class_names: list[str] | None = None,
                   spatial_dims: int | None = None, cache_dir: str | Path | None = None,
                   adopted: dict[str, Any] | None = None) -> SplitData:
    """SplitData for a cohort; spatial_dims None = the cohort's own (cohort_spatial_dims).
    adopted: a checkpoint's meta; when it was adopted, its own pipeline (meta["preprocessing"]) replaces
    medunlearn's fixed one and its datalist membership (meta["adoption"]["membership"]) gives the split.

    cache_dir (default $MEDUNLEARN_CACHE): keep decoded, transformed images on disk for later runs."""
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
    return build_split_data(cohort_df, rule, seed=seed, image_size=image_size, fractions=fractions,
                            class_names=class_names, loader=loader, membership=membership_rows(adopted))


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
        raise CheckpointError(
            f"Expected the cohort's classes {data.class_names} to match {what}'s {meta['class_names']}, but they differ."
        )
    return warnings


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        got = "a file" if path.is_file() else "it does not exist"
        raise DataError(f"Expected {what} directory at {path}, but {got}"
                        + (" (checkpoints are folders with model.safetensors and meta.json; import a .pt state "
                           "dict first)." if path.is_file() else "."))
    return path


def cohort_inputs(cohort: Any) -> list[Path]:
    """The files a cohort argument stands for: the table, its private locator and the archive the locator
    points at (an output must not destroy any of them). A DataFrame stands for nothing on disk."""
    if not isinstance(cohort, (str, Path)):
        return []
    from medunlearn.data.locator import find_locator

    table = Path(cohort)
    found: list[Path] = [table]
    loc = find_locator(table) if table.is_file() else None
    if loc is not None and loc.is_file():
        found.append(loc)
        try:
            from medunlearn.fileio import read_json

            doc = read_json(loc)
            for root in (loc.parent / str(doc.get("archive_root", "")), doc.get("archive_root_absolute")):
                if root and str(root) != str(loc.parent / "") and Path(root).is_dir():
                    found.append(Path(root))
                    break
        except Exception:  # noqa: BLE001 - a broken locator is reported where it is read
            pass
    return found


def checkpoint_inputs(path: Any) -> list[Path]:
    """A checkpoint folder argument (None: nothing)."""
    return [Path(path)] if isinstance(path, (str, Path)) else []


def claims_output(inputs: Callable[[dict[str, Any]], Iterable[Any]], kind: str = "dir",
                  out_arg: str = "out") -> Callable:
    """Decorate a workflow step that writes `out`: before any work, refuse an output that is, holds or lies in
    one of `inputs(arguments)` (fileio.check_apart), then claim it for the whole run (fileio.claim_dir, or
    claim_files for kind "file"): a second writer exits 2 at once, what a killed run left is repaired, and an
    existing result is refused unless overwrite=True. Under torchrun only rank 0 claims (it alone writes)."""
    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def step(*args: Any, **kwargs: Any) -> Any:
            from medunlearn.fileio import check_apart, claim_dir, claim_files
            from medunlearn.runtime import is_main_process

            # keywords an inner decorator adds (steps_adopt.accepts_source's adopt_options) pass straight through
            own = {k: v for k, v in kwargs.items() if k in sig.parameters}
            bound = sig.bind(*args, **own)
            bound.apply_defaults()
            a = bound.arguments
            out, overwrite = a.get(out_arg), bool(a.get("overwrite", False))
            if out is None or not is_main_process():
                return fn(*args, **kwargs)
            check_apart([out], [p for p in inputs(a) if p is not None])
            claim = claim_dir(out, overwrite) if kind == "dir" else claim_files([out], overwrite)
            with claim if claim is not None else nullcontext():
                return fn(*args, **kwargs)
        return step
    return decorate


def train_inputs(a: dict[str, Any]) -> list[Any]:
    return cohort_inputs(a.get("cohort"))


def forget_inputs(a: dict[str, Any]) -> list[Any]:
    return [*cohort_inputs(a.get("cohort")), *checkpoint_inputs(a.get("model_dir")),
            *checkpoint_inputs(a.get("reference")), a.get("config_path")]


def merge_inputs(a: dict[str, Any]) -> list[Any]:
    runs, base = list(a.get("run_dirs") or []), a.get("base_dir")
    if a.get("config_path") is not None:
        from medunlearn.merge.config import load_merge_config

        spec = load_merge_config(a["config_path"])
        runs, base = [*runs, *spec.models], spec.base_model
    return [*cohort_inputs(a.get("cohort")), *map(Path, runs), *checkpoint_inputs(base),
            *checkpoint_inputs(a.get("reference")), a.get("config_path")]


def evaluate_inputs(a: dict[str, Any]) -> list[Any]:
    """The evaluated checkpoint's own files (metrics.json may be written into its folder), the comparison
    checkpoints and the cohort."""
    model = Path(a["model_dir"]) if a.get("model_dir") is not None else None
    own = [model / name for name in ("model.safetensors", "meta.json", "provenance.json")] if model else []
    return [*own, *checkpoint_inputs(a.get("original")), *checkpoint_inputs(a.get("reference")),
            *cohort_inputs(a.get("cohort"))]
