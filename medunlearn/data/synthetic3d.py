"""A SYNTHETIC multi-vendor 3D cohort: one DICOM slice series per volume (no real patient data).

Each volume is an abdominal-MR-like block: a body ellipsoid, an organ sphere whose diameter is the
per-volume `measurement_mm`, and a class lesion ("normal": none, "cyst": dark sphere, "mass": bright
lobulated blob). Each device of `synthetic.DEVICES` stamps its signature in 3D (blur, gamma, bias field,
noise, stored range; ScannerX burns a block into every slice's corner) and writes the series its own
way, so loading has to use the geometry: Avanto and ScannerX write axial slices foot→head, SIGNA numbers
them head→foot, and Ingenia flips the row direction (ImageOrientationPatient -1, 0, 0 ...). Slice spacing
differs per device, so volumes are anisotropic until resampled. `device_class_mix` skews which device
sees which class, as in the 2D cohort, so the device is a shortcut unlearning has to remove.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from medunlearn.commit import staging_dir
from medunlearn.data.synthetic import CLASS_NAMES, DEVICES, OUTLIER_RATE, DeviceProfile, _check_mix, _dicom, _uid
from medunlearn.errors import ConfigError
from medunlearn.fileio import write_text

# Slice spacing as a multiple of the in-plane spacing, per device (anisotropic acquisitions).
SLICE_RATIO = {"MAGNETOM Avanto": 1.0, "SIGNA Explorer": 1.5, "Ingenia": 1.25, "ScannerX": 2.0}
FOV_MM = 64.0  # physical field of view along every axis (the organ is ~42 mm across)


def render_volume(rng: np.random.Generator, size: int, n_slices: int, cls: str, diameter_mm: float,
                  device: DeviceProfile) -> np.ndarray:
    """One volume as float (n_slices, size, size) = (z, y, x) in [0, 1], in physical (patient) layout."""
    sp, sz = FOV_MM / size, FOV_MM / n_slices
    zz, yy, xx = np.meshgrid(np.arange(n_slices), np.arange(size), np.arange(size), indexing="ij")
    x, y, z = (xx - (size - 1) / 2) * sp, (yy - (size - 1) / 2) * sp, (zz - (n_slices - 1) / 2) * sz  # mm
    half = FOV_MM / 2
    texture = gaussian_filter(rng.normal(0, 0.25, xx.shape), (size / 16 * sp / sz, size / 16, size / 16))
    body = (x / (0.92 * half)) ** 2 + (y / (0.78 * half)) ** 2 + (z / (0.95 * half)) ** 2 <= 1.0
    img = np.where(body, 0.28 + texture, 0.02)
    centre = rng.uniform(-0.06, 0.06, 3) * FOV_MM
    radius = diameter_mm / 2.0
    img = np.where(np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) <= radius,
                   0.55 + 0.5 * texture, img)
    if cls != "normal":
        direction = rng.normal(size=3)
        lesion = centre + direction / np.linalg.norm(direction) * rng.uniform(0, 0.35) * radius
        r_l = radius * rng.uniform(0.40, 0.55)  # larger than in 2D: a few voxels even at 16³
        dx, dy, dz = x - lesion[0], y - lesion[1], z - lesion[2]
        dist = np.sqrt(dx ** 2 + dy ** 2 + dz ** 2)
        if cls == "cyst":
            img = np.where(dist <= r_l, 0.10, img)
        else:  # lobulated: the radius varies with direction
            theta, phi = np.arctan2(dy, dx), np.arccos(np.clip(dz / np.maximum(dist, 1e-6), -1, 1))
            p1, p2 = rng.uniform(0, 2 * np.pi, 2)
            edge = r_l * (1 + 0.25 * np.sin(3 * theta + p1) * np.sin(2 * phi + p2))
            img = np.where(dist <= edge, 0.92, img)
    blur = device.blur_px * size / 64.0
    img = gaussian_filter(img, (blur * sp / sz, blur, blur))
    img = np.clip(img, 0.0, 1.0) ** device.gamma
    img = img * (1.0 + device.bias[0] * x / half + device.bias[1] * y / half)
    img = img + rng.normal(0.0, device.noise, img.shape)
    if device.burn_in:  # text-like burned-in annotation in every slice's top-left corner
        h, w = max(2, size // 10), max(4, size // 4)
        block = (np.add.outer(np.arange(h), np.arange(w)) % 3 == 0) | (np.arange(w)[None, :] % 4 == 0)
        img[:, 1:1 + h, 1:1 + w] = np.where(block, 1.0, 0.0)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def write_series(stage: Path, folder: Path, vol: np.ndarray, dev: DeviceProfile, patient: dict, seed: int,
                 key: tuple, flip_rows: bool, descending: bool) -> str:
    """Write `vol` (z, y, x) as one DICOM file per slice in the device's own layout; returns the first SOP UID."""
    from pydicom import dcmwrite

    n_slices, size, _ = vol.shape
    sp, sz = FOV_MM / size, FOV_MM / n_slices
    origin = np.array([-(size - 1) / 2 * sp, -(size - 1) / 2 * sp, -(n_slices - 1) / 2 * sz])
    (stage / folder).mkdir(parents=True, exist_ok=True)
    order = list(range(n_slices))[::-1] if descending else list(range(n_slices))
    first_sop = ""
    for number, k in enumerate(order):
        plane = vol[k]
        iop, ipp = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], origin + [0.0, 0.0, k * sz]
        if flip_rows:  # column index runs towards -x: store the plane mirrored, start at the +x edge
            plane, iop = plane[:, ::-1], [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ipp = ipp + [(size - 1) * sp, 0.0, 0.0]
        sop = _uid(seed, "slice", "-".join(map(str, (*key, k))))  # one joined part: "1","12" and "11","2" differ
        first_sop = first_sop or sop
        ds = _dicom(np.round(np.ascontiguousarray(plane) * dev.max_value), dev, patient, number, sop)
        ds.ImagePositionPatient = [round(float(v), 4) for v in ipp]
        ds.ImageOrientationPatient = iop
        ds.SliceThickness = ds.SpacingBetweenSlices = round(sz, 4)
        ds.PixelSpacing = [round(sp, 4), round(sp, 4)]
        dcmwrite(stage / folder / f"IM{number + 1:04d}{dev.extension}", ds, enforce_file_format=True)
    return first_sop


def synthesize_volume_cohort(out_dir: str | Path, n_patients: int = 120, seed: int = 0, size: int = 24,
                             volumes_per_patient: tuple[int, int] = (1, 3),
                             device_class_mix: dict[str, dict[str, float]] | None = None,
                             overwrite: bool = False) -> dict:
    """Write a synthetic 3D DICOM cohort (series of size×size slices) + labels.csv + README.txt; return a summary.

    labels.csv names each volume by its series folder. Same seed → same files byte for byte.
    """
    lo, hi = (int(v) for v in volumes_per_patient)
    if n_patients < 1 or lo < 1 or hi < lo or not 8 <= size <= 128:
        raise ConfigError("Expected n_patients >= 1, 1 <= volumes_per_patient[0] <= volumes_per_patient[1] and "
                          f"8 <= size <= 128, but got {n_patients}, {volumes_per_patient}, {size}.")
    probs = _check_mix(device_class_mix)
    rng = np.random.default_rng(seed)
    classes = [CLASS_NAMES[i % len(CLASS_NAMES)] for i in range(n_patients)]
    classes = [classes[i] for i in rng.permutation(n_patients)]
    counts: dict[str, Counter] = {"devices": Counter(), "sites": Counter(), "classes": Counter()}
    by_class: dict[str, Counter] = {d.model: Counter() for d in DEVICES}
    rows, outliers, n_files = ["path,label,measurement_mm"], 0, 0
    with staging_dir(out_dir, overwrite=overwrite) as stage:
        for k, cls in enumerate(classes):
            dev = DEVICES[int(rng.choice(len(DEVICES), p=probs[cls]))]
            n_slices = max(4, int(round(size / SLICE_RATIO.get(dev.model, 1.0))))
            base_mm = rng.normal(42.0, 4.0)
            for v in range(int(rng.integers(lo, hi + 1))):
                patient = {
                    "k": k, "name": f"SYNTH^V{k:04d}", "id": f"SYN3D{seed:03d}-{k:05d}",
                    "birth_date": f"{1940 + k % 60}0{1 + k % 9}15", "sex": "F" if k % 2 else "M",
                    "study_date": f"2023{1 + (k + v) % 12:02d}{1 + k % 28:02d}",
                    "study_uid": _uid(seed, "study3d", f"{k}-{v}"), "series_uid": _uid(seed, "series3d", f"{k}-{v}"),
                    "frame_uid": _uid(seed, "frame3d", f"{k}-{v}"), "spacing": FOV_MM / size,
                }
                outlier = rng.random() < OUTLIER_RATE
                mm = rng.uniform(62.0, 74.0) if outlier else base_mm + rng.normal(0.0, 1.5)
                vol = render_volume(rng, size, n_slices, cls, mm, dev)
                folder = Path(dev.site.split()[1].lower()) / f"case{k:04d}" / f"series{v + 1}"
                write_series(stage, folder, vol, dev, patient, seed, (k, v), flip_rows=dev.model == "Ingenia",
                             descending=dev.model == "SIGNA Explorer")
                rows.append(f"{folder.as_posix()},{cls},{mm:.2f}")
                outliers += int(outlier)
                n_files += n_slices
                counts["devices"][dev.model] += 1
                counts["sites"][dev.site] += 1
                counts["classes"][cls] += 1
                by_class[dev.model][cls] += 1
        write_text(stage / "labels.csv", "\n".join(rows) + "\n")
        write_text(stage / "README.txt", _readme(seed, n_patients, len(rows) - 1, size))
    return {
        "out_dir": str(Path(out_dir)), "seed": seed, "n_patients": n_patients, "n_volumes": len(rows) - 1,
        "n_images": len(rows) - 1, "n_files": n_files, "size": size, "spatial_dims": 3,
        "classes": dict(counts["classes"]), "devices": dict(counts["devices"]), "sites": dict(counts["sites"]),
        "device_by_class": {d: dict(c) for d, c in by_class.items()}, "outliers": outliers,
    }


def _readme(seed: int, n_patients: int, n_volumes: int, size: int) -> str:
    devices = "\n".join(f"  - {d.model} ({d.manufacturer}) at {d.site}, slice spacing x{SLICE_RATIO[d.model]}"
                        + (" [burned-in marker]" if d.burn_in else "") for d in DEVICES)
    return (
        "SYNTHETIC DATA - NOT PATIENT DATA\n\n"
        f"Generated by medunlearn.data.synthetic3d (seed {seed}): {n_patients} fake patients, {n_volumes} volumes "
        f"of {size}x{size} slices, one DICOM file per slice.\n"
        "Every patient name, id, birth date and UID is invented. Classes: " + ", ".join(CLASS_NAMES) + ".\n"
        "labels.csv: path (series folder, relative to this folder), label, measurement_mm (organ diameter).\n"
        "Index with: medunlearn cohort index <this folder> --labels <this folder>/labels.csv --volumes\n"
        f"Devices:\n{devices}\n"
    )
