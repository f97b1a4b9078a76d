"""The cohort's PRIVATE locator: image id -> file path relative to a recorded archive root.

It is written beside the shareable cohort table (which holds no paths) and kept with the archive; a cohort
folder (table + locator + archive) moved elsewhere keeps working, and $MEDUNLEARN_ARCHIVE_ROOT points it at a
moved archive.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medunlearn.errors import DataError
from medunlearn.fileio import read_json, write_json

LOCATOR_ENV, ARCHIVE_ROOT_ENV = "MEDUNLEARN_LOCATOR", "MEDUNLEARN_ARCHIVE_ROOT"
LOCATOR_SUFFIX = ".locator.json"


def locator_path(cohort_path: str | Path) -> Path:
    """Where the private locator of a cohort table lives by default: cohort.csv -> cohort.locator.json."""
    cohort_path = Path(cohort_path)
    return cohort_path.with_name(cohort_path.stem + LOCATOR_SUFFIX)


def write_locator(df: pd.DataFrame, loc: Path, archive_root: str | Path | None,
                  skipped: dict[str, str] | None = None) -> Path:
    """The PRIVATE image-id -> relative-path map (see write_cohort)."""
    paths = [Path(p).resolve() for p in df["path"].astype(str)]
    root = Path(archive_root).resolve() if archive_root else Path(os.path.commonpath([str(p.parent) for p in paths]))
    try:
        rel = {str(i): p.relative_to(root).as_posix() for i, p in zip(df["image_id"], paths)}
    except ValueError as exc:
        raise DataError(f"Expected every image under the archive root {root}, but at least one is not.") from exc
    loc_dir = loc.parent.resolve()
    doc = {
        "schema_version": 1,
        "private": "PRIVATE: maps pseudonymous image ids back to files whose paths may identify patients. "
                   "Keep it with the archive; never share it with the cohort table.",
        "archive_root": os.path.relpath(root, loc_dir),
        "archive_root_absolute": str(root),
        "images": rel,
        "skipped_files": dict(skipped or {}),
    }
    write_json(loc, doc)
    try:
        os.chmod(loc, 0o600)
    except OSError:
        pass
    return loc


def find_locator(cohort_path: str | Path) -> Path | None:
    """$MEDUNLEARN_LOCATOR, else the locator beside the table; None when neither exists."""
    if os.environ.get(LOCATOR_ENV):
        return Path(os.environ[LOCATOR_ENV])
    loc = locator_path(cohort_path)
    return loc if loc.is_file() else None


def resolve_paths(df: pd.DataFrame, loc: Path) -> pd.DataFrame:
    """Add the absolute `path` column from a locator (archive root: $MEDUNLEARN_ARCHIVE_ROOT, else relative to
    the locator, else the absolute root it recorded). Rows the locator lacks are refused by image id."""
    doc = read_json(loc)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), dict):
        raise DataError(f"Expected a cohort locator (with an 'images' map) at {loc}, but it is not one.")
    candidates = [os.environ.get(ARCHIVE_ROOT_ENV), loc.parent / str(doc.get("archive_root", "")),
                  doc.get("archive_root_absolute")]
    root = next((Path(c) for c in candidates if c and Path(c).is_dir()), None)
    if root is None:
        raise DataError(f"Expected the archive named by the locator {loc.name} beside it or at its recorded root, "
                        f"but neither exists; set ${ARCHIVE_ROOT_ENV} to the archive folder.")
    images = doc["images"]
    unknown = [i for i in df["image_id"].astype(str) if i not in images]
    if unknown:
        raise DataError(f"Expected the locator {loc.name} to list every image of the cohort, but image {unknown[0]} "
                        f"({len(unknown)} in all) is missing from it.")
    df = df.copy()
    df["path"] = [str(root.resolve() / images[i]) for i in df["image_id"].astype(str)]
    return df
