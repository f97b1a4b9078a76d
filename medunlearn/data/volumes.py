"""Volumes from DICOM: a slice series (one file per slice) or a multi-frame file → voxels + RAS affine.

A series is identified by its SeriesInstanceUID; the cohort row names one of its files, and the other
slices are the files beside it with the same SeriesInstanceUID. Slices are ordered by their position
along the slice normal (ImagePositionPatient · (row × column direction)), not by InstanceNumber, which
scanners number in either direction. The affine maps voxel (i, j, k) = (column, row, slice) to RAS mm,
so MONAI's Orientation / Spacing transforms see the true geometry.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medunlearn.errors import DataError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _floats(value, n: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _plane(ds) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(position (3,) or None, orientation (6,) or None, pixel spacing (row, col)) of a slice or its shared group."""
    pos = _floats(ds.get("ImagePositionPatient", None) or [], 3)
    iop = _floats(ds.get("ImageOrientationPatient", None) or [], 6)
    spacing = _floats(ds.get("PixelSpacing", None) or [], 2)
    shared = ds.get("SharedFunctionalGroupsSequence", None)
    if shared:
        group = shared[0]
        if iop is None and "PlaneOrientationSequence" in group:
            iop = _floats(group.PlaneOrientationSequence[0].get("ImageOrientationPatient", []), 6)
        if spacing is None and "PixelMeasuresSequence" in group:
            spacing = _floats(group.PixelMeasuresSequence[0].get("PixelSpacing", []), 2)
    return pos, iop, spacing if spacing is not None else np.ones(2)


def _frame_positions(ds) -> list[np.ndarray | None]:
    """Per-frame ImagePositionPatient of an enhanced multi-frame object (None where absent)."""
    out = []
    for group in ds.get("PerFrameFunctionalGroupsSequence", None) or []:
        seq = group.get("PlanePositionSequence", None)
        out.append(_floats(seq[0].get("ImagePositionPatient", []), 3) if seq else None)
    return out


def slice_affine(iop: np.ndarray | None, spacing: np.ndarray, first: np.ndarray | None,
                 step: np.ndarray | None, thickness: float = 1.0) -> np.ndarray:
    """4x4 RAS affine for voxels (column, row, slice). `step`: LPS offset between consecutive slices."""
    if iop is None:
        iop = np.array([1.0, 0, 0, 0, 1.0, 0])
    x_dir, y_dir = iop[:3], iop[3:]
    normal = np.cross(x_dir, y_dir)
    if step is None or not np.linalg.norm(step) > 0:
        step = normal * (thickness if thickness > 0 else 1.0)
    lps = np.eye(4)
    lps[:3, 0] = x_dir * spacing[1]  # along a row: column spacing
    lps[:3, 1] = y_dir * spacing[0]  # down a column: row spacing
    lps[:3, 2] = step
    lps[:3, 3] = first if first is not None else 0.0
    return LPS_TO_RAS @ lps


def _pixels(ds, path: Path) -> np.ndarray:
    try:
        arr = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # missing codec, truncated pixel data, ...
        raise DataError(f"Expected decodable pixel data in {path.name}, but decoding failed "
                        f"({type(exc).__name__}: {str(exc)[:100]}).") from exc
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1) or 1) > 1:  # a colour plane: luma
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif arr.ndim == 4:
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return arr


def _thickness(ds) -> float:
    value = ds.get("SpacingBetweenSlices", None) or ds.get("SliceThickness", None)
    try:
        return float(value)
    except (TypeError, ValueError):
        return 1.0


def series_files(path: str | Path) -> list[Path]:
    """The files beside `path` that share its SeriesInstanceUID (header reads only), `path` included."""
    import pydicom

    path = Path(path)
    head = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    uid = str(head.get("SeriesInstanceUID", ""))
    if not uid:
        return [path]
    found = []
    for other in sorted(path.parent.iterdir()):
        if not other.is_file() or other.name.startswith("."):
            continue
        if other == path:
            found.append(other)
            continue
        try:
            ds = pydicom.dcmread(other, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except Exception:  # companions, non-DICOM files in the folder
            continue
        if str(ds.get("SeriesInstanceUID", "")) == uid:
            found.append(other)
    return found


def read_dicom_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (X=columns, Y=rows, Z=slices) float32 and the 4x4 RAS affine of the volume `path` belongs to.

    A multi-frame file is a volume on its own (frames along Z); a single-frame file pulls in its series.
    """
    import pydicom

    path = Path(path)
    try:
        first = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise DataError(f"Expected a readable DICOM file at {path.name}, but got {type(exc).__name__}.") from exc
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        arr = _pixels(first, path)  # (F, R, C)
        if arr.ndim == 2:
            arr = arr[None]
        pos, iop, spacing = _plane(first)
        frames = _frame_positions(first)
        step = None
        known = [f for f in frames if f is not None]
        if len(frames) == len(arr) and len(known) == len(frames) > 1:
            pos, step = known[0], (known[-1] - known[0]) / (len(known) - 1)
        return np.ascontiguousarray(arr.transpose(2, 1, 0)), slice_affine(iop, spacing, pos, step, _thickness(first))
    slices = []
    for f in series_files(path):
        ds = first if f == path else pydicom.dcmread(f, force=True)
        pos, iop, spacing = _plane(ds)
        slices.append((ds, f, pos, iop, spacing))
    iop = slices[0][3]
    normal = np.cross(iop[:3], iop[3:]) if iop is not None else np.array([0.0, 0.0, 1.0])
    if all(s[2] is not None for s in slices):
        slices.sort(key=lambda s: float(np.dot(np.asarray(s[2]), normal)))
    else:  # no positions: fall back to the scanner's instance order
        slices.sort(key=lambda s: int(s[0].get("InstanceNumber", 0) or 0))
    planes = [_pixels(s[0], s[1]) for s in slices]
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise DataError(f"Expected every slice of the series of {path.name} to share one size, "
                        f"but got {sorted(shapes)}.")
    arr = np.stack(planes, axis=0)  # (Z, R, C)
    pos0, pos1 = slices[0][2], slices[-1][2]
    step = (pos1 - pos0) / (len(slices) - 1) if len(slices) > 1 and pos0 is not None else None
    affine = slice_affine(iop, slices[0][4], pos0, step, _thickness(slices[0][0]))
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), affine
