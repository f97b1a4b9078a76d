"""`demo --overwrite` clears everything an earlier demo wrote (a stale locator once made the rerun refuse)."""
from __future__ import annotations

from pathlib import Path

from medunlearn.workflow.demo import OUTPUTS, clear_demo_dir


def test_clear_removes_every_demo_output_including_the_private_locator(tmp_path: Path) -> None:
    for d in ("archive", "base", "retrain_device", "runs", "merged", "report"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x").write_text("x")
    for f in ("cohort.csv", "cohort.locator.json", "ingest.json", "split.json"):
        (tmp_path / f).write_text("{}")
    (tmp_path / "mine.txt").write_text("not the demo's")
    clear_demo_dir(tmp_path, OUTPUTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_the_bundle_demo_clears_its_outputs_but_never_an_input_folder(tmp_path: Path) -> None:
    from medunlearn.workflow.demo_bundle import OUTPUTS as BUNDLE_OUTPUTS

    for d in ("base", "runs", "merged", "report", "bundle", "monai_eval", "archive"):
        (tmp_path / d).mkdir()
    (tmp_path / "handback.json").write_text("{}")
    clear_demo_dir(tmp_path, BUNDLE_OUTPUTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive"]  # the bundle demo reads its archive, never owns it
