"""Provenance: hashes, versions and seeds recorded beside every output."""
from __future__ import annotations

import hashlib
import platform
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_strings(items: Iterable[str]) -> str:
    """Order-independent hash of a set of identifiers (e.g. the image ids of a split)."""
    h = hashlib.sha256()
    for s in sorted(items):
        h.update(s.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    from medunlearn import __version__

    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        if out.returncode == 0:
            return f"{__version__}+g{out.stdout.strip()}{'.dirty' if dirty.stdout.strip() else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def environment() -> dict[str, str]:
    import monai
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def provenance_record(config: dict[str, Any], seed: int | None, inputs: dict[str, str],
                      run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record written as provenance.json beside every output.

    run: how it executed (RunContext.run_record(): world_size, backend, device); world_size 1 when absent."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code_version": code_version(),
        "seed": seed,
        "config": config,
        "input_hashes": inputs,
        "environment": environment(),
        "run": run or {"world_size": 1},
    }
