"""`medunlearn models` and `medunlearn methods`: what is registered."""
from __future__ import annotations

from rich.table import Table

from medunlearn.cli.app import app, console, guarded


@app.command("models")
@guarded
def models() -> None:
    """List the registered classifier architectures.

    Example: [bold]medunlearn models[/]
    """
    from medunlearn.models.zoo import list_models

    table = Table(title="Models")
    for col in ("name", "description", "parameters (1 ch, 64 px, 3 classes)"):
        table.add_column(col)
    for name, desc, n_params in list_models():
        table.add_row(name, desc, f"{n_params:,}")
    console.print(table)


@app.command("methods")
@guarded
def methods() -> None:
    """List the registered unlearning methods, one line each.

    Example: [bold]medunlearn methods[/]
    """
    from medunlearn.unlearn import METHODS

    table = Table(title="Unlearning methods")
    table.add_column("name")
    table.add_column("summary")
    for name in METHODS.names():
        table.add_row(name, METHODS.get(name).summary)
    console.print(table)
