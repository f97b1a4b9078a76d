"""Aggregate bench cells into results.json, results.md (one table per scenario × goal) and a plot.

Every number is the mean ± sample std over seeds (std omitted for one seed). Units follow metrics.json:
accuracies, confidence, MIA-efficacy and Avg-Gap in percent; time in seconds; RTE = t_retrain / t_method.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medunlearn.fileio import atomic_path, write_json, write_text

COLUMNS = (("FA", "forget_acc"), ("RA", "retain_acc"), ("TA-retain", "test_retain_acc"),
           ("TA-forget", "test_forget_acc"), ("conf test-forget", "test_forget_confidence"),
           ("conf val-retain (d)", "val_retain_confidence"), ("conf test-retain", "test_retain_confidence"),
           ("routed test-retain", "test_retain_routed"),
           ("MIA-eff", "mia_efficacy"), ("Avg-Gap", "avg_gap"), ("time s", "wall_time_s"), ("RTE", "rte"),
           ("RTE compute", "rte_compute"))
RATIOS = ("rte", "rte_compute")
PLOT_NAME = "avg_gap_vs_rte.png"


def mean_std(values: list[float | None]) -> dict[str, Any]:
    """{mean, std, n} over the finite values (std = sample std, 0 for one value; None when empty)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def aggregate(cells: list[dict]) -> dict[str, dict[str, dict]]:
    """{goal: {method: {metric key: mean_std, errors: [...], stop: [reasons]}}} in first-seen order."""
    out: dict[str, dict[str, dict]] = {}
    for c in cells:
        row = out.setdefault(c["goal"], {}).setdefault(c["method"], {"_cells": []})
        row["_cells"].append(c)
    for rows in out.values():
        for row in rows.values():
            cs = row.pop("_cells")
            ok = [c for c in cs if "core" in c]
            for _, key in COLUMNS:
                row[key] = mean_std([c["core"].get(key) for c in ok])
            row["seeds"] = [c["seed"] for c in ok]
            row["errors"] = [c["error"] for c in cs if "error" in c]
            row["stop"] = [(c.get("acceptance") or {}).get("reason") for c in ok]
            row["met"] = [bool((c.get("acceptance") or {}).get("met")) for c in ok]
    return out


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "device": "cpu"}


def _fmt(v: Any, std: Any = None, digits: int = 1) -> str:
    if v is None:
        return "–"
    s = f"{v:.{digits}f}"
    return s + (f" ± {std:.{digits}f}" if std else "")


def format_stat(stat: dict, digits: int = 1, suffix: str = "") -> str:
    """A mean_std record as "mean ± std" + suffix ("–" when empty; no "± …" when std is 0)."""
    return _fmt(stat["mean"], stat["std"], digits) + (suffix if stat["mean"] is not None else "")


def markdown_row(cells: Sequence[str]) -> str:
    """One markdown table row: `| a | b |`."""
    return "| " + " | ".join(cells) + " |"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]] = ()) -> list[str]:
    """A markdown table's lines: the header, the `|---|` rule, then one line per row."""
    return [markdown_row(header), "|" + "---|" * len(header), *(markdown_row(r) for r in rows)]


def _cell(stat: dict, key: str) -> str:
    return format_stat(stat, 2 if key == "avg_gap" else 1, "×" if key in RATIOS else "")


def _counts_text(counts: dict) -> str:
    """'train forget 5 / retain 168, ...' from SplitData.info counts (flat or the cohort selection shape)."""
    images = counts.get("images") if isinstance(counts.get("images"), dict) else None
    if images:
        return ", ".join(f"{p} forget {v.get('forget')} / retain {v.get('retain')}" for p, v in images.items())
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())


def _plain_row(name: str, core: dict, met: str) -> str:
    vals = []
    for _, key in COLUMNS:
        v = core.get(key)
        vals.append(_fmt(v, None, 2 if key == "avg_gap" else 1) + ("×" if key in RATIOS and v is not None else ""))
    return markdown_row([name, met, *vals])


def render_markdown(settings: Any, summary: dict, results: dict) -> str:
    m = results["machine"]
    lines = [f"# medunlearn bench: {settings.suite}", "",
             f"- command: `{settings.command or '(python API)'}`",
             f"- date: {results['date']}; code version: {results['code_version']}",
             f"- machine: {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} "
             f"({m['torch_threads']} threads), Python {m['python']}, device {m['device']}",
             f"- methods: {', '.join(settings.methods)}; goals: {', '.join(settings.goals)}; seeds: {settings.seeds}; "
             f"quick: {settings.quick}; subset: {settings.subset}; train recipe: {settings.train}"
             + (f"; '+tuned' rows: configs from `medunlearn tune` in {settings.tuned}"
                if getattr(settings, "tuned", None) else ""),
             "- FA/RA = train forget/retain accuracy, TA = test retain/forget accuracy, conf = mean max-softmax on "
             "test-forget, MIA-eff = SVC true-label-confidence attack (percent of forget rows judged non-member), "
             "Avg-Gap = mean |Δ| vs retrain over FA, RA, TA (all test rows), MIA-eff; RTE = t_retrain / t_method. "
             "conf val-retain (d) = mean max-softmax on the validation retain probe of the returned state (criterion "
             "(d): >= the original's − selectivity_margin); conf / routed test-retain = mean max-softmax on "
             "test-retain and the percent of those images under 100/K + 10 (routed to a human); RTE compute = the "
             "retrain's image passes / the method's, in forward-equivalents (forward + 3 × gradient images, every "
             "phase: setup, steps, checks, repair, certificate), the wall-clock-free ratio. "
             "Mean ± std over seeds. 'criteria met' = seeds whose run met its acceptance criteria (judged on "
             "validation rows by the controller; the test columns are reported, never used to choose).", ""]
    header = markdown_table(["method", "criteria met", *(c for c, _ in COLUMNS)])
    for scenario, sc in summary.items():
        for goal, rows in results["scenarios"][scenario]["goals"].items():
            lines += [f"## {scenario} — goal: {goal}", "",
                      f"Forget rule: {sc.get('rule')}; images: {_counts_text(sc.get('counts') or {})}",
                      "", *header, _plain_row("original", sc["original"], "–"),
                      _plain_row("retrain", sc["retrain"], "–")]
            notes = []
            for method, row in rows.items():
                met = f"{sum(row['met'])}/{len(row['met']) + len(row['errors'])}"
                if not row["seeds"]:
                    lines.append(markdown_row([method, met, *("error" for _ in COLUMNS)]))
                else:
                    lines.append(markdown_row([method, met, *(_cell(row[k], k) for _, k in COLUMNS)]))
                stops = sorted({s for s in row["stop"] if s})
                if stops:
                    notes.append(f"- {method}: {'; '.join(stops)}")
                notes += [f"- {method}: **failed**: {e}" for e in row["errors"]]
            lines += ["", *notes, ""]
    lines += [f"![Avg-Gap vs RTE]({PLOT_NAME})", ""]
    return "\n".join(lines)


def plot(path: Path, results: dict) -> Path | None:
    """Avg-Gap (y) vs RTE (x, log) per method, one panel per scenario × goal (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (formatters below)

    panels = [(s, g, rows) for s, sc in results["scenarios"].items() for g, rows in sc["goals"].items()]
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (scenario, goal, rows) in zip(axes.flat, panels):
        for method, row in rows.items():
            x, y = row["rte"]["mean"], row["avg_gap"]["mean"]
            if x is None or y is None or x <= 0:
                continue
            ax.scatter([x], [y], s=24)
            ax.annotate(method, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        base = results["scenarios"][scenario].get("original", {}).get("avg_gap")
        if base is not None:  # doing nothing: a method must land below this line to be worth running
            ax.axhline(base, ls="--", lw=0.8, color="grey", label="original (no unlearning)")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("RTE (× faster than retrain)")
        ax.set_ylabel("Avg-Gap (pp)")
        ax.set_title(f"{scenario} / {goal}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_results(out: Path, settings: Any, summary: dict) -> dict:
    """Write results.json, results.md and the plot into `out`; return the results dict."""
    from medunlearn.provenance import code_version

    results: dict[str, Any] = {"suite": settings.suite, "command": settings.command, "settings": settings.__dict__,
                               "machine": machine(), "date": dt.datetime.now().isoformat(timespec="seconds"),
                               "code_version": code_version(), "scenarios": {}}
    for scenario, sc in summary.items():
        results["scenarios"][scenario] = {k: v for k, v in sc.items() if k != "cells"}
        results["scenarios"][scenario]["goals"] = aggregate(sc["cells"])
    write_json(out / "results.json", results)
    write_text(out / "results.md", render_markdown(settings, summary, results))
    plot(out / PLOT_NAME, results)
    return results
