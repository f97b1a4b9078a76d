"""Forget rules: which cohort rows belong to the forget set.

A rule is a small tree of conditions. Leaves: device / site / manufacturer / patient values, a study-date
window, ``--where`` expressions and anatomical outliers (``forget.outliers``); inner nodes: ``AllOf`` (AND)
and ``AnyOf`` (OR). Every rule has ``mask(df, reference=None) -> bool (N,)``, ``describe()``,
``to_dict()`` (round-trips through ``rule_from_dict``) and ``validate(df)``. ``reference`` only matters
for outlier statistics (the train rows under a split); other conditions ignore it.

Rule files are YAML read with ``yaml.safe_load`` in the same shape as ``to_dict`` (MONAI-Deploy-selector
style): ``{any: [{device: ScannerX}, {site: "Site B", where: ["measurement_mm>40"]}]}``; several keys in one
mapping combine with AND.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
import yaml

from medunlearn.errors import ConfigError, SelectionError
from medunlearn.forget.outliers import OutlierRule, numeric_values, parse_outliers, require_column, text_values
from medunlearn.registry import did_you_mean


@runtime_checkable
class Rule(Protocol):
    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray: ...
    def describe(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...
    def validate(self, df: pd.DataFrame) -> None: ...


# value kind -> cohort columns it matches (manufacturer: normalised family OR raw header text)
VALUE_KINDS = {"device": ("device",), "site": ("site",), "manufacturer": ("manufacturer", "manufacturer_raw"),
               "patient": ("patient",)}
RULE_KEYS = (*VALUE_KINDS, "study_date_before", "study_date_after", "where", "outliers", "all", "any")
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


@dataclass(frozen=True)
class WhereRule:
    """One ``--where`` expression: KEY=VALUE / KEY!=VALUE (case-insensitive), KEY~REGEX (case-insensitive
    search) or KEY>NUM, <, >=, <= (numeric; blanks never match)."""

    key: str
    op: str
    value: str

    @classmethod
    def parse(cls, expr: Any) -> "WhereRule":
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


@dataclass(frozen=True)
class _Combination:
    rules: tuple[Rule, ...]
    _key = ""  # to_dict key: "all" | "any"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))  # lists accepted; tuples keep == and hash

    def validate(self, df: pd.DataFrame) -> None:
        for r in self.rules:
            r.validate(df)

    def describe(self) -> str:
        join, other = (" AND ", AnyOf) if self._key == "all" else (" OR ", AllOf)
        return join.join(f"({r.describe()})" if isinstance(r, other) else r.describe() for r in self.rules)

    def to_dict(self) -> dict[str, Any]:
        return {self._key: [r.to_dict() for r in self.rules]}


@dataclass(frozen=True)
class AllOf(_Combination):
    """AND of child rules."""

    _key = "all"

    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        return reduce(np.logical_and, (r.mask(df, reference) for r in self.rules), np.ones(len(df), bool))


@dataclass(frozen=True)
class AnyOf(_Combination):
    """OR of child rules."""

    _key = "any"

    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        return reduce(np.logical_or, (r.mask(df, reference) for r in self.rules), np.zeros(len(df), bool))


def _scalars(value: Any, key: str) -> list[str]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(v, (bool, dict, list, tuple)) or v is None for v in items):
        raise ConfigError(f"Expected {key} as a value or a list of values, but got {value!r}.")
    return [v.isoformat() if isinstance(v, dt.date) else str(v) for v in items]


def _outlier_rule(value: Any) -> OutlierRule:
    if isinstance(value, OutlierRule):
        return value
    if isinstance(value, dict):
        fields = ("column", "threshold", "direction", "cutoff")
        for k in value:
            if k not in fields:
                raise ConfigError(f"Expected outlier keys among {list(fields)}, but got {k!r}."
                                  f"{did_you_mean(str(k), list(fields))}")
        return OutlierRule(**value)
    return parse_outliers(value)


def _parts(spec: dict[str, Any]) -> list[Rule]:
    """Conditions of one mapping, in canonical key order (they combine with AND)."""
    parts: list[Rule] = []
    for kind in VALUE_KINDS:
        if spec.get(kind) is not None:
            parts.append(ValueRule(kind, tuple(_scalars(spec[kind], kind))))
    before, after = spec.get("study_date_before"), spec.get("study_date_after")
    if before is not None or after is not None:
        parts.append(DateRule(after=_scalars(after, "study_date_after")[0] if after is not None else None,
                              before=_scalars(before, "study_date_before")[0] if before is not None else None))
    where = spec.get("where")
    for expr in ([where] if isinstance(where, str) else list(where or ())):
        parts.append(WhereRule.parse(expr))
    if spec.get("outliers") is not None:
        parts.append(_outlier_rule(spec["outliers"]))
    for key, cls in (("all", AllOf), ("any", AnyOf)):
        if key in spec:
            children = spec[key]
            if not isinstance(children, list) or not children:
                raise ConfigError(f"Expected '{key}' to hold a non-empty list of rules, but got {children!r}.")
            parts.append(cls(tuple(rule_from_dict(c) for c in children)))
    return parts


def _combine(parts: list[Rule]) -> Rule:
    if not parts:
        raise ConfigError("Expected at least one forget condition (device, site, manufacturer, patient, "
                          "study date, where, outliers), but got none.")
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def rule_from_dict(spec: Any) -> Rule:
    """Build a rule from a mapping (the ``to_dict`` / YAML shape); unknown keys raise ConfigError."""
    if not isinstance(spec, dict):
        raise ConfigError(f"Expected a rule mapping such as {{device: ScannerX}}, but got {type(spec).__name__}.")
    clean: dict[str, Any] = {}
    for key, value in spec.items():
        k = str(key).replace("-", "_")
        if k not in RULE_KEYS:
            raise ConfigError(f"Expected rule keys among {list(RULE_KEYS)}, but got {key!r}."
                              f"{did_you_mean(k, list(RULE_KEYS))}")
        clean[k] = value
    return _combine(_parts(clean))


def build_rule(device: str | Sequence[str] | None = None, site: str | Sequence[str] | None = None,
               manufacturer: str | Sequence[str] | None = None, patient: str | Sequence[str] | None = None,
               study_date_before: str | None = None, study_date_after: str | None = None,
               where: str | Iterable[str] = (), outliers: str | OutlierRule | None = None) -> Rule:
    """Rule from CLI-style options: options combine with AND; a list within one option means OR."""
    spec = {"device": device, "site": site, "manufacturer": manufacturer, "patient": patient,
            "study_date_before": study_date_before, "study_date_after": study_date_after,
            "where": [where] if isinstance(where, str) else list(where or ()), "outliers": outliers}
    spec = {k: v for k, v in spec.items() if v is not None and not (isinstance(v, (list, tuple)) and not v)}
    return _combine(_parts(spec))


def load_rule_file(path: str | Path) -> Rule:
    """Read a YAML rule file with ``yaml.safe_load`` (tags such as !!python/object are refused)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Expected a YAML rule file, but got {str(path)!r} (no such file).")
    try:
        with open(p, "r", encoding="utf-8") as fh:
            spec = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Expected a plain YAML rule file (no tags such as !!python/object), but could not "
                          f"read {p.name}: {first}") from None
    return rule_from_dict(spec)


def validate(rule: Rule, df: pd.DataFrame) -> None:
    """Check a rule against a cohort: unknown values → SelectionError, bad columns/forms → ConfigError."""
    rule.validate(df)
