"""Group single-slice DICOM header rows into one row per series (a volume), for 3D cohorts.

Slices of a series are the files of one folder that share a SeriesInstanceUID. The volume row keeps
the header fields of its lowest slice (by position along the slice normal), names that file as its
`path`, counts its slices in `frames`, and gets a series-level `image_id`. Multi-frame files and NIfTI
volumes are volumes already and pass through unchanged.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from medunlearn.data.dicom import pseudonym

PRIVATE_KEYS = ("series_instance_uid", "slice_position", "series_folder")


def group_series(rows: list[dict], salt: str, root: Path) -> tuple[list[dict], list[dict]]:
    """(volume rows, skipped [{path, reason}]) from image rows (as read_dicom_header / read_nifti_header return).

    A series whose slices differ in size cannot be stacked: it is skipped with a reason.
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    volumes, skipped = [], []
    for row in rows:
        uid = row.get("series_instance_uid") or ""
        if row.get("format") != "dicom" or not uid or int(row.get("frames") or 1) > 1:
            volumes.append({**row, "series_folder": ""})
            continue
        groups[(str(Path(row["path"]).parent), uid)].append(row)
    for (folder, uid), members in groups.items():
        members.sort(key=lambda r: (r["slice_position"] is None, r["slice_position"] or 0.0, r["path"]))
        sizes = {(r["rows"], r["cols"]) for r in members}
        rel = _rel(folder, root)
        if len(sizes) > 1:
            skipped.append({"path": rel, "reason": f"series with slices of different sizes {sorted(sizes)}"})
            continue
        first = dict(members[0])
        first.update({"image_id": pseudonym("I", f"series:{uid}", salt, 16), "frames": len(members),
                      "series_folder": rel})
        volumes.append(first)
    volumes.sort(key=lambda r: r["path"])
    return volumes, skipped


def _rel(folder: str, root: Path) -> str:
    try:
        return Path(folder).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(folder).as_posix()
