from __future__ import annotations

import pytest

from medunlearn.benchmarking.suites import SUITES, SuiteOptions


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    opts = SuiteOptions(cache_dir=tmp_path_factory.mktemp("cache"), patients=24, image_size=16)
    return SUITES.get("device").prepare(opts), opts


@pytest.mark.parametrize("suite,column,value", [("device", "device", "ScannerX"),
                                                ("site", "site", "Synthetic Imaging Centre")])
def test_synthetic_rule_suites_forget_their_domain(cohort, suite, column, value):
    df, opts = cohort
    data = SUITES.get(suite).split(df, suite, opts)
    assert data.in_shape == (1, 16, 16)
    assert len(data.train_forget) > 0 and set(data.train_forget.meta[column]) == {value}
    assert value not in set(data.train_retain.meta[column])
    assert data.class_names == ["normal", "cyst", "mass"]


def test_synthetic_archive_is_generated_once(cohort):
    df, opts = cohort
    archives = list((opts.cache_dir / "data").iterdir())
    assert [a.name for a in archives] == ["synthetic-p24-s0"]
    again = SUITES.get("outlier").prepare(opts)
    assert len(again) == len(df)


def test_registry_lists_every_suite():
    assert SUITES.names() == ["device", "fashion-mnist", "outlier", "site"]
