"""Search-space declarations: each method lists, next to its Config, the hyperparameters `medunlearn tune`
may vary and over what range. Plain data (no optuna import), so declaring a space costs nothing at import.

    search_space = {"lr": Float(1e-5, 1e-3, log=True), "phi": Float(0.5, 10.0, log=True),
                    "batch_size": Choice(16, 32, 64)}
"""
from __future__ import annotations

import dataclasses
from typing import Any

from medunlearn.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Float:
    """A real interval [low, high]; `log` samples it on a log scale (learning rates, weights)."""

    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"float [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer interval [low, high] in steps of `step`."""

    low: int
    high: int
    step: int = 1

    def describe(self) -> str:
        return f"int [{self.low}, {self.high}]{f' step {self.step}' if self.step != 1 else ''}"


class Choice:
    """One of a few values (strings, numbers, booleans)."""

    def __init__(self, *options: Any) -> None:
        self.options = tuple(options)

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.options))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and other.options == self.options

    def __repr__(self) -> str:
        return f"Choice{self.options!r}"


Param = Float | Int | Choice


def check_space(config_cls: type, space: dict[str, Param]) -> None:
    """Refuse a space naming a field the Config lacks, or an empty / inverted range."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for name, p in space.items():
        if name not in fields:
            raise ConfigError(f"Expected search-space keys among {config_cls.__qualname__}'s fields, but got {name!r}.")
        if isinstance(p, (Float, Int)) and not p.low < p.high:
            raise ConfigError(f"Expected low < high in the search range of {name}, but got {p.low} and {p.high}.")
        if isinstance(p, Float) and p.log and p.low <= 0:
            raise ConfigError(f"Expected a positive lower bound for the log range of {name}, but got {p.low}.")
        if isinstance(p, Choice) and not p.options:
            raise ConfigError(f"Expected at least one option for {name}, but got none.")


def space_to_dict(space: dict[str, Param]) -> dict[str, str]:
    """A readable record of the space (for provenance and the YAML header)."""
    return {name: p.describe() for name, p in space.items()}
