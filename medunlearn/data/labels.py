"""labels.csv: read it, and join its labels (and extra numeric columns) onto the indexed images."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from medunlearn.errors import DataError
from medunlearn.fileio import read_string_csv
from medunlearn.registry import did_you_mean


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read labels.csv as strings; it needs a `label` column and a `sop_instance_uid` or `path` key."""
    labels = read_string_csv(path, "labels CSV")
    labels.columns = [str(c).strip() for c in labels.columns]
    cols = list(labels.columns)
    if "label" not in labels.columns:
        raise DataError(f"Expected a 'label' column in {path}, but got columns {cols}.{did_you_mean('label', cols)}")
    if not {"sop_instance_uid", "path"} & set(cols):
        raise DataError(f"Expected a 'sop_instance_uid' or 'path' column in {path} to match images, but got {cols}.")
    if labels.empty:
        raise DataError(f"Expected label rows in {path}, but it has only a header.")
    return labels


def _rel_key(value: str, root: Path) -> str:
    p = Path(value.strip())
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(root)
        except ValueError:
            return p.as_posix()
    return p.as_posix().removeprefix("./")


def join_labels(df: pd.DataFrame, labels: pd.DataFrame, root: Path,
                protected: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    """Fill `label` (and extra numeric columns) by sop_instance_uid, else by path relative to `root`, else by
    the image's folder relative to `root` (a labels row naming a series folder labels all of its slices)."""
    by_uid = {u.strip(): i for i, u in enumerate(labels.get("sop_instance_uid", [])) if u.strip()}
    by_path = {_rel_key(p, root): i for i, p in enumerate(labels.get("path", [])) if p.strip()}
    hits = []
    for uid, path in zip(df["sop_instance_uid"], df["path"]):
        i = by_uid.get(uid) if uid else None
        rel = Path(path).relative_to(root)
        if i is None:
            i = by_path.get(rel.as_posix())
        if i is None and rel.parent.as_posix() != ".":
            i = by_path.get(rel.parent.as_posix())
        hits.append(i)
    matched = {i for i in hits if i is not None}
    if not matched:
        raise DataError(f"Expected labels.csv rows to match indexed images by sop_instance_uid or path, "
                        f"but none of its {len(labels)} rows matches any of {len(df)} images.")
    df = df.copy()
    pick = lambda col: [labels[col].iat[i].strip() if i is not None else "" for i in hits]  # noqa: E731
    df["label"] = pick("label")
    extra, dropped = [], []
    for col in labels.columns:
        if col in ("label", "path", "sop_instance_uid", "image_id"):
            continue
        values = pd.to_numeric(labels[col].replace("", None), errors="coerce")
        if col in protected or values.notna().sum() != (labels[col].str.strip() != "").sum():
            dropped.append(col)  # clashes with a cohort column, or not numeric
            continue
        df[col] = [float(values.iat[i]) if i is not None else float("nan") for i in hits]
        extra.append(col)
    info = {"labels_unmatched": len(labels) - len(matched), "label_columns_joined": extra,
            "warnings": [f"labels.csv column {c!r} not joined (not numeric or a cohort column)" for c in dropped]}
    return df, info
