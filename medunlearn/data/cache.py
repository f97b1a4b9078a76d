"""Cache keys for decoded, transformed images: file content hash + transform settings.

The key of a record is sha256(content of its file, [the stat signature of its series folder for a 3D
DICOM series], the transform settings, PIPELINE_VERSION). Content hashes are memoised in
`<cache_dir>/fingerprints.json` by (path, size, mtime_ns), so a later run re-hashes only files that
changed and skips decoding entirely. A moved archive re-hashes once and then hits the same entries.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medunlearn.fileio import write_text
from medunlearn.provenance import sha256_file

# Bump when a transform changes what it produces for the same settings, so old entries are not reused.
PIPELINE_VERSION = "1"
FINGERPRINTS = "fingerprints.json"


def _load_memo(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no memo yet, or a broken one: files are hashed again
    return data if isinstance(data, dict) else {}


def _folder_signature(folder: Path) -> str:
    """sha256 of (name, size, mtime_ns) of every file in a series folder: changes when any slice does."""
    h = hashlib.sha256()
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file():
            st = entry.stat()
            h.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def keyed_records(records: list[dict], settings: dict[str, Any], cache_dir: str | Path) -> list[dict]:
    """Copies of `records` with a "cache_key" (hex sha256) each; updates the fingerprint memo."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo_path = cache_dir / FINGERPRINTS
    memo = _load_memo(memo_path)
    tail = json.dumps({**settings, "pipeline": PIPELINE_VERSION}, sort_keys=True)
    changed, out, folders = False, [], {}
    for rec in records:
        path = Path(str(rec["image"])).resolve()
        st = path.stat()
        known = memo.get(str(path))
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            digest = known[2]
        else:
            digest = sha256_file(path)
            memo[str(path)] = [st.st_size, st.st_mtime_ns, digest]
            changed = True
        parts = [digest, tail]
        if settings.get("spatial_dims") == 3 and rec.get("format", "dicom") == "dicom":
            folder = path.parent
            if folder not in folders:
                folders[folder] = _folder_signature(folder)
            parts.append(folders[folder])
        out.append({**rec, "cache_key": hashlib.sha256("\n".join(parts).encode()).hexdigest()})
    if changed:
        write_text(memo_path, json.dumps(memo))
    return out


def record_hash(item: dict) -> bytes:
    """hash_func for MONAI's PersistentDataset: the precomputed key."""
    return str(item["cache_key"]).encode("utf-8")
