"""The verdict: fixture metrics.json files in the acceptance contract's schema (met, not met, a merge with
per-policy entries, no acceptance) → the same decision in report.html, report.md and report.json."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from medunlearn.attest import seal
from medunlearn.fileio import write_json
from medunlearn.models.checkpoint import save_checkpoint
from medunlearn.models.zoo import create_model
from medunlearn.report import render_report
from medunlearn.report.verdict import FAIL, NOT_EVALUATED, PASS, build_verdict

CHECKS_MET = [
    {"name": "forget_accuracy", "label": "held-out forget-domain accuracy", "value": 31.2, "op": "within",
     "threshold": [28.33, 38.33], "unit": "%", "passed": True},
    {"name": "forget_confidence", "label": "mean max-softmax on the forget domain", "value": 40.0, "op": "<=",
     "threshold": 43.33, "unit": "%", "passed": True},
    {"name": "retain_accuracy", "label": "val_retain accuracy", "value": 97.0, "op": ">=", "threshold": 96.5,
     "unit": "%", "passed": True}]
ACCEPTANCE_MET = {"met": True, "goal": "suppression", "judged_on": "validation",
                  "criteria": {"forget_target": 33.33, "forget_tol": 5.0, "max_confidence": 43.33,
                               "retain_drop": 1.0, "retain_original": 97.5},
                  "checks": CHECKS_MET, "state": "best (criteria met)", "step": 14, "steps_run": 20, "budget": 200,
                  "reason": "criteria met; no better state in 3 further checks", "trace_file": "trace.csv"}
CORE = {"forget_acc": 40.0, "retain_acc": 97.0, "val_forget_acc": 31.2, "test_retain_acc": 95.0,
        "test_forget_acc": 35.0, "mia_efficacy": 50.0}


def not_met() -> dict:
    acc = copy.deepcopy(ACCEPTANCE_MET)
    acc.update(met=False, state="closest (criteria not met)", reason="budget reached; no checked state met every criterion")
    acc["checks"][1].update(value=51.0, passed=False)
    return acc


def write_run(root: Path, acceptance: dict | None, reference: bool = False, trace: str | None = None) -> Path:
    root.mkdir(parents=True)
    metrics = {"schema_version": 1, **CORE, "original": dict(CORE, val_forget_acc=79.4)}
    if reference:
        metrics["reference"] = dict(CORE, val_forget_acc=33.0)
    if acceptance is not None:
        metrics["acceptance"] = acceptance
    save_checkpoint(root, create_model("small_cnn", 2, 1, 16, width=4),  # the report verifies real weights
                    {"kind": "unlearned", "rule_text": "device = ScannerX", "method": "psg", "goal": "suppression",
                     "synthetic": True})
    write_json(root / "metrics.json", seal(root, metrics))  # signed, as forget/merge write it
    if trace is not None:
        (root / "trace.csv").write_text(trace)
    return root


def write_merge(root: Path, acceptance: dict | None) -> Path:
    root.mkdir(parents=True)
    pol = {"device = ScannerX": dict(CORE, reference=dict(CORE, val_forget_acc=34.0)), "site = Site B": dict(CORE)}
    save_checkpoint(root, create_model("small_cnn", 2, 1, 16, width=4), {"kind": "merged", "synthetic": True, "merge": {
        "method": "ties", "base": {"path": "base"}, "runs": [{"path": "runs/psg_device", "rule_text": "device = ScannerX"},
                                                             {"path": "runs/psg_site", "rule_text": "site = Site B"}]}})
    metrics = {"schema_version": 1, "policies": pol, "union": dict(CORE)}
    if acceptance is not None:
        metrics["acceptance"] = acceptance
    write_json(root / "metrics.json", seal(root, metrics))  # signed, as forget/merge write it
    return root


def merged_acceptance(device_fa: float) -> dict:
    dev = copy.deepcopy(ACCEPTANCE_MET)
    dev["checks"][0].update(value=device_fa, passed=28.33 <= device_fa <= 38.33)
    dev["met"] = dev["checks"][0]["passed"]
    site = copy.deepcopy(ACCEPTANCE_MET)
    return {"met": dev["met"], "policies": [{"policy": "device = ScannerX", "run_sha256": "ab" * 32, **dev},
                                            {"policy": "site = Site B", "run_sha256": "cd" * 32, **site}],
            "retain": {"checks": [CHECKS_MET[2]], "met": True}}


def rendered(d: Path, out: Path) -> tuple[str, str, dict]:
    paths = render_report(d, out)
    return paths["html"].read_text(), paths["md"].read_text(), json.loads(paths["json"].read_text())


@pytest.mark.parametrize("acceptance, decision", [(ACCEPTANCE_MET, PASS), (not_met(), FAIL), (None, NOT_EVALUATED)])
def test_single_run_decision_is_the_same_in_html_md_and_json(tmp_path, acceptance, decision):
    html, md, doc = rendered(write_run(tmp_path / "run", acceptance), tmp_path / "out")
    v = doc["verdict"]
    assert v["decision"] == decision and v["met"] == {PASS: True, FAIL: False}.get(decision)
    assert [r["name"] for r in v["rows"]] == ["policy: device = ScannerX"]
    assert v["summary"].startswith(f"Decision: {decision}.")
    # verdict first: before the table of contents in HTML, the first section in Markdown
    assert html.index('class="verdict"') < html.index("<nav>") < html.index("Description of Modification</h2>")
    assert md.index("## Verdict") < md.index("## Description of Modification")
    assert v["summary"] in md and v["summary"] in html.replace("&#x27;", "'")
    if decision == NOT_EVALUATED:
        assert "| policy: device = ScannerX | NOT EVALUATED |" in md and "PASS" not in md.split("## Description")[0]
    else:
        for c in acceptance["checks"]:  # every check: value, threshold and its result
            row = next(x for x in v["rows"][0]["checks"] if x["name"] == c["name"])
            assert row["value"] == c["value"] and row["result"] == (PASS if c["passed"] else FAIL)
        assert "within [28.3, 38.3] %" in md and "43.3 %" in md and "96.5 %" in md  # (md escapes < and >)
        assert "&lt;= 43.3 %" in html and "&gt;= 96.5 %" in html
    if decision == FAIL:
        assert "mean max-softmax on the forget domain" in v["summary"] and "Do not deploy" in v["summary"]
        assert "51.0 %" in md


def test_checks_that_fail_while_met_claims_true_still_fail():
    acc = copy.deepcopy(ACCEPTANCE_MET)
    acc["checks"][2]["passed"] = False
    assert build_verdict({"kind": "unlearned"}, {"acceptance": acc})["decision"] == FAIL
    acc = copy.deepcopy(ACCEPTANCE_MET)
    acc["met"] = False  # every check passed but the run says not met: never PASS
    assert build_verdict({"kind": "unlearned"}, {"acceptance": acc})["decision"] == FAIL
    assert build_verdict({}, {"acceptance": {"met": True, "checks": []}})["decision"] == NOT_EVALUATED


def test_reference_column_only_when_a_reference_was_evaluated(tmp_path):
    _, md, doc = rendered(write_run(tmp_path / "a", ACCEPTANCE_MET, reference=True), tmp_path / "oa")
    header = next(line for line in md.splitlines() if line.startswith("| policy / model"))
    assert "retrain reference" in header and "held-out forget-domain accuracy: 33.0 %" in md
    assert doc["verdict"]["rows"][0]["checks"][0]["reference"] == 33.0
    _, md, _ = rendered(write_run(tmp_path / "b", ACCEPTANCE_MET), tmp_path / "ob")
    assert "retrain reference" not in next(line for line in md.splitlines() if line.startswith("| policy / model"))


def test_merge_rows_per_policy_and_merged_model(tmp_path):
    _, md, doc = rendered(write_merge(tmp_path / "m", merged_acceptance(79.4)), tmp_path / "o")
    v = doc["verdict"]
    assert [(r["name"], r["result"]) for r in v["rows"]] == [
        ("policy: device = ScannerX", FAIL), ("policy: site = Site B", PASS), ("merged model", PASS)]
    assert v["decision"] == FAIL and "device = ScannerX" in v["summary"]
    assert "79.4 %" in md and v["rows"][0]["checks"][0]["reference"] == 34.0  # the union retrain, per policy
    _, _, doc = rendered(write_merge(tmp_path / "m2", merged_acceptance(33.0)), tmp_path / "o2")
    assert doc["verdict"]["decision"] == PASS and doc["verdict"]["met"] is True
    keyed = merged_acceptance(79.4)
    keyed["policies"] = {p.pop("policy"): p for p in keyed["policies"]}  # {rule: record} is read the same way
    assert [r["result"] for r in build_verdict({"kind": "merged"}, {"acceptance": keyed})["rows"]] == [FAIL, PASS, PASS]


def test_merge_without_acceptance_is_not_evaluated_per_policy(tmp_path):
    _, md, doc = rendered(write_merge(tmp_path / "m", None), tmp_path / "o")
    v = doc["verdict"]
    assert v["decision"] == NOT_EVALUATED and v["met"] is None
    assert [r["result"] for r in v["rows"]] == [NOT_EVALUATED] * 3
    assert [r["name"] for r in v["rows"]][:2] == ["policy: device = ScannerX", "policy: site = Site B"]


def test_report_without_metrics_names_the_command(tmp_path):
    d = write_merge(tmp_path / "merged", None)
    (d / "metrics.json").unlink()
    from medunlearn.errors import DataError

    with pytest.raises(DataError) as exc:
        render_report(d, tmp_path / "o")
    msg = str(exc.value)
    assert "medunlearn merge runs/psg_device runs/psg_site --base base --method ties --cohort" in msg
    assert "has none" in msg and not (tmp_path / "o").exists()


TRACE = ("step,phase,forget_acc,forget_conf,retain_acc,met,violation,decision\n"
         "0,original,79.4,88.0,97.5,False,41.0,closest so far\n"
         "5,method,50.0,60.0,95.0,False,12.0,retain below guard: repair\n"
         "5,repair,52.0,61.0,97.0,False,13.0,retain restored\n"
         "10,method,31.2,40.0,97.0,True,0.0,new best (criteria met)\n")


def test_trace_plot_is_in_the_plots_section(tmp_path):
    html, md, _ = rendered(write_run(tmp_path / "r", ACCEPTANCE_MET, trace=TRACE), tmp_path / "o")
    assert "Stop / guard trace: 4 checks, returned step 14" in md
    plots = html.split("Plots</h2>")[1]
    assert re.search(r'<img alt="Stop / guard trace[^"]*" src="data:image/png;base64,', plots)


def test_selectivity_check_fails_a_flattened_run_and_shows_both_figures(tmp_path):
    acc = copy.deepcopy(ACCEPTANCE_MET)
    acc["checks"].append({"name": "retain_confidence", "label": "mean max-softmax on val_retain (selectivity)",
                          "value": 41.2, "op": ">=", "threshold": 93.2, "unit": "%", "passed": False,
                          "routing_threshold": 43.33, "routed": 71.0, "routed_original": 0.5})
    acc["met"] = False
    _, md, doc = rendered(write_run(tmp_path / "d", acc), tmp_path / "od")
    v = doc["verdict"]
    assert v["decision"] == FAIL and "mean max-softmax on val_retain (selectivity)" in v["summary"]
    assert "41.2 %" in md and "93.2 %" in md and "71.0 % of images, original 0.5 %" in md
