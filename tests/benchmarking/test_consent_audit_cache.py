"""benchmarks/consent_audit.py: cached models are named by the settings they were trained with."""
import argparse
import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "consent_audit", Path(__file__).resolve().parents[2] / "benchmarks" / "consent_audit.py")
assert SPEC is not None and SPEC.loader is not None
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def args(**kw):
    base = {"fm_train": 2000, "fm_val": 1000, "patients": 120, "image_size": 32, "epochs": 12, "width": 16,
            "weight_decay": 0.0, "method": ["neggrad"], "modes": ["post"], "fpr": 0.01, "retime_retrain": True}
    return argparse.Namespace(**{**base, **kw})


def test_key_changes_with_the_settings_the_models_depend_on():
    key = bench.settings_key("fm", args())
    assert bench.settings_key("fm", args()) == key
    for change in ({"fm_train": 1000}, {"fm_val": 500}, {"epochs": 30}, {"width": 32}, {"weight_decay": 5e-4}):
        assert bench.settings_key("fm", args(**change)) != key, change
    syn = bench.settings_key("synthetic", args())
    for change in ({"patients": 240}, {"image_size": 16}, {"epochs": 40}):
        assert bench.settings_key("synthetic", args(**change)) != syn, change


def test_key_ignores_what_the_models_do_not_depend_on():
    key = bench.settings_key("fm", args())
    assert bench.settings_key("fm", args(method=["ref_distill"], fpr=0.05, patients=240)) == key
    assert bench.settings_key("synthetic", args(fm_train=1000)) == bench.settings_key("synthetic", args())
