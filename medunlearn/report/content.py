"""Turn a checkpoint's meta / provenance / metrics into report sections (a small neutral document model).

A section is {"title", "blocks"}; blocks are {"type": "p" | "list" | "table" | "kv" | "image", ...}.
Both the HTML and the Markdown renderers read this model, and report.json stores it (without images).

Inputs read (all optional except metrics): meta["kind" | "rule" | "counts" | "goal" | "method" | "config" |
"seed" | "code_version" | "wall_time_s" | "base_sha256" | "merge"], provenance["created" | "code_version" |
"input_hashes" | "environment"], and metrics.json: a single run holds evaluate_model's dict; a merged run holds
{"schema_version": 1, "policies": {name: <evaluate_model dict on that policy's split>}, "union": <dict on the
union of all forget sets>}. ``counts`` is {"images", "patients", "devices", "sites"} removed by the rule.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from medunlearn.report import plots

HEADLINE = (("FA: forget accuracy (%)", "forget_acc"), ("RA: retain accuracy (%)", "retain_acc"),
            ("TA-retain: test accuracy, retain domain (%)", "test_retain_acc"),
            ("TA-forget: test accuracy, forget domain (%)", "test_forget_acc"),
            ("Confidence on retain-domain test images (mean max-softmax, %)", "test_retain_confidence"),
            ("Retain-domain test images routed to a human (max-softmax < 100/K + 10, %)", "test_retain_routed"),
            ("MIA efficacy (SVC, % predicted non-member)", "mia_efficacy"),
            ("MIA loss-LR AUC", "mia.loss_lr.auc_mean"), ("AUROC (macro, one-vs-rest)", "auroc"),
            ("ECE (calibration error)", "ece"))
PLOTTED = (("FA", "forget_acc"), ("RA", "retain_acc"), ("TA-retain", "test_retain_acc"),
           ("TA-forget", "test_forget_acc"), ("MIA eff.", "mia_efficacy"))
COUNT_KEYS = ("images", "patients", "devices", "sites")


def get(d: Any, path: str) -> Any:
    """Dotted lookup; an AUROC record {"macro": x, ...} reads as x."""
    for part in path.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    if isinstance(d, Mapping) and "macro" in d:
        d = d["macro"]
    return d


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}" if 0 < abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v) if len(v) <= 8 else f"{len(v)} items"
    if isinstance(v, Mapping):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def find_key(obj: Any, key: str, depth: int = 6) -> Any:
    """First value stored under `key` anywhere in a JSON-like object (bounded depth)."""
    if depth < 0:
        return None
    items: Iterable[Any]
    if isinstance(obj, Mapping):
        if key in obj:
            return obj[key]
        items = obj.values()
    elif isinstance(obj, list):
        items = obj
    else:
        return None
    for v in items:
        found = find_key(v, key, depth - 1)
        if found is not None:
            return found
    return None


def is_synthetic(*docs: Any) -> bool:
    return any(find_key(d, "synthetic") is True for d in docs)


def rule_text(rule: Any) -> str:
    if isinstance(rule, Mapping):
        return str(rule.get("text") or rule.get("description") or json.dumps(rule, sort_keys=True, default=str))
    if isinstance(rule, list):
        return "; ".join(rule_text(r) for r in rule if r)
    return "not recorded" if rule in (None, "") else str(rule)


def policies(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per forget policy: a single run has one; a merged run one per source run."""
    cfg = meta.get("config")
    if not isinstance(cfg, Mapping):
        cfg = {}
    merge = meta.get("merge")
    if isinstance(merge, Mapping) and merge.get("runs"):
        return [{"name": str(r.get("path", f"run {i}")).rstrip("/").split("/")[-1],
                 "rule": r.get("rule_text") or rule_text(r.get("rule")),
                 "method": r.get("method"), "goal": r.get("goal"), "counts": r.get("counts") or {},
                 "checkpoint_sha256": r.get("sha256")} for i, r in enumerate(merge["runs"])]
    counts = meta.get("counts") or find_key(meta.get("split_info", {}), "counts") or {}
    return [{"name": "policy", "rule": meta.get("rule_text") or rule_text(meta.get("rule")),
             "method": meta.get("method", cfg.get("method")), "goal": meta.get("goal", cfg.get("goal")),
             "counts": counts}]


def impact_table(m: Mapping[str, Any], model_label: str) -> dict[str, Any]:
    orig, ref = m.get("original") or {}, m.get("reference") or {}
    rows = [[label, fmt(get(orig, key)), fmt(get(m, key)), fmt(get(ref, key))] for label, key in HEADLINE]
    rows += [[label, "—", fmt(m.get(key)), "—"] for label, key in
             (("Avg-Gap to retrained (lower is better)", "avg_gap"), ("RTE: retrain time / method time", "rte"),
              ("Agreement with retrained (%)", "agreement"), ("Wall time (s)", "wall_time_s"))]
    return {"type": "table", "columns": ["metric", "original", model_label, "retrained"], "rows": rows}


def group_table(groups: Any, label: str) -> dict[str, Any] | None:
    if not isinstance(groups, Mapping) or not groups:
        return None
    rows = [[str(g), fmt(v.get("n_train")), fmt(v.get("train_acc")), fmt(v.get("n_test")), fmt(v.get("test_acc"))]
            for g, v in sorted(groups.items()) if isinstance(v, Mapping)]
    return {"type": "table", "columns": [label, "n train", "train acc (%)", "n test", "test acc (%)"], "rows": rows}


def metric_sets(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(title, metrics dict) pairs: per policy then the union for a merged run; the run itself otherwise."""
    if isinstance(metrics.get("policies"), Mapping):
        out = [(f"Policy: {name}", m) for name, m in metrics["policies"].items() if isinstance(m, Mapping)]
        if isinstance(metrics.get("union"), Mapping):
            out.append(("Union of all forget sets", metrics["union"]))
        return out
    return [("All data", metrics)]


def figures(title: str, m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Image blocks for one metrics dict (PNG bytes under "png")."""
    out = []
    series = {"original": [get(m.get("original") or {}, k) for _, k in PLOTTED],
              "unlearned": [get(m, k) for _, k in PLOTTED],
              "retrained": [get(m.get("reference") or {}, k) for _, k in PLOTTED]}
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    if series:
        out.append({"type": "image", "title": f"{title}: headline metrics", "png":
                    plots.grouped_bars([n for n, _ in PLOTTED], series, f"{title}: headline metrics")})
    for key, label in (("per_device", "device"), ("per_site", "site")):
        groups = m.get(key)
        if isinstance(groups, Mapping) and groups:
            names = sorted(groups)
            bars = {"train": [get(groups[g], "train_acc") for g in names],
                    "test": [get(groups[g], "test_acc") for g in names]}
            out.append({"type": "image", "title": f"{title}: accuracy per {label}",
                        "png": plots.grouped_bars(names, bars, f"{title}: accuracy per {label}")})
    conf = m.get("confusion")
    if isinstance(conf, Mapping) and conf.get("matrix"):
        out.append({"type": "image", "title": f"{title}: confusion matrix (test)",
                    "png": plots.confusion([str(x) for x in conf.get("labels") or range(len(conf["matrix"]))],
                                           conf["matrix"], f"{title}: confusion matrix")})
    scores = find_key(m.get("mia") or {}, "scores")
    if isinstance(scores, Mapping) and all(isinstance(v, list) for v in scores.values()) and scores:
        out.append({"type": "image", "title": f"{title}: MIA score distributions",
                    "png": plots.distributions(scores, f"{title}: MIA scores", "attack score")})
    return out


def log_figures(meta: Mapping[str, Any], metrics: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """(image blocks, table blocks) for the PSG relabel histogram and the FAMR certificate, when logged."""
    images, tables = [], []
    hist = find_key(meta, "relabel_histogram") or find_key(metrics, "relabel_histogram")
    if isinstance(hist, list):
        hist = {str(i): v for i, v in enumerate(hist)}
    if isinstance(hist, Mapping) and hist and all(isinstance(v, (int, float)) for v in hist.values()):
        images.append({"type": "image", "title": "PSG relabel histogram",
                       "png": plots.histogram(hist, "PSG: new labels of forget images", "assigned class")})
    cert = find_key(meta, "certificate") or find_key(metrics, "certificate")
    if isinstance(cert, Mapping) and cert:
        tables.append({"type": "kv", "title": "FAMR certificate (theory-backed bounds; see method docs)",
                       "rows": [[str(k), fmt(v)] for k, v in cert.items()]})
        scalars = {str(k): float(v) for k, v in cert.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if scalars:
            images.append({"type": "image", "title": "FAMR certificate",
                           "png": plots.histogram(scalars, "FAMR certificate", "quantity")})
    tables += audit_tables(metrics)
    return images, tables


def audit_tables(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The membership audit (forget --audit): one row per patient (pseudonyms only) with verdict and power."""
    a = find_key(metrics.get("acceptance") or {}, "audit", depth=1)
    if not isinstance(a, Mapping) or not isinstance(a.get("patients"), Mapping):
        return []
    rows = [[str(p), fmt(e.get("images")), str(e.get("verdict")), fmt(e.get("p_original")), fmt(e.get("p_audited")),
             fmt(e.get("effect_original")), fmt(e.get("min_detectable_effect")), fmt(e.get("still_detected"))]
            for p, e in sorted(a["patients"].items())]
    cal = a.get("calibration") or {}
    note = (f"{a.get('summary', '')}. LiRA offline against {a.get('reference_models')} reference models; stated FPR "
            f"{fmt(a.get('fpr'))} per patient; held-out patients flagged {cal.get('flagged')}/{cal.get('patients')}. "
            "Smallest detectable effect: the mean-score shift the test finds with 80 % power.")
    return [{"type": "table", "title": "Membership audit per patient", "columns": [
        "patient (pseudonym)", "images", "verdict", "p original", "p audited", "effect original",
        "smallest detectable effect", "membership left (Holm)"], "rows": rows}, {"type": "p", "text": note}]
