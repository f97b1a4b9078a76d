"""Which cohort rows trained the deployed model: a datalist matched to the cohort, or "unknown" (explicit).

`--datalist` is a Decathlon-style JSON ({"training": [...], "validation": [...], "test": [...]}, entries
{"image": path, ...} or plain paths) or one JSON list per split (`training=a.json`). Entries are matched
to cohort rows by file content (sha256), falling back to the path relative to the archive (the longest
common tail of path parts, when it is unique). Rows in no list are "unseen". A patient with rows in two
splits is warned about. The record (meta["adoption"]["membership"]):
  {"status": "datalist" | "unknown", "splits": {split: {"entries": n, "matched": n}},
   "cohort_rows": {split: n, "unseen": n}, "unmatched_entries": n, "warnings": [...],
   "rows": {image_id: split}}    # pseudonymised ids only
With "unknown", forget rows are *presumed* training members: equivalence needs --reference, membership
attacks are not evaluable, and validation / test rows come from a local patient split.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from medunlearn.errors import DataError
from medunlearn.provenance import sha256_file

SPLITS = ("training", "validation", "test")


def read_datalist(spec: str | Path | dict[str, str]) -> tuple[dict[str, list[str]], Path]:
    """{split: [entry paths]} and the folder entries are relative to."""
    if isinstance(spec, dict):
        lists: dict[str, list[str]] = {}
        base: Path | None = None
        for split, each in spec.items():
            if split not in SPLITS:
                raise DataError(f"Expected datalist splits among {list(SPLITS)}, but got {split!r}.")
            data = json.loads(Path(each).read_text(encoding="utf-8"))
            lists[split] = _entries(data, split)
            base = base or Path(each).parent
        return lists, base or Path(".")
    path = Path(spec)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"Expected --datalist to be a readable JSON file, but {path.name} is not.") from exc
    if not isinstance(data, dict) or not any(k in data for k in SPLITS):
        raise DataError(f"Expected a Decathlon datalist with {list(SPLITS)} keys, but {path.name} has none.")
    return {s: _entries(data[s], s) for s in SPLITS if s in data}, path.parent


def _entries(items: Any, split: str) -> list[str]:
    if not isinstance(items, list):
        raise DataError(f"Expected a list of entries for {split!r}, but got {type(items).__name__}.")
    out = []
    for e in items:
        image = e.get("image") if isinstance(e, dict) else e
        if not isinstance(image, str):
            raise DataError(f"Expected each {split!r} entry to name an image path, but got {type(image).__name__}.")
        out.append(image)
    return out


def _tail_index(paths: list[str]) -> dict[tuple[str, ...], list[int]]:
    idx: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        parts = Path(p).parts
        for n in range(1, len(parts) + 1):
            idx[tuple(parts[-n:])].append(i)
    return idx


def match(df: pd.DataFrame, spec: str | Path | dict[str, str]) -> dict[str, Any]:
    """The membership record for `df` (cohort rows with path, image_id, patient)."""
    lists, base = read_datalist(spec)
    paths = [str(p) for p in df["path"]]
    ids = [str(i) for i in df["image_id"]]
    hashes: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        hashes[sha256_file(p)].append(i)
    tails = _tail_index(paths)
    rows: dict[str, str] = {}
    splits, unmatched, warnings = {}, 0, []
    for split, entries in lists.items():
        hit = 0
        for entry in entries:
            f = Path(entry) if Path(entry).is_absolute() else base / entry
            found = hashes.get(sha256_file(f), []) if f.is_file() else []
            if not found:
                parts = Path(entry).parts
                for n in range(len(parts), 0, -1):
                    cand = tails.get(tuple(parts[-n:]), [])
                    if len(cand) == 1:
                        found = cand
                        break
                    if len(cand) > 1 and n == len(parts):
                        break
            if not found:
                unmatched += 1
                continue
            hit += 1
            for i in found:
                if rows.get(ids[i], split) != split:
                    warnings.append(f"image {ids[i]} is listed in both {rows[ids[i]]} and {split}")
                rows.setdefault(ids[i], split)
        splits[split] = {"entries": len(entries), "matched": hit}
    patients = df["patient"].astype(str).tolist() if "patient" in df.columns else ids
    seen: dict[str, set[str]] = defaultdict(set)
    for pid, iid in zip(patients, ids):
        if iid in rows:
            seen[pid].add(rows[iid])
    mixed = sorted(p for p, s in seen.items() if len(s) > 1)
    if mixed:
        warnings.append(f"{len(mixed)} patient(s) have rows in more than one split (e.g. {mixed[0]}): the "
                        "deployed model's validation may have seen them")
    counts = {s: sum(1 for v in rows.values() if v == s) for s in lists}
    counts["unseen"] = len(ids) - len(rows)
    return {"status": "datalist", "splits": splits, "cohort_rows": counts, "unmatched_entries": unmatched,
            "warnings": warnings, "rows": rows}


def unknown() -> dict[str, Any]:
    return {"status": "unknown", "splits": {}, "cohort_rows": {}, "unmatched_entries": 0,
            "warnings": ["membership unknown: forget rows are presumed training members; equivalence needs "
                         "--reference; membership attacks are not evaluable; validation/test rows come from a "
                         "local patient split"], "rows": {}}
