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


def check_extra_columns(labels: pd.DataFrame, protected: tuple[str, ...], keep: tuple[str, ...] = ()) -> list[str]:
    """Refuse an extra labels.csv column that would reach the shareable table without being on the allow-list
    (data.columns.SHAREABLE_EXTRA) or named by --keep-column; warn for every kept one. Returns the warnings."""
    from medunlearn.data.columns import shareable_extra
    from medunlearn.errors import ConfigError

    cols = [c for c in labels.columns if c not in ("label", "path", "sop_instance_uid", "image_id")]
    unknown_keep = [k for k in keep if k not in cols]
    if unknown_keep:
        raise ConfigError(f"Expected --keep-column to name a labels.csv column, but got {unknown_keep[0]!r}."
                          f"{did_you_mean(unknown_keep[0], cols)}")
    warnings = []
    for col in cols:
        if col in protected or shareable_extra(col) or not _numeric(labels[col]):
            continue  # a cohort column or non-numeric text is never copied; a measurement is allowed
        if col not in keep:
            raise DataError(f"Expected labels.csv extra columns to be measurements (measurement_*), but got "
                            f"{col!r}, which would be copied into the shareable cohort table (it may identify a "
                            f"patient). Remove it, or pass --keep-column {col} to keep it.")
        warnings.append(f"labels.csv column {col!r} is kept in the shareable cohort table (--keep-column): "
                        "make sure it identifies no one")
    return warnings


def warn_kept(warnings: list[str]) -> None:
    import logging

    for w in warnings:
        logging.getLogger("medunlearn").warning(w)


def _numeric(col: pd.Series) -> bool:
    values = pd.to_numeric(col.replace("", None), errors="coerce")
    return values.notna().sum() == (col.str.strip() != "").sum()


def join_labels(df: pd.DataFrame, labels: pd.DataFrame, root: Path,
                protected: tuple[str, ...], keep: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict]:
    """Fill `label` (and extra numeric columns: measurements, and those named in `keep`) by sop_instance_uid,
    else by path relative to `root`, else by the image's folder relative to `root` (a labels row naming a series
    folder labels all of its slices). Another numeric column is refused (check_extra_columns)."""
    kept_warnings = check_extra_columns(labels, protected, tuple(keep))
    warn_kept(kept_warnings)
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
            "warnings": kept_warnings + [f"labels.csv column {c!r} not joined (not numeric or a cohort column)"
                                         for c in dropped]}
    return df, info
