"""The CLI end to end on a tiny synthetic cohort, plus every bad-input path: one red line, exit code 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medunlearn.cli.main import app
from medunlearn.provenance import sha256_file

runner = CliRunner()
COMMANDS = ["cohort", "train", "forget", "tune", "evaluate", "merge", "report", "export-bundle", "models", "methods",
            "demo", "bench"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    assert invoke("cohort", "synth", root / "archive", "--patients", "30", "--seed", "1").exit_code == 0
    res = invoke("cohort", "index", root / "archive", "--labels", root / "archive" / "labels.csv",
                 "--out", root / "cohort.csv", "--report", root / "ingest.json", "--salt", "test-salt")
    assert res.exit_code == 0, res.output
    return root / "cohort.csv"


@pytest.fixture(scope="module")
def trained(cohort: Path) -> dict[str, Path]:
    root = cohort.parent
    common = ["--cohort", cohort, "--model", "small_cnn", "--epochs", "2", "--image-size", "32"]
    assert invoke("train", *common, "--out", root / "base").exit_code == 0
    res = invoke("train", *common, "--out", root / "retrain", "--device", "ScannerX", "--exclude")
    assert res.exit_code == 0, res.output
    return {"base": root / "base", "retrain": root / "retrain", "root": root}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    res = invoke(command, "--help")
    assert res.exit_code == 0
    assert "Example" in res.output or command == "cohort"


def test_top_level_help_lists_commands() -> None:
    out = invoke("--help").output
    for command in COMMANDS:
        assert command in out


def test_dry_run_prints_selection_and_writes_split(cohort: Path, tmp_path: Path) -> None:
    res = invoke("forget", "--cohort", cohort, "--device", "ScannerX", "--dry-run", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "device = ScannerX" in res.output and "train" in res.output
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["counts"]


@pytest.mark.parametrize("args, message", [
    (["--device", "ScanerX"], "Did you mean"),
    (["--where", "measurement_mm>>4"], "Expected"),
    (["--where", "label~."], "matches all"),
    (["--site", "Nowhere Hospital"], "Expected"),
])
def test_bad_rules_give_one_error_line_and_exit_2(cohort: Path, tmp_path: Path, args, message) -> None:
    res = invoke("forget", "--cohort", cohort, *args, "--dry-run", "--out", tmp_path)
    assert res.exit_code == 2
    assert message in res.output and "Error:" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "split.json").exists()


def test_missing_inputs_exit_2(tmp_path: Path) -> None:
    assert invoke("forget", "--cohort", tmp_path / "nope.csv", "--device", "X", "--dry-run").exit_code == 2
    assert invoke("cohort", "index", tmp_path / "missing").exit_code == 2
    (tmp_path / "empty").mkdir()
    assert invoke("cohort", "index", tmp_path / "empty", "--out", tmp_path / "c.csv").exit_code == 2
    assert not (tmp_path / "c.csv").exists()
    bad = tmp_path / "corrupt.csv"
    bad.write_bytes(b"\x00\x01not a csv")
    assert invoke("forget", "--cohort", bad, "--device", "X", "--dry-run").exit_code == 2


def test_forget_merge_report_bundle_end_to_end(cohort: Path, trained: dict[str, Path]) -> None:
    root, base = trained["root"], trained["base"]
    base_hash = sha256_file(base / "model.safetensors")
    res = invoke("forget", "--cohort", cohort, "--model", base, "--device", "ScannerX", "--method", "psg",
                 "--reference", trained["retrain"], "--out", root / "run_device", "--set", "epochs=2")
    metrics = json.loads((root / "run_device" / "metrics.json").read_text())
    assert res.exit_code == (0 if metrics["acceptance"]["met"] else 3), res.output
    for key in ("forget_acc", "retain_acc", "test_retain_acc", "test_forget_acc", "mia", "per_device", "per_site",
                "auroc", "ece", "avg_gap", "rte"):
        assert key in metrics
    site = json.loads((root / "run_device" / "meta.json").read_text())["counts"]["sites"][0]
    res = invoke("forget", "--cohort", cohort, "--model", base, "--site", site, "--method", "famr",
                 "--out", root / "run_site", "--set", "epochs=2", "--goal", "equivalence")
    met = json.loads((root / "run_site" / "metrics.json").read_text())["acceptance"]["met"]
    assert res.exit_code == (0 if met else 3), res.output
    res = invoke("merge", root / "run_device", root / "run_site", "--base", base, "--method", "ties",
                 "--cohort", cohort, "--out", root / "merged", "--force")
    assert res.exit_code in (0, 3), res.output
    merged = json.loads((root / "merged" / "metrics.json").read_text())
    assert res.exit_code == (0 if merged["acceptance"]["met"] else 3), res.output
    assert len(merged["policies"]) == 2 and "union" in merged
    assert [p["policy"] for p in merged["acceptance"]["policies"]] == list(merged["policies"])
    assert invoke("report", root / "merged", "--out", root / "report").exit_code == 0
    # a union retrain as the merge's reference fills the report's retrained column (wrong kinds are refused)
    (root / "union.yaml").write_text(f"any: [{{device: ScannerX}}, {{site: '{site}'}}]\n")
    res = invoke("train", "--cohort", cohort, "--model", "small_cnn", "--epochs", "1", "--image-size", "32",
                 "--rules", root / "union.yaml", "--exclude", "--out", root / "retrain_union")
    assert res.exit_code == 0, res.output
    merge_args = [root / "run_device", root / "run_site", "--base", base, "--cohort", cohort, "--method", "ties",
                  "--force"]
    res = invoke("merge", *merge_args, "--reference", trained["retrain"], "--out", root / "merged_bad")
    assert res.exit_code == 2 and "union of the merged policies" in res.output
    res = invoke("merge", *merge_args, "--reference", root / "retrain_union", "--out", root / "merged_ref")
    assert res.exit_code in (0, 3), res.output
    with_ref = json.loads((root / "merged_ref" / "metrics.json").read_text())
    assert all("reference" in m for m in [*with_ref["policies"].values(), with_ref["union"]])
    html = (root / "report" / "report.html").read_text()
    assert "synthetic" in html.lower() and "data:image/png;base64," in html
    assert invoke("export-bundle", root / "merged", root / "bundle").exit_code == 0
    changelog = json.loads((root / "bundle" / "configs" / "metadata.json").read_text())["changelog"]
    assert len(changelog) >= 2
    # a run's bundle carries the run's acceptance verdict
    assert invoke("export-bundle", root / "run_device", root / "bundle_run").exit_code == 0
    verdict = json.loads((root / "bundle_run" / "configs" / "metadata.json").read_text())["acceptance"]
    run_met = json.loads((root / "run_device" / "metrics.json").read_text())["acceptance"]["met"]
    assert verdict["met"] is run_met and verdict["policies"][0]["status"] == ("met" if run_met else "not met")
    # the deployed model is never modified; outputs are never clobbered without --overwrite
    assert sha256_file(base / "model.safetensors") == base_hash
    res = invoke("forget", "--cohort", cohort, "--model", base, "--device", "ScannerX", "--out", root / "run_device")
    assert res.exit_code == 2 and "--overwrite" in res.output
    # no identifying tags anywhere in what was written (the synthetic headers carry fake names "SYNTH^...")
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".csv", ".md", ".html", ".yaml"}:
            text = path.read_text(errors="ignore")
            assert "SYNTH^" not in text, path


def test_a_budget_too_small_exits_3_and_writes_a_checkpoint_marked_not_accepted(cohort: Path,
                                                                                  trained: dict[str, Path]) -> None:
    out = trained["root"] / "run_tiny_budget"
    res = invoke("forget", "--cohort", cohort, "--model", trained["base"], "--device", "ScannerX", "--method", "psg",
                 "--out", out, "--set", "epochs=0.01", "--set", "forget_measure=argmax")
    # argmax: a 1-step run cannot move top-1 accuracy to chance; the tiny base is already uncertain enough
    # on ScannerX that its expected accuracy (the domain default) can pass at step 0
    assert res.exit_code == 3 and "Criteria NOT met" in res.output and "FAIL" in res.output
    acceptance = json.loads((out / "metrics.json").read_text())["acceptance"]
    assert acceptance["met"] is False and acceptance["budget"] == 1
    assert {c["name"] for c in acceptance["checks"]} == {"forget_accuracy", "forget_confidence", "retain_accuracy",
                                                         "retain_confidence"}  # (d) selectivity
    assert json.loads((out / "meta.json").read_text())["accepted"] is False
    text = " ".join(res.output.split())  # rich wraps long lines
    if acceptance["underpowered"]:  # too few held-out forget rows: say so instead of suggesting a tune
        assert "sampling noise" in text and "medunlearn tune" not in text
    else:
        assert "medunlearn tune --method psg" in text
    assert (out / "model.safetensors").is_file()
    trace = (out / "trace.csv").read_text().splitlines()
    assert trace[0].startswith("step,phase,forget_acc,forget_expected,forget_conf,retain_acc") and len(trace) >= 3


def test_forget_auto_tries_the_chain_and_keeps_the_closest_when_none_meets(cohort: Path,
                                                                          trained: dict[str, Path]) -> None:
    from medunlearn.workflow.auto_method import CHAINS

    out = trained["root"] / "run_auto"
    res = invoke("forget", "--cohort", cohort, "--model", trained["base"], "--device", "ScannerX",  # auto: the default
                 "--out", out, "--set", "epochs=0.01", "--set", "forget_measure=argmax")
    assert res.exit_code == 3 and "Criteria NOT met" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    attempts = metrics["acceptance"]["auto"]
    assert [a["method"] for a in attempts] == [m for m, _ in CHAINS["domain"]]  # a device: the domain chain, all of it
    assert not any(a["met"] for a in attempts)
    kept = min(attempts, key=lambda a: a["violation"])  # every tiny-budget state keeps retain: violation decides
    assert metrics["method"] == kept["method"] == json.loads((out / "meta.json").read_text())["method"]
    config = (out / "config.yaml").read_text()
    assert f"method: {kept['method']}" in config and "--method auto" in config
    assert metrics["wall_time_s"] >= sum(a["wall_time_s"] for a in attempts) - 0.5  # the time of every attempt
    res = invoke("forget", "--cohort", cohort, "--model", trained["base"], "--device", "ScannerX", "--method", "auto",
                 "--out", trained["root"] / "run_auto2", "--set", "retain_weight=2")  # famr lacks it: refused upfront
    assert res.exit_code == 2 and not (trained["root"] / "run_auto2").exists()


def test_forget_refuses_bad_configs(cohort: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    base = trained["base"]
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("lr: !!python/object/apply:os.system ['touch pwned']\n")
    args = ["forget", "--cohort", cohort, "--model", base, "--device", "ScannerX", "--out", tmp_path / "run"]
    res = invoke(*args, "--method", "psg", "--config", hostile)
    assert res.exit_code == 2 and not Path("pwned").exists()
    res = invoke(*args, "--config", hostile)  # the default method (auto) runs several methods: a YAML needs --method
    assert res.exit_code == 2 and "--method psg --config" in " ".join(res.output.split())
    res = invoke(*args, "--set", "learning_rate=0.1")
    assert res.exit_code == 2 and "Expected" in res.output
    res = invoke(*args, "--method", "pgs")
    assert res.exit_code == 2 and 'Did you mean "psg"' in res.output
    res = invoke(*args, "--goal", "supression")
    assert res.exit_code == 2 and "suppression" in res.output
    res = invoke("forget", "--cohort", cohort, "--model", tmp_path / "no_model", "--device", "ScannerX",
                 "--out", tmp_path / "run")
    assert res.exit_code == 2
    assert not (tmp_path / "run").exists()


def test_evaluate_writes_metrics(cohort: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    res = invoke("evaluate", "--model", trained["retrain"], "--cohort", cohort, "--device", "ScannerX",
                 "--original", trained["base"], "--reference", trained["retrain"], "--out", tmp_path / "m.json")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["avg_gap"] == 0 and metrics["agreement"] == 100


def test_catalog_commands() -> None:
    assert "allcnn" in invoke("models").output
    out = invoke("methods").output
    for name in ("psg", "famr", "boundary_shrink", "scrub"):
        assert name in out


def test_demo_runs_the_whole_workflow_on_a_tiny_cohort(tmp_path: Path) -> None:
    res = invoke("demo", "--out", tmp_path / "demo", "--patients", "24", "--epochs", "2")
    met = [json.loads((tmp_path / "demo" / "runs" / f"{m}_device" / "metrics.json").read_text())["acceptance"]["met"]
           for m in ("psg", "famr")]
    assert res.exit_code == 0, res.output  # a tiny 2-epoch demo may honestly miss; it says so (exit 3 with --strict)
    assert all(met) or "Acceptance criteria NOT met" in res.output
    assert "SYNTHETIC" in res.output and "criteria" in res.output
    for rel in ("cohort.csv", "split.json", "base/model.safetensors", "retrain_device/meta.json",
                "runs/psg_device/metrics.json", "runs/famr_device/metrics.json", "merged/metrics.json",
                "report/report.html"):
        assert (tmp_path / "demo" / rel).is_file(), rel
    assert invoke("demo", "--out", tmp_path / "demo", "--patients", "24").exit_code == 2  # no silent clobber


# ---------------------------------------------------------------- merge: every policy's criteria (issue 11)
def _fake_run(base: Path, out: Path, rule: dict, accepted: bool, bias: float = 0.0, **criteria) -> Path:
    """A run folder made from the base (its head biased toward class 0 by `bias`), with the meta fields a
    real run writes: rule, goal, seed, base hash, verdict and the criteria settings."""
    from medunlearn.models.checkpoint import load_checkpoint, model_sha256, save_checkpoint

    model, meta = load_checkpoint(base)
    with __import__("torch").no_grad():
        model.head.bias[0] += bias
    meta.update({"kind": "unlearned", "rule": rule, "goal": "suppression", "seed": 0, "method": "psg",
                 "base_sha256": model_sha256(base), "accepted": accepted, "unlearn_config": criteria})
    save_checkpoint(out, model, meta)
    return out


LENIENT = {"forget_tol": 100.0, "confidence_margin": None, "retain_drop": 100.0}


def test_merge_that_breaks_a_policy_exits_3_and_the_card_lists_every_policy(cohort: Path, trained: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    base = trained["base"]
    confident = _fake_run(base, tmp_path / "confident", {"device": ["ScannerX"]}, True, bias=50.0)
    lenient = _fake_run(base, tmp_path / "lenient", {"device": ["Ingenia"]}, True, **LENIENT)
    res = invoke("merge", confident, lenient, "--base", base, "--method", "linear", "--cohort", cohort,
                 "--out", tmp_path / "merged")
    assert res.exit_code == 3, res.output
    assert "NOT met" in res.output and "device = ScannerX" in res.output
    acc = json.loads((tmp_path / "merged" / "metrics.json").read_text())["acceptance"]
    assert acc["met"] is False and acc["judged_on"] == "validation"
    by = {p["policy"]: p for p in acc["policies"]}
    conf = next(c for c in by["device = ScannerX"]["checks"] if c["name"] == "forget_confidence")
    assert conf["passed"] is False and conf["value"] > 90  # the +25 logit (averaged) makes it confident
    assert by["device = Ingenia"]["met"] is True  # its own (lenient) criteria, read from its run
    assert by["device = Ingenia"]["criteria"]["forget_tol"] == 100.0
    assert {"met", "value", "threshold", "original", "checks"} <= set(acc["retain"])
    meta = json.loads((tmp_path / "merged" / "meta.json").read_text())
    assert meta["accepted"] is False and (tmp_path / "merged" / "model.safetensors").is_file()
    from medunlearn.models.checkpoint import model_sha256
    cards = {c["policy"]: c for c in meta["policies"]}
    assert cards["device = ScannerX"]["run_sha256"] == model_sha256(confident)
    assert cards["device = ScannerX"]["rule"] == {"device": ["ScannerX"]}
    assert cards["device = ScannerX"]["criteria"]["max_confidence"] is not None
    assert cards["device = ScannerX"]["result"]["met"] is False and cards["device = Ingenia"]["result"]["met"]
    assert meta["split_hash"] and meta["inputs"]["run:confident"] == model_sha256(confident)


def test_merge_refuses_a_run_that_was_not_accepted_unless_forced(cohort: Path, trained: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    base = trained["base"]
    rejected = _fake_run(base, tmp_path / "rejected", {"device": ["ScannerX"]}, False, **LENIENT)
    res = invoke("merge", rejected, "--base", base, "--method", "linear", "--cohort", cohort, "--out", tmp_path / "m")
    assert res.exit_code == 2 and "did not meet its own criteria" in res.output and "--force" in res.output
    assert not (tmp_path / "m").exists()
    res = invoke("merge", rejected, "--base", base, "--method", "linear", "--cohort", cohort, "--out",
                 tmp_path / "m", "--force")
    assert res.exit_code == 0, res.output
    assert "--force" in res.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert any("--force" in w for w in metrics["warnings"]) and metrics["acceptance"]["met"] is True
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["policies"][0]["run_accepted"] is False


def test_merge_without_method_keeps_the_cheapest_candidate_that_meets(cohort: Path, trained: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    base = trained["base"]
    a = _fake_run(base, tmp_path / "a", {"device": ["ScannerX"]}, True, **LENIENT)
    b = _fake_run(base, tmp_path / "b", {"device": ["Ingenia"]}, True, **LENIENT)
    res = invoke("merge", a, b, "--base", base, "--cohort", cohort, "--out", tmp_path / "m",
                 "--candidates", "linear,task_arithmetic")
    assert res.exit_code == 0, res.output
    assert "Chose linear" in res.output and "cheapest" in res.output
    sel = json.loads((tmp_path / "m" / "metrics.json").read_text())["selection"]
    assert sel["chosen"] == "linear" and [c["method"] for c in sel["candidates"]] == ["linear"]
    res = invoke("merge", a, b, "--base", base, "--out", tmp_path / "m2")
    assert res.exit_code == 2 and "--cohort" in res.output
    res = invoke("merge", a, b, "--base", base, "--cohort", cohort, "--out", tmp_path / "m3", "--candidates", "lineer")
    assert res.exit_code == 2 and 'Did you mean "linear"' in res.output
