"""Index a DICOM / NIfTI archive into the cohort table (one pseudonymised row per image).

`index_archive` walks every file (any extension), reads headers in parallel, drops duplicate
images, joins labels.csv (labels.py) and returns the table plus an ingest report. The archive is only read;
the pseudonymisation salt and date coarsening are deid.py's.

What is written is split in two (see `write_cohort`):
- the cohort table (cohort.csv): shareable; pseudonyms, device, site, label, study dates coarsened to the
  month; no file paths;
- the locator (cohort.locator.json, locator.py): PRIVATE; image id -> file path relative to a recorded
  archive root. Keep it with the archive. A cohort folder (table + locator + archive) moved elsewhere keeps working.
"""
from __future__ import annotations

import numbers
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

from medunlearn.data.deid import (
    DATE_PRECISIONS,
    PUBLIC_SALT_SOURCE,
    SALT_ENV,
    coarsen_date,
    resolve_salt,
    salt_fingerprint,
)
from medunlearn.data.dicom import SkipFile, pseudonym, read_dicom_header
from medunlearn.data.labels import join_labels, read_labels
from medunlearn.data.locator import find_locator, locator_path, resolve_paths, write_locator
from medunlearn.data.nifti import is_nifti, read_nifti_header
from medunlearn.errors import ConfigError, DataError
from medunlearn.fileio import read_string_csv
from medunlearn.provenance import sha256_text
from medunlearn.registry import did_you_mean
from medunlearn.runtime import RunContext

COHORT_COLUMNS: tuple[str, ...] = (
    "image_id", "path", "format", "label", "patient", "study", "device", "manufacturer", "manufacturer_raw",
    "site", "station", "serial", "modality", "body_part", "study_date", "rows", "cols", "frames",
    "spacing_row", "spacing_col", "synthetic",
)
INT_COLUMNS = ("rows", "cols", "frames")
FLOAT_COLUMNS = ("spacing_row", "spacing_col")
_COMPANION_SUFFIXES = (".json", ".csv", ".tsv", ".txt", ".md", ".log", ".yaml", ".yml")
SERIAL_BELOW = 256  # fewer files than this are read in-process: a pool costs more than it saves


def walk_files(root: Path, exclude: set[Path]) -> tuple[list[Path], int]:
    """(candidate image files sorted, count of ignored companions); hidden files and folders skipped."""
    found, ignored = [], 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            low = name.lower()
            if path.resolve() in exclude or low.startswith("readme") or low.endswith(_COMPANION_SUFFIXES):
                ignored += 1
                continue
            found.append(path)
    return found, ignored


def _read_one(path: str, salt: str, root: str) -> tuple[str, dict | None, str]:
    try:
        reader = read_nifti_header if is_nifti(path) else read_dicom_header
        return path, reader(path, salt, root), ""
    except SkipFile as exc:
        return path, None, exc.reason
    except OSError as exc:
        return path, None, f"unreadable ({type(exc).__name__})"


def _read_chunk(paths: list[str], salt: str, root: str) -> list[tuple[str, dict | None, str]]:
    return [_read_one(p, salt, root) for p in paths]


def _make_pool(kind: str, workers: int) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers)
    import multiprocessing as mp

    # fork: workers start in milliseconds and inherit imports; pools are created before any
    # progress-bar thread exists, so no lock can be held across the fork.
    method = "fork" if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method))


def read_headers(files: list[Path], salt: str, root: Path, workers: int, pool: str = "process",
                 progress: bool = False) -> Iterator[tuple[str, dict | None, str]]:
    """Yield (path, row or None, skip reason) for every file, reading chunks in parallel."""
    names = [str(f) for f in files]
    with RunContext(show_progress=progress).progress("Indexing headers", total=len(names)) as advance:
        if workers <= 1 or len(names) < SERIAL_BELOW:
            for name in names:
                yield _read_one(name, salt, str(root))
                advance(1)
            return
        size = max(16, min(512, len(names) // (workers * 8) + 1))
        chunks = [names[i:i + size] for i in range(0, len(names), size)]
        with _make_pool(pool, workers) as ex:
            futures = [ex.submit(_read_chunk, c, salt, str(root)) for c in chunks]
            for fut in as_completed(futures):
                result = fut.result()
                yield from result
                advance(len(result))


def index_archive(data_dir: str | Path, labels_csv: str | Path | None = None, salt: str | None = None,
                  workers: int | None = None, progress: bool = False,
                  pool: str = "process", salt_source: str = "argument", public_salt: bool = False,
                  date_precision: str = "month", unit: str = "image",
                  keep_columns: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict]:
    """Index every image under `data_dir` → (cohort DataFrame with COHORT_COLUMNS + label extras, report).

    unit="image": one row per DICOM file / NIfTI file. unit="series": one row per volume (a DICOM slice
    series grouped by SeriesInstanceUID within its folder, a multi-frame file, or a NIfTI file); its
    `frames` is the slice count. labels.csv rows may also name a folder (e.g. a series folder).

    The frame's `path` column (absolute) is for this process only: `write_cohort` moves it to the private
    locator. Study dates are coarsened to `date_precision`. Without a secret salt a non-synthetic archive
    is refused unless `public_salt` (the public default lets anyone re-link pseudonyms to patient IDs).
    Report keys: indexed, skipped, skipped_files [{file_id, reason}], ignored, by_vendor, by_device,
    by_site, labelled, unlabelled, labels_unmatched, workers, pool, seconds, salt_source, salt_fingerprint,
    date_precision, warnings. Extra numeric labels.csv columns must be measurements (measurement_*) or named in
    `keep_columns` (each kept one is warned about): anything else is refused. The report holds no paths: a skipped
    file is named by a pseudonymous id that the locator resolves.
    """
    start = time.perf_counter()
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"Expected a data folder, but {root} does not exist.")
    if not root.is_dir():
        raise DataError(f"Expected a data folder, but {root} is a file.")
    if pool not in ("process", "thread"):
        raise DataError(f"Expected pool 'process' or 'thread', but got {pool!r}.")
    if date_precision not in DATE_PRECISIONS:
        raise DataError(f"Expected a date precision in {list(DATE_PRECISIONS)}, but got {date_precision!r}."
                        f"{did_you_mean(date_precision, list(DATE_PRECISIONS))}")
    if unit not in ("image", "series"):
        raise DataError(f"Expected unit 'image' or 'series', but got {unit!r}."
                        f"{did_you_mean(unit, ['image', 'series'])}")
    root = root.resolve()
    labels = read_labels(labels_csv) if labels_csv is not None else None
    if labels is not None:  # refuse an identifying column before reading a single header
        from medunlearn.data.labels import check_extra_columns

        check_extra_columns(labels, COHORT_COLUMNS, tuple(keep_columns))
    salt, salt_source = resolve_salt(salt, salt_source)
    exclude = {Path(labels_csv).resolve()} if labels_csv is not None else set()
    files, ignored = walk_files(root, exclude)
    if not files:
        raise DataError(f"Expected image files in {root}, but the folder has none ({ignored} companion files ignored).")
    workers = max(1, int(workers if workers is not None else min(os.cpu_count() or 1, 8)))
    rows: list[dict] = []
    skipped: list[dict[str, str]] = []
    seen: dict[str, str] = {}  # image ids already indexed
    skipped_paths: dict[str, str] = {}  # file_id -> path relative to the root
    for path, row, reason in sorted(read_headers(files, salt, root, workers, pool, progress), key=lambda r: r[0]):
        rel = Path(path).relative_to(root).as_posix()
        if row is not None and row["image_id"] in seen:
            reason = f"duplicate image (same SOPInstanceUID as image {seen[row['image_id']]})"
            row = None
        if row is None:
            file_id = pseudonym("F", rel, salt)
            skipped_paths[file_id] = rel
            skipped.append({"file_id": file_id, "reason": _without_paths(reason, path, rel)})
            continue
        seen[row["image_id"]] = row["image_id"]
        rows.append(row)
    if unit == "series":
        from medunlearn.data.series import group_series

        rows, bad_series = group_series(rows, salt, root)
        for bad in bad_series:  # the report names no paths: a pseudonymous id the locator resolves
            file_id = pseudonym("F", bad["path"], salt)
            skipped_paths[file_id] = bad["path"]
            skipped.append({"file_id": file_id, "reason": bad["reason"]})
    if not rows:
        examples = "; ".join(f"file {s['file_id']}: {s['reason']}" for s in skipped[:3])
        raise DataError(f"Expected DICOM or NIfTI images in {root}, but none of {len(files)} files is one "
                        f"(e.g. {examples}).")
    synthetic = all(str(r.get("synthetic", "")).lower() in ("true", "1") for r in rows)
    if salt_source == PUBLIC_SALT_SOURCE and not synthetic and not public_salt:
        raise ConfigError("Expected a secret salt for a non-synthetic archive (--salt-file PATH or $MEDUNLEARN_SALT), "
                          "but got none: with the public default salt anyone can re-link a pseudonym to a guessed "
                          "patient ID. Pass --public-salt to accept that (demos only).")
    for r in rows:
        r["study_date"] = coarsen_date(r.get("study_date", ""), date_precision)
    df = pd.DataFrame(rows)
    df["label"] = ""
    report: dict = {"warnings": []}
    if labels is not None:
        df, join_info = join_labels(df, labels, root, protected=COHORT_COLUMNS, keep=tuple(keep_columns))
        report.update(join_info)
    from medunlearn.data.series import PRIVATE_KEYS

    df = _typed(df.drop(columns=["sop_instance_uid", *[k for k in PRIVATE_KEYS if k in df.columns]]))
    extras = [c for c in df.columns if c not in COHORT_COLUMNS]
    df = df[list(COHORT_COLUMNS) + extras].reset_index(drop=True)
    if salt_source == PUBLIC_SALT_SOURCE:
        report["warnings"].append(f"No secret salt given (--salt-file or ${SALT_ENV}); used the public default "
                                  "salt, so pseudonyms can be linked back by anyone holding a guessed PatientID.")
    labelled = int((df["label"] != "").sum())
    report.update({
        "unit": unit, "indexed": len(df), "skipped": len(skipped), "skipped_files": skipped, "ignored": ignored,
        "by_vendor": _counts(df["manufacturer"]), "by_device": _counts(df["device"]),
        "by_site": _counts(df["site"]), "labelled": labelled, "unlabelled": len(df) - labelled,
        "workers": workers, "pool": pool, "seconds": round(time.perf_counter() - start, 3),
        "salt_source": salt_source, "salt_fingerprint": salt_fingerprint(salt), "date_precision": date_precision,
    })
    df.attrs["archive_root"] = str(root)
    df.attrs["skipped_paths"] = skipped_paths
    report.setdefault("labels_unmatched", 0)
    return df, report


def _without_paths(reason: str, path: str, rel: str) -> str:
    """A skip reason with the file's path (which may carry identifiers) taken out."""
    for text in (str(Path(path).resolve()), str(path), rel, Path(rel).name):
        if text:
            reason = reason.replace(text, "<file>")
    return reason


def _counts(col: pd.Series) -> dict[str, int]:
    return {(k or "unknown"): int(v) for k, v in Counter(col.astype(str)).most_common()}


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric size columns as nullable ints, spacings as floats (NaN when unknown), the rest strings."""
    df = df.copy()
    for c in INT_COLUMNS + FLOAT_COLUMNS:
        raw = df[c].replace("", None)
        num = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & (num.isna() | ((num % 1 != 0) if c in INT_COLUMNS else False))
        if bool(bad.any()):
            i = bad.to_numpy().nonzero()[0][0]
            who = f"image {df['image_id'].iat[i]}" if "image_id" in df.columns else f"row {i + 1}"
            kind = "a whole number" if c in INT_COLUMNS else "a number"
            raise DataError(f"Expected {kind} (or nothing) in cohort column {c!r}, but {who} has {raw.iat[i]!r} "
                            f"({int(bad.sum())} such value(s)); was the table edited by hand?")
        df[c] = num.astype("Int64") if c in INT_COLUMNS else num.astype(float)
    for c in COHORT_COLUMNS:
        if c not in INT_COLUMNS + FLOAT_COLUMNS:
            df[c] = df[c].fillna("").astype(str)
    return df


def write_cohort(df: pd.DataFrame, path: str | Path, overwrite: bool = False, locator: str | Path | None = None,
                 archive_root: str | Path | None = None, extra_files: dict[Path, object] | None = None) -> Path:
    """Write the shareable cohort CSV (no paths), the private locator beside it (when `df` has paths) and
    `extra_files` ({path: JSON object}, e.g. the ingest report) as ONE unit (commit.file_set): a reader never
    sees a new locator beside an old table. Existing files are refused unless `overwrite`.

    The locator maps image_id -> path relative to the archive root, and records that root both relative to
    the locator's own folder (so a folder moved as a whole keeps working) and absolute. A table without paths
    removes the previous locator of the same name (it belongs to the table it replaces).
    """
    from medunlearn.commit import claim_files, file_set
    from medunlearn.fileio import write_json

    path = Path(path)
    shared = [c for c in COHORT_COLUMNS if c != "path"]
    missing = [c for c in shared if c not in df.columns]
    if missing:
        raise DataError(f"Expected cohort columns {shared}, but {missing} are missing.")
    loc = Path(locator) if locator is not None else locator_path(path)
    has_paths = "path" in df.columns and (df["path"].astype(str) != "").any()
    extra = dict(extra_files or {})
    out = df.drop(columns=[c for c in ("sop_instance_uid", "path") if c in df.columns])
    with claim_files([path, loc, *extra], overwrite=overwrite) as finals:
        table, loc_final, extra_finals = finals[0], finals[1], finals[2:]
        with file_set(finals) as tmp:  # the table first: it moves in last
            out.to_csv(tmp[table], index=False, na_rep="")
            if has_paths:
                write_locator(df, tmp[loc_final], archive_root or df.attrs.get("archive_root"),
                              df.attrs.get("skipped_paths"))
            else:
                tmp[loc_final].unlink()
            for final, obj in zip(extra_finals, extra.values()):
                write_json(tmp[final], obj)
    return path


def read_cohort(path: str | Path) -> pd.DataFrame:
    """Read and validate a cohort CSV written by write_cohort (types restored).

    Image paths come from the private locator when one is found (see `find_locator`); without it the table
    still serves selection and reporting, and steps that decode images say the locator is missing. Tables
    written before the split (with an absolute `path` column) still read.
    """
    path = Path(path)
    df = read_string_csv(path, "cohort CSV")
    missing = [c for c in COHORT_COLUMNS if c not in df.columns and c != "path"]
    if missing:
        raise DataError(f"Expected cohort columns {list(COHORT_COLUMNS)} in {path}, but {missing} are missing.")
    legacy = "path" in df.columns
    if not legacy:
        df.insert(1, "path", "")
    df = _typed(df)
    for c in df.columns:
        if c not in COHORT_COLUMNS:
            num = pd.to_numeric(df[c].replace("", None), errors="coerce")
            if num.notna().sum() == (df[c] != "").sum():
                df[c] = num.astype(float)
    if not legacy:
        loc = find_locator(path)
        if loc is not None:
            df = resolve_paths(df, loc)
        else:
            df = df.drop(columns=["path"])
            df.attrs["locator_expected"] = str(locator_path(path))
    return df


def _canon(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "" if value is pd.NA else str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    f = float(value)
    if f != f:  # NaN
        return ""
    return str(int(f)) if f.is_integer() else f"{f:.9g}"


def cohort_hash(df: pd.DataFrame) -> str:
    """sha256 of the cohort content that matters for training, independent of row order and file paths."""
    cols = sorted(c for c in df.columns if c != "path")
    lines = sorted("\x1f".join(_canon(v) for v in row) for row in df[cols].itertuples(index=False, name=None))
    return sha256_text("\x1f".join(cols) + "\n" + "\n".join(lines))
