"""Claiming a step's output: what each step reads (its inputs), and the decorator that refuses an output
overlapping them and holds the output's lock for the whole run."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any


def cohort_inputs(cohort: Any) -> list[Path]:
    """The files a cohort argument stands for: the table, its private locator and the archive the locator
    points at (an output must not destroy any of them). A DataFrame stands for nothing on disk."""
    if not isinstance(cohort, (str, Path)):
        return []
    from medunlearn.data.locator import find_locator

    table = Path(cohort)
    found: list[Path] = [table]
    loc = find_locator(table) if table.is_file() else None
    if loc is not None and loc.is_file():
        found.append(loc)
        try:
            from medunlearn.fileio import read_json

            doc = read_json(loc)
            for root in (loc.parent / str(doc.get("archive_root", "")), doc.get("archive_root_absolute")):
                if root and str(root) != str(loc.parent / "") and Path(root).is_dir():
                    found.append(Path(root))
                    break
        except Exception:  # noqa: BLE001 - a broken locator is reported where it is read
            pass
    return found


def checkpoint_inputs(path: Any) -> list[Path]:
    """A checkpoint folder argument (None: nothing)."""
    return [Path(path)] if isinstance(path, (str, Path)) else []


def claims_output(inputs: Callable[[dict[str, Any]], Iterable[Any]], kind: str = "dir",
                  out_arg: str = "out") -> Callable:
    """Decorate a workflow step that writes `out`: before any work, refuse an output that is, holds or lies in
    one of `inputs(arguments)` (fileio.check_apart), then claim it for the whole run (commit.claim_dir, or
    claim_files for kind "file"): a second writer exits 2 at once, what a killed run left is repaired, and an
    existing result is refused unless overwrite=True. Under torchrun only rank 0 claims (it alone writes)."""
    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def step(*args: Any, **kwargs: Any) -> Any:
            from medunlearn.commit import claim_dir, claim_files
            from medunlearn.fileio import check_apart
            from medunlearn.runtime import is_main_process

            # keywords an inner decorator adds (steps_adopt.accepts_source's adopt_options) pass straight through
            own = {k: v for k, v in kwargs.items() if k in sig.parameters}
            bound = sig.bind(*args, **own)
            bound.apply_defaults()
            a = bound.arguments
            out, overwrite = a.get(out_arg), bool(a.get("overwrite", False))
            if out is None or not is_main_process():
                return fn(*args, **kwargs)
            check_apart([out], [p for p in inputs(a) if p is not None])
            claim = claim_dir(out, overwrite) if kind == "dir" else claim_files([out], overwrite)
            with claim if claim is not None else nullcontext():
                return fn(*args, **kwargs)
        return step
    return decorate


def train_inputs(a: dict[str, Any]) -> list[Any]:
    return cohort_inputs(a.get("cohort"))


def forget_inputs(a: dict[str, Any]) -> list[Any]:
    return [*cohort_inputs(a.get("cohort")), *checkpoint_inputs(a.get("model_dir")),
            *checkpoint_inputs(a.get("reference")), a.get("config_path")]


def merge_inputs(a: dict[str, Any]) -> list[Any]:
    runs, base = list(a.get("run_dirs") or []), a.get("base_dir")
    if a.get("config_path") is not None:
        from medunlearn.merge.config import load_merge_config

        spec = load_merge_config(a["config_path"])
        runs, base = [*runs, *spec.models], spec.base_model
    return [*cohort_inputs(a.get("cohort")), *map(Path, runs), *checkpoint_inputs(base),
            *checkpoint_inputs(a.get("reference")), a.get("config_path")]


def evaluate_inputs(a: dict[str, Any]) -> list[Any]:
    """The evaluated checkpoint's own files (metrics.json may be written into its folder), the comparison
    checkpoints and the cohort."""
    model = Path(a["model_dir"]) if a.get("model_dir") is not None else None
    own = [model / name for name in ("model.safetensors", "meta.json", "provenance.json")] if model else []
    return [*own, *checkpoint_inputs(a.get("original")), *checkpoint_inputs(a.get("reference")),
            *cohort_inputs(a.get("cohort"))]
