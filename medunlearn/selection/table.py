"""The forget-set selection as a rich table (rows per split × forget/retain), for the CLI and the demo."""
from __future__ import annotations

from rich.table import Table

from medunlearn.selection.split import Selection


def selection_table(selection: Selection) -> Table:
    """One row per ``Selection.summary_rows()`` entry, one column per key of the first row."""
    table = Table(title="Forget-set selection")
    rows = selection.summary_rows()
    if rows:
        for col in rows[0]:
            table.add_column(str(col))
        for row in rows:
            table.add_row(*[str(row[c]) for c in rows[0]])
    return table
