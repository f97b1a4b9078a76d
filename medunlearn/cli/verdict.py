"""Print an acceptance record (criteria checks and the verdict) as a rich table."""
from __future__ import annotations

from typing import Any

from rich.table import Table

from medunlearn.cli.app import console


def _threshold(check: dict[str, Any]) -> str:
    t = check["threshold"]
    if check["op"] == "within":
        return f"within [{t[0]:.1f}, {t[1]:.1f}]"
    if check["op"] == "ci_covers":
        lo, hi = check.get("interval", [float("nan")] * 2)
        return f"CI [{lo:.1f}, {hi:.1f}] covers {t:.1f}"
    return f"{check['op']} {t:.1f}"


def print_acceptance(acceptance: dict[str, Any], title: str = "Acceptance criteria (validation data)") -> None:
    table = Table(title=title)
    for col in ("criterion", "value", "required", "result"):
        table.add_column(col)
    for c in acceptance.get("checks", []):
        table.add_row(c["label"], f"{c['value']:.1f}{c.get('unit', '')}", _threshold(c),
                      "[green]PASS[/]" if c["passed"] else "[red]FAIL[/]")
    console.print(table)
    console.print(f"State returned: {acceptance.get('state')} at step {acceptance.get('step')} of "
                  f"{acceptance.get('steps_run')} run (budget {acceptance.get('budget')}); {acceptance.get('reason')}")
    for key in ("reference_hint", "resolution_hint"):
        if acceptance.get(key):
            console.print(f"[yellow]Note:[/] {acceptance[key]}")
