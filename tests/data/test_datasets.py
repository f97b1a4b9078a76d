"""MONAI data path: records, transforms and batch shapes for synthetic and real DICOM / NIfTI files."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medunlearn.data.cohort import index_archive
from medunlearn.data.datasets import cohort_records, load_images, make_dataset, middle_grey_2d
from medunlearn.data.synthetic import CLASS_NAMES, synthesize_cohort
from medunlearn.errors import DataError


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "cohort"
    synthesize_cohort(out, n_patients=6, seed=2, image_size=32)
    df, _ = index_archive(out, out / "labels.csv", salt="s", workers=1)
    return df


def test_synthetic_batch_shapes(cohort):
    x, y = load_images(cohort, list(CLASS_NAMES), 16)
    assert x.shape == (len(cohort), 1, 16, 16) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.amax(dim=(1, 2, 3)).min()) > 0.6
    expected = [list(CLASS_NAMES).index(c) for c in cohort["label"]]
    assert y.tolist() == expected
    ds = make_dataset(cohort_records(cohort.iloc[:4], list(CLASS_NAMES)), 24, cache=True, in_channels=3)
    item = ds[0]
    assert tuple(item["image"].shape) == (3, 24, 24) and torch.equal(item["image"][0], item["image"][2])


def test_real_pydicom_files_grey_and_multiframe():
    """Grey CT/MR, an RGB secondary capture and a 10-frame enhanced MR all come out (N, 1, 32, 32)."""
    import pydicom

    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    data_store = pytest.importorskip("data_store")
    roots.append(Path(data_store.__file__).parent / "data")
    wanted = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm", "emri_small.dcm"]
    frames = []
    for root in roots:
        df, _ = index_archive(root, salt="s", workers=1)
        frames.append(df[df["path"].map(lambda p: Path(p).name).isin(wanted)])
    import pandas as pd

    pick = pd.concat(frames, ignore_index=True).assign(label="any")
    assert sorted(pick["path"].map(lambda p: Path(p).name)) == sorted(wanted)
    assert pick.set_index(pick["path"].map(lambda p: Path(p).name)).loc["emri_small.dcm", "frames"] == 10
    x, y = load_images(pick, ["any"], 32)
    assert x.shape == (4, 1, 32, 32) and (y == 0).all()
    assert torch.isfinite(x).all() and (x.amax(dim=(1, 2, 3)) > 0.5).all()


def test_nifti_middle_slice(tmp_path):
    vol = np.zeros((12, 10, 7), dtype=np.float32)
    vol[:, :, 3] = np.arange(120).reshape(12, 10)  # only the middle slice has signal
    path = tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    (path.parent / "sub-01_T1w.json").write_text('{"Manufacturer": "GE Healthcare", "ManufacturersModelName": "Premier"}')
    df, rep = index_archive(tmp_path, salt="s", workers=1)
    assert rep["indexed"] == 1 and rep["ignored"] == 1
    row = df.iloc[0]
    assert (row["format"], row["device"], row["manufacturer"], row["frames"]) == ("nifti", "Premier", "GE", 7)
    df["label"] = "a"
    x, _ = load_images(df, ["a"], 8)
    assert x.shape == (1, 1, 8, 8) and float(x.max()) > 0.9


def test_middle_grey_layouts():
    rgb = torch.zeros(6, 5, 3)
    rgb[..., 1] = 1.0
    assert torch.allclose(middle_grey_2d(rgb, "dicom"), torch.full((6, 5), 0.587))
    frames = torch.arange(3).float()[:, None, None].expand(3, 6, 5)
    assert torch.equal(middle_grey_2d(frames, "dicom"), torch.ones(6, 5))
    assert middle_grey_2d(torch.zeros(4, 6, 5, 3), "dicom").shape == (6, 5)


def test_bad_labels_and_undecodable(cohort):
    bad = cohort.iloc[:2].copy()
    bad["label"] = "cysts"
    with pytest.raises(DataError, match='Did you mean "cyst"'):
        cohort_records(bad, list(CLASS_NAMES))
    broken = cohort.iloc[:1].copy()
    broken["path"] = __file__
    with pytest.raises(DataError, match="Expected decodable pixel data"):
        load_images(broken, list(CLASS_NAMES), 8)
