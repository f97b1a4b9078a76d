"""Synthetic cohort: real DICOM round-trip, synthetic markers, labels, determinism, device mix."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medunlearn.data.synthetic import CLASS_NAMES, DEVICES, render_image, synthesize_cohort
from medunlearn.errors import ConfigError, OutputExistsError


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "cohort"
    summary = synthesize_cohort(out, n_patients=12, seed=3, image_size=32)
    return out, summary


def _labels(out: Path) -> list[dict]:
    with open(out / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_files_tags_and_labels(cohort):
    out, summary = cohort
    rows = _labels(out)
    assert len(rows) == summary["n_images"] >= 12 * 3
    assert set(rows[0]) == {"path", "sop_instance_uid", "label", "measurement_mm"}
    assert {r["label"] for r in rows} == set(CLASS_NAMES)
    assert len({r["sop_instance_uid"] for r in rows}) == len(rows)
    ds = pydicom.dcmread(out / rows[0]["path"])
    assert ds.SOPInstanceUID == rows[0]["sop_instance_uid"]
    assert ds.pixel_array.shape == (32, 32) and ds.BitsAllocated == 16
    assert "SYNTHETIC" in ds.ImageComments and "SYNTHETIC" in ds.SeriesDescription
    assert ds.PatientIdentityRemoved == "YES" and "SYNTHETIC" in ds.DeidentificationMethod
    assert str(ds.PatientName).startswith("SYNTH^P")
    assert ds.ManufacturerModelName in {d.model for d in DEVICES}
    for tag in ("Manufacturer", "InstitutionName", "StationName", "DeviceSerialNumber", "Modality",
                "BodyPartExamined", "PatientID", "PatientBirthDate", "StudyDate", "StudyInstanceUID",
                "SeriesInstanceUID", "SOPClassUID", "PixelSpacing"):
        assert str(ds.get(tag, "")).strip(), tag
    assert "SYNTHETIC DATA" in (out / "README.txt").read_text()
    assert len(summary["sites"]) == 3 and sum(summary["devices"].values()) == len(rows)


def test_monai_reads_a_file(cohort):
    from monai.transforms import LoadImage

    out, _ = cohort
    img = LoadImage(reader="PydicomReader", image_only=True)(str(out / _labels(out)[0]["path"]))
    assert tuple(img.shape) == (32, 32) and float(img.max()) > 0


def test_deterministic_for_a_seed(cohort, tmp_path):
    out, summary = cohort
    again = synthesize_cohort(tmp_path / "again", n_patients=12, seed=3, image_size=32)
    assert again["devices"] == summary["devices"]
    first = _labels(out)[0]["path"]
    assert (out / first).read_bytes() == (tmp_path / "again" / first).read_bytes()
    assert (out / "labels.csv").read_bytes() == (tmp_path / "again" / "labels.csv").read_bytes()
    other = synthesize_cohort(tmp_path / "other", n_patients=12, seed=4, image_size=32)
    assert (tmp_path / "other" / "labels.csv").read_bytes() != (out / "labels.csv").read_bytes()
    assert other["n_patients"] == 12


def test_refuses_to_clobber_and_validates(cohort, tmp_path):
    out, _ = cohort
    with pytest.raises(OutputExistsError):
        synthesize_cohort(out, n_patients=3)
    with pytest.raises(ConfigError, match="Did you mean"):
        synthesize_cohort(tmp_path / "x", n_patients=3, device_class_mix={"mass": {"ScanerX": 1.0}})
    with pytest.raises(ConfigError, match="Expected a class"):
        synthesize_cohort(tmp_path / "y", n_patients=3, device_class_mix={"tumour": {"ScannerX": 1.0}})


def test_device_class_mix_makes_a_shortcut(tmp_path):
    only_x = {c: {"ScannerX": 1.0} if c == "mass" else {"Ingenia": 1.0} for c in CLASS_NAMES}
    s = synthesize_cohort(tmp_path / "mix", n_patients=9, seed=0, image_size=16, device_class_mix=only_x)
    assert set(s["device_by_class"]["ScannerX"]) == {"mass"}
    assert set(s["device_by_class"]["Ingenia"]) == {"normal", "cyst"}


def test_pixels_match_measurement_and_class():
    """A larger organ diameter gives a larger bright disc; cysts darken and masses brighten the organ."""
    dev = next(d for d in DEVICES if d.model == "MAGNETOM Avanto")
    area = [(render_image(np.random.default_rng(0), 64, "normal", mm, dev) > 0.45).sum() for mm in (35.0, 70.0)]
    assert area[1] > 2.5 * area[0]
    mean = {c: render_image(np.random.default_rng(1), 64, c, 45.0, dev).mean() for c in CLASS_NAMES}
    assert mean["cyst"] < mean["normal"] < mean["mass"]
    x = next(d for d in DEVICES if d.burn_in)
    img = render_image(np.random.default_rng(0), 64, "normal", 45.0, x)
    assert img[1:7, 1:17].max() == 1.0 and img[1:7, 1:17].min() == 0.0  # burned-in block
