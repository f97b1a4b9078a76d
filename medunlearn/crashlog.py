"""Crash logs: the traceback of an unexpected error goes to a private file, not to the console.

The log lives in the user's state folder ($MEDUNLEARN_LOG_DIR, else $XDG_STATE_HOME/medunlearn/logs, else
~/.local/state/medunlearn/logs), is readable by its owner only, and holds no local variables.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

LOG_ENV = "MEDUNLEARN_LOG_DIR"


def log_dir() -> Path:
    if os.environ.get(LOG_ENV):
        return Path(os.environ[LOG_ENV])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "medunlearn" / "logs"


def write_crash_log(exc: BaseException, command: str) -> Path | None:
    """Write the traceback of `exc` to a new owner-only log file; returns its path (None if impossible)."""
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"medunlearn {command}: unexpected {type(exc).__name__}\n")
            f.write(f"python {sys.version.split()[0]}, argv: {' '.join(sys.argv[1:2])} ...\n\n")
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return path
    except OSError:
        return None


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error on a path the user gave."""
    what = exc.strerror or type(exc).__name__
    target = f" {exc.filename}" if exc.filename else ""
    return f"Expected to be able to read or write{target}, but the system refused: {what} ({type(exc).__name__})."
