"""Issue 15 items 4 and 8: provenance checks on every model a step compares against, label sets checked
against the checkpoint both ways, numeric bounds, and warnings for degenerate merges."""
from __future__ import annotations

import json
import pickle

import pandas as pd
import pytest
from typer.testing import CliRunner

from medunlearn.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_exit_2(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in res.output, res.output


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("prov")
    for seed, name in ((1, "a"), (2, "b")):
        assert invoke("cohort", "synth", root / f"archive_{name}", "--patients", "24", "--seed", seed,
                      "--image-size", "32").exit_code == 0
        res = invoke("cohort", "index", root / f"archive_{name}", "--labels", root / f"archive_{name}" / "labels.csv",
                     "--out", root / f"cohort_{name}.csv", "--public-salt")
        assert res.exit_code == 0, res.output
    cohort = root / "cohort_a.csv"
    common = ["--cohort", cohort, "--model", "small_cnn", "--epochs", "1", "--image-size", "16"]
    for args in (["--out", root / "base"], ["--out", root / "retrain", "--device", "ScannerX", "--exclude"],
                 ["--out", root / "retrain_site", "--site", "Synthetic Imaging Centre", "--exclude"]):
        res = invoke("train", *common, *args)
        assert res.exit_code == 0, res.output
    res = invoke("train", "--cohort", cohort, "--model", "allcnn", "--epochs", "1", "--image-size", "16",
                 "--out", root / "retrain_other_arch", "--device", "ScannerX", "--exclude")
    assert res.exit_code == 0, res.output
    res = invoke("forget", "--cohort", cohort, "--model", root / "base", "--device", "ScannerX", "--method",
                 "finetune", "--set", "epochs=0.2", "--out", root / "run_x")
    assert res.exit_code in (0, 3), res.output
    return {"root": root, "cohort": cohort, "other": root / "cohort_b.csv"}


def _eval(world, *extra):
    return invoke("evaluate", "--model", world["root"] / "run_x", "--cohort", world["cohort"], "--device", "ScannerX",
                  *extra)


@pytest.mark.parametrize("flag, name, needle", [
    ("--reference", "base", "retrain-from-scratch"),
    ("--reference", "retrain_site", "exclude exactly"),
    ("--reference", "retrain_other_arch", "architecture"),
    ("--original", "retrain", "base this model was unlearned from"),
])
def test_reference_and_original_are_checked(world, flag, name, needle) -> None:
    one_line_exit_2(_eval(world, flag, world["root"] / name), needle)


def test_right_reference_and_original_are_accepted(world) -> None:
    res = _eval(world, "--reference", world["root"] / "retrain", "--original", world["root"] / "base")
    assert res.exit_code == 0, res.output


def test_merged_checkpoint_carries_split_and_run_hashes(world) -> None:
    root = world["root"]
    res = invoke("merge", root / "run_x", root / "run_x", "--base", root / "base", "--method", "linear",
                 "--out", root / "merged", "--force")  # the tiny run may miss its criteria
    assert res.exit_code == 0, res.output
    assert "identical weights" in res.output  # item 8: degenerate merge warned
    meta = json.loads((root / "merged" / "meta.json").read_text())
    base = json.loads((root / "base" / "meta.json").read_text())
    run_sha = json.loads((root / "run_x" / "provenance.json").read_text())  # noqa: F841 (exists)
    assert meta["split"]["train_hash"] == base["split"]["train_hash"]
    from medunlearn.models.checkpoint import model_sha256

    assert meta["run_sha256"] == [model_sha256(root / "run_x")] * 2
    assert meta["warnings"]
    # another cohort: refused without --force, for evaluate and for merge
    res = invoke("evaluate", "--model", root / "merged", "--cohort", world["other"], "--device", "ScannerX")
    one_line_exit_2(res, "split")
    res = invoke("merge", root / "run_x", "--base", root / "base", "--method", "linear", "--cohort", world["other"],
                 "--out", root / "merged_other", "--force")  # --force does not override another cohort
    one_line_exit_2(res)
    assert not (root / "merged_other").exists()


def test_single_run_merge_is_warned(world) -> None:
    root = world["root"]
    res = invoke("merge", root / "run_x", "--base", root / "base", "--method", "linear", "--out", root / "m1",
                 "--force")
    assert res.exit_code == 0 and "single run" in res.output


def test_report_refuses_pickled_weights(world, tmp_path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(world["root"] / "run_x", run)
    (run / "model.safetensors").write_bytes(pickle.dumps({"x": 1}))
    one_line_exit_2(invoke("report", run))
    assert not (run / "report.md").exists()


def test_report_refuses_metrics_of_another_rule_and_records_the_weights_hash(world, tmp_path) -> None:
    import shutil

    from medunlearn.models.checkpoint import model_sha256

    run = tmp_path / "run"
    shutil.copytree(world["root"] / "run_x", run)
    res = invoke("report", run, "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["model_sha256"] == model_sha256(run)
    res = invoke("evaluate", "--model", run, "--cohort", world["cohort"], "--site", "Synthetic Imaging Centre",
                 "--out", run / "metrics.json", "--overwrite")
    assert res.exit_code == 0, res.output
    one_line_exit_2(invoke("report", run, "--overwrite"), "rule")


def test_label_sets_are_checked_both_ways(world, tmp_path) -> None:
    df = pd.read_csv(world["cohort"], dtype=str, keep_default_na=False)
    labels = sorted(set(df["label"]) - {""})
    typo = df.copy()
    typo.loc[typo.index[0], "label"] = labels[0] + "x"
    typo.to_csv(tmp_path / "typo.csv", index=False)
    res = invoke("forget", "--cohort", tmp_path / "typo.csv", "--model", world["root"] / "base", "--device",
                 "ScannerX", "--out", tmp_path / "r")
    one_line_exit_2(res, "Did you mean", labels[0])
    fewer = df[df["label"] != labels[-1]]
    fewer.to_csv(tmp_path / "fewer.csv", index=False)
    res = invoke("evaluate", "--model", world["root"] / "base", "--cohort", tmp_path / "fewer.csv", "--device",
                 "ScannerX")
    one_line_exit_2(res, repr(labels[-1]))


def test_train_warns_about_a_near_miss_label(world, tmp_path) -> None:
    df = pd.read_csv(world["cohort"], dtype=str, keep_default_na=False)
    label = sorted(set(df["label"]) - {""})[0]
    df.loc[df.index[0], "label"] = label + "x"
    df.to_csv(tmp_path / "typo.csv", index=False)
    res = invoke("train", "--cohort", tmp_path / "typo.csv", "--model", "small_cnn", "--epochs", "1",
                 "--image-size", "16", "--out", tmp_path / "m")
    assert "becomes its own class" in res.output and "Did you mean" in res.output


@pytest.mark.parametrize("args", [
    ["train", "--epochs", "99999999999999999999"],
    ["train", "--epochs", "0"],
    ["train", "--lr", "-1"],
])
def test_numeric_options_are_bounded(world, tmp_path, args) -> None:
    res = invoke(*args, "--cohort", world["cohort"], "--out", tmp_path / "m")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("setting", ["stop_margin=-100", "epochs=1e12", "lr=-0.1", "batch_size=0"])
def test_hyperparameters_are_bounded(world, tmp_path, setting) -> None:
    res = invoke("forget", "--cohort", world["cohort"], "--model", world["root"] / "base", "--device", "ScannerX",
                 "--method", "psg", "--set", setting, "--out", tmp_path / "r")
    one_line_exit_2(res, setting.split("=")[0])
