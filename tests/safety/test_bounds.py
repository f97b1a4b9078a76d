"""Issue 15 item 8 (unit level): bounded hyperparameters, typed --where values."""
from __future__ import annotations

import dataclasses
import re

import pandas as pd
import pytest

from medunlearn.bounds import bounded, check_config_bounds
from medunlearn.errors import ConfigError
from medunlearn.selection.rules import build_rule


@dataclasses.dataclass
class Cfg:
    epochs: float = 2.0
    batch_size: int = 64
    lr: float = 0.01
    stop_margin: float = 5.0
    flag: bool = True
    name: str = "x"


@pytest.mark.parametrize("field, value", [("epochs", 1e12), ("batch_size", 0.5e6), ("lr", 100.0),
                                          ("stop_margin", -100.0), ("stop_margin", 101.0), ("epochs", float("nan"))])
def test_out_of_bounds_values_are_refused(field, value) -> None:
    with pytest.raises(ConfigError, match=field):
        check_config_bounds(dataclasses.replace(Cfg(), **{field: value}), "psg")


def test_sane_values_pass() -> None:
    check_config_bounds(Cfg(), "psg")
    check_config_bounds(dataclasses.replace(Cfg(), epochs=0.2, stop_margin=0.0), "psg")


def test_every_registered_method_default_is_within_bounds() -> None:
    from medunlearn.unlearn import METHODS

    for name in METHODS.names():
        check_config_bounds(METHODS.get(name).Config(), name)


@dataclasses.dataclass
class Ranged:
    rate: float = bounded(0.5, 0, 1, open_lo=True)
    share: float | None = bounded(None, 0, 100)
    steps: int = bounded(3, 1)
    lr: float = bounded(1e-3, 0, open_lo=True)


@dataclasses.dataclass
class Child(Ranged):
    rate: float = 0.25  # a new default keeps the base's range


@pytest.mark.parametrize("field, value, says", [("rate", 0.0, "rate in (0, 1]"), ("rate", 1.01, "rate in (0, 1]"),
                                                ("share", 100.5, "share in [0, 100]"), ("steps", 0, "steps >= 1"),
                                                ("lr", 0.0, "lr > 0"), ("rate", float("nan"), "rate")])
def test_declared_ranges_are_refused_with_the_range(field, value, says) -> None:
    for cls in (Ranged, Child):
        with pytest.raises(ConfigError, match=re.escape(says)):
            check_config_bounds(dataclasses.replace(cls(), **{field: value}), "m", caps=False)


def test_declared_ranges_pass_at_their_closed_ends_and_null() -> None:
    check_config_bounds(Ranged(rate=1.0, share=0.0, steps=1), "m")
    check_config_bounds(Ranged(share=None), "m")
    check_config_bounds(Ranged(lr=1e10), "m", caps=False)  # the Python API may ask for a diverging lr
    with pytest.raises(ConfigError, match="lr"):
        check_config_bounds(Ranged(lr=1e10), "m")  # the command line's caps still apply


def test_methods_and_merges_check_declared_ranges_on_construction() -> None:
    from medunlearn.merge import MERGES
    from medunlearn.unlearn import METHODS

    for make, kw, says in [(METHODS.get("psg"), {"epsilon": 0.0}, "epsilon > 0"),
                           (METHODS.get("finetune"), {"ci_level": 1.0}, "ci_level in [0.5, 1)"),
                           (METHODS.get("salun"), {"sparsity": 2.0}, "sparsity in (0, 1]"),
                           (MERGES.get("dare_ties"), {"density": 0.0}, "density in (0, 1]"),
                           (MERGES.get("task_arithmetic"), {"scaling": 11.0}, "scaling in [-10, 10]")]:
        with pytest.raises(ConfigError, match=re.escape(says)):
            make(**kw)


def test_where_on_a_numeric_column_needs_a_number() -> None:
    df = pd.DataFrame({"image_id": ["a", "b"], "rows": pd.array([64, 32], dtype="Int64"), "label": ["n", "m"],
                       "patient": ["p", "q"]})
    with pytest.raises(ConfigError, match="numeric"):
        build_rule(where=("rows=abc",)).validate(df)
    build_rule(where=("rows=64",)).validate(df)


@pytest.mark.parametrize("field,value", [("backtrack_factor", 1.0), ("max_eval", 4), ("repair_lr", 0.0),
                                         ("repair_hold", 101.0), ("check_every", -1)])
def test_the_controller_ranges_are_declared_on_its_fields_and_checked_once(field, value) -> None:
    from medunlearn.errors import ConfigError
    from medunlearn.unlearn.types import ControlConfig, validate_control

    validate_control(ControlConfig())  # the defaults lie inside their ranges
    with pytest.raises(ConfigError, match=f"controller option {field}"):
        validate_control(ControlConfig(**{field: value}))
