"""PrunedPydicomReader gives MONAI's PydicomReader's metadata, affine and pixels, without serialising the dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.data import PydicomReader

from medunlearn.data.dicom_reader import KEPT_TAGS, PrunedPydicomReader

ROOT = Path(pydicom.__file__).parent / "data" / "test_files"
# grey CT/MR (several vendors and transfer syntaxes), RGB, an enhanced CT, a dose grid, a JPEG 2000 file
FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "SC_rgb_small_odd.dcm",
         "liver_1frame.dcm", "rtdose_1frame.dcm", "JPEG2000.dcm"]


def pydicom_file(name: str) -> Path:
    path = ROOT / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this pydicom")
    return path


@pytest.mark.parametrize("name", FILES)
def test_the_pruned_metadata_is_monais(name: str) -> None:
    ds = pydicom.dcmread(pydicom_file(name))
    assert PrunedPydicomReader()._get_meta_dict(ds) == PydicomReader()._get_meta_dict(ds)


def test_the_functional_group_sequences_are_kept() -> None:
    ds = pydicom.dcmread(pydicom_file("liver_1frame.dcm"))  # an enhanced CT: shared and per-frame groups
    assert {"52009229", "52009230"} <= set(PrunedPydicomReader()._get_meta_dict(ds))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm"])
def test_the_loaded_image_and_affine_match_monai(name: str) -> None:
    path = str(pydicom_file(name))
    ours_reader, monai_reader = PrunedPydicomReader(swap_ij=False), PydicomReader(swap_ij=False)
    a, meta_a = ours_reader.get_data(ours_reader.read(path))
    b, meta_b = monai_reader.get_data(monai_reader.read(path))
    assert np.array_equal(a, b) and np.array_equal(meta_a["affine"], meta_b["affine"])
    assert np.array_equal(meta_a["spacing"], meta_b["spacing"])


def test_it_never_serialises_the_whole_dataset(monkeypatch) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))

    def refuse(*args, **kwargs):
        raise AssertionError("the whole dataset was serialised")

    monkeypatch.setattr(pydicom.Dataset, "to_json_dict", refuse)
    assert set(PrunedPydicomReader()._get_meta_dict(ds)) <= set(KEPT_TAGS)
    with pytest.raises(AssertionError):  # prune_metadata=False keeps MONAI's full metadata, as asked
        PrunedPydicomReader(prune_metadata=False)._get_meta_dict(ds)
