"""The reference hint: a domain suppression band far below what a retrain scores on the domain gets a note."""
from __future__ import annotations

from medunlearn.report.verdict import build_verdict
from medunlearn.workflow.diagnose import reference_hint

CRITERIA = {"goal": "suppression", "policy_kind": "domain", "forget_target": 100 / 3, "forget_tol": 5.0}


def acceptance(**criteria) -> dict:
    return {"met": False, "criteria": {**CRITERIA, **criteria}, "checks": [
        {"name": "forget_accuracy", "label": "forget", "value": 90.0, "op": "within", "threshold": [28.3, 38.3],
         "unit": "%", "passed": False}], "state": "closest (criteria not met)", "reason": "budget reached"}


def test_a_reference_that_generalises_to_the_domain_gets_a_hint_naming_its_accuracy_and_the_band():
    hint = reference_hint(acceptance(), {"val_forget_acc": 100.0})
    assert hint is not None and "100.0 %" in hint and "28.3–38.3 %" in hint and "equivalence" in hint


def test_no_hint_when_the_reference_is_near_the_band_or_missing_or_the_policy_is_a_class():
    assert reference_hint(acceptance(), {"val_forget_acc": 43.0}) is None  # within one tolerance of the band
    assert reference_hint(acceptance(), {"val_forget_acc": 43.4}) is not None
    assert reference_hint(acceptance(), None) is None
    assert reference_hint(acceptance(), {}) is None
    assert reference_hint(acceptance(policy_kind="class", forget_target=0.0), {"val_forget_acc": 90.0}) is None
    assert reference_hint(acceptance(goal="equivalence"), {"val_forget_acc": 90.0}) is None


def test_the_report_verdict_carries_the_hint_in_the_rows_note():
    acc = acceptance()
    acc["reference_hint"] = reference_hint(acc, {"val_forget_acc": 100.0})
    row = build_verdict({"kind": "unlearned"}, {"acceptance": acc})["rows"][0]
    assert "retrain reference" in row["note"]
