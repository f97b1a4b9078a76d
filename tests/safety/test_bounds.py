"""Issue 15 item 8 (unit level): bounded hyperparameters, typed --where values."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from medunlearn.bounds import check_config_bounds
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


def test_where_on_a_numeric_column_needs_a_number() -> None:
    df = pd.DataFrame({"image_id": ["a", "b"], "rows": pd.array([64, 32], dtype="Int64"), "label": ["n", "m"],
                       "patient": ["p", "q"]})
    with pytest.raises(ConfigError, match="numeric"):
        build_rule(where=("rows=abc",)).validate(df)
    build_rule(where=("rows=64",)).validate(df)
