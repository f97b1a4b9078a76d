"""Entry point: `medunlearn` (console script) and `python -m medunlearn`."""
from __future__ import annotations

import importlib
import warnings

from medunlearn.cli.app import app

# Importing a command module registers its commands on `app`; `--help` lists them in this order.
COMMAND_MODULES = ("adopt", "bundle", "catalog", "cohort", "evaluate", "forget", "train",
                   "merge", "report", "demo", "bench", "tune", "audit")
for _name in COMMAND_MODULES:
    importlib.import_module(f"medunlearn.cli.{_name}")


def main() -> None:
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
    app()


if __name__ == "__main__":
    main()
