"""Side-by-side comparison of several metrics.json results as a rich table (one column per model)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.table import Table

from medunlearn.errors import DataError

# (row label, getter on a result dict, format); percentages print with one decimal, fractions with three.
ROWS: list[tuple[str, Callable[[dict], Any], str]] = [
    ("FA (forget acc %)", lambda r: r.get("forget_acc"), "{:.1f}"),
    ("RA (retain acc %)", lambda r: r.get("retain_acc"), "{:.1f}"),
    ("TA-retain (%)", lambda r: r.get("test_retain_acc"), "{:.1f}"),
    ("TA-forget (%)", lambda r: r.get("test_forget_acc"), "{:.1f}"),
    ("test-forget confidence (%)", lambda r: r.get("test_forget_confidence"), "{:.1f}"),
    ("TA-forget expected acc (%)", lambda r: r.get("test_forget_expected_acc"), "{:.1f}"),
    ("MIA-efficacy (%)", lambda r: r.get("mia_efficacy"), "{:.1f}"),
    ("loss-MIA AUC", lambda r: r.get("mia_loss_auc", r.get("mia", {}).get("loss_lr", {}).get("auc_mean")), "{:.3f}"),
    ("AUROC", lambda r: r.get("auroc"), "{:.3f}"),
    ("ECE", lambda r: r.get("ece"), "{:.3f}"),
    ("Avg-Gap", lambda r: r.get("avg_gap"), "{:.2f}"),
    ("RTE", lambda r: r.get("rte"), "{:.1f}×"),
]


def format_cell(value: Any, fmt: str) -> str:
    """Formatted number, or "–" when missing / undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def compare_table(results: dict[str, dict], title: str | None = None) -> Table:
    """A rich Table: rows = headline metrics (ROWS), columns = the named results, in the given order."""
    if not results:
        raise DataError("Expected at least one result to compare, but got none")
    for name, res in results.items():
        if not isinstance(res, dict):  # a full metrics.json or its "core" subset (e.g. metrics["original"])
            raise DataError(f"Expected a metrics dictionary for {name!r}, but got {type(res).__name__}")
    table = Table(title=title)
    table.add_column("metric", style="bold")
    for name in results:
        table.add_column(str(name), justify="right")
    for label, get, fmt in ROWS:
        table.add_row(label, *[format_cell(get(res), fmt) for res in results.values()])
    return table
