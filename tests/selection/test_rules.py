"""Forget rules: every condition kind, AND/OR, YAML files, validation errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medunlearn.errors import ConfigError, SelectionError
from medunlearn.selection.outliers import OutlierRule
from medunlearn.selection.rules import (
    AllOf,
    AnyOf,
    DateRule,
    ValueRule,
    WhereRule,
    build_rule,
    load_rule_file,
    rule_from_dict,
    validate,
)


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": [f"i{k}" for k in range(6)],
        "label": ["a", "b", "a", "b", "a", "b"],
        "patient": ["p0", "p0", "p1", "p2", "p3", "p4"],
        "device": ["ScannerX", "scannerx", "ScannerA", "ScannerB", "ScannerA", ""],
        "site": ["Site B", "Site A", "Site B", "Site A", "Site C", "Site B"],
        "manufacturer": ["Siemens", "Siemens", "GE", "Philips", "GE", ""],
        "manufacturer_raw": ["SIEMENS AG", "Siemens Healthineers", "GE MEDICAL SYSTEMS", "Philips", "GE", "Acme"],
        "body_part": ["CHEST", "chest wall", "ABDOMEN", "HEAD", "Chest", ""],
        "study_date": ["2019-12-31", "2020-01-01", "20200615", "2021-03-02", "", "2020-12-31"],
        "rows": [512, 512, 256, 256, 512, 1024],
        "measurement_mm": [10.0, 40.0, 41.0, np.nan, 55.5, 20.0],
        "note": ["x", "y", "z", "w", "v", "u"],
    })


def rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def test_value_rules_are_case_insensitive_and_or_within_option(df):
    assert rows(build_rule(device="SCANNERX").mask(df)) == [0, 1]
    assert rows(build_rule(site=["site a", "Site C"]).mask(df)) == [1, 3, 4]
    assert rows(build_rule(patient="p0").mask(df)) == [0, 1]
    # manufacturer matches the normalised family OR the raw header text
    assert rows(build_rule(manufacturer="siemens").mask(df)) == [0, 1]
    assert rows(build_rule(manufacturer="acme").mask(df)) == [5]
    assert rows(build_rule(manufacturer="GE MEDICAL SYSTEMS").mask(df)) == [2]


def test_options_combine_with_and(df):
    rule = build_rule(device="ScannerX", site="Site B")
    assert isinstance(rule, AllOf)
    assert rule.describe() == "device = ScannerX AND site = Site B"
    assert rows(rule.mask(df)) == [0]


def test_dates_inclusive_both_formats(df):
    assert rows(build_rule(study_date_before="2020-01-01").mask(df)) == [0, 1]
    assert rows(build_rule(study_date_after="20201231").mask(df)) == [3, 5]
    window = build_rule(study_date_after="2020-01-01", study_date_before="2020-12-31")
    assert rows(window.mask(df)) == [1, 2, 5]  # unknown date (row 4) never matches
    assert window.describe() == "2020-01-01 <= study_date <= 2020-12-31"
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        build_rule(study_date_before="31/12/2020")
    with pytest.raises(ConfigError, match="after <= "):
        DateRule(after="2021-01-01", before="2020-01-01")


def test_where_forms(df):
    assert rows(build_rule(where="body_part~^chest").mask(df)) == [0, 1, 4]
    assert rows(build_rule(where="body_part=chest").mask(df)) == [0, 4]
    assert rows(build_rule(where="body_part!=chest").mask(df)) == [1, 2, 3, 5]
    assert rows(build_rule(where="measurement_mm>40").mask(df)) == [2, 4]
    assert rows(build_rule(where="measurement_mm>=40").mask(df)) == [1, 2, 4]
    assert rows(build_rule(where="measurement_mm<20").mask(df)) == [0]  # NaN never matches
    assert rows(build_rule(where="measurement_mm<=20").mask(df)) == [0, 5]
    assert rows(build_rule(where="rows=512").mask(df)) == [0, 1, 4]
    assert rows(build_rule(where=["rows=512", "measurement_mm>30"]).mask(df)) == [1, 4]


def test_malformed_where_names_accepted_forms(df):
    for bad in ("measurement_mm", "=5", "measurement_mm>big", "body_part~(unclosed"):
        with pytest.raises(ConfigError, match="Expected"):
            build_rule(where=bad)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        build_rule(where="no operator here")


def test_where_unknown_column_and_non_numeric(df):
    with pytest.raises(ConfigError, match='Did you mean "measurement_mm"'):
        validate(build_rule(where="measurment_mm>3"), df)
    with pytest.raises(ConfigError, match="numeric"):
        validate(build_rule(where="note>3"), df)
    validate(build_rule(where="note~x"), df)  # regex on text is fine


def test_unknown_device_did_you_mean(df):
    with pytest.raises(SelectionError) as err:
        validate(build_rule(device="ScanerX"), df)
    msg = str(err.value)
    assert 'Did you mean "ScannerX"?' in msg and "ScannerA" in msg and "but got 'ScanerX'" in msg
    with pytest.raises(SelectionError, match="patient"):
        validate(build_rule(patient="p9"), df)
    validate(build_rule(device="scannerx", manufacturer="Philips"), df)


def test_any_of_and_nesting(df):
    rule = rule_from_dict({"any": [{"device": "ScannerX"}, {"site": "Site C", "where": ["measurement_mm>50"]}]})
    assert isinstance(rule, AnyOf)
    assert rows(rule.mask(df)) == [0, 1, 4]
    assert rule.describe() == "device = ScannerX OR (site = Site C AND measurement_mm > 50)"


@pytest.mark.parametrize("rule", [
    build_rule(device=["ScannerX", "ScannerA"], site="Site B", study_date_after="2020-01-01",
               where=["body_part~chest", "measurement_mm>=1.5"], outliers="measurement_mm:auto:3"),
    build_rule(manufacturer="GE", study_date_before="20201231", outliers="auto"),
    rule_from_dict({"any": [{"patient": ["p0", "p1"]},
                            {"all": [{"site": "Site A"}, {"outliers": "measurement_mm>45"}]}]}),
])
def test_to_dict_round_trips(rule, df):
    import json

    again = rule_from_dict(json.loads(json.dumps(rule.to_dict())))
    assert again == rule
    assert np.array_equal(again.mask(df), rule.mask(df))


def test_no_condition_and_unknown_keys():
    with pytest.raises(ConfigError, match="at least one"):
        build_rule()
    with pytest.raises(ConfigError, match='Did you mean "device"'):
        rule_from_dict({"devise": "ScannerX"})
    with pytest.raises(ConfigError, match="non-empty list"):
        rule_from_dict({"any": []})
    with pytest.raises(ConfigError, match="mapping"):
        rule_from_dict(["device", "x"])


def test_yaml_rule_file(tmp_path, df):
    p = tmp_path / "rule.yaml"
    p.write_text('any:\n  - device: ScannerX\n  - site: "Site C"\n    where: ["measurement_mm>40"]\n'
                 '  - study_date_after: 2021-01-01\n')
    rule = load_rule_file(p)
    assert rows(rule.mask(df)) == [0, 1, 3, 4]
    assert rule == rule_from_dict(rule.to_dict())


def test_yaml_rule_file_refuses_hostile_and_bad_input(tmp_path):
    hostile = tmp_path / "evil.yaml"
    hostile.write_text("device: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="plain YAML"):
        load_rule_file(hostile)
    obj = tmp_path / "obj.yaml"
    obj.write_text("!!python/object:collections.OrderedDict {}\n")
    with pytest.raises(ConfigError, match="plain YAML"):
        load_rule_file(obj)
    listy = tmp_path / "list.yaml"
    listy.write_text("- device: ScannerX\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_rule_file(listy)
    typo = tmp_path / "typo.yaml"
    typo.write_text("all:\n  - sit: A\n")
    with pytest.raises(ConfigError, match='Did you mean "site"'):
        load_rule_file(typo)
    with pytest.raises(ConfigError, match="no such file"):
        load_rule_file(tmp_path / "missing.yaml")


def test_rule_objects_validate_their_arguments():
    with pytest.raises(ConfigError):
        ValueRule("scanner", ("x",))
    with pytest.raises(ConfigError):
        ValueRule("device", ("",))
    with pytest.raises(ConfigError):
        WhereRule("a", "<>", "1")
    assert WhereRule.parse("a == 1") == WhereRule("a", "=", "1")
    a, b = ValueRule("device", ("x",)), ValueRule("site", ("y",))
    assert AllOf([a, b]) == AllOf((a, b)) and AllOf((a, b)) != AnyOf((a, b))
    assert build_rule(outliers=OutlierRule(column="measurement_mm", threshold=45.0)).describe() == \
        "outlier measurement_mm > 45"
