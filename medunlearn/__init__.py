"""medunlearn: machine unlearning for deployed medical-imaging classifiers.

The CLI (`medunlearn ...`) is a thin skin over this Python API; each call does what its command does:

    import medunlearn
    from medunlearn.selection.parse import build_rule

    rule = build_rule(device="ScannerX")
    medunlearn.train("cohort.csv", "base/")
    run, metrics = medunlearn.forget("cohort.csv", "base/", rule, "runs/scannerx")
    medunlearn.merge(["runs/scannerx", "runs/site"], "base/", "merged/", method=None, cohort="cohort.csv")
    medunlearn.evaluate("runs/scannerx", "cohort.csv", rule, original="base/")
    medunlearn.report("merged/")

Nothing heavy is imported by `import medunlearn`: each entry point imports its workflow step on first use.
`train` and `forget` are plain steps (forget rules and splits live in `medunlearn.selection`). `merge`,
`evaluate`, `report` and `adopt` share their names with sub-packages (`SHARES_A_PACKAGE`); the name is the
callable step, and attribute access (`medunlearn.merge.MERGES`, `import medunlearn.merge.policies`) still
reaches the sub-package.
"""
from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

from medunlearn.data.backends import quiet_backend_notices

__version__ = "0.1.0"

# public name -> (workflow module, function) it calls
ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "adopt": ("medunlearn.workflow.steps_adopt", "adopt"),
    "train": ("medunlearn.workflow.steps_train", "train"),
    "forget": ("medunlearn.workflow.steps_forget", "forget"),
    "merge": ("medunlearn.workflow.steps_merge", "merge"),
    "evaluate": ("medunlearn.workflow.steps_evaluate", "evaluate"),
    "report": ("medunlearn.workflow.steps_report", "report"),
}
__all__ = ["__version__", *ENTRY_POINTS]
# public names that are also sub-packages: only these forward attribute access to `medunlearn.<name>`
SHARES_A_PACKAGE = frozenset({"adopt", "merge", "evaluate", "report"})


def _step(name: str) -> Callable[..., Any]:
    """The workflow function behind public name `name`, imported on first use."""
    module_name, attr = ENTRY_POINTS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ImportError(f"Expected module {module_name} to provide medunlearn.{name}(), but got no such "
                          "module in this install.") from None
    return getattr(module, attr)


class EntryPoint:
    """`medunlearn.<name>(...)`: calls its workflow step; for a name in `SHARES_A_PACKAGE`, other attributes
    come from the sub-package of the same name (so `medunlearn.merge.MERGES` keeps meaning what it did)."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _step(self._name)(*args, **kwargs)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return _step(self._name).__doc__

    @property
    def __wrapped__(self) -> Callable[..., Any]:  # inspect.signature follows it
        return _step(self._name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__") and attr != "__path__":
            raise AttributeError(attr)
        if self._name not in SHARES_A_PACKAGE:
            raise AttributeError(f"medunlearn.{self._name} is a function and has no attribute {attr!r}")
        package = f"{__name__}.{self._name}"
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError as exc:
            if exc.name != package:
                raise
            raise AttributeError(f"medunlearn.{self._name} has no attribute {attr!r}") from None
        try:
            return getattr(module, attr)
        except AttributeError:  # a sub-module not imported yet: `medunlearn.merge.policies`
            return importlib.import_module(f"{package}.{attr}")

    def __repr__(self) -> str:
        module_name, attr = ENTRY_POINTS[self._name]
        return f"<medunlearn.{self._name}: calls {module_name}.{attr}>"


class _Package(types.ModuleType):
    """The `medunlearn` module: its public step names stay callable even after the import system binds the
    sub-package of the same name onto it."""

    def __getattribute__(self, name: str) -> Any:
        if name in ENTRY_POINTS:
            cache = types.ModuleType.__getattribute__(self, "_ENTRY_CACHE")
            if name not in cache:
                cache[name] = EntryPoint(name)
            return cache[name]
        return types.ModuleType.__getattribute__(self, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(ENTRY_POINTS))


_ENTRY_CACHE: dict[str, EntryPoint] = {}
sys.modules[__name__].__class__ = _Package

quiet_backend_notices()  # optional-decoder "not available" notices go to DEBUG, once (see data/backends.py)
