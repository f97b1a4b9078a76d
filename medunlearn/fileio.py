"""Atomic, non-clobbering file output. Every file medunlearn writes goes through here."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from medunlearn.errors import OutputExistsError, OutputLockedError

log = logging.getLogger("medunlearn")
MAX_JSON_BYTES = 256 << 20  # metrics, meta and reports are kilobytes; refuse to parse anything absurd


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
    """Yield a temporary path beside `path`; fsync it and rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
        fsync_path(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a directory's contents to disk (a directory fsync makes renames in it durable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. directories cannot be opened on Windows; nothing more we can do there
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and /dev files) refuse fsync; the rename is still atomic
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file under `root`, then every directory bottom-up, then `root` itself."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(folder)


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
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DataError(f"Expected a JSON file of at most {MAX_JSON_BYTES >> 20} MiB at {path}, but it holds "
                        f"{size >> 20} MiB.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"Expected valid JSON in {path}, but it is corrupt ({exc}).") from exc
    except RecursionError as exc:
        raise DataError(f"Expected JSON in {path} nested at most a few hundred levels deep, but it is nested "
                        "deeper than Python can read.") from exc


def read_string_csv(path: str | Path, what: str):
    """A CSV read with every cell a string ("" for empty); one clear DataError when it is missing or corrupt.
    `what` names it in the message ("labels CSV", "cohort CSV")."""
    import pandas as pd

    from medunlearn.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Expected a {what} at {path}, but it does not exist.")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"Expected a valid {what} at {path}, but it is corrupt ({exc}).") from exc


def prepare_out_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check an output directory may be written. Refuse a non-empty one unless `overwrite`.

    Nothing is deleted here: callers build outputs in `staging_dir` and it swaps them in, so an interrupted
    run never leaves a half-written output directory behind. A previous result that an interrupted commit
    left aside (`.NAME.old`) is put back first, so it is judged (and kept) like any existing output.
    """
    path = Path(path)
    recover_output(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"Expected an output directory, but {path} is a file.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"Output {path} already exists and is not empty; pass --overwrite to replace it.")
    return path


def _old(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


def _is_staging(entry: Path, final: Path) -> bool:
    return entry.name.startswith(f".{final.name}.") and entry.name.endswith(".staging") and entry.is_dir()


@contextmanager
def output_lock(final: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on output `final` (a `.NAME.lock` file beside it) for the block.

    A second writer to the same output fails at once with OutputLockedError instead of racing the commit.
    The lock file is removed on release; the inode check makes a removal race with a new locker harmless.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_path(final)
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            raise OutputLockedError(f"Expected to be the only run writing {final}, but another medunlearn run holds "
                                    f"its lock ({lock.name}); wait for it to finish or choose another output.")
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock: retry
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        try:
            os.unlink(lock)
        except OSError:
            pass
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks a byte range of the file
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def recover_output(final: str | Path) -> list[str]:
    """Repair what an interrupted commit into `final` left behind; returns notes on what was done.

    - `final` missing but `.NAME.old` present: the swap was cut between its two renames, so the previous
      result is put back.
    - both present: the swap finished but its clean-up did not; the stale copy is removed.
    - `.NAME.*.staging` folders: outputs that never committed; removed.
    Runs only when no other run holds the output's lock (a live commit is never disturbed).
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    old = _old(final)
    stale = [e for e in final.parent.iterdir() if _is_staging(e, final)] if final.parent.is_dir() else []
    if not old.exists() and not stale:
        return []
    notes: list[str] = []
    try:
        with output_lock(final):
            if old.exists() and not final.exists():
                os.replace(old, final)
                fsync_path(final.parent)
                notes.append(f"restored the previous {final.name} that an interrupted run had set aside")
            elif old.exists():
                shutil.rmtree(old, ignore_errors=True)
                notes.append(f"removed a stale copy of the previous {final.name}")
            for entry in stale:
                shutil.rmtree(entry, ignore_errors=True)
            if stale:
                notes.append(f"removed {len(stale)} unfinished staging folder(s) of {final.name} left by an "
                             "interrupted run")
    except OutputLockedError:
        return []  # another run is committing right now; it owns these files
    for note in notes:
        log.warning("%s.", note[0].upper() + note[1:])
    return notes


def _commit(tmp: Path, final: Path) -> None:
    """Swap the staged folder in. At every instant `final` or `.NAME.old` holds a complete result."""
    fsync_tree(tmp)
    if final.is_dir() and not any(final.iterdir()):
        final.rmdir()  # an empty folder holds no previous result to keep
    if final.exists():
        old = _old(final)
        os.replace(final, old)
        fsync_path(final.parent)
        os.replace(tmp, final)
        fsync_path(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
        fsync_path(final.parent)


@contextmanager
def staging_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory output in a sibling temp dir, then swap it into place (see `_commit`).

    The output's lock is held throughout, so a concurrent writer fails with one line. On error the temp dir
    is removed and `final` is untouched; after a kill, the next run into `final` repairs what was left.
    """
    final = Path(final)
    recover_output(final)
    with output_lock(final):
        final = prepare_out_dir(final, overwrite)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
        try:
            yield tmp
            _commit(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
