"""Anatomical outliers as a forget condition.

Two modes:
- a fixed threshold on one measurement column (``measurement_mm>45``), or
- an automatic robust score: the modified z-score of Iglewicz & Hoaglin (1993),
  ``z = 0.6745 * (x - median) / MAD``, taken as the largest |z| over the chosen numeric columns; a row is an
  outlier when that score exceeds ``cutoff`` (default 3.5, the cutoff Iglewicz & Hoaglin recommend).

Statistics (median, MAD) come from ``reference`` rows when given. ``selection.split.select`` passes the TRAIN
rows, so the held-out val/test rows never shape the rule that decides what is forgotten (no peeking).

Column access (text / numeric readings of cohort columns) lives in ``data.columns``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medunlearn.data.columns import numeric_values, try_numeric
from medunlearn.errors import ConfigError

# Cohort columns that are never treated as measurement features by ``auto``.
STANDARD_COLUMNS = frozenset({
    "image_id", "path", "format", "label", "patient", "study", "device", "manufacturer", "manufacturer_raw",
    "site", "station", "serial", "modality", "body_part", "study_date", "rows", "cols", "frames",
    "spacing_row", "spacing_col",
})
MODIFIED_Z_SCALE = 0.6745  # Φ⁻¹(0.75): makes MAD consistent with σ for normal data
MEAN_AD_SCALE = 1.253314  # √(π/2): the mean-absolute-deviation fallback when MAD is 0
DEFAULT_CUTOFF = 3.5
DIRECTIONS = (">", "<", ">=", "<=")
ACCEPTED_FORMS = "'auto', 'auto:CUTOFF', 'COLUMN>VALUE' (or <, >=, <=), 'COLUMN:auto' or 'COLUMN:auto:CUTOFF'"


def measurement_columns(df: pd.DataFrame) -> list[str]:
    """Numeric extra columns (not in STANDARD_COLUMNS) holding at least one finite value."""
    out = []
    for c in df.columns:
        if str(c) in STANDARD_COLUMNS:
            continue
        values, bad = try_numeric(df[c])
        if bad is None and np.isfinite(values).any():
            out.append(str(c))
    return out


def robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Modified z-scores of ``values`` (N,) against ``reference`` (M,) → (N,); NaN stays NaN.

    Uses 0.6745·(x − median)/MAD; when MAD is 0 (over half the reference ties) falls back to
    (x − median)/(1.253314·meanAD); a constant reference gives 0 (no spread to judge by).
    """
    values = np.asarray(values, dtype=float)
    ref = np.asarray(reference, dtype=float)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.full(values.shape, np.nan)
    med = float(np.median(ref))
    dev = np.abs(ref - med)
    mad = float(np.median(dev))
    if mad > 0:
        return MODIFIED_Z_SCALE * (values - med) / mad
    mean_ad = float(np.mean(dev))
    if mean_ad > 0:
        return (values - med) / (MEAN_AD_SCALE * mean_ad)
    return np.where(np.isnan(values), np.nan, 0.0)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class OutlierRule:
    """Forget anatomical outliers.

    column: measurement column; None with auto mode = every numeric extra column (not STANDARD_COLUMNS).
    threshold: fixed cut on ``column`` (``column direction threshold``); None = automatic robust score.
    direction: one of > < >= <= (threshold mode only).
    cutoff: robust-score cutoff, default 3.5 (Iglewicz–Hoaglin); outlier when max |z| > cutoff.
    """

    column: str | None = None
    threshold: float | None = None
    direction: str = ">"
    cutoff: float = DEFAULT_CUTOFF

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"Expected an outlier direction in {list(DIRECTIONS)}, but got {self.direction!r}.")
        if not (isinstance(self.cutoff, (int, float)) and math.isfinite(self.cutoff) and self.cutoff > 0):
            raise ConfigError(f"Expected a positive outlier cutoff, but got {self.cutoff!r}.")
        if self.threshold is not None and not self.column:
            raise ConfigError("Expected a column with an outlier threshold (e.g. 'measurement_mm>45'), but got none.")
        if self.threshold is not None and not math.isfinite(float(self.threshold)):
            raise ConfigError(f"Expected a finite outlier threshold, but got {self.threshold!r}.")

    def columns(self, df: pd.DataFrame) -> list[str]:
        if self.column:
            return [self.column]
        cols = measurement_columns(df)
        if not cols:
            raise ConfigError(
                "Expected at least one numeric measurement column (e.g. measurement_mm) for automatic "
                f"outliers, but got none among {[str(c) for c in df.columns]}."
            )
        return cols

    def validate(self, df: pd.DataFrame) -> None:
        for c in self.columns(df):
            numeric_values(df, c, "--outliers")

    def scores(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        """Robust outlier score per row (N,): max |modified z| over the columns; NaN when all are unknown."""
        ref = df if reference is None else reference
        zs = [np.abs(robust_z(numeric_values(df, c, "--outliers"), numeric_values(ref, c, "--outliers")))
              for c in self.columns(ref)]
        stacked = np.vstack(zs)
        out = np.full(len(df), np.nan)
        known = ~np.isnan(stacked).all(axis=0)
        out[known] = np.nanmax(stacked[:, known], axis=0)
        return out

    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        """Bool (N,). Statistics from ``reference`` (the train rows under a split), else from ``df``.

        Rows with unknown measurements are never outliers.
        """
        if self.threshold is not None:
            x = numeric_values(df, self.column, "--outliers")  # type: ignore[arg-type]
            with np.errstate(invalid="ignore"):
                hit = {">": x > self.threshold, "<": x < self.threshold,
                       ">=": x >= self.threshold, "<=": x <= self.threshold}[self.direction]
            return np.asarray(hit & np.isfinite(x), dtype=bool)
        s = self.scores(df, reference)
        return np.nan_to_num(s, nan=0.0) > self.cutoff

    def spec(self) -> str:
        """The canonical ``--outliers`` text; ``parse_outliers(spec())`` gives this rule back."""
        if self.threshold is not None:
            return f"{self.column}{self.direction}{_num(self.threshold)}"
        head = f"{self.column}:auto" if self.column else "auto"
        return f"{head}:{_num(self.cutoff)}"

    def describe(self) -> str:
        if self.threshold is not None:
            return f"outlier {self.column} {self.direction} {_num(self.threshold)}"
        return f"outlier robust-z({self.column or 'all measurements'}) > {_num(self.cutoff)}"

    def to_dict(self) -> dict[str, Any]:
        return {"outliers": self.spec()}


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_AUTO = re.compile(rf"^auto(?::({_NUM}))?$", re.IGNORECASE)
_COL_AUTO = re.compile(rf"^([A-Za-z_][\w.]*):auto(?::({_NUM}))?$", re.IGNORECASE)
_THRESH = re.compile(rf"^([A-Za-z_][\w.]*)\s*(>=|<=|>|<)\s*({_NUM})$")


def parse_outliers(text: str) -> OutlierRule:
    """Parse the CLI ``--outliers`` text ("auto", "auto:3.0", "measurement_mm>45", "measurement_mm:auto")."""
    if not isinstance(text, str):
        raise ConfigError(f"Expected --outliers as text ({ACCEPTED_FORMS}), but got {text!r}.")
    t = text.strip()
    if m := _AUTO.match(t):
        return OutlierRule(cutoff=float(m.group(1)) if m.group(1) else DEFAULT_CUTOFF)
    if m := _COL_AUTO.match(t):
        return OutlierRule(column=m.group(1), cutoff=float(m.group(2)) if m.group(2) else DEFAULT_CUTOFF)
    if m := _THRESH.match(t):
        return OutlierRule(column=m.group(1), threshold=float(m.group(3)), direction=m.group(2))
    raise ConfigError(f"Expected --outliers as {ACCEPTED_FORMS}, but got {text!r}.")
