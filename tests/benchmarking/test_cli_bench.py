from __future__ import annotations

import yaml
from typer.testing import CliRunner

from medunlearn.cli.main import app
from tests.benchmarking.conftest import TINY_CONFIG


def test_bench_quick_cli(tmp_path, fake_fashion):
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(TINY_CONFIG))
    out = tmp_path / "out"
    args = ["bench", "fashion-mnist", "--quick", "--subset", "100", "--data-dir", str(fake_fashion),
            "--config", str(cfg), "--scenarios", "class,random", "--seeds", "1", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    cells = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert cells == ["class__finetune__suppression__s0.json", "random__finetune__suppression__s0.json"]
    md = (out / "results.md").read_text()
    assert "## random — goal: suppression" in md and "quick: True; subset: 100" in md
    assert "| criteria met |" in md and ("| finetune | 0/1 |" in md or "| finetune | 1/1 |" in md)
    again = CliRunner().invoke(app, args)  # resume: nothing to recompute
    assert again.exit_code == 0 and "(cached)" in again.output


def test_bench_unknown_method_one_red_line(tmp_path, fake_fashion):
    res = CliRunner().invoke(app, ["bench", "fashion-mnist", "--methods", "famrr", "--data-dir", str(fake_fashion),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert 'Did you mean "famr"' in res.output and "Traceback" not in res.output


def test_bench_unknown_suite(tmp_path):
    res = CliRunner().invoke(app, ["bench", "devise", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and 'Did you mean "device"' in res.output
