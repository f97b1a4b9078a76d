"""Entry point: `medunlearn` (console script) and `python -m medunlearn`."""
from __future__ import annotations

import warnings

from medunlearn.cli import adopt, bundle, catalog, cohort, evaluate, forget, train  # noqa: F401  (register commands)
from medunlearn.cli.app import app


def _optional_commands() -> None:
    """Commands whose modules may be absent in a partial install register when importable."""
    import importlib

    for name in ("merge", "report", "demo", "bench", "tune"):
        try:
            importlib.import_module(f"medunlearn.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"medunlearn.cli.{name}":
                raise


_optional_commands()


def main() -> None:
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
    app()


if __name__ == "__main__":
    main()
