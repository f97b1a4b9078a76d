"""Crash-safe commits of whole outputs: one protocol for every folder or set of files medunlearn writes.

(docs/ARCHITECTURE.md, "Output commits")
- a command *claims* its outputs at its start (`claim_dir`, `claim_files`): their locks are held for the whole
  run, so a second writer fails at once (OutputLockedError, exit 2); what an interrupted earlier commit left is
  repaired, and an existing result is refused unless --overwrite;
- a folder is built in a private staging folder and swapped in (`staging_dir`); a set of files that belong
  together (the cohort table and its locator; report.json/.md/.html/.pdf) is committed as one unit
  (`file_set`); single files go through `medunlearn.fileio`;
- every swap that replaces a previous result first writes a journal (`.NAME.commit`); recovery reads it to
  finish or undo the swap, and never deletes a previous result the user did not ask to overwrite.
"""
from __future__ import annotations

import contextvars
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from medunlearn.errors import ConfigError, OutputExistsError, OutputLockedError
from medunlearn.fileio import fsync_path, fsync_tree, make_dir, make_private, private_tree, read_json, write_json

log = logging.getLogger("medunlearn")
# outputs this context (thread / task) has claimed: nested writes to them re-enter the claim's lock
_CLAIMED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("medunlearn_claimed", default=frozenset())


# ---------------------------------------------------------------------------------------------------------------
# Output paths, locks and claims


def output_path(path: str | Path) -> Path:
    """The absolute output path; refuses the current folder or a folder above it (it would be swapped away
    from under the shell), and the file-system root."""
    p = Path(os.path.abspath(path))
    cwd = Path(os.getcwd())
    if p == cwd or p in cwd.parents or p.parent == p:
        raise ConfigError(f"Expected an output folder other than the current folder or one above it, but got "
                          f"{str(path)!r}; name a new folder, e.g. --out run1.")
    return p


def _key(path: Path) -> str:
    return str(output_path(path))


def _old(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


def _journal(final: Path) -> Path:
    return final.with_name(f".{final.name}.commit")


def _is_staging(entry: Path, final: Path) -> bool:
    return (entry.name.startswith((f".{final.name}.", f"..{final.name}.")) and entry.name.endswith(".staging")
            and entry.is_dir())


def _is_temp(entry: Path, final: Path) -> bool:
    rest = entry.name
    return (rest.startswith((f".{final.name}.", f"..{final.name}.")) and (rest.endswith(".tmp") or ".tmp." in rest)
            and entry.is_file())


@contextmanager
def output_lock(final: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on output `final` (a `.NAME.lock` file beside it) for the block.

    A second writer to the same output fails at once with OutputLockedError instead of racing the commit.
    Inside a `claim_dir` / `claim_files` of the same output (same thread) the claim's lock is re-entered.
    The lock file is removed on release; the inode check makes a removal race with a new locker harmless.
    """
    final = output_path(final)
    lock = _lock_path(final)
    if str(final) in _CLAIMED.get():
        yield lock
        return
    created = [d for d in [final.parent, *final.parent.parents] if not d.exists()]  # removed again if left empty
    make_dir(final.parent)
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
        for d in created:  # nothing written on failure: not even the folders the lock needed
            try:
                d.rmdir()
            except OSError:
                break


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # msvcrt locks a byte range of the file
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextmanager
def _claimed(finals: Iterable[Path]) -> Iterator[None]:
    """Lock every output (sorted, so two claimers cannot deadlock) and mark them claimed for nested writes."""
    finals = sorted({output_path(f) for f in finals}, key=str)
    with ExitStack() as stack:
        for f in finals:
            stack.enter_context(output_lock(f))
        token = _CLAIMED.set(_CLAIMED.get() | {str(f) for f in finals})
        try:
            yield
        finally:
            _CLAIMED.reset(token)


@contextmanager
def claim_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Claim a folder output for a whole run: lock it now (a second writer exits 2 at once), repair what an
    interrupted commit left, and refuse an existing result unless `overwrite`. Yields the absolute path."""
    final = output_path(path)
    with _claimed([final]):
        prepare_out_dir(final, overwrite)
        yield final


@contextmanager
def claim_files(paths: Iterable[str | Path | None], overwrite: bool = False) -> Iterator[list[Path]]:
    """Claim single-file outputs (or the files of one unit) for a whole run: lock them, finish an interrupted
    unit commit, remove temp files a killed write left, refuse existing files unless `overwrite`."""
    finals = [output_path(p) for p in paths if p is not None]
    with _claimed(finals):
        for f in finals:
            recover_files(f)
        existing = [f for f in finals if f.exists()]
        dirs = [f for f in existing if f.is_dir()]
        if dirs:
            raise OutputExistsError(f"Expected a file path for output {dirs[0]}, but it is a folder.")
        if existing and not overwrite:
            names = ", ".join(str(f) for f in existing)
            raise OutputExistsError(f"Output {names} already exists; pass --overwrite to replace it.")
        yield finals


# ---------------------------------------------------------------------------------------------------------------
# Folder outputs


def prepare_out_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check an output directory may be written. Refuse a non-empty one unless `overwrite`.

    Nothing is deleted here: callers build outputs in `staging_dir` and it swaps them in, so an interrupted
    run never leaves a half-written output directory behind. What an interrupted commit left is repaired first
    (`recover_output`), so a previous result is judged (and kept) like any existing output.
    """
    path = output_path(path)
    recover_output(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"Expected an output directory, but {path} is a file.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"Output {path} already exists and is not empty; pass --overwrite to replace it.")
    return path


def _empty_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink() and not any(p.iterdir())


def recover_output(final: str | Path) -> list[str]:
    """Repair what an interrupted commit into `final` left behind; returns notes on what was done.

    With a journal (`.NAME.commit`, written before a swap replaces a previous result):
    - the staged folder it names still exists: the swap did not finish, so the previous result (`.NAME.old`,
      when already set aside) is put back, over an empty `final` too (a script's `mkdir -p`);
    - else the new result is in place and the superseded copy, which the user asked to overwrite, is removed.
    Without a journal a `.NAME.old` is never deleted: it is put back when `final` is missing or empty, else kept
    (with a warning). `.NAME.*.staging` folders are outputs that never committed; removed.
    Runs only when no other run holds the output's lock (a live commit is never disturbed).
    """
    final = output_path(final)
    if not final.parent.is_dir():
        return []
    old, journal = _old(final), _journal(final)
    stale = [e for e in final.parent.iterdir() if _is_staging(e, final) or _is_temp(e, journal)
             or e.name.startswith(f"..{final.name}.")]
    if not old.exists() and not stale and not journal.exists():
        return []
    notes: list[str] = []
    try:
        with output_lock(final):
            notes += _repair_swap(final, old, journal)
            _clean_temps(journal)  # a journal write cut short
            for entry in final.parent.iterdir():  # locks and journals of nested staging folders of a killed run
                if entry.name.startswith(f"..{final.name}.") and entry.is_file():
                    entry.unlink(missing_ok=True)
            stale = [e for e in final.parent.iterdir() if _is_staging(e, final)]
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


def _restore(old: Path, final: Path) -> list[str]:
    if _empty_dir(final):
        final.rmdir()
    if final.exists():
        return [f"kept {old.name}, a previous {final.name} that an interrupted run set aside, because {final.name} "
                "exists too; compare them and delete the one you do not want"]
    os.replace(old, final)
    fsync_path(final.parent)
    return [f"restored the previous {final.name} that an interrupted run had set aside"]


def _repair_swap(final: Path, old: Path, journal: Path) -> list[str]:
    """The caller holds the lock. The previous result is deleted only when the journal says a swap was under
    way, its staged folder is gone (renamed into place) and `final` holds a result."""
    if not journal.exists():
        return _restore(old, final) if old.exists() else []
    try:
        staged_name = str(read_json(journal).get("staging", ""))
    except Exception:  # noqa: BLE001 - a torn journal: the swap never started (it is written atomically)
        staged_name = ""
    staged = final.parent / staged_name if staged_name else None
    notes: list[str] = []
    if old.exists():
        finished = staged is not None and not staged.exists() and final.exists() and not _empty_dir(final)
        if finished:  # the new result is in place; the superseded one was to be overwritten
            shutil.rmtree(old, ignore_errors=True)
            notes.append(f"finished replacing {final.name}: removed the superseded copy")
        else:
            notes += _restore(old, final)
    journal.unlink(missing_ok=True)
    fsync_path(final.parent)
    return notes


def _commit(tmp: Path, final: Path) -> None:
    """Swap the staged folder in. At every instant `final` or `.NAME.old` holds a complete result, and the
    journal written first tells recovery which of the two to keep."""
    private_tree(tmp)
    fsync_tree(tmp)
    if _empty_dir(final):
        final.rmdir()  # an empty folder holds no previous result to keep
    if not final.exists():
        os.replace(tmp, final)
        fsync_path(final.parent)
        return
    journal, old = _journal(final), _old(final)
    write_json(journal, {"staging": tmp.name, "old": old.name})
    os.replace(final, old)
    fsync_path(final.parent)
    os.replace(tmp, final)
    fsync_path(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    journal.unlink(missing_ok=True)
    fsync_path(final.parent)


@contextmanager
def staging_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory output in a sibling temp dir, then swap it into place (see `_commit`).

    The output's lock is held throughout (re-entered inside a `claim_dir`), so a concurrent writer fails with
    one line. On error the temp dir is removed, an unfinished swap is undone and `final` keeps its previous
    result; after a kill, the next run into `final` repairs what was left (`recover_output`).
    """
    final = output_path(final)
    with _claimed([final]):
        final = prepare_out_dir(final, overwrite)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
        try:
            yield tmp
            _commit(tmp, final)
        finally:
            if _journal(final).exists():  # an interrupted swap: put the previous result back now
                for note in _repair_swap(final, _old(final), _journal(final)):
                    log.warning("%s.", note[0].upper() + note[1:])
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Units of files (a cohort table with its locator; report.json with .md, .html and .pdf)


def _clean_temps(final: Path) -> int:
    if not final.parent.is_dir():
        return 0
    temps = [e for e in final.parent.iterdir() if _is_temp(e, final)]
    for t in temps:
        t.unlink(missing_ok=True)
    return len(temps)


def recover_files(final: str | Path) -> list[str]:
    """Finish a unit commit that a kill interrupted (its journal `.NAME.commit` is beside the unit's first
    file), then remove the temp files killed writes of `final` left. The caller holds the lock."""
    final = output_path(final)
    notes: list[str] = []
    journal = _journal(final)
    if journal.is_file():
        try:
            entries = read_json(journal).get("files", [])
        except Exception:  # noqa: BLE001 - torn journal: the commit never started; temps are removed below
            entries = []
        _roll_forward([(Path(e["final"]), Path(e["new"]) if e.get("new") else None, Path(e["aside"]))
                       for e in entries])
        journal.unlink(missing_ok=True)
        notes.append(f"finished the interrupted commit of {final.name} and the files written with it")
    aside = _old(final)
    if aside.is_file() and not journal.exists():
        if final.exists():
            notes.append(f"kept {aside.name} beside {final.name} (a previous copy an interrupted run set aside)")
        else:
            os.replace(aside, final)
            notes.append(f"restored the previous {final.name} that an interrupted run had set aside")
    if _clean_temps(final):
        notes.append(f"removed temp files of {final.name} left by an interrupted run")
    for note in notes:
        log.warning("%s.", note[0].upper() + note[1:])
    return notes


def _roll_forward(entries: list[tuple[Path, Path | None, Path]]) -> None:
    """Steps of a unit commit, each safe to repeat: move every previous file aside (the gate first), move
    every new file in (the gate last), drop the asides. Files of a kind never mix: at any instant the visible
    files are all previous ones or all new ones, and the gate (first entry) is present only with a full unit."""
    for final, new, aside in entries:
        if final.exists() and not aside.exists() and (new is None or new.exists()):
            os.replace(final, aside)
    for final, new, _aside in reversed(entries):
        if new is not None and new.exists():
            os.replace(new, final)
    for _final, _new, aside in entries:
        aside.unlink(missing_ok=True)
    for d in {f.parent for f, _n, _a in entries}:
        fsync_path(d)


@contextmanager
def file_set(finals: Sequence[str | Path]) -> Iterator[dict[Path, Path]]:
    """Write several files as one unit: yields {final: temp path}; the caller writes each temp (deleting a temp
    means "this file is no longer part of the unit": its previous copy is removed). On success the unit is
    committed through a journal beside the first file, the gate (the file readers look at first, e.g.
    report.json): see `_roll_forward`. On error the temps are removed and nothing changes."""
    paths = [output_path(f) for f in finals]
    tmps: dict[Path, Path] = {}
    try:
        for f in paths:
            make_dir(f.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{f.name}.", suffix=f".tmp{f.suffix}", dir=f.parent)
            os.close(fd)
            make_private(tmp_name)
            tmps[f] = Path(tmp_name)
        yield tmps
        for tmp in tmps.values():
            if tmp.exists():
                make_private(tmp)
                fsync_path(tmp)
        entries = [(f, tmps[f] if tmps[f].exists() else None, _old(f)) for f in paths]
        write_json(_journal(paths[0]), {"files": [{"final": str(f), "new": str(n) if n else None, "aside": str(a)}
                                                  for f, n, a in entries]})
        fsync_path(paths[0].parent)
        _roll_forward(entries)
        _journal(paths[0]).unlink(missing_ok=True)
        fsync_path(paths[0].parent)
    finally:
        if paths and _journal(paths[0]).exists():  # interrupted after its commit point: finish it now
            try:
                recover_files(paths[0])
            except Exception:  # noqa: BLE001 - the next run into these outputs finishes it
                pass
        elif tmps:
            for tmp in tmps.values():
                tmp.unlink(missing_ok=True)
