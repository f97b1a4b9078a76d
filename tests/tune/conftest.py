"""Tuning fixtures: the unlearning tests' tiny trained model, and test splits that fail loudly when read."""
from __future__ import annotations

import dataclasses
from typing import Any

from tests.unlearn.conftest import trained_tiny  # noqa: F401  (re-exported fixture)


class TestRowRead(AssertionError):
    """A test split was touched."""


class Tripwire:
    """Stands in for a test split in tests: any attribute, len() or iteration fails the test."""

    __test__ = False

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __getattr__(self, attr: str) -> Any:
        raise TestRowRead(f"{self.name}.{attr} was read")

    def __len__(self) -> int:
        raise TestRowRead(f"len({self.name}) was read")

    def __iter__(self):
        raise TestRowRead(f"{self.name} was iterated")


def tripwired(data):
    """`data` with both test splits replaced by Tripwires."""
    return dataclasses.replace(data, test_retain=Tripwire("test_retain"), test_forget=Tripwire("test_forget"))
