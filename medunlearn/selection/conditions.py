"""Leaf conditions of a forget rule, each matching cohort rows by one kind of column.

``ValueRule`` (device / site / manufacturer / patient values), ``DateRule`` (a study-date window) and
``WhereRule`` (one ``--where`` expression). Anatomical outliers live in ``selection.outliers``.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medunlearn.data.columns import numeric_values, require_column, text_values
from medunlearn.errors import ConfigError, SelectionError
from medunlearn.registry import did_you_mean

# value kind -> cohort columns it matches (manufacturer: normalised family OR raw header text)
VALUE_KINDS = {"device": ("device",), "site": ("site",), "manufacturer": ("manufacturer", "manufacturer_raw"),
               "patient": ("patient",)}

WHERE_FORMS = "'KEY=VALUE', 'KEY!=VALUE', 'KEY~REGEX', 'KEY>NUM', 'KEY<NUM', 'KEY>=NUM' or 'KEY<=NUM'"
_SHOWN = 10


def _shown(values: Sequence[str]) -> str:
    head = ", ".join(values[:_SHOWN])
    return head + (f", ... ({len(values)} in all)" if len(values) > _SHOWN else "")


@dataclass(frozen=True)
class ValueRule:
    """Rows whose ``kind`` column equals one of ``values`` (case-insensitive); several values = OR."""

    kind: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in VALUE_KINDS:
            raise ConfigError(f"Expected a value kind in {list(VALUE_KINDS)}, but got {self.kind!r}."
                              f"{did_you_mean(self.kind, list(VALUE_KINDS))}")
        if not self.values or any(not str(v).strip() for v in self.values):
            raise ConfigError(f"Expected non-empty {self.kind} value(s), but got {list(self.values)!r}.")
        object.__setattr__(self, "values", tuple(str(v).strip() for v in self.values))

    def _columns(self, df: pd.DataFrame) -> list[str]:
        cols = [c for c in VALUE_KINDS[self.kind] if c in df.columns]
        if not cols:
            require_column(df, VALUE_KINDS[self.kind][0], f"--{self.kind}")
        return cols

    def present(self, df: pd.DataFrame) -> list[str]:
        """Distinct non-empty values of this kind in the cohort, sorted."""
        vals: set[str] = set()
        for c in self._columns(df):
            vals |= set(text_values(df[c]))
        return sorted(v for v in vals if v)

    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        wanted = {v.casefold() for v in self.values}
        out = np.zeros(len(df), dtype=bool)
        for c in self._columns(df):
            out |= text_values(df[c]).str.casefold().isin(wanted).to_numpy()
        return out

    def validate(self, df: pd.DataFrame) -> None:
        present = self.present(df)
        folded = {p.casefold() for p in present}
        for v in self.values:
            if v.casefold() not in folded:
                raise SelectionError(
                    f"Expected a {self.kind} present in the cohort ({_shown(present) or 'none recorded'}), "
                    f"but got {v!r}.{did_you_mean(v, present)}"
                )

    def describe(self) -> str:
        if len(self.values) == 1:
            return f"{self.kind} = {self.values[0]}"
        return f"{self.kind} in {{{_shown(list(self.values))}}}"

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: list(self.values)}


def parse_date(value: Any) -> dt.date:
    """YYYY-MM-DD or YYYYMMDD (or a date) → date; ConfigError otherwise."""
    if isinstance(value, dt.date):
        return value if not isinstance(value, dt.datetime) else value.date()
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise ConfigError(f"Expected a study date as YYYY-MM-DD or YYYYMMDD, but got {value!r}.")


def study_dates(df: pd.DataFrame) -> pd.Series:
    """The study_date column as datetime64 (NaT when unknown or unparseable); accepts both formats."""
    text = text_values(df["study_date"]).str.replace("-", "", regex=False).str.slice(0, 8)
    return pd.to_datetime(text, format="%Y%m%d", errors="coerce")


@dataclass(frozen=True)
class DateRule:
    """Rows with ``after <= study_date <= before`` (both bounds INCLUSIVE, ISO text); unknown dates never match."""

    after: str | None = None
    before: str | None = None

    def __post_init__(self) -> None:
        if self.after is None and self.before is None:
            raise ConfigError("Expected a study date bound (before and/or after), but got none.")
        a = parse_date(self.after) if self.after is not None else None
        b = parse_date(self.before) if self.before is not None else None
        if a and b and a > b:
            raise ConfigError(f"Expected study_date_after <= study_date_before, but got {a} > {b}.")
        object.__setattr__(self, "after", a.isoformat() if a else None)
        object.__setattr__(self, "before", b.isoformat() if b else None)

    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        require_column(df, "study_date", "a study date rule")
        d = study_dates(df)
        out = d.notna()
        if self.after:
            out &= d >= pd.Timestamp(self.after)
        if self.before:
            out &= d <= pd.Timestamp(self.before)
        return out.to_numpy(dtype=bool)

    def validate(self, df: pd.DataFrame) -> None:
        require_column(df, "study_date", "a study date rule")
        if study_dates(df).isna().all():
            raise SelectionError("Expected study dates (YYYY-MM-DD) in the cohort for a date rule, but got none.")

    def describe(self) -> str:
        if self.after and self.before:
            return f"{self.after} <= study_date <= {self.before}"
        return f"study_date >= {self.after}" if self.after else f"study_date <= {self.before}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.before:
            out["study_date_before"] = self.before
        if self.after:
            out["study_date_after"] = self.after
        return out


_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|==|=|~|>|<)\s*(.*?)\s*$", re.DOTALL)
_NUMERIC_OPS = (">", "<", ">=", "<=")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_number_column(df: pd.DataFrame, column: str) -> bool:
    """True when the column has values and every non-blank one is a number."""
    if pd.api.types.is_numeric_dtype(df[column]):
        return bool(df[column].notna().any())
    text = text_values(df[column])
    text = text[text != ""]
    return len(text) > 0 and all(_is_number(t) for t in text)


@dataclass(frozen=True)
class WhereRule:
    """One ``--where`` expression: KEY=VALUE / KEY!=VALUE (case-insensitive), KEY~REGEX (case-insensitive
    search) or KEY>NUM, <, >=, <= (numeric; blanks never match)."""

    key: str
    op: str
    value: str

    @classmethod
    def parse(cls, expr: Any) -> WhereRule:
        m = _WHERE.match(expr) if isinstance(expr, str) else None
        if not m:
            raise ConfigError(f"Expected --where as {WHERE_FORMS}, but got {expr!r}.")
        op = "=" if m.group(2) == "==" else m.group(2)
        return cls(m.group(1), op, m.group(3))

    def __post_init__(self) -> None:
        if self.op in _NUMERIC_OPS:
            try:
                float(self.value)
            except ValueError:
                raise ConfigError(f"Expected a number after '{self.key}{self.op}' (forms: {WHERE_FORMS}), "
                                  f"but got {self.value!r}.") from None
        elif self.op == "~":
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ConfigError(f"Expected a valid regular expression after '{self.key}~', "
                                  f"but got {self.value!r} ({exc}).") from None
        elif self.op not in ("=", "!="):
            raise ConfigError(f"Expected --where as {WHERE_FORMS}, but got operator {self.op!r}.")

    def validate(self, df: pd.DataFrame) -> None:
        require_column(df, self.key, "--where")
        if self.op in _NUMERIC_OPS:
            numeric_values(df, self.key, f"--where '{self.text()}'")
        elif self.op in ("=", "!=") and _is_number_column(df, self.key) and not _is_number(self.value):
            raise ConfigError(f"Expected a number in --where '{self.text()}' (column {self.key!r} is numeric), "
                              f"but got {self.value!r}.")

    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        require_column(df, self.key, "--where")
        if self.op in _NUMERIC_OPS:
            x, v = numeric_values(df, self.key, f"--where '{self.text()}'"), float(self.value)
            with np.errstate(invalid="ignore"):
                hit = {">": x > v, "<": x < v, ">=": x >= v, "<=": x <= v}[self.op]
            return np.asarray(hit, dtype=bool)
        text = text_values(df[self.key])
        if self.op == "~":
            return text.str.contains(self.value, flags=re.IGNORECASE, regex=True).to_numpy(dtype=bool)
        eq = (text.str.casefold() == self.value.casefold()).to_numpy()
        try:  # "512" also equals 512.0 in a numeric column
            eq |= numeric_values(df, self.key, "--where") == float(self.value)
        except (ConfigError, ValueError):
            pass
        return eq if self.op == "=" else ~eq

    def text(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def describe(self) -> str:
        return f"{self.key} ~ /{self.value}/" if self.op == "~" else f"{self.key} {self.op} {self.value}"

    def to_dict(self) -> dict[str, Any]:
        return {"where": [self.text()]}
