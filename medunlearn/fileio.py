"""Atomic, non-clobbering file output. Every file medunlearn writes goes through here."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from medunlearn.errors import OutputExistsError


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    from medunlearn.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Expected a JSON file at {path}, but it does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"Expected valid JSON in {path}, but it is corrupt ({exc}).") from exc


def prepare_out_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check an output directory may be written. Refuse a non-empty one unless `overwrite`.

    Nothing is deleted here: callers build outputs in `staging_dir` and `commit_dir` swaps them in,
    so an interrupted run never leaves a half-written output directory behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"Expected an output directory, but {path} is a file.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"Output {path} already exists and is not empty; pass --overwrite to replace it.")
    return path


@contextmanager
def staging_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory output in a sibling temp dir, then swap it into place atomically-ish.

    On error the temp dir is removed and `final` is untouched.
    """
    final = prepare_out_dir(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
