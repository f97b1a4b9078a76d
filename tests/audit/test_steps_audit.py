"""`audit prepare` / `audit run` / `forget --audit` end to end on a tiny synthetic cohort; the audit reads no
test row; the cache records provenance and is refused for another base."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medunlearn.cli.main import app
from medunlearn.data.cohort import read_cohort
from medunlearn.tune.sealed import Sealed
from medunlearn.workflow import steps_audit

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    assert invoke("cohort", "synth", root / "archive", "--patients", "24", "--seed", "2").exit_code == 0
    res = invoke("cohort", "index", root / "archive", "--labels", root / "archive" / "labels.csv",
                 "--out", root / "cohort.csv", "--report", root / "ingest.json", "--salt", "audit-salt")
    assert res.exit_code == 0, res.output
    common = ["--cohort", root / "cohort.csv", "--model", "small_cnn", "--epochs", "2", "--image-size", "16"]
    assert invoke("train", *common, "--out", root / "base").exit_code == 0
    res = invoke("audit", "prepare", "--cohort", root / "cohort.csv", "--model", root / "base", "--out",
                 root / "audit", "--k", "2")
    assert res.exit_code == 0, res.output
    return {"root": root, "cohort": root / "cohort.csv", "base": root / "base", "audit": root / "audit"}


def _train_patient(cohort: Path, base: Path) -> str:
    manifest = json.loads((base / "meta.json").read_text())
    from medunlearn.selection.split import select

    sel = select(read_cohort(cohort), None, seed=manifest["split"]["seed"])
    frame = sel.frame
    return str(frame.loc[sel.part("train_retain"), "patient"].iloc[0])


def test_prepare_records_provenance_and_membership(prepared):
    manifest = json.loads((prepared["audit"] / "manifest.json").read_text())
    assert manifest["k"] == 2 and manifest["recipe_source"] == "the base's recorded recipe (meta.config)"
    assert manifest["recipe"]["model"] == "small_cnn" and manifest["recipe"]["epochs"] == 2
    for key in ("base_sha256", "cohort_hash", "split_hash", "train_hash"):
        assert manifest[key]
    membership = json.loads((prepared["audit"] / "membership.json").read_text())
    ids = json.loads((prepared["audit"] / "image_ids.json").read_text())
    train_ids = set(ids[: manifest["rows"]["train"]])
    sets = [set(m["members"]) for m in membership["models"]]
    assert sets[0] and sets[1] and not sets[0] & sets[1] and sets[0] | sets[1] == train_ids  # K=2: complementary
    assert (prepared["audit"] / "refs" / "ref_01" / "model.safetensors").is_file()
    text = (prepared["audit"] / "manifest.json").read_text()
    assert str(prepared["root"]) not in text  # no file path in any output


def test_audit_run_writes_a_verdict_per_patient(prepared, tmp_path):
    patient = _train_patient(prepared["cohort"], prepared["base"])
    res = invoke("audit", "run", "--cohort", prepared["cohort"], "--audit", prepared["audit"], "--model",
                 prepared["base"], "--patient", patient, "--out", tmp_path / "audit.json")
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "audit.json").read_text())
    assert list(result["patients"]) == [patient]
    entry = result["patients"][patient]
    assert entry["verdict"] in ("not forgotten", "nothing to forget at this power")  # the base is the original
    assert entry["min_detectable_effect"] > 0 and result["calibration"]["bound"] == 0.01
    assert not result["forgotten"]


def test_the_audit_reads_no_test_row(prepared, tmp_path, monkeypatch):
    real = steps_audit.split_data_for

    def sealed_split(*a, **kw):
        import dataclasses

        data = real(*a, **kw)
        return dataclasses.replace(data, test_retain=Sealed("test_retain"), test_forget=Sealed("test_forget"))

    monkeypatch.setattr(steps_audit, "split_data_for", sealed_split)
    patient = _train_patient(prepared["cohort"], prepared["base"])
    steps_audit.prepare(prepared["cohort"], prepared["base"], tmp_path / "a2", k=2)
    steps_audit.run_audit(tmp_path / "a2", prepared["base"], prepared["cohort"],
                          _patient_rule(patient), tmp_path / "audit.json")
    assert (tmp_path / "audit.json").is_file()


def _patient_rule(patient: str):
    from medunlearn.selection.rules import build_rule

    return build_rule(patient=[patient])


def test_forget_with_audit_judges_by_the_audit_and_refuses_suppression(prepared, tmp_path):
    patient = _train_patient(prepared["cohort"], prepared["base"])
    common = ["forget", "--cohort", prepared["cohort"], "--model", prepared["base"], "--patient", patient,
              "--audit", prepared["audit"], "--method", "finetune", "--set", "epochs=0.2"]
    res = invoke(*common, "--goal", "suppression", "--out", tmp_path / "s")
    assert res.exit_code == 2 and "equivalence" in res.output and not (tmp_path / "s").exists()
    res = invoke(*common, "--goal", "equivalence", "--out", tmp_path / "run")
    assert res.exit_code in (0, 3), res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    acc = metrics["acceptance"]
    assert acc["audit"]["patients"][patient]["verdict"]
    names = [c["name"] for c in acc["checks"]]
    assert names[0] == "membership_audit" and "membership_audit_patient" in names and "retain_accuracy" in names
    assert acc["met"] == all(c["passed"] for c in acc["checks"]) and "interval_checks" in acc
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["accepted"] == acc["met"]
    from medunlearn.report.render import render_report

    md = Path(render_report(tmp_path / "run", out_dir=tmp_path / "report")["md"]).read_text()
    assert "Membership audit per patient" in md and patient in md


def test_audit_refuses_a_model_of_another_base(prepared, tmp_path):
    common = ["--cohort", prepared["cohort"], "--model", "small_cnn", "--epochs", "1", "--image-size", "16", "--seed", "5"]
    assert invoke("train", *common, "--out", tmp_path / "other").exit_code == 0
    patient = _train_patient(prepared["cohort"], prepared["base"])
    res = invoke("audit", "run", "--cohort", prepared["cohort"], "--audit", prepared["audit"], "--model",
                 tmp_path / "other", "--patient", patient, "--out", tmp_path / "a.json")
    assert res.exit_code == 2 and not (tmp_path / "a.json").exists()


def test_in_loop_audit_check_agrees_with_the_audit_and_keeps_frozen_batchnorm(prepared):
    from medunlearn.models.checkpoint import load_checkpoint
    from medunlearn.runtime import RunContext
    from medunlearn.unlearn.base import freeze_batchnorm

    patient = _train_patient(prepared["cohort"], prepared["base"])
    base, meta = load_checkpoint(prepared["base"])
    cache, manifest = steps_audit.load_audit(prepared["audit"])
    data = steps_audit._split_for(read_cohort(prepared["cohort"]), manifest, _patient_rule(patient), 0)
    check = steps_audit.audit_checks(prepared["audit"], base, data, RunContext())
    base.train()
    freeze_batchnorm(base)
    flags = [m.training for m in base.modules()]
    records = check(base)
    assert [m.training for m in base.modules()] == flags
    result = steps_audit.audit_split(cache, data, base, base.head.weight.device)
    s = result["set"]["audited"]
    assert records[0]["name"] == "membership_audit" and records[0]["passed"] == (not (s["detected"] or s["below"]))
    assert [r["name"] for r in records[1:]] == ["membership_audit_patient"]


def test_forget_ref_distill_teaches_with_one_half_and_audits_with_the_other(prepared, tmp_path):
    patient = _train_patient(prepared["cohort"], prepared["base"])
    common = ["forget", "--cohort", prepared["cohort"], "--model", prepared["base"], "--patient", patient,
              "--method", "ref_distill", "--set", "epochs=1", "--goal", "equivalence"]
    res = invoke(*common, "--out", tmp_path / "none")
    assert res.exit_code == 2 and "--audit" in res.output and not (tmp_path / "none").exists()
    res = invoke(*common, "--audit", prepared["audit"], "--out", tmp_path / "k2")  # K = 2: one auditor
    assert res.exit_code == 2 and "left to audit" in res.output and not (tmp_path / "k2").exists()
    res = invoke("audit", "prepare", "--cohort", prepared["cohort"], "--model", prepared["base"], "--out",
                 tmp_path / "audit4", "--k", "4")
    assert res.exit_code == 0, res.output
    res = invoke(*common, "--audit", tmp_path / "audit4", "--out", tmp_path / "run")
    assert res.exit_code in (0, 3), res.output
    audit = json.loads((tmp_path / "run" / "metrics.json").read_text())["acceptance"]["audit"]
    assert audit["teacher_references"] == [2, 3] and audit["auditor_references"] == [0, 1]
    assert audit["reference_models"] == 2
