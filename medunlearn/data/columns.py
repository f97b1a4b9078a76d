"""Typed access to cohort-table columns (shared by the data loaders and the forget rules).

Cohort CSVs round-trip through pandas, so a column may arrive as text, numbers or NaN; these helpers give
every caller the same reading: stripped text with '' for unknown, or float with NaN for blanks.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from medunlearn.errors import ConfigError
from medunlearn.registry import did_you_mean

# Extra labels.csv columns the shareable cohort table may carry without being asked: derived anatomical
# measurements (`measurement_mm`, `measurement_volume_ml`, ...), which the outlier rules read. Any other extra
# column (an MRN, a birth date, a score of unknown origin) is refused unless kept by name (--keep-column).
SHAREABLE_EXTRA = re.compile(r"^measurement(_[a-z0-9]+)*$")


def shareable_extra(column: str) -> bool:
    """True when an extra labels.csv column is on the cohort table's allow-list (SHAREABLE_EXTRA)."""
    return bool(SHAREABLE_EXTRA.match(column))


def require_column(df: pd.DataFrame, column: str, purpose: str) -> None:
    """Raise ConfigError with did-you-mean when ``column`` is not in the cohort table."""
    if column not in df.columns:
        cols = [str(c) for c in df.columns]
        raise ConfigError(
            f"Expected a cohort column for {purpose}, but got {column!r} (columns: {', '.join(cols)})."
            f"{did_you_mean(column, cols)}"
        )


def text_values(s: pd.Series) -> pd.Series:
    """Column as stripped strings; NaN → ''; integral floats print without '.0' (CSV round-trips)."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.map(lambda v: "" if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
    return s.fillna("").astype(str).str.strip()


def try_numeric(s: pd.Series) -> tuple[np.ndarray, str | None]:
    """(values as float (N,) with NaN for blanks, first non-numeric text or None)."""
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy(float), None
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(float), None
    text = s.fillna("").astype(str).str.strip()
    num = pd.to_numeric(text.where(text != "", np.nan), errors="coerce")
    bad = text[(text != "") & num.isna()]
    return num.to_numpy(float), (None if bad.empty else str(bad.iloc[0]))


def numeric_values(df: pd.DataFrame, column: str, purpose: str) -> np.ndarray:
    """Column as float (N,), blanks → NaN; ConfigError when it holds non-numeric text."""
    require_column(df, column, purpose)
    values, bad = try_numeric(df[column])
    if bad is not None:
        raise ConfigError(
            f"Expected numeric values in column {column!r} for {purpose}, but got {bad!r}."
        )
    return values
