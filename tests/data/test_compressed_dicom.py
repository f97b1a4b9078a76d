"""Compressed DICOM (JPEG Lossless, JPEG 2000 lossless) decodes through the project's loader (pylibjpeg)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from medunlearn.data.cohort import index_archive
from medunlearn.data.datasets import load_images

pydicom = pytest.importorskip("pydicom")
data_store = pytest.importorskip("data_store")  # pydicom-data: holds JPEG-LL.dcm
ROOTS = [Path(pydicom.__file__).parent / "data" / "test_files", Path(data_store.__file__).parent / "data"]
JPEG_LOSSLESS, JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90"


def pydicom_file(name: str) -> Path:
    """A pydicom test file found by globbing its folders (get_testdata_files() may try the network)."""
    hits = [p for root in ROOTS for p in root.glob(name)]
    assert hits, f"{name} not found under {ROOTS}"
    return hits[0]


def cohort_of(files: dict[str, Path], tmp: Path) -> pd.DataFrame:
    """Index each file in its own archive (copies of one image share a SOPInstanceUID and would be deduplicated)."""
    frames = []
    for key, path in files.items():
        archive = tmp / key
        archive.mkdir()
        shutil.copy(path, archive / path.name)
        df, report = index_archive(archive, salt="s", workers=1)
        assert report["indexed"] == 1, report["skipped_files"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True).assign(label="any")


@pytest.mark.parametrize("name, syntax", [("JPEG-LL.dcm", JPEG_LOSSLESS),
                                          ("MR_small_jp2klossless.dcm", JPEG2000_LOSSLESS)])
def test_compressed_file_loads_like_its_decompressed_copy(tmp_path, name, syntax):
    src = pydicom_file(name)
    ds = pydicom.dcmread(src)
    assert ds.file_meta.TransferSyntaxUID == syntax  # really compressed
    ds.decompress()  # pydicom's own decode, written back as explicit-VR little endian
    plain = tmp_path / "plain.dcm"
    ds.save_as(plain)
    x, y = load_images(cohort_of({"compressed": src, "plain": plain}, tmp_path), ["any"], 48)
    assert x.shape == (2, 1, 48, 48) and y.tolist() == [0, 0]
    assert float(x[0].std()) > 0.05  # real anatomy, not a blank frame
    assert torch.equal(x[0], x[1])


def test_jpeg2000_lossless_equals_the_uncompressed_original(tmp_path):
    files = {"original": pydicom_file("MR_small.dcm"), "j2k": pydicom_file("MR_small_jp2klossless.dcm")}
    x, _ = load_images(cohort_of(files, tmp_path), ["any"], 32)
    assert torch.equal(x[0], x[1])
