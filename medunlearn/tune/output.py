"""What a study leaves behind: the tuned YAML (`forget --config` reads it), the trials table, a parameter
importance plot and the best-trial summary. Pure text/figure builders; the workflow step writes the files."""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

import yaml

TABLE_HEAD = ["trial", "state", "feasible", "objective", "speed", "retain_term", "wall_s", "elapsed_s", "steps_run",
              "step", "step_budget", "violation", "pruned_at"]

RECORD_KEY = {"step_budget": "budget"}  # table column -> trial record key (a method may search a field "budget")
PARAM_PREFIX = "param_"  # parameter columns are prefixed so they never collide with the table's own columns


def trials_csv(records: list[dict[str, Any]]) -> str:
    """One row per trial: state, objective terms, the returned state's checks (validation) and the parameters."""
    checks = sorted({k for r in records for k in r.get("checks", {})})
    params = list(dict.fromkeys(k for r in records for k in r["params"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_HEAD + [f"val_{c}" for c in checks] + [PARAM_PREFIX + p for p in params] + ["reason"])
    for r in records:
        row = [r["number"], r["state"], r.get("feasible", False)]
        row += [_fmt(r.get(RECORD_KEY.get(k, k))) for k in TABLE_HEAD[3:]]
        row += [_fmt(r.get("checks", {}).get(c)) for c in checks] + [_fmt(r["params"].get(p)) for p in params]
        w.writerow(row + [r.get("reason", "")])
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def importances(study: Any, seed: int) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the searched parameters for (objective + criteria violation), over finished
    trials; (None, why) when there are too few finished trials or nothing varies."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        return None, f"needs at least 2 finished trials, got {len(done)}"
    varied = [p for p in done[0].params if len({repr(t.params.get(p)) for t in done}) > 1]
    if not varied:
        return None, "no parameter varied across finished trials"

    def target(t: Any) -> float:
        return float(t.value) + sum(max(0.0, v) for v in t.constraints.values())

    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), params=varied, target=target)
    except (RuntimeError, ValueError) as exc:
        return None, f"importance could not be computed ({exc})"
    return {k: float(v) for k, v in imp.items()}, "fANOVA on objective + criteria violation, finished trials"


def importance_png(path: Path, imp: dict[str, float] | None, note: str, title: str) -> None:
    """A horizontal bar chart of the importances (or the reason there are none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * max(2, len(imp or {}))))
    if imp:
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="#3b75af")
        ax.set_xlabel("importance (normalised)")
        ax.set_xlim(0, 1)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"No importance: {note}", ha="center", va="center", wrap=True)
    ax.set_title(title, fontsize=10)
    fig.text(0.99, 0.01, note if imp else "", ha="right", fontsize=7, color="#555")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tuned_yaml(method: str, cfg: Any, header: list[str]) -> str:
    """Every Config field of the best trial, after '# ' header lines (the same layout as configs/unlearn)."""
    body = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    return "".join(f"# {line}\n" if line else "#\n" for line in header) + body


def json_safe(rec: dict[str, Any]) -> dict[str, Any]:
    """A trial record without the bulky acceptance copy (kept only for the best trial)."""
    return {k: v for k, v in rec.items() if k != "acceptance"}
