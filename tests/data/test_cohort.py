"""Indexing: synthetic + real pydicom corpora, labels join, pseudonymisation, bad-input errors."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medunlearn.data.cohort import COHORT_COLUMNS, cohort_hash, index_archive, read_cohort, write_cohort
from medunlearn.data.deid import DEFAULT_SALT
from medunlearn.data.dicom import SkipFile, read_dicom_header
from medunlearn.data.synthetic import synthesize_cohort
from medunlearn.errors import DataError, OutputExistsError


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "cohort"
    synthesize_cohort(out, n_patients=10, seed=5, image_size=16)
    return out


def test_index_synthetic_with_labels(syn, tmp_path):
    df, rep = index_archive(syn, syn / "labels.csv", salt="s1", workers=1)
    labels = pd.read_csv(syn / "labels.csv")
    assert list(df.columns) == list(COHORT_COLUMNS) + ["measurement_mm"]
    assert rep["indexed"] == len(labels) == len(df) and rep["skipped"] == 0
    assert rep["labelled"] == len(df) and rep["unlabelled"] == 0 and rep["labels_unmatched"] == 0
    assert set(df["label"]) == {"normal", "cyst", "mass"}
    assert set(rep["by_vendor"]) <= {"Siemens", "GE", "Philips", "Canon"} and len(rep["by_vendor"]) >= 3
    assert "ScannerX" in rep["by_device"] and len(rep["by_site"]) >= 2
    assert df["patient"].str.match(r"^P-[0-9a-f]{12}$").all() and df["image_id"].is_unique
    assert df["patient"].nunique() == 10 and (df["rows"] == 16).all() and df["study_date"].str.match(r"2023-").all()
    by_uid = dict(zip(labels["path"], labels["measurement_mm"]))
    rel = df["path"].map(lambda p: Path(p).relative_to(syn.resolve()).as_posix())
    assert (df["measurement_mm"].round(2).values == rel.map(by_uid).values).all()
    assert rep["salt_source"] == "argument" and not rep["warnings"]
    # no raw patient identifiers anywhere in the written cohort
    out = write_cohort(df, tmp_path / "cohort.csv")
    text = out.read_text()
    assert "SYNTH^P" not in text and "SYN005-" not in text and "sop_instance_uid" not in text
    with pytest.raises(OutputExistsError):
        write_cohort(df, out)
    back = read_cohort(out)
    assert cohort_hash(back) == cohort_hash(df) == cohort_hash(df.sample(frac=1.0, random_state=0))
    assert back["rows"].dtype.name == "Int64" and back["measurement_mm"].dtype == float


def test_salt_changes_pseudonyms_and_parallel_matches_serial(syn, monkeypatch):
    a, _ = index_archive(syn, salt="s1", workers=1)
    b, _ = index_archive(syn, salt="salt-two", workers=1)
    assert set(a["patient"]).isdisjoint(b["patient"])
    monkeypatch.setattr("medunlearn.data.cohort.SERIAL_BELOW", 1)
    for pool in ("process", "thread"):
        c, rep = index_archive(syn, salt="s1", workers=2, pool=pool)
        assert rep["workers"] == 2 and c.equals(a)
    monkeypatch.delenv("MEDUNLEARN_SALT", raising=False)
    d, rep = index_archive(syn)
    assert rep["salt_source"] == "public-default" and "salt" in rep["warnings"][0]
    monkeypatch.setenv("MEDUNLEARN_SALT", "salt-two")
    e, rep = index_archive(syn)
    assert rep["salt_source"] == "env" and e["patient"].equals(b["patient"])
    assert DEFAULT_SALT


def test_label_join_by_path_and_extra_columns(syn, tmp_path):
    rows = pd.read_csv(syn / "labels.csv")
    part = rows.iloc[:5][["path", "label", "measurement_mm"]].assign(score=[1, 2, 3, 4, 5], note="x")
    part.to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(DataError, match="--keep-column score"):  # not a measurement: refused (issue 29 #4)
        index_archive(syn, tmp_path / "l.csv", salt="s", workers=1)
    df, rep = index_archive(syn, tmp_path / "l.csv", salt="s", workers=1, keep_columns=("score",))
    assert rep["labelled"] == 5 and rep["unlabelled"] == len(df) - 5
    assert "score" in df.columns and "note" not in df.columns and df["score"].notna().sum() == 5
    assert "measurement_mm" in df.columns  # on the allow-list: the outlier rules read it
    assert any("note" in w for w in rep["warnings"]) and any("'score' is kept" in w for w in rep["warnings"])


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    ("", "corrupt"),
    ("path,diagnosis\na,b\n", 'Did you mean|Expected a .label. column'),
    ("label,foo\nx,1\n", "sop_instance_uid' or 'path'"),
    ("path,label\nnope.dcm,cyst\n", "none of its 1 rows matches"),
])
def test_bad_labels(syn, tmp_path, content, match):
    path = tmp_path / "labels.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match):
        index_archive(syn, path, salt="s", workers=1)


def test_bad_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        index_archive(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has none"):
        index_archive(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.bin").write_bytes(b"\x00\x01hello")
    (junk / "IM0001").write_bytes(b"not dicom at all")
    with pytest.raises(DataError, match="none of 2 files"):
        index_archive(junk)
    with pytest.raises(DataError, match="does not exist"):
        read_cohort(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("image_id,path\n1,2\n")
    with pytest.raises(DataError, match="missing"):
        read_cohort(tmp_path / "bad.csv")


def _roots():
    import pydicom

    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store

        roots.append(Path(data_store.__file__).parent)
    except ImportError:
        pass
    return roots


@pytest.mark.parametrize("root", _roots(), ids=lambda p: p.parent.name)
def test_index_real_pydicom_corpora(root):
    df, rep = index_archive(root, salt="s", workers=2)
    assert rep["indexed"] == len(df) > 20 and rep["skipped"] > 5
    reasons = " ".join(s["reason"] for s in rep["skipped_files"])
    assert "not DICOM" in reasons and "duplicate image" in reasons
    assert {"GE", "Philips"} <= set(rep["by_vendor"])
    assert df["image_id"].is_unique and (df["rows"] > 0).all()
    assert not df["patient"].str.contains("^", regex=False).any()


def test_reader_skips_non_images():
    import pydicom

    files = Path(pydicom.__file__).parent / "data" / "test_files"
    with pytest.raises(SkipFile, match="DICOMDIR"):
        read_dicom_header(files / "dicomdirtests" / "DICOMDIR", "s")
    with pytest.raises(SkipFile, match="RTPLAN"):
        read_dicom_header(files / "rtplan.dcm", "s")
    row = read_dicom_header(files / "CT_small.dcm", "s")
    ds = pydicom.dcmread(files / "CT_small.dcm", stop_before_pixels=True)
    assert str(ds.PatientID) not in str(row) and str(ds.PatientName) not in str(row)
    assert row["manufacturer"] == "GE" and row["rows"] == 128 and row["study_date"].count("-") == 2
