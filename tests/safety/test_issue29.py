"""Issue 29: one regression test per problem (numbered as in the issue); each fails on the code before the fix."""
from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from medunlearn.commit import output_lock
from medunlearn.fileio import write_json
from medunlearn.models.checkpoint import model_sha256, save_checkpoint
from tests.safety.conftest import CLASSES, tiny_model
from tests.safety.world import build_world, forget_args, invoke, killed_at, leftovers


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("issue29"))


def _one_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("Error:") or lines[0].startswith("Error:"), res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in res.output, res.output


# 1. A PASS cannot be faked by copying or editing one file --------------------------------------------------------


def _sealed_run(root: Path, name: str, met: bool, bias: float) -> Path:
    try:
        from medunlearn.attest import seal
    except ImportError:  # the code before issue 29 (so this test shows its bug, not an import error)
        def seal(d, metrics):
            return metrics

    m = tiny_model()
    with torch.no_grad():
        m.head.bias += bias
    check = {"name": "forget_accuracy", "label": "forget accuracy", "value": 30.0 if met else 60.0, "op": "<=",
             "threshold": 40.0, "unit": "%", "passed": met}
    d = save_checkpoint(root / name, m, {"kind": "unlearned", "class_names": CLASSES, "rule_text": "device = ScannerX",
                                         "method": "psg", "goal": "suppression", "synthetic": True, "accepted": met})
    write_json(d / "metrics.json", seal(d, {"forget_acc": check["value"], "rule_text": "device = ScannerX",
                                            "acceptance": {"met": met, "checks": [check]}}))
    return d


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    return _sealed_run(tmp_path, "good", True, 0.0), _sealed_run(tmp_path, "bad", False, 1.0)


def test_p1_an_accepted_run_reports_pass_and_exports(two_runs, tmp_path) -> None:
    good, _ = two_runs
    res = invoke("report", good, "--out", tmp_path / "rep", "--no-pdf", "--require-pass")
    assert res.exit_code == 0 and "Decision: PASS" in res.output, res.output
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["model_sha256"] == model_sha256(good) and doc["attestation"]["state"] == "verified"
    assert doc["attestation"]["key"] == "public key: demo only"  # no site secret set: marked as such
    assert invoke("export-bundle", good, tmp_path / "bundle").exit_code == 0


@pytest.mark.parametrize("tamper", ["copy_metrics", "edit_met", "edit_meta_accepted", "unsigned_pass"])
def test_p1_a_faked_pass_is_refused_by_report_and_export(two_runs, tmp_path, tamper) -> None:
    good, bad = two_runs
    metrics = json.loads((bad / "metrics.json").read_text())
    if tamper == "copy_metrics":
        shutil.copy(good / "metrics.json", bad / "metrics.json")
    elif tamper == "edit_met":
        metrics["acceptance"]["met"] = True
        metrics["acceptance"]["checks"][0]["passed"] = True
        (bad / "metrics.json").write_text(json.dumps(metrics))
    elif tamper == "edit_meta_accepted":
        meta = json.loads((bad / "meta.json").read_text())
        (bad / "meta.json").write_text(json.dumps({**meta, "accepted": True}))
    else:
        metrics["acceptance"] = {"met": True, "checks": [{**metrics["acceptance"]["checks"][0], "passed": True}]}
        metrics.pop("attestation")
        metrics.pop("model_sha256")
        (bad / "metrics.json").write_text(json.dumps(metrics))
    res = invoke("report", bad, "--out", tmp_path / "rep", "--no-pdf", "--require-pass")
    _one_error(res)
    assert not (tmp_path / "rep" / "report.json").exists()
    res = invoke("export-bundle", bad, tmp_path / "bundle")
    _one_error(res)
    assert not (tmp_path / "bundle").exists()


def test_p1_a_site_secret_signs_and_another_key_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MEDUNLEARN_SALT", "the-site-secret-1")
    run = _sealed_run(tmp_path, "run", True, 0.0)
    assert invoke("report", run, "--out", tmp_path / "r1", "--no-pdf").exit_code == 0
    assert json.loads((tmp_path / "r1" / "report.json").read_text())["attestation"]["key"] == "site secret"
    monkeypatch.setenv("MEDUNLEARN_SALT", "another-secret-2")
    _one_error(invoke("report", run, "--out", tmp_path / "r2", "--no-pdf"), "site's key")


def test_p1_forget_writes_the_weights_hash_and_a_signature(world) -> None:
    metrics = json.loads((world["run_a"] / "metrics.json").read_text())
    assert metrics["model_sha256"] == model_sha256(world["run_a"])
    assert metrics["attestation"]["model_sha256"] == metrics["model_sha256"] and len(metrics["attestation"]["mac"]) == 64


# 2 and 13. report --overwrite is one unit; a killed write leaves no mixed report and no temp file ---------------


def _report_state(out: Path) -> str | None:
    """Which run the visible report describes ("run_a" / "run_b"), None when no report.json; fails on a mix."""
    if not (out / "report.json").exists():
        return None
    name = json.loads((out / "report.json").read_text())["title"].split()[-1]
    for ext in ("md", "html"):
        text = (out / f"report.{ext}").read_text()
        assert f"model {name}" in text, f"report.{ext} describes another run than report.json ({name})"
    return name


REPORT_RENAMES = 7  # os.replace / os.rename calls of `report --overwrite` (checked below); the sweep kills at each


def test_p2_the_report_sweep_covers_every_rename(world, tmp_path) -> None:
    out = tmp_path / "rep"
    assert invoke("report", world["run_a"], "--out", out, "--no-pdf").exit_code in (0, 3)
    code, calls = killed_at(0, lambda: invoke("report", world["run_b"], "--out", out, "--no-pdf", "--overwrite"))
    assert code == 0 and calls == REPORT_RENAMES


@pytest.mark.parametrize("k", range(1, REPORT_RENAMES + 1))
def test_p2_a_kill_during_report_overwrite_never_mixes_versions(world, tmp_path, k) -> None:
    out = tmp_path / "rep"
    assert invoke("report", world["run_a"], "--out", out, "--no-pdf").exit_code in (0, 3)
    code, _ = killed_at(k, lambda: invoke("report", world["run_b"], "--out", out, "--no-pdf", "--overwrite"))
    assert code != 0, f"report finished before rename {k}: its count changed (REPORT_RENAMES)"
    assert _report_state(out) in (None, "run_a", "run_b")
    res = invoke("report", world["run_b"], "--out", out, "--no-pdf", "--overwrite")
    assert res.exit_code in (0, 3), res.output
    assert _report_state(out) == "run_b"
    assert leftovers(out, "report.json") + leftovers(out, "report.md") + leftovers(out, "report.html") == []


def test_p13_temp_files_of_single_file_writes_are_cleaned_by_the_next_run(world, tmp_path) -> None:
    out = tmp_path / "eval.json"
    stale = tmp_path / ".eval.json.k1ll3d.tmp"
    stale.write_text('{"half": ')
    res = invoke("evaluate", "--model", world["run_a"], "--cohort", world["cohort"], "--device", "ScannerX",
                 "--out", out)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["model_sha256"] and not stale.exists()


# 4. No identifier reaches the shareable table ---------------------------------------------------------------------


def test_p4_an_unknown_labels_column_is_refused_or_kept_only_by_name(world, tmp_path) -> None:
    labels = pd.read_csv(world["root"] / "archive" / "labels.csv", dtype=str)
    labels["mrn"] = [str(1_000_000 + i) for i in range(len(labels))]
    labels.to_csv(tmp_path / "labels.csv", index=False)
    common = ["cohort", "index", world["root"] / "archive", "--labels", tmp_path / "labels.csv", "--salt",
              "test-salt-1", "--workers", "1"]
    _one_error(invoke(*common, "--out", tmp_path / "c1.csv"), "'mrn'", "--keep-column mrn")
    assert not (tmp_path / "c1.csv").exists()
    res = invoke(*common, "--out", tmp_path / "c2.csv", "--keep-column", "mrn")
    assert res.exit_code == 0 and "'mrn' is kept" in res.output, res.output
    table = pd.read_csv(tmp_path / "c2.csv")
    assert "mrn" in table.columns and "measurement_mm" in table.columns  # measurements need no --keep-column


# 5. Recovery never deletes a previous result the user did not ask to overwrite ----------------------------------


@pytest.mark.parametrize("mkdir_p", [False, True])
def test_p5_a_kill_between_the_renames_then_train_without_overwrite_deletes_nothing(world, tmp_path, mkdir_p) -> None:
    def train(out: Path) -> list:
        return ["train", "--cohort", world["cohort"], "--model", "small_cnn", "--epochs", "1", "--image-size", "16",
                "--seed", "3", "--out", out]

    probe, base = tmp_path / "probe", tmp_path / "base"
    shutil.copytree(world["base"], probe)
    shutil.copytree(world["base"], base)
    weights = (base / "model.safetensors").read_bytes()
    _, n = killed_at(0, lambda: invoke(*train(probe), "--overwrite"))  # the last rename: staging -> base
    code, _ = killed_at(n, lambda: invoke(*train(base), "--overwrite"))  # killed between the swap's two renames
    assert code != 0 and not base.exists() and (tmp_path / ".base.old").is_dir()
    if mkdir_p:
        base.mkdir()  # a script's `mkdir -p base`
    res = invoke(*train(base))  # no --overwrite
    assert res.exit_code == 2 and "already exists" in res.output, res.output
    assert (base / "model.safetensors").read_bytes() == weights  # the previous base, put back
    assert "Removed a stale copy" not in res.output


# 6. Two writers at once are refused at once, single files and --overwrite included -------------------------------


def _held_elsewhere(path: Path):
    """Hold `path`'s output lock from another thread (as another process would) until the returned event is set."""
    ready, release = threading.Event(), threading.Event()

    def hold():
        with output_lock(path):
            ready.set()
            release.wait(30)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert ready.wait(10)
    return release, t


@pytest.mark.parametrize("command", ["evaluate", "report", "cohort", "forget"])
def test_p6_a_second_writer_exits_2_before_doing_any_work(world, tmp_path, monkeypatch, command) -> None:
    import medunlearn.workflow.steps_forget as steps_forget

    if command == "evaluate":
        target, args = tmp_path / "e.json", ["evaluate", "--model", world["run_a"], "--cohort", world["cohort"],
                                               "--device", "ScannerX", "--out", tmp_path / "e.json"]
    elif command == "report":
        target, args = tmp_path / "r" / "report.json", ["report", world["run_a"], "--out", tmp_path / "r", "--no-pdf"]
    elif command == "cohort":
        target, args = tmp_path / "c.csv", ["cohort", "index", world["root"] / "archive", "--out", tmp_path / "c.csv",
                                              "--salt", "another-salt-2", "--overwrite"]
    else:
        target, args = tmp_path / "run", [*forget_args(world["root"], tmp_path / "run", 0), "--overwrite"]

    def no_work(*a, **k):
        raise AssertionError("the second writer started working")

    monkeypatch.setattr(steps_forget, "load_model_dir", no_work)
    monkeypatch.setattr("medunlearn.data.cohort.index_archive", no_work)
    release, t = _held_elsewhere(target)
    try:
        res = invoke(*args)
    finally:
        release.set()
        t.join()
    _one_error(res, "another medunlearn run")
    assert not target.exists()


# 7. cohort index commits the table and its locator as one ---------------------------------------------------------


def _cohort_state(table: Path) -> str | None:
    """The salt fingerprint the visible cohort carries; fails when the table's ids are missing from the locator."""
    if not table.exists():
        return None
    loc = table.with_name(table.stem + ".locator.json")
    ids = set(pd.read_csv(table, dtype=str)["image_id"])
    assert loc.exists(), "a cohort table without its locator"
    assert ids <= set(json.loads(loc.read_text())["images"]), "the table's ids are missing from its locator"
    return json.loads(table.with_name("ingest.json").read_text())["salt_fingerprint"]


INDEX_RENAMES = 9  # os.replace / os.rename calls of `cohort index --overwrite` (checked below)


def _index_args(world, tmp_path: Path) -> list:
    return ["cohort", "index", world["root"] / "archive", "--labels", world["root"] / "archive" / "labels.csv",
            "--out", tmp_path / "cohort.csv", "--report", tmp_path / "ingest.json", "--workers", "1"]


def test_p7_the_cohort_index_sweep_covers_every_rename(world, tmp_path) -> None:
    args = _index_args(world, tmp_path)
    assert invoke(*args, "--salt", "first-salt-1").exit_code == 0
    code, calls = killed_at(0, lambda: invoke(*args, "--salt", "second-salt-2", "--overwrite"))
    assert code == 0 and calls == INDEX_RENAMES


@pytest.mark.parametrize("k", range(1, INDEX_RENAMES + 1))
def test_p7_a_kill_during_cohort_index_never_pairs_a_new_locator_with_an_old_table(world, tmp_path, k) -> None:
    table = tmp_path / "cohort.csv"
    args = _index_args(world, tmp_path)
    assert invoke(*args, "--salt", "first-salt-1").exit_code == 0
    first = _cohort_state(table)
    code, _ = killed_at(k, lambda: invoke(*args, "--salt", "second-salt-2", "--overwrite"))
    assert code != 0, f"cohort index finished before rename {k}: its count changed (INDEX_RENAMES)"
    _cohort_state(table)  # none, the first or the second cohort, never a mix
    res = invoke(*args, "--salt", "second-salt-2", "--overwrite")
    assert res.exit_code == 0, res.output
    assert _cohort_state(table) not in (None, first)
    assert leftovers(tmp_path, "cohort.csv") + leftovers(tmp_path, "cohort.locator.json") == []


# 8. merge --reference gets the architecture and rule checks of evaluate / forget ----------------------------------


def test_p8_merge_reference_of_another_architecture_is_refused(runs) -> None:
    from medunlearn.errors import MedUnlearnError
    from medunlearn.models.checkpoint import read_meta
    from medunlearn.selection.rules import AnyOf, build_rule
    from medunlearn.workflow.steps_merge import _union_reference

    union = AnyOf([build_rule(device=["ScannerX"]), build_rule(device=["ScannerY"])])
    ref = save_checkpoint(runs["root"] / "ref", tiny_model(width=8),  # twice as wide as the base
                          {"kind": "retrain", "class_names": CLASSES, "rule": union.describe(),
                           "config": {"exclude_forget": True}})
    with pytest.raises(MedUnlearnError, match="architecture"):
        _union_reference(ref, union, read_meta(runs["base"]))


# 9. No output may be an input, hold one or lie inside one, whatever --overwrite says -------------------------------


def test_p9_an_input_is_never_the_output(world, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(world["run_a"], run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    _one_error(invoke("export-bundle", run, run, "--overwrite"), "destroy")
    base = tmp_path / "base"
    shutil.copytree(world["base"], base)
    _one_error(invoke("forget", "--cohort", world["cohort"], "--model", base, "--device", "ScannerX", "--out", base,
                      "--overwrite"), "destroy")
    w = tmp_path / "w"
    w.mkdir()
    for name in ("cohort.csv", "cohort.locator.json"):
        shutil.copy(world["root"] / name, w / name)
    loc = json.loads((w / "cohort.locator.json").read_text())
    loc["archive_root"] = os.path.relpath(world["root"] / "archive", w)
    (w / "cohort.locator.json").write_text(json.dumps(loc))
    _one_error(invoke("train", "--cohort", w / "cohort.csv", "--out", w, "--overwrite", "--epochs", "1"), "destroy")
    _one_error(invoke("train", "--cohort", w / "cohort.csv", "--out", world["root"] / "archive", "--overwrite",
                      "--epochs", "1"), "destroy")
    assert (w / "cohort.csv").is_file() and (w / "cohort.locator.json").is_file()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before and (base / "model.safetensors").is_file()


# 10. The same salt minimum from every source ----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["--salt", "--salt-file", "env"])
def test_p10_a_one_character_salt_is_refused_from_every_source(world, tmp_path, source) -> None:
    args = ["cohort", "index", world["root"] / "archive", "--out", tmp_path / "c.csv", "--workers", "1"]
    env = None
    if source == "--salt":
        args += ["--salt", "x"]
    elif source == "--salt-file":
        (tmp_path / "salt").write_text("x\n")
        args += ["--salt-file", tmp_path / "salt"]
    else:
        env = {"MEDUNLEARN_SALT": "x"}
    _one_error(invoke(*args, env=env), "at least 8 characters")
    assert not (tmp_path / "c.csv").exists()


# 12. Bad input is exit 2 with one line, never exit 1 ---------------------------------------------------------------


def _overflowing(root: Path) -> Path:
    m = tiny_model()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(1e30)  # finite weights whose products overflow float32
    return save_checkpoint(root / "overflow", m, {"kind": "base", "class_names": CLASSES})


@pytest.mark.parametrize("case", ["non_integer_rows", "batch_size_0", "torch_device", "out_dot", "nonfinite_outputs"])
def test_p12_bad_input_is_exit_2_with_one_line(world, tmp_path, monkeypatch, case) -> None:
    c = world["cohort"]
    if case == "non_integer_rows":
        df = pd.read_csv(c, dtype=str, keep_default_na=False)
        df.loc[0, "rows"], df.loc[1, "cols"] = "abc", "12.5"
        df.to_csv(tmp_path / "cohort.csv", index=False)
        shutil.copy(world["root"] / "cohort.locator.json", tmp_path / "cohort.locator.json")
        res = invoke("forget", "--cohort", tmp_path / "cohort.csv", "--device", "ScannerX", "--dry-run",
                     "--out", tmp_path / "sel")
        needle = "'rows'"
    elif case == "batch_size_0":
        res = invoke(*forget_args(world["root"], tmp_path / "r", 0)[:-1], tmp_path / "r", "--set", "batch_size=0")
        needle = "batch_size"
    elif case == "torch_device":
        res = invoke(*forget_args(world["root"], tmp_path / "r", 0), "--torch-device", "cuda:abc")
        needle = "--torch-device"
    elif case == "out_dot":
        (tmp_path / "here").mkdir()
        monkeypatch.chdir(tmp_path / "here")
        res = invoke("train", "--cohort", c, "--epochs", "1", "--out", ".")
        needle = "current folder"
    else:
        res = invoke("evaluate", "--model", _overflowing(tmp_path), "--cohort", c, "--device", "ScannerX")
        needle = "finite"
    _one_error(res, needle)


# Weaker findings: owner-only files; a tampered meta.json allocates nothing before it is refused --------------------


def test_bundle_weights_and_report_pdf_are_owner_only(two_runs, tmp_path, monkeypatch) -> None:
    good, _ = two_runs
    browser = tmp_path / "fake-chromium"
    browser.write_text("#!/bin/sh\nfor a in \"$@\"; do case $a in --print-to-pdf=*) printf '%%PDF-fake' > "
                       "\"${a#--print-to-pdf=}\";; esac; done\n")
    browser.chmod(0o755)
    monkeypatch.setenv("MEDUNLEARN_CHROMIUM", str(browser))
    res = invoke("report", good, "--out", tmp_path / "rep")
    assert res.exit_code == 0 and (tmp_path / "rep" / "report.pdf").is_file(), res.output
    assert invoke("export-bundle", good, tmp_path / "bundle").exit_code == 0
    for f in [tmp_path / "bundle" / "models" / "model.pt", tmp_path / "rep" / "report.pdf",
              *(tmp_path / "rep").iterdir()]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_a_tampered_meta_json_is_refused_before_any_tensor_is_allocated(tmp_path, monkeypatch) -> None:
    from medunlearn.errors import CheckpointError
    from medunlearn.models import checkpoint

    d = save_checkpoint(tmp_path / "c", tiny_model(), {"kind": "base", "class_names": CLASSES})
    meta = json.loads((d / "meta.json").read_text())
    meta["architecture"]["kwargs"]["width"] = 4096  # ~ gigabytes of parameters, still under the parameter cap
    (d / "meta.json").write_text(json.dumps(meta))
    built = []
    real = checkpoint.model_from_arch
    def counted(arch):  # networks built for real (the parameter count builds one on the meta device)
        if torch.get_default_device().type != "meta":
            built.append(arch)
        return real(arch)

    monkeypatch.setattr(checkpoint, "model_from_arch", counted)
    with pytest.raises(CheckpointError, match="weights file"):
        checkpoint.load_checkpoint(d)
    assert built == []  # refused from the safetensors header, before the network was built
