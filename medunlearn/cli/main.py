"""Entry point: `medunlearn` (console script) and `python -m medunlearn`."""
from __future__ import annotations

import warnings

# Importing a command module registers its commands on `app`, in this order (the order `--help` lists them).
from medunlearn.cli import bundle, catalog, cohort, evaluate, forget, train  # noqa: F401  (register commands)
from medunlearn.cli import merge, report, demo, bench, tune  # noqa: F401, I001  (register commands)
from medunlearn.cli.app import app


def main() -> None:
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
    app()


if __name__ == "__main__":
    main()
