"""DICOM header scan → one pseudonymised cohort row. Raw PatientID / PatientName never leave this file.

Only headers are read (`stop_before_pixels=True`), so indexing an archive costs a fraction of
decoding it. Files that are not images (RTSTRUCT, SR, DICOMDIR, ...) or not DICOM raise `SkipFile`
with a reason; the indexer lists them in its ingest report.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from medunlearn.data.vendors import normalise_manufacturer

# Modalities whose objects carry no diagnostic image (or whose pixels are not one: dose grids, masks).
NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "RTIMAGE_PLAN", "SR", "KO", "PR",
                                  "SEG", "REG", "DOC", "FID", "PLAN", "ECG", "HD", "AU", "RWV"})
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# A preamble-less DICOM stream starts with a group 0002 or 0008 tag (either byte order).
_BARE_DICOM_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


class SkipFile(Exception):
    """A file the indexer skips; `reason` is one short line for the ingest report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def pseudonym(prefix: str, value: str, salt: str, length: int = 12) -> str:
    """Salted sha256 pseudonym, e.g. pseudonym("P", "12345", salt) -> "P-3fa9c0d1e2b4"."""
    digest = hashlib.sha256(f"{salt}\0{prefix}\0{value}".encode()).hexdigest()
    return f"{prefix}-{digest[:length]}"


def _text(ds, keyword: str) -> str:
    """A header value as one clean line ("" when absent); multi-valued strings are joined with '\\'."""
    value = ds.get(keyword, None)
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return " ".join(str(value).replace(",", " ").split())


def _date(value: str) -> str:
    digits = value.strip()[:8]
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}" if len(digits) == 8 and digits.isdigit() else ""


def _spacing(ds) -> tuple[str, str]:
    """PixelSpacing, else ImagerPixelSpacing, else the enhanced multi-frame shared functional group."""
    values = ds.get("PixelSpacing", None) or ds.get("ImagerPixelSpacing", None)
    if values is None:
        try:
            values = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError, TypeError):
            values = None
    try:
        return f"{float(values[0]):g}", f"{float(values[1]):g}"
    except (TypeError, ValueError, IndexError):
        return "", ""


def _clip(text: str, limit: int = 100) -> str:
    """One line of at most ~`limit` characters, cut at a word boundary (never mid-word)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _read(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass  # no 128-byte preamble + "DICM": maybe a bare stream (old ACR-NEMA style exports)
    except Exception as exc:  # pydicom raises many types on truncated / corrupt files
        detail = _clip(str(exc).replace(str(path), "<file>"))
        raise SkipFile(f"unreadable DICOM ({type(exc).__name__}: {detail})") from exc
    with open(path, "rb") as f:
        head = f.read(2)
    if head not in _BARE_DICOM_STARTS:
        raise SkipFile("not DICOM (no DICM marker)")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:
        raise SkipFile(f"not DICOM ({type(exc).__name__})") from exc
    if "SOPClassUID" not in ds and "Rows" not in ds:
        raise SkipFile("not DICOM (no SOP class or image tags)")
    return ds


def read_dicom_header(path: str | Path, salt: str, root: str | Path | None = None) -> dict:
    """Header-only read of one DICOM file → cohort row dict (see docs/ARCHITECTURE.md).

    `root` is the archive folder, used for the path-based image_id fallback. The row also carries
    `sop_instance_uid` for the label join and `series_instance_uid` / `slice_position` for grouping a
    series into a volume; the indexer drops them before the cohort is written.
    Raises SkipFile for non-DICOM, non-image or unreadable files.
    """
    path = Path(path)
    ds = _read(path)
    sop_class = _text(ds, "SOPClassUID") or _text(ds.get("file_meta", {}), "MediaStorageSOPClassUID")
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise SkipFile("DICOMDIR (a media index, not an image)")
    modality = _text(ds, "Modality").upper()
    if modality in NON_IMAGE_MODALITIES:
        raise SkipFile(f"not an image (Modality {modality})")
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise SkipFile(f"unreadable image size ({exc})") from exc
    if rows <= 0 or cols <= 0:
        raise SkipFile("no pixel data (no Rows/Columns)")
    rel = path.relative_to(root).as_posix() if root is not None else path.name
    sop = _text(ds, "SOPInstanceUID")
    study_uid = _text(ds, "StudyInstanceUID")
    patient_key = _text(ds, "PatientID") or _text(ds, "PatientName") or study_uid or rel
    manufacturer_raw = _text(ds, "Manufacturer")
    spacing_row, spacing_col = _spacing(ds)
    return {
        "image_id": pseudonym("I", sop or f"path:{rel}", salt, 16),
        "path": str(path.resolve()),
        "format": "dicom",
        "patient": pseudonym("P", patient_key, salt),
        "study": pseudonym("S", study_uid, salt) if study_uid else "",
        "device": _text(ds, "ManufacturerModelName") or normalise_manufacturer(manufacturer_raw),
        "manufacturer": normalise_manufacturer(manufacturer_raw),
        "manufacturer_raw": manufacturer_raw,
        "site": _text(ds, "InstitutionName"),
        "station": _text(ds, "StationName"),
        "serial": _text(ds, "DeviceSerialNumber"),
        "modality": modality,
        "body_part": _text(ds, "BodyPartExamined").upper(),
        "study_date": _date(_text(ds, "StudyDate") or _text(ds, "SeriesDate") or _text(ds, "ContentDate")),
        "rows": rows,
        "cols": cols,
        "frames": frames,
        "spacing_row": spacing_row,
        "spacing_col": spacing_col,
        "synthetic": "true" if _is_synthetic(ds) else "",
        "sop_instance_uid": sop,
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "slice_position": _slice_position(ds),
    }


def _slice_position(ds) -> float | None:
    """ImagePositionPatient projected on the slice normal (mm), for ordering a series; None when absent."""
    try:
        pos = [float(v) for v in ds.ImagePositionPatient]
        iop = [float(v) for v in ds.ImageOrientationPatient]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(pos) != 3 or len(iop) != 6:
        return None
    nx = iop[1] * iop[5] - iop[2] * iop[4]
    ny = iop[2] * iop[3] - iop[0] * iop[5]
    nz = iop[0] * iop[4] - iop[1] * iop[3]
    return pos[0] * nx + pos[1] * ny + pos[2] * nz


def _is_synthetic(ds) -> bool:
    """True for images that declare themselves synthetic (ImageType or DeidentificationMethod say so)."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return "SYNTHETIC" in image_type or _text(ds, "DeidentificationMethod").upper().startswith("SYNTHETIC")
