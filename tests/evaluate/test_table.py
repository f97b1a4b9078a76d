"""compare_table: one column per model, missing values shown as a dash."""
from __future__ import annotations

import pytest
from rich.console import Console

from medunlearn.errors import DataError
from medunlearn.evaluate.table import ROWS, compare_table


def _render(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_compare_table_renders_values_and_dashes() -> None:
    base = {"schema_version": 1, "forget_acc": 99.1234, "retain_acc": 98.0, "mia": {"loss_lr": {"auc_mean": 0.5321}},
            "auroc": 0.91, "rte": None}
    unl = {"schema_version": 1, "forget_acc": 35.0, "retain_acc": 97.5, "avg_gap": 1.234, "rte": 17.6}
    text = _render(compare_table({"original": base, "psg": unl}))
    assert "original" in text and "psg" in text
    assert "99.1" in text and "0.532" in text and "17.6×" in text and "1.23" in text
    assert len(compare_table({"a": base}).rows) == len(ROWS) == 12
    assert "–" in text


def test_compare_table_errors() -> None:
    with pytest.raises(DataError, match="Expected at least one result"):
        compare_table({})
    with pytest.raises(DataError, match="Expected a metrics dictionary for 'x'"):
        compare_table({"x": [1.0]})
