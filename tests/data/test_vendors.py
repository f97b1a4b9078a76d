"""Vendor normalisation on the spellings real archives (and the pydicom test corpora) carry."""
from __future__ import annotations

import pytest

from medunlearn.data.vendors import known_families, normalise_manufacturer


@pytest.mark.parametrize("raw, family", [
    ("GE MEDICAL SYSTEMS", "GE"), ("G.E. Medical Systems", "GE"), ("GE Medical Systems", "GE"),
    ("GE Healthcare", "GE"), ("GE Healthcare Japan", "GE"), ("GE", "GE"),
    ("Philips", "Philips"), ("Philips Medical Systems", "Philips"), ("Philips Medical Systems, Inc.", "Philips"),
    ("PMS", "Philips"), ("Philips Healthcare", "Philips"),
    ("SIEMENS", "Siemens"), ("Siemens Healthineers", "Siemens"), ("Siemens AG", "Siemens"),
    ("TOSHIBA_MEC", "Canon"), ("Canon Medical Systems", "Canon"),
    ("FUJI PHOTO FILM CO. LTD.", "Fujifilm"), ("Agfa-Gevaert AG", "Agfa"), ("ALOKA CO., LTD.", "Aloka"),
    ("HOLOGIC, Inc.", "Hologic"), ("Carestream Health", "Carestream"), ("KODAK", "Carestream"),
    ("Hitachi Medical Corporation", "Hitachi"), ("SAMSUNG MEDISON CO., LTD.", "Samsung"),
    ("SonoSite, Inc.", "SonoSite"),
])
def test_known_spellings_map_to_family(raw, family):
    assert normalise_manufacturer(raw) == family
    assert family in known_families()


def test_ge_is_a_token_not_a_substring():
    # "Agfa-Gevaert" and "Kuratorium OFFIS" contain "ge"/"is" fragments but are not GE.
    assert normalise_manufacturer("Agfa-Gevaert AG") == "Agfa"
    assert normalise_manufacturer("Genesis Imaging") == "Genesis Imaging"


def test_unknown_and_blank():
    assert normalise_manufacturer("  Acme   Medical Devices ") == "Acme Medical Devices"
    assert normalise_manufacturer("MORTARA INSTRUMENT") == "Mortara Instrument"
    assert normalise_manufacturer("") == ""
    assert normalise_manufacturer("   ") == ""
    assert normalise_manufacturer(None) == ""


def test_real_spellings_in_pydicom_corpora(pydicom_roots):
    """Every Manufacturer value in the pydicom test corpora maps to a family or a cleaned raw name."""
    import pydicom

    seen = {}
    for root in pydicom_roots:
        for path in (p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")):
            try:
                raw = str(pydicom.dcmread(path, stop_before_pixels=True).get("Manufacturer", "") or "")
            except Exception:
                continue
            seen[raw] = normalise_manufacturer(raw)
    assert seen.get("GE MEDICAL SYSTEMS") == "GE"
    assert seen.get("G.E. Medical Systems") == "GE"
    assert seen.get("Philips Medical Systems") == "Philips"
    assert seen.get("SIEMENS") == "Siemens"
    assert seen.get("TOSHIBA_MEC") == "Canon"
    families = {v for v in seen.values() if v}
    assert {"GE", "Philips", "Siemens", "Canon", "Agfa", "Fujifilm"} <= families


@pytest.fixture(scope="module")
def pydicom_roots():
    from pathlib import Path

    import pydicom

    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return roots
