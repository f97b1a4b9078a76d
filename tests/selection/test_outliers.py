"""Anatomical outliers: thresholds, the modified z-score, parsing, train-only statistics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medunlearn.errors import ConfigError
from medunlearn.selection.outliers import OutlierRule, measurement_columns, parse_outliers, robust_z


def cohort(n: int = 200, seed: int = 0) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    meas = g.normal(30.0, 2.0, n)
    width = g.normal(10.0, 1.0, n)
    meas[[5, 50]] = [60.0, 2.0]  # injected outliers in measurement_mm
    width[120] = 25.0  # and one in width_mm
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "label": "a", "rows": 512,
                         "spacing_row": 0.7, "measurement_mm": meas, "width_mm": width,
                         "device": "D", "note": "text"})


def test_robust_z_matches_definition():
    ref = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    # median 3, MAD = median(|.-3|) = median(2,1,0,1,97) = 1
    np.testing.assert_allclose(robust_z(np.array([3.0, 4.0, 100.0]), ref), [0.0, 0.6745, 0.6745 * 97])
    # MAD = 0 → mean-absolute-deviation fallback; constant reference → 0
    ref0 = np.array([5.0, 5.0, 5.0, 5.0, 100.0])
    np.testing.assert_allclose(robust_z(np.array([100.0]), ref0), [95 / (1.253314 * 19.0)], rtol=1e-6)
    np.testing.assert_array_equal(robust_z(np.array([1.0, 9.0]), np.full(4, 2.0)), [0.0, 0.0])


def test_threshold_rule():
    df = cohort()
    rule = OutlierRule(column="measurement_mm", threshold=45.0)
    assert np.flatnonzero(rule.mask(df)).tolist() == [5]
    low = OutlierRule(column="measurement_mm", threshold=10.0, direction="<=")
    assert np.flatnonzero(low.mask(df)).tolist() == [50]


def test_auto_finds_injected_outliers_in_one_and_all_columns():
    df = cohort()
    assert measurement_columns(df) == ["measurement_mm", "width_mm"]  # geometry/text columns excluded
    assert np.flatnonzero(OutlierRule(column="measurement_mm").mask(df)).tolist() == [5, 50]
    assert np.flatnonzero(OutlierRule().mask(df)).tolist() == [5, 50, 120]
    scores = OutlierRule().scores(df)
    assert scores[120] > 3.5 and np.median(scores) < 1.5  # max of two |z|: typical rows score about 1


def test_reference_rows_set_the_statistics():
    df = cohort()
    rule = OutlierRule(column="measurement_mm")
    ref = df.iloc[:100]
    # shift the non-reference rows: judged against the reference they are all outliers
    shifted = df.copy()
    shifted.loc[100:, "measurement_mm"] += 20.0
    hits = rule.mask(shifted, reference=shifted.iloc[:100])
    assert hits[100:].all() and np.flatnonzero(hits[:100]).tolist() == [5, 50]
    assert not rule.mask(shifted).all()  # own statistics absorb the shift
    assert np.array_equal(rule.mask(df, reference=ref), rule.mask(df, reference=ref.copy()))


def test_unknown_values_are_never_outliers():
    df = cohort(130)
    df.loc[3, "measurement_mm"] = np.nan
    assert not OutlierRule(column="measurement_mm").mask(df)[3]
    assert not OutlierRule(column="measurement_mm", threshold=0.0).mask(df)[3]


@pytest.mark.parametrize("text,expected", [
    ("auto", OutlierRule()),
    ("AUTO:3.0", OutlierRule(cutoff=3.0)),
    ("measurement_mm>45", OutlierRule(column="measurement_mm", threshold=45.0)),
    ("measurement_mm <= 2.5", OutlierRule(column="measurement_mm", threshold=2.5, direction="<=")),
    ("measurement_mm:auto", OutlierRule(column="measurement_mm")),
    ("measurement_mm:auto:4", OutlierRule(column="measurement_mm", cutoff=4.0)),
])
def test_parse_outliers(text, expected):
    rule = parse_outliers(text)
    assert rule == expected
    assert parse_outliers(rule.spec()) == rule


@pytest.mark.parametrize("bad", ["", "autox", "auto:-1", "measurement_mm>", "measurement_mm=4", "x:auto:zero"])
def test_parse_outliers_rejects(bad):
    with pytest.raises(ConfigError, match="Expected"):
        parse_outliers(bad)


def test_validate_errors():
    df = cohort(130)
    with pytest.raises(ConfigError, match='Did you mean "measurement_mm"'):
        OutlierRule(column="measurement").validate(df)
    with pytest.raises(ConfigError, match="numeric"):
        OutlierRule(column="note").validate(df)
    with pytest.raises(ConfigError, match="measurement column"):
        OutlierRule().validate(df.drop(columns=["measurement_mm", "width_mm"]))
    with pytest.raises(ConfigError, match="column"):
        OutlierRule(threshold=3.0)
