"""3D end to end on the SYNTHETIC volume cohort: train → forget (PSG, FAMR) → evaluate → merge → report."""
from __future__ import annotations

import json

import pytest

from medunlearn.data.cohort import index_archive
from medunlearn.data.synthetic3d import synthesize_volume_cohort
from medunlearn.errors import CheckpointError, DataError
from medunlearn.models.zoo import DEFAULT_MODELS
from medunlearn.selection.parse import build_rule
from medunlearn.workflow.splits import check_same_cohort
from medunlearn.workflow.steps_evaluate import evaluate
from medunlearn.workflow.steps_forget import forget
from medunlearn.workflow.steps_merge import merge
from medunlearn.workflow.steps_report import report
from medunlearn.workflow.steps_train import train
from tests.conftest import make_tiny_split


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("vol3d")
    synthesize_volume_cohort(root / "arc", n_patients=40, seed=4, size=16)
    volumes, _ = index_archive(root / "arc", root / "arc" / "labels.csv", salt="s", workers=1, unit="series")
    return root, volumes


@pytest.mark.slow  # ~25 s alone, minutes on a loaded machine
def test_volume_cohort_runs_every_step(archive):
    root, df = archive
    base, info = train(df, root / "base", image_size=16, epochs=8, batch_size=16, seed=0)
    meta = json.loads((base / "meta.json").read_text())
    assert meta["spatial_dims"] == 3 and meta["architecture"]["name"] == DEFAULT_MODELS[3]
    assert meta["architecture"]["kwargs"]["spatial_dims"] == 3 and info["best_val_acc"] > 45.0  # chance is 33 %

    rule = build_rule(device="ScannerX")
    runs = {}
    for method in ("psg", "famr"):
        run, metrics = forget(df, base, rule, root / method, method=method, seed=0)
        runs[method] = run
        assert json.loads((run / "meta.json").read_text())["spatial_dims"] == 3
        assert "acceptance" in metrics and metrics["forget_acc"] >= 0.0 and (run / "model.safetensors").is_file()
    site, _ = forget(df, base, build_rule(site="Synthetic Imaging Centre"), root / "site", method="famr", seed=0)

    ev = evaluate(runs["psg"], df, rule, original=base, out=root / "ev.json")
    assert 0.0 <= ev["test_forget_acc"] <= 100.0 and (root / "ev.json").is_file()
    merged, merged_metrics = merge([runs["famr"], site], base, root / "merged", method="linear", cohort=df)
    assert json.loads((merged / "meta.json").read_text())["spatial_dims"] == 3 and merged_metrics["policies"]
    written = report(merged, root / "report")
    assert all(p.is_file() for p in written.values())


def test_a_3d_checkpoint_refuses_a_2d_cohort(tmp_path):
    synthesize_volume_cohort(tmp_path / "arc", n_patients=9, seed=5, size=16)
    df, _ = index_archive(tmp_path / "arc", tmp_path / "arc" / "labels.csv", salt="s", workers=1, unit="series")
    base, _ = train(df, tmp_path / "base", epochs=1, batch_size=8, seed=0, model="small_cnn", model_kwargs={"width": 4})
    meta = json.loads((base / "meta.json").read_text())
    assert meta["spatial_dims"] == 3 and meta["image_size"] == 32  # the 3D default size
    flat, _ = index_archive(tmp_path / "arc", tmp_path / "arc" / "labels.csv", salt="s", workers=1)
    with pytest.raises(DataError, match="--volumes"):
        evaluate(base, flat, build_rule(device="ScannerX"), force=True)
    with pytest.raises(CheckpointError, match="3D volumes"):  # a 2D reading of the volume cohort
        check_same_cohort({"spatial_dims": 3}, make_tiny_split(), False, "the checkpoint")


def test_training_defaults_follow_the_data_dimensionality():
    """Volumes get the 3D recipe (the 2D one leaves a 3D model at chance); a user's value always wins."""
    from medunlearn.workflow.steps_train import DEFAULT_RECIPE, training_config

    vol, img = training_config(3, None, {}), training_config(2, None, {"epochs": None, "batch_size": None})
    assert (vol.epochs, vol.batch_size, vol.image_size, vol.model) == (30, 8, 32, "densenet_small")
    assert (img.epochs, img.batch_size, img.image_size, img.model) == (8, 64, 64, "allcnn")
    assert DEFAULT_RECIPE[3]["epochs"] > DEFAULT_RECIPE[2]["epochs"]
    mine = training_config(3, 16, {"epochs": 2, "batch_size": None, "model": "resnet10"})
    assert (mine.epochs, mine.batch_size, mine.image_size, mine.model) == (2, 8, 16, "resnet10")


def test_training_warns_when_the_model_is_at_chance(caplog):
    from medunlearn.workflow.steps_train import warn_if_chance

    with caplog.at_level("WARNING", logger="medunlearn"):
        warn_if_chance(24.4, 3, 8)
        warn_if_chance(97.0, 3, 8)
    assert len(caplog.records) == 1 and "at chance" in caplog.records[0].getMessage()
