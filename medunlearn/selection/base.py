"""The shape of a forget rule: the ``Rule`` protocol and the AND / OR nodes that combine rules into a tree.

Every rule has ``mask(df, reference=None) -> bool (N,)``, ``describe()``, ``to_dict()`` (round-trips through
``selection.parse.rule_from_dict``) and ``validate(df)``. ``reference`` only matters for outlier statistics (the
train rows under a split); other conditions ignore it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class Rule(Protocol):
    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray: ...
    def describe(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...
    def validate(self, df: pd.DataFrame) -> None: ...


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
