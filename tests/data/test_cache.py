"""Disk cache of decoded, transformed images: keyed by file content + transform settings."""
from __future__ import annotations

import os

import pytest
import torch

from medunlearn.data import datasets, volumes
from medunlearn.data.cache import FINGERPRINTS, keyed_records
from medunlearn.data.cohort import index_archive
from medunlearn.data.datasets import cohort_records, load_images
from medunlearn.data.synthetic import CLASS_NAMES, synthesize_cohort
from medunlearn.data.synthetic3d import synthesize_volume_cohort
from medunlearn.errors import DataError


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "arc"
    synthesize_cohort(out, n_patients=4, seed=1, image_size=24)
    df, _ = index_archive(out, out / "labels.csv", salt="s", workers=1)
    return df


def test_second_run_reads_the_cache_not_the_files(cohort, tmp_path, monkeypatch):
    names = list(CLASS_NAMES)
    first = load_images(cohort, names, 16, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.pt"))) == len(cohort) and (tmp_path / "c" / FINGERPRINTS).is_file()

    def no_decoding(self, data):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(datasets.LoadMiddleSliced, "__call__", no_decoding)
    second = load_images(cohort, names, 16, cache_dir=tmp_path / "c")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    with pytest.raises(DataError, match="decoding failed"):  # another size is another key: it must decode (here cannot)
        load_images(cohort, names, 20, cache_dir=tmp_path / "c")


def test_keys_follow_content_and_settings(cohort, tmp_path):
    recs = cohort_records(cohort.iloc[:2], list(CLASS_NAMES))
    a = keyed_records(recs, {"image_size": 16}, tmp_path)
    assert a == keyed_records(recs, {"image_size": 16}, tmp_path)  # memoised, same keys
    assert a[0]["cache_key"] != keyed_records(recs, {"image_size": 32}, tmp_path)[0]["cache_key"]
    path = recs[0]["image"]
    data = open(path, "rb").read()
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(data)
    moved = keyed_records([{**recs[0], "image": str(copy)}], {"image_size": 16}, tmp_path)
    assert moved[0]["cache_key"] == a[0]["cache_key"]  # same bytes elsewhere: same entry
    copy.write_bytes(data[:-2] + bytes([data[-2] ^ 1, data[-1]]))
    os.utime(copy, ns=(1, 1))
    changed = keyed_records([{**recs[0], "image": str(copy)}], {"image_size": 16}, tmp_path)
    assert changed[0]["cache_key"] != a[0]["cache_key"]


def test_volume_cache(tmp_path, monkeypatch):
    synthesize_volume_cohort(tmp_path / "v", n_patients=3, seed=2, size=12, volumes_per_patient=(1, 1))
    df, _ = index_archive(tmp_path / "v", tmp_path / "v" / "labels.csv", salt="s", workers=1, unit="series")
    first = load_images(df, list(CLASS_NAMES), 12, spatial_dims=3, cache_dir=tmp_path / "c")
    monkeypatch.setattr(volumes, "read_dicom_volume", lambda p: (_ for _ in ()).throw(AssertionError("decoded")))
    second = load_images(df, list(CLASS_NAMES), 12, spatial_dims=3, cache_dir=tmp_path / "c")
    assert first[0].shape == (3, 1, 12, 12, 12) and torch.equal(first[0], second[0])
