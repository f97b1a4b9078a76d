"""Forget rules: which cohort rows belong to the forget set (the public entry point of ``forget``).

A rule is a small tree of conditions. Leaves (``selection.conditions``, ``selection.outliers``): device / site /
manufacturer / patient values, a study-date window, ``--where`` expressions and anatomical outliers; inner
nodes (``selection.base``): ``AllOf`` (AND) and ``AnyOf`` (OR). Rules are built from CLI options, YAML rule
files or ``to_dict`` mappings by ``selection.parse``. Everything is re-exported here, so callers import from
``medunlearn.selection.rules``.
"""
from __future__ import annotations

import pandas as pd

from medunlearn.selection.base import AllOf, AnyOf, Rule
from medunlearn.selection.conditions import (
    VALUE_KINDS,
    WHERE_FORMS,
    DateRule,
    ValueRule,
    WhereRule,
    parse_date,
    study_dates,
)
from medunlearn.selection.outliers import OutlierRule, parse_outliers
from medunlearn.selection.parse import RULE_KEYS, build_rule, load_rule_file, rule_from_dict

__all__ = ["AllOf", "AnyOf", "DateRule", "OutlierRule", "RULE_KEYS", "Rule", "VALUE_KINDS", "ValueRule",
           "WHERE_FORMS", "WhereRule", "build_rule", "load_rule_file", "parse_date", "parse_outliers",
           "rule_from_dict", "study_dates", "validate"]


def validate(rule: Rule, df: pd.DataFrame) -> None:
    """Check a rule against a cohort: unknown values → SelectionError, bad columns/forms → ConfigError."""
    rule.validate(df)
