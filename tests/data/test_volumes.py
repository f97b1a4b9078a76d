"""3D data path: DICOM series geometry, series grouping in the cohort, the synthetic 3D cohort, real volumes."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medunlearn.data.cohort import index_archive
from medunlearn.data.datasets import load_images, make_transforms
from medunlearn.data.synthetic import DEVICES
from medunlearn.data.synthetic3d import synthesize_volume_cohort, write_series
from medunlearn.data.volumes import read_dicom_volume
from medunlearn.errors import DataError
from medunlearn.workflow.cohort_checks import cohort_spatial_dims

PATIENT = {"k": 0, "name": "SYNTH^T", "id": "SYN-T", "birth_date": "19500101", "sex": "F",
           "study_date": "20230101", "study_uid": "1.2.826.0.1.9", "series_uid": "", "frame_uid": "1.2.826.0.1.8",
           "spacing": 8.0}


def _write(root: Path, name: str, vol: np.ndarray, flip_rows: bool, descending: bool, uid: str) -> Path:
    write_series(root, Path(name), vol, DEVICES[0], {**PATIENT, "series_uid": uid}, 0, (name,), flip_rows, descending)
    return root / name


@pytest.fixture(scope="module")
def volume():
    vol = np.random.default_rng(0).uniform(0.0, 1.0, (6, 8, 8)).astype(np.float32)
    vol[0, 0, 0] = 1.0
    return vol


def test_series_geometry_every_encoding_loads_the_same_volume(tmp_path, volume):
    """Row-flipped orientation and head-to-foot numbering are undone by the affine + RAS orientation."""
    encodings = [(False, False), (True, False), (False, True), (True, True)]
    folders = [_write(tmp_path, f"s{i}", volume, f, d, f"1.2.826.0.1.7.{i}") for i, (f, d) in enumerate(encodings)]
    raw = [read_dicom_volume(sorted(folder.iterdir())[3])[0] for folder in folders]
    assert raw[0].shape == (8, 8, 6)  # (columns, rows, slices)
    assert not np.allclose(raw[0], raw[1])  # the flipped encoding really stores mirrored pixels
    t = make_transforms(8, 1, spatial_dims=3)
    out = [t({"image": str(sorted(f.iterdir())[3]), "format": "dicom", "label": 0})["image"] for f in folders]
    assert out[0].shape == (1, 8, 8, 8) and out[0].dtype == torch.float32
    for other in out[1:]:
        assert torch.allclose(out[0], other, atol=1e-6)
    # slices ascend along z in patient space: RAS slice 0 is the first slice written (lowest position)
    affine = read_dicom_volume(folders[2] / "IM0001.dcm")[1]
    assert affine[2, 2] > 0 and affine[2, 3] == pytest.approx(-2.5 * 64.0 / 6, abs=1e-3)


def test_two_series_in_one_folder_stay_apart(tmp_path, volume):
    _write(tmp_path, "a", volume, False, False, "1.2.826.0.1.6.1")
    vol2 = volume[:4] * 0.5
    write_series(tmp_path, Path("a"), vol2, DEVICES[1], {**PATIENT, "series_uid": "1.2.826.0.1.6.2"}, 0,
                 ("b",), False, False)  # SIGNA writes IM0001 (no extension): a second series beside the first
    (tmp_path / "a" / "notes.bin").write_bytes(b"not dicom")  # a stray file in the series folder is ignored
    df, rep = index_archive(tmp_path, salt="s", workers=1, unit="series")
    assert sorted(df["frames"].tolist()) == [4, 6]
    assert df["image_id"].nunique() == 2 and rep["unit"] == "series"
    x, _ = load_images(df.sort_values("frames").assign(label="a"), ["a"], 8, spatial_dims=3)
    assert x.shape == (2, 1, 8, 8, 8)
    assert float(x[0].mean()) != pytest.approx(float(x[1].mean()), abs=1e-3)  # each row loads its own series
    with pytest.raises(DataError, match="unit"):
        index_archive(tmp_path, salt="s", workers=1, unit="volume")


def test_synthetic_3d_cohort_indexes_one_row_per_volume(tmp_path):
    summary = synthesize_volume_cohort(tmp_path / "c", n_patients=6, seed=3, size=12)
    assert summary["spatial_dims"] == 3 and summary["n_volumes"] >= 6
    df, rep = index_archive(tmp_path / "c", tmp_path / "c" / "labels.csv", salt="s", workers=1, unit="series")
    assert len(df) == summary["n_volumes"] and rep["skipped"] == 0 and rep["unlabelled"] == 0
    assert set(df["label"]) <= {"normal", "cyst", "mass"} and (df["frames"] >= 6).all()
    assert (df["synthetic"] == "true").all() and cohort_spatial_dims(df) == 3
    assert df["measurement_mm"].between(30, 80).all()
    flat, _ = index_archive(tmp_path / "c", tmp_path / "c" / "labels.csv", salt="s", workers=1)
    assert len(flat) == summary["n_files"] and cohort_spatial_dims(flat) == 2
    x, y = load_images(df, ["normal", "cyst", "mass"], 12, spatial_dims=3)
    assert x.shape == (len(df), 1, 12, 12, 12) and float(x.min()) >= 0 and float(x.max()) <= 1
    # same seed, same bytes
    again = synthesize_volume_cohort(tmp_path / "d", n_patients=6, seed=3, size=12)
    assert again["n_files"] == summary["n_files"]
    a = sorted((tmp_path / "c").rglob("IM0002*"))[0]
    assert a.read_bytes() == (tmp_path / "d" / a.relative_to(tmp_path / "c")).read_bytes()


def test_real_volumes_multiframe_dicom_and_nifti(tmp_path):
    """pydicom-data's 10-frame enhanced MR and nibabel's anatomical / 4D NIfTI load as volumes."""
    data_store = pytest.importorskip("data_store")
    emri = Path(data_store.__file__).parent / "data" / "emri_small.dcm"
    nib_data = Path(nib.__file__).parent / "tests" / "data"
    picks = [p for p in (emri, nib_data / "anatomical.nii", nib_data / "example4d.nii.gz") if p.is_file()]
    if len(picks) < 2:
        pytest.skip("pydicom-data / nibabel test volumes not installed")
    for i, p in enumerate(picks):
        (tmp_path / f"v{i}").mkdir()
        (tmp_path / f"v{i}" / p.name).symlink_to(p)
    df, rep = index_archive(tmp_path, salt="s", workers=1, unit="series")
    assert rep["indexed"] == len(picks) and (df["frames"] > 1).all()
    if emri in picks:
        assert int(df.loc[df["path"].str.endswith("emri_small.dcm"), "frames"].iloc[0]) == 10
    x, _ = load_images(df.assign(label="any"), ["any"], 16, spatial_dims=3)
    assert x.shape == (len(picks), 1, 16, 16, 16) and torch.isfinite(x).all()
    assert (x.amax(dim=(1, 2, 3, 4)) > 0.3).all() and (x.flatten(1).std(1) > 0.05).all()
    arr, affine = read_dicom_volume(emri) if emri in picks else (np.zeros((1, 1, 1)), np.eye(4))
    assert arr.shape[2] in (1, 10) and np.isfinite(affine).all()
