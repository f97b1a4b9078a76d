"""NIfTI header scan (nibabel, header only) joined with an optional BIDS JSON sidecar → cohort row.

NIfTI carries no scanner or patient tags, so device / site come from the sidecar (BIDS keys
Manufacturer, ManufacturersModelName, InstitutionName, StationName, DeviceSerialNumber) and the
patient from the BIDS `sub-<label>` path entity, else the sidecar's PatientID, else the file itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medunlearn.data.dicom import SkipFile, pseudonym
from medunlearn.data.vendors import normalise_manufacturer

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MODEL_KEYS = ("ManufacturersModelName", "ManufacturerModelsName", "ManufacturerModelName")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def sidecar_path(path: str | Path) -> Path:
    """x.nii.gz / x.nii → x.json beside it."""
    path = Path(path)
    stem = path.name[:-7] if path.name.lower().endswith(".nii.gz") else path.name[:-4]
    return path.with_name(stem + ".json")


def _sidecar(path: Path) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # a broken sidecar loses metadata, not the image
    return data if isinstance(data, dict) else {}


def _entity(parts: tuple[str, ...], key: str) -> str:
    """The BIDS entity value `key-<value>` from any path component, or ""."""
    for part in parts:
        for chunk in part.split("_"):
            if chunk.startswith(f"{key}-"):
                return chunk[len(key) + 1:]
    return ""


def _clean(value: object) -> str:
    return " ".join(str(value).replace(",", " ").split()) if value is not None else ""


def read_nifti_header(path: str | Path, salt: str, root: str | Path | None = None) -> dict:
    """Header-only read of a .nii / .nii.gz file → cohort row dict (same keys as read_dicom_header).

    rows, cols = the first two voxel axes; frames = the product of the rest (slices × volumes).
    """
    import nibabel as nib

    path = Path(path)
    try:
        header: Any = nib.load(str(path)).header  # lazy: reads the header, not the voxels (a NIfTI header)
        shape = tuple(int(s) for s in header.get_data_shape())
        zooms = tuple(float(z) for z in header.get_zooms())
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, gzip errors ...
        raise SkipFile(f"unreadable NIfTI ({type(exc).__name__})") from exc
    if len(shape) < 2 or min(shape[:2]) <= 0:
        raise SkipFile(f"not an image (NIfTI shape {shape})")
    side = _sidecar(path)
    rel = path.relative_to(root).as_posix() if root is not None else path.name
    parts = Path(rel).parts
    subject = _entity(parts, "sub")
    session = _entity(parts, "ses")
    patient_key = f"sub-{subject}" if subject else _clean(side.get("PatientID")) or f"path:{rel}"
    manufacturer_raw = _clean(side.get("Manufacturer"))
    model = next((_clean(side[k]) for k in _MODEL_KEYS if side.get(k)), "")
    frames = 1
    for s in shape[2:]:
        frames *= max(int(s), 1)
    date = _clean(side.get("AcquisitionDateTime") or side.get("StudyDate") or "")
    digits = date.replace("-", "")[:8]
    return {
        "image_id": pseudonym("I", f"path:{rel}", salt, 16),
        "path": str(path.resolve()),
        "format": "nifti",
        "patient": pseudonym("P", patient_key, salt),
        "study": pseudonym("S", f"{patient_key}/ses-{session}", salt) if session else "",
        "device": model or normalise_manufacturer(manufacturer_raw),
        "manufacturer": normalise_manufacturer(manufacturer_raw),
        "manufacturer_raw": manufacturer_raw,
        "site": _clean(side.get("InstitutionName")),
        "station": _clean(side.get("StationName")),
        "serial": _clean(side.get("DeviceSerialNumber")),
        "modality": _clean(side.get("Modality")).upper(),
        "body_part": _clean(side.get("BodyPart") or side.get("BodyPartExamined")).upper(),
        "study_date": f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}" if len(digits) == 8 and digits.isdigit() else "",
        "rows": shape[0],
        "cols": shape[1],
        "frames": frames,
        "spacing_row": f"{zooms[0]:g}" if len(zooms) > 0 else "",
        "spacing_col": f"{zooms[1]:g}" if len(zooms) > 1 else "",
        "synthetic": "",
        "sop_instance_uid": "",
        "series_instance_uid": "",
        "slice_position": None,
    }
