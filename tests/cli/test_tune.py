"""`medunlearn tune` end to end on a tiny synthetic cohort: a 3-trial study writes a YAML that `forget --config`
accepts, no test row is read, and bad inputs exit 2 with one line and write nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medunlearn.cli.main import app
from tests.tune.conftest import tripwired

runner = CliRunner()
LENIENT = ["--set", "forget_tol=100", "--set", "confidence_margin=100", "--set", "retain_drop=100"]  # all feasible
FAST = ["--set", "epochs=2", "--set", "max_eval=64"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tune")
    assert invoke("cohort", "synth", root / "archive", "--patients", "30", "--seed", "1").exit_code == 0
    res = invoke("cohort", "index", root / "archive", "--labels", root / "archive" / "labels.csv",
                 "--out", root / "cohort.csv", "--salt", "test-salt")
    assert res.exit_code == 0, res.output
    res = invoke("train", "--cohort", root / "cohort.csv", "--model", "small_cnn", "--epochs", "2", "--image-size", "32",
                 "--out", root / "base")
    assert res.exit_code == 0, res.output
    return {"root": root, "cohort": root / "cohort.csv", "base": root / "base"}


@pytest.fixture
def no_test_rows(monkeypatch):
    """Every SplitData built during the test has tripwired test splits: reading one fails the test."""
    import medunlearn.workflow.splits as splits
    import medunlearn.workflow.steps_forget  # noqa: F401  (binds the real builder before the patch: forget reads test rows)

    real = splits.split_data_for
    monkeypatch.setattr(splits, "split_data_for", lambda *a, **k: tripwired(real(*a, **k)))


def test_three_trial_study_writes_a_yaml_forget_accepts(base, tmp_path: Path, no_test_rows, monkeypatch) -> None:
    out = tmp_path / "tuned"
    res = invoke("tune", "--cohort", base["cohort"], "--model", base["base"], "--device", "ScannerX", "--method", "psg",
                 "--trials", "3", "--time-budget", "5m", "--seed", "3", "--out", out, *LENIENT, *FAST)
    assert res.exit_code == 0, res.output
    text = (out / "psg.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("Command: medunlearn" in h or "Command: (Python API)" in h for h in header)
    assert any("Study seed: 3" in h for h in header) and any("VALIDATION" in h for h in header)
    assert any("SYNTHETIC" in h for h in header)
    tuned = yaml.safe_load(text)
    assert tuned["epochs"] == 2.0 and tuned["forget_tol"] == 100.0  # pinned fields are kept
    study = out / "psg-study"
    rows = (study / "trials.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("trial,state,feasible,objective")
    assert (study / "importance.png").read_bytes()[:4] == b"\x89PNG"
    best = json.loads((study / "best_trial.json").read_text())
    assert best["met"] and best["judged_on"].startswith("validation") and best["study"]["seed"] == 3
    assert tuned["lr"] == pytest.approx(best["best"]["params"]["lr"])
    assert json.loads((study / "provenance.json").read_text())["seed"] == 3

    # forget --config reads it (forget evaluates on test rows by design: lift the tripwire for it)
    monkeypatch.undo()
    run = tmp_path / "run"
    res = invoke("forget", "--cohort", base["cohort"], "--model", base["base"], "--device", "ScannerX",
                 "--method", "psg", "--config", out / "psg.yaml", "--out", run)
    assert res.exit_code == 0, res.output
    used = yaml.safe_load((run / "config.yaml").read_text())["hyperparameters"]
    assert used["lr"] == pytest.approx(tuned["lr"]) and used["phi"] == pytest.approx(tuned["phi"])



def test_no_feasible_trial_exits_3_and_writes_the_study_but_no_yaml(base, tmp_path: Path, no_test_rows) -> None:
    out = tmp_path / "tuned"
    res = invoke("tune", "--cohort", base["cohort"], "--model", base["base"], "--device", "ScannerX", "--method", "famr",
                 "--trials", "2", "--out", out, "--set", "forget_tol=0", "--set", "forget_target=7", *FAST)
    assert res.exit_code == 3, res.output
    assert "No trial met the criteria" in res.output
    assert not (out / "famr.yaml").exists()
    best = json.loads((out / "famr-study" / "best_trial.json").read_text())
    assert best["met"] is False and best["best"] is None and best["study"]["trials_run"] == 2


@pytest.mark.parametrize("args, message", [
    (["--method", "pgs"], "Did you mean"),
    (["--trials", "0"], "--trials >= 1"),
    (["--time-budget", "ten minutes"], "time budget > 0"),
    (["--time-budget", "0s"], "time budget > 0"),
    (["--goal", "supression"], "Did you mean"),
    (["--set", "lr"], "KEY=VALUE"),
    (["--set", "learning_rate=0.1"], "Expected a PSGConfig field"),
    (["--set", "lr=0.1", "--set", "phi=1", "--set", "epsilon=0.1", "--set", "gamma=0", "--set", "batch_size=8",
      "--set", "target=hard"], "every field"),
])
def test_bad_inputs_exit_2_with_one_line(base, tmp_path: Path, args, message) -> None:
    out = tmp_path / "tuned"
    method = [] if "--method" in args else ["--method", "psg"]  # the messages name PSG's fields
    res = invoke("tune", "--cohort", base["cohort"], "--model", base["base"], "--device", "ScannerX",
                 "--out", out, *method, *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Error:" in res.output and "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) <= 3  # one (wrapped) line
    assert not out.exists()


def test_missing_model_and_rule_exit_2(base, tmp_path: Path) -> None:
    res = invoke("tune", "--cohort", base["cohort"], "--model", tmp_path / "nope", "--device", "ScannerX",
                 "--out", tmp_path / "t")
    assert res.exit_code == 2 and "base checkpoint" in res.output
    res = invoke("tune", "--cohort", base["cohort"], "--model", base["base"], "--out", tmp_path / "t")
    assert res.exit_code == 2 and "forget rule" in res.output


def test_existing_outputs_are_not_clobbered(base, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    out.mkdir()
    (out / "famr_budget.yaml").write_text("lr: 0.001\n")
    # no --method: auto tunes what `forget --method auto` tries first for a device (famr_budget), its YAML the output
    res = invoke("tune", "--cohort", base["cohort"], "--model", base["base"], "--device", "ScannerX", "--out", out)
    assert res.exit_code == 2 and "--overwrite" in res.output and "famr_budget.yaml" in " ".join(res.output.split())
    assert (out / "famr_budget.yaml").read_text() == "lr: 0.001\n"
    # a class withdrawal: auto tunes psg_frozen (the first of forget's class chain)
    (out / "psg_frozen.yaml").write_text("lr: 0.001\n")
    res = invoke("tune", "--cohort", base["cohort"], "--model", base["base"], "--where", "label=mass", "--out", out)
    assert res.exit_code == 2 and "psg_frozen.yaml" in " ".join(res.output.split()), res.output
