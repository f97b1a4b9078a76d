"""Building forget rules from CLI options, YAML rule files and ``to_dict`` mappings.

Rule files are YAML read with ``yaml.safe_load`` in the same shape as ``to_dict`` (MONAI-Deploy-selector
style): ``{any: [{device: ScannerX}, {site: "Site B", where: ["measurement_mm>40"]}]}``; several keys in one
mapping combine with AND.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from medunlearn.errors import ConfigError
from medunlearn.registry import did_you_mean
from medunlearn.selection.base import AllOf, AnyOf, Rule
from medunlearn.selection.conditions import VALUE_KINDS, DateRule, ValueRule, WhereRule
from medunlearn.selection.outliers import OutlierRule, parse_outliers

RULE_KEYS = (*VALUE_KINDS, "study_date_before", "study_date_after", "where", "outliers", "all", "any")


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
        with open(p, encoding="utf-8") as fh:
            spec = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        from medunlearn.configio import yaml_problem

        raise ConfigError(f"Expected a plain YAML rule file in {p.name}, but {yaml_problem(exc)}.") from None
    except RecursionError:
        raise ConfigError(f"Expected a plain YAML rule file in {p.name}, "
                          "but it is nested too deeply to read.") from None
    return rule_from_dict(spec)
