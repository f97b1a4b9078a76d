"""The verdict: every acceptance check of a run (or of a merged model, per policy) and one decision.

Reads the ``acceptance`` record of metrics.json (see docs/ARCHITECTURE.md, "Acceptance"):
- an unlearning run: ``{"met", "goal", "checks": [{name, label, value, op, threshold, unit, passed, interval?}],
  "state", "step", "reason", ...}`` → one row;
- a merged model: ``{"met", "policies": [{"policy", "run_sha256", ...the same fields}], "retain": {...}}`` → one
  row per policy and one for the merged model (its retain checks, or every policy's checks when it has none).
A run without ``acceptance`` (older runs) gives rows marked "not evaluated"; the decision is then NOT
EVALUATED, never PASS. A row passes only when it has checks, every check passed and ``met`` (when recorded)
is true. Decision: FAIL if any row fails, else NOT EVALUATED if any row was not evaluated, else PASS.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

PASS, FAIL, NOT_EVALUATED = "PASS", "FAIL", "NOT EVALUATED"
# check name -> key of the retrain reference's core metrics measuring the same thing on the same rows
REFERENCE_KEYS = {"forget_accuracy": "val_forget_acc"}


def _num(x: Any) -> str:
    return f"{float(x):.1f}" if isinstance(x, (int, float)) and math.isfinite(float(x)) else "?"


def threshold_text(check: Mapping[str, Any]) -> str:
    """The requirement of one check, e.g. "within [28.3, 38.3] %", "<= 43.3 %", "CI covers 0.0"."""
    t, op, unit = check.get("threshold"), str(check.get("op", "")), str(check.get("unit", ""))
    if op == "within" and isinstance(t, (list, tuple)) and len(t) == 2:
        return f"within [{_num(t[0])}, {_num(t[1])}] {unit}".strip()
    if op == "ci_covers":
        return f"CI covers {_num(t)} {unit}".strip()
    return f"{op} {_num(t)} {unit}".strip()


def value_text(check: Mapping[str, Any]) -> str:
    text = f"{_num(check.get('value'))} {check.get('unit', '')}".strip()
    iv = check.get("interval")
    if isinstance(iv, (list, tuple)) and len(iv) == 2:
        text += f" (CI {_num(iv[0])}–{_num(iv[1])})"
    if check.get("routed") is not None:  # criterion (d): its clinical form beside the gated mean
        text += (f"; routed to a human (max-softmax < {_num(check.get('routing_threshold'))} %): "
                 f"{_num(check['routed'])} % of images, original {_num(check.get('routed_original'))} %")
    return text


def _row(name: str, kind: str, record: Any, reference: Mapping[str, Any] | None) -> dict[str, Any]:
    """One verdict row from an acceptance record (or None: not evaluated)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("checks"), list) or not record["checks"]:
        return {"name": name, "kind": kind, "result": NOT_EVALUATED, "met": None, "checks": [],
                "note": "no acceptance criteria were recorded"}
    checks = []
    for c in record["checks"]:
        if not isinstance(c, Mapping):
            continue
        ref_key = REFERENCE_KEYS.get(str(c.get("name")))
        ref = reference.get(ref_key) if reference and ref_key else None
        checks.append({"name": str(c.get("name")), "label": str(c.get("label") or c.get("name")),
                       "value": c.get("value"), "value_text": value_text(c), "threshold": c.get("threshold"),
                       "threshold_text": threshold_text(c), "op": c.get("op"), "unit": c.get("unit", ""),
                       "passed": c.get("passed") is True, "result": PASS if c.get("passed") is True else FAIL,
                       "reference": ref if isinstance(ref, (int, float)) else None})
    ok = bool(checks) and all(c["passed"] for c in checks) and record.get("met", True) is True
    note = "; ".join(str(record[k]) for k in ("state", "reason", "reference_hint", "resolution_hint") if record.get(k))
    if record.get("step") is not None:
        note = f"returned step {record['step']} of {record.get('steps_run', '?')}" + (f"; {note}" if note else "")
    return {"name": name, "kind": kind, "result": PASS if ok else FAIL, "met": ok, "checks": checks,
            "goal": record.get("goal"), "judged_on": record.get("judged_on"), "note": note}


def _policy_name(p: Mapping[str, Any], i: int) -> str:
    return str(p.get("policy") or p.get("rule") or p.get("name") or f"policy {i + 1}")


def _reference_for(metrics: Mapping[str, Any], policy: str | None) -> Mapping[str, Any] | None:
    """The retrain reference's core metrics for a run (or one policy of a merge), when one was evaluated."""
    src = metrics
    if policy is not None and isinstance(metrics.get("policies"), Mapping):
        src = metrics["policies"].get(policy) or {}
    ref = src.get("reference") if isinstance(src, Mapping) else None
    return ref if isinstance(ref, Mapping) else None


def build_verdict(meta: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """{"decision", "met", "rows", "summary", "reference"} for a run or a merged checkpoint (JSON-ready)."""
    acc = metrics.get("acceptance")
    merged = str(meta.get("kind")) == "merged" or isinstance(metrics.get("policies"), Mapping)
    rows: list[dict[str, Any]] = []
    if merged:
        pols = acc.get("policies") if isinstance(acc, Mapping) else None
        if isinstance(pols, Mapping):  # tolerate {rule: record} as well as [{"policy": rule, ...}]
            pols = [{"policy": k, **v} for k, v in pols.items() if isinstance(v, Mapping)]
        if isinstance(pols, list) and pols:
            for i, p in enumerate(pols):
                name = _policy_name(p if isinstance(p, Mapping) else {}, i)
                rows.append(_row(f"policy: {name}", "policy", p, _reference_for(metrics, name)))
        else:  # no per-policy verdicts: one not-evaluated row per policy we know of
            names = list(metrics.get("policies") or {}) or [str(r.get("rule_text") or r.get("rule") or r.get("path"))
                                                            for r in (meta.get("merge") or {}).get("runs", [])
                                                            if isinstance(r, Mapping)]
            rows += [_row(f"policy: {n}", "policy", None, None) for n in names]
        rows.append(_merged_row(acc, rows, _reference_for(metrics, None) or _union_reference(metrics)))
    else:
        rows.append(_row(f"policy: {_run_rule(meta)}", "run", acc, _reference_for(metrics, None)))
    results = [r["result"] for r in rows]
    decision = FAIL if FAIL in results else (NOT_EVALUATED if NOT_EVALUATED in results else PASS)
    return {"decision": decision, "met": {PASS: True, FAIL: False}.get(decision), "rows": rows,
            "summary": decision_line(decision, rows),
            "reference": any(c["reference"] is not None for r in rows for c in r["checks"])}


def _union_reference(metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    union = metrics.get("union")
    ref = union.get("reference") if isinstance(union, Mapping) else None
    return ref if isinstance(ref, Mapping) else None


def _merged_row(acc: Any, policy_rows: list[dict], reference: Mapping[str, Any] | None) -> dict[str, Any]:
    """The merged model's own row: its retain checks when recorded (the policies' rows carry the rest), else
    its top-level checks, else PASS only when every policy row passed."""
    if not isinstance(acc, Mapping):
        return _row("merged model", "merged", None, None)
    own = acc.get("retain")
    if not isinstance(own, Mapping):
        own = acc
    row = _row("merged model", "merged", own if own.get("checks") else None, reference)
    if row["result"] == NOT_EVALUATED and policy_rows and all(r["result"] != NOT_EVALUATED for r in policy_rows):
        ok = all(r["result"] == PASS for r in policy_rows) and acc.get("met", True) is True
        row.update(result=PASS if ok else FAIL, met=ok, note="judged by its per-policy checks")
    elif row["result"] == PASS and own is acc and acc.get("met") is False:  # its own record says not met
        row.update(result=FAIL, met=False)
    return row


def _run_rule(meta: Mapping[str, Any]) -> str:
    return str(meta.get("rule_text") or (meta.get("rule") if isinstance(meta.get("rule"), str) else "")
               or "forget rule")


def decision_line(decision: str, rows: list[dict[str, Any]]) -> str:
    """One sentence a reviewer can act on."""
    if decision == PASS:
        return (f"Decision: PASS. Every acceptance check passed ({len(rows)} row(s)); the modification meets its "
                "stated criteria on validation data.")
    if decision == FAIL:
        bad = [f"{r['name']} ({', '.join(c['label'] for c in r['checks'] if not c['passed']) or 'not met'})"
               for r in rows if r["result"] == FAIL]
        return f"Decision: FAIL. Do not deploy: {'; '.join(bad)}."
    missing = [r["name"] for r in rows if r["result"] == NOT_EVALUATED]
    return (f"Decision: NOT EVALUATED. No acceptance criteria were recorded for {', '.join(missing)}; this report "
            "cannot support a deployment decision. Re-run the unlearning (or the merge with --cohort) with a "
            "medunlearn version that records acceptance criteria.")


def verdict_table(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict as a "verdict" block: one row per verdict row, one column per check (union, in order),
    a retrain-reference column when a reference was evaluated, the row's result, and the decision line.

    Cells are {"text", "result"} (result: PASS / FAIL / NOT EVALUATED / None) so renderers can colour them.
    """
    names: list[str] = []
    labels: dict[str, str] = {}
    for r in verdict["rows"]:
        for c in r["checks"]:
            if c["name"] not in names:
                names.append(c["name"])
                labels[c["name"]] = c["label"]
    with_ref = bool(verdict.get("reference"))
    columns = ["policy / model"] + [labels[n] for n in names] + (["retrain reference"] if with_ref else []) + ["result"]
    rows = []
    for r in verdict["rows"]:
        cells = [{"text": r["name"], "result": None}]
        by_name = {c["name"]: c for c in r["checks"]}
        for n in names:
            c = by_name.get(n)
            if c is None:
                cells.append({"text": "not evaluated" if r["result"] == NOT_EVALUATED else "n/a",
                              "result": NOT_EVALUATED if r["result"] == NOT_EVALUATED else None})
            else:
                cells.append({"text": f"{c['value_text']} (required {c['threshold_text']}): {c['result']}",
                              "value": c["value_text"], "required": c["threshold_text"], "result": c["result"]})
        if with_ref:
            refs = [f"{c['label']}: {_num(c['reference'])} {c['unit']}".rstrip() for c in r["checks"]
                    if c["reference"] is not None]
            cells.append({"text": "; ".join(refs) or "—", "result": None})
        cells.append({"text": r["result"], "result": r["result"]})
        rows.append(cells)
    return {"type": "verdict", "columns": columns, "rows": rows, "decision": verdict["decision"],
            "summary": verdict["summary"],
            "notes": [f"{r['name']}: {r['note']}" for r in verdict["rows"] if r.get("note")]}
