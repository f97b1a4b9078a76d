"""The stop / guard trace of an unlearning run (trace.csv) as a report figure.

trace.csv has one row per controller check: ``step``, ``phase`` (original / method / repair), the probe
measurements, ``met``, ``violation`` and ``decision``. Measurement columns are read under either name the
project has used: ``forget_acc`` or ``val_forget_acc``, ``forget_conf`` or ``val_forget_conf``, ``retain_acc``
or ``val_retain_acc``; equivalence runs add ``acc_gap`` (+ ``_lo``/``_hi``) and ``auc`` (+ ``_lo``/``_hi``).
The target band, the confidence ceiling and the retain guard come from the run's acceptance checks.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medunlearn.report import plots

ALIASES = {"forget_acc": ("val_forget_acc", "forget_acc"), "forget_conf": ("val_forget_conf", "forget_conf"),
           "retain_acc": ("val_retain_acc", "retain_acc")}
MAX_TRACE_BYTES = 20_000_000  # a trace is a few kB; refuse to parse something that is clearly not one


def _float(text: Any) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Rows of trace.csv with canonical measurement names and float values (None when blank). [] if absent."""
    if not path.is_file() or path.stat().st_size > MAX_TRACE_BYTES:
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))
    rows = []
    for r in raw:
        row: dict[str, Any] = {"step": _float(r.get("step")), "phase": str(r.get("phase") or ""),
                               "decision": str(r.get("decision") or r.get("action") or "")}
        for canon, names in ALIASES.items():
            row[canon] = next((_float(r[n]) for n in names if r.get(n) not in (None, "")), None)
        for key in ("acc_gap", "acc_gap_lo", "acc_gap_hi", "auc", "auc_lo", "auc_hi"):
            row[key] = _float(r.get(key))
        if row["step"] is not None:
            rows.append(row)
    return rows


def _check(acceptance: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((c for c in acceptance.get("checks") or [] if isinstance(c, Mapping) and c.get("name") == name), None)


def _panels(rows: list[dict[str, Any]], acceptance: Mapping[str, Any]) -> list[dict[str, Any]]:
    panels = []
    col = {k: [r[k] for r in rows] for k in rows[0] if k not in ("step", "phase", "decision")}
    if any(v is not None for v in col["forget_acc"]):
        fa, fc = _check(acceptance, "forget_accuracy"), _check(acceptance, "forget_confidence")
        band = None
        if fa and isinstance(fa.get("threshold"), (list, tuple)) and len(fa["threshold"]) == 2:
            lo, hi = (float(t) for t in fa["threshold"])
            band = (lo, hi, f"target band {lo:.1f}–{hi:.1f} %")
        lines = [{"label": "held-out forget accuracy", "values": col["forget_acc"]}]
        limits = []
        if any(v is not None for v in col["forget_conf"]):
            lines.append({"label": "mean max-softmax (forget)", "values": col["forget_conf"]})
            if fc and _float(fc.get("threshold")) is not None:
                limits.append((float(fc["threshold"]), f"confidence ceiling {float(fc['threshold']):.1f} %"))
        panels.append({"title": "Forget domain (validation probe)", "ylabel": "%", "lines": lines, "band": band,
                       "limits": limits})
    for key, label, target in (("acc_gap", "membership accuracy gap", 0.0), ("auc", "membership loss AUC", 50.0)):
        if any(v is not None for v in col.get(key, [])):
            panels.append({"title": f"{label} with its bootstrap interval (equivalence)", "ylabel": "points",
                           "lines": [{"label": label, "values": col[key], "lo": col[f"{key}_lo"],
                                      "hi": col[f"{key}_hi"]}],
                           "limits": [(target, f"indistinguishable ({target:g})")]})
    if any(v is not None for v in col["retain_acc"]):
        ra = _check(acceptance, "retain_accuracy")
        limits = [(float(ra["threshold"]), f"retain guard {float(ra['threshold']):.1f} %")] \
            if ra and _float(ra.get("threshold")) is not None else []
        panels.append({"title": "Retain guard (validation probe)", "ylabel": "%", "limits": limits,
                       "lines": [{"label": "val_retain accuracy", "values": col["retain_acc"]}]})
    return panels


def trace_figure(run_dir: Path, acceptance: Any, title: str = "Stop / guard trace") -> dict[str, Any] | None:
    """An image block for the run's trace.csv (None when the run has no trace or nothing to plot)."""
    if not isinstance(acceptance, Mapping):
        return None
    name = Path(str(acceptance.get("trace_file") or "trace.csv")).name  # never leave the run folder
    rows = read_trace(run_dir / name)
    if not rows:
        return None
    panels = _panels(rows, acceptance)
    if not panels:
        return None
    step = _float(acceptance.get("step"))
    met = acceptance.get("met")
    verdict = " (criteria met)" if met is True else " (closest; criteria not met)" if met is False else ""
    label = "returned state" + verdict
    png = plots.trace_panels([r["step"] for r in rows], panels, title, marked_step=step, marked_label=label,
                             highlight=[r["phase"] == "repair" for r in rows], highlight_label="retain-repair check")
    return {"type": "image", "title": f"{title}: {len(rows)} checks, returned step "
            f"{'?' if step is None else f'{step:g}'}", "png": png}
