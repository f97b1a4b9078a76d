"""Plain, atomic, owner-only file I/O: every file medunlearn writes is written through here.

- a single file is written to a temp file beside it, fsynced and renamed (`atomic_path`, `write_text`,
  `write_json`, `write_bytes`);
- files are created owner-only (0600, folders 0700) unless $MEDUNLEARN_FILE_MODE (octal, e.g. 640) asks otherwise;
- reads refuse missing, corrupt or absurdly large files with one DataError line (`read_json`, `read_string_csv`);
- `check_apart` refuses an output that would overwrite one of the command's inputs.

Whole outputs (a run folder, a cohort table with its locator, a report's files) are committed through
`medunlearn.commit`, which builds on these primitives.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medunlearn.errors import ConfigError, DataError

MAX_JSON_BYTES = 256 << 20  # metrics, meta and reports are kilobytes; refuse to parse anything absurd
MODE_ENV = "MEDUNLEARN_FILE_MODE"


def file_mode() -> int:
    """Mode of files medunlearn writes: 0o600 unless $MEDUNLEARN_FILE_MODE (octal) asks otherwise."""
    raw = os.environ.get(MODE_ENV, "").strip()
    if not raw:
        return 0o600
    try:
        mode = int(raw, 8)
    except ValueError:
        raise ConfigError(f"Expected ${MODE_ENV} to be an octal file mode such as 600 or 640, "
                          f"but got {raw!r}.") from None
    if not 0 <= mode <= 0o777 or not mode & 0o600 == 0o600:
        raise ConfigError(f"Expected ${MODE_ENV} to keep the owner's read and write bits (e.g. 600, 640), "
                          f"but got {raw!r}.")
    return mode


def dir_mode() -> int:
    """Folders: the file mode plus the search bit wherever it grants reading."""
    mode = file_mode()
    return mode | ((mode & 0o444) >> 2)


def make_private(path: str | Path) -> None:
    """Give a file or folder the output mode (owner-only by default); a tree is handled by `private_tree`."""
    try:
        os.chmod(path, dir_mode() if Path(path).is_dir() else file_mode())
    except OSError:
        pass  # e.g. a file system without permissions; nothing more to do there


def private_tree(root: str | Path) -> None:
    """Owner-only modes on every file and folder under `root` (and root itself)."""
    for folder, dirs, files in os.walk(root):
        for name in files:
            make_private(Path(folder) / name)
        for name in dirs:
            make_private(Path(folder) / name)
    make_private(root)


def make_dir(path: Path) -> None:
    """Create a folder (and missing parents) with the output folder mode."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=dir_mode())


def json_default(obj: Any) -> Any:
    """json.dumps `default`: numpy / torch scalars and arrays as numbers and lists, paths as strings."""
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
    make_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    make_private(tmp)
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
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def read_json(path: str | Path) -> Any:
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

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Expected a {what} at {path}, but it does not exist.")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"Expected a valid {what} at {path}, but it is corrupt ({exc}).") from exc


def check_apart(outputs: Iterable[str | Path | None], inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output that is one of the command's inputs, contains one, or lies inside one (ConfigError),
    whatever --overwrite says: replacing it would destroy the input. Paths are compared after resolving
    symlinks, so `base`, `./base` and a link to it are the same."""
    ins = [(i, Path(os.path.realpath(i))) for i in inputs if i is not None]
    for o in outputs:
        if o is None:
            continue
        out = Path(os.path.realpath(o))
        for given, inp in ins:
            if out == inp:
                how = "is"
            elif out in inp.parents:
                how = "contains"
            elif inp in out.parents:
                how = "lies inside"
            else:
                continue
            raise ConfigError(f"Expected an output apart from the command's inputs, but {str(o)!r} {how} the input "
                              f"{str(given)!r}; writing it would destroy that input. Choose another output.")


def require_dir(path: str | Path, what: str) -> Path:
    """`path` as a Path when it is a directory; else DataError naming `what` (a checkpoint is a folder)."""
    path = Path(path)
    if not path.is_dir():
        got = "a file" if path.is_file() else "it does not exist"
        raise DataError(f"Expected {what} directory at {path}, but {got}"
                        + (" (checkpoints are folders with model.safetensors and meta.json; import a .pt state "
                           "dict first)." if path.is_file() else "."))
    return path
