"""Every method override in configs/bench/*.yaml names a real method and applies to its Config."""
from __future__ import annotations

from pathlib import Path

import pytest

from medunlearn.benchmarking.runner import load_bench_config
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.base import apply_overrides

SUITES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "bench").glob("*.yaml"))


def _layers(cfg: dict):
    yield "methods", cfg.get("methods") or {}
    for section in ("goals", "scenarios"):
        for name, layer in (cfg.get(section) or {}).items():
            yield f"{section}.{name}", layer or {}


@pytest.mark.parametrize("suite", SUITES)
def test_overrides_apply(suite):
    assert SUITES, "no bench configs found"
    cfg = load_bench_config(suite)
    for _where, layer in _layers(cfg):
        for method, overrides in layer.items():
            cls = METHODS.get(method)  # an unknown method raises
            apply_overrides(cls.Config(), overrides or {})  # a stale or unknown field raises ConfigError
