"""`tune`: choose a method's hyperparameters for one forget policy on validation rows, and leave a record.

Writes `<out>/<method>.yaml` (every Config field of the best feasible trial; `forget --config` reads it; the
header records the command, the study seed, the date and what the best trial measured on validation) and the
study folder `<out>/<method>-study/`: trials.csv, importance.png, best_trial.json, study.json, provenance.json.
The test rows are sealed before the study starts (tune.sealed): nothing in a study can read them.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medunlearn.commit import staging_dir
from medunlearn.errors import ConfigError, OutputExistsError
from medunlearn.fileio import write_json, write_text
from medunlearn.workflow.steps_adopt import accepts_source

if TYPE_CHECKING:
    from medunlearn.unlearn.base import Unlearner


@dataclasses.dataclass
class TuneOutcome:
    yaml_path: Path | None  # None when no trial met the criteria (nothing defensible to write)
    study_dir: Path
    result: Any  # tune.study.StudyResult
    summary: dict[str, Any]


def resolve_space(method_cls: type[Unlearner], pinned: dict[str, Any]) -> dict[str, Any]:
    """The method's declared space minus the fields the user pinned with --set."""
    from medunlearn.unlearn.space import check_space

    if not method_cls.search_space:
        from medunlearn.unlearn import METHODS

        tunable = [n for n in METHODS.names() if METHODS.get(n).search_space]
        raise ConfigError(f"Expected a method that declares a search space ({', '.join(tunable)}), but "
                          f"{method_cls.name!r} declares none.")
    check_space(method_cls.Config, method_cls.search_space)
    space = {k: p for k, p in method_cls.search_space.items() if k not in pinned}
    if not space:
        raise ConfigError(f"Expected at least one searched field left after --set, but every field of "
                          f"{method_cls.name}'s space ({', '.join(method_cls.search_space)}) was pinned.")
    return space


@accepts_source  # --model may be a bundle / TorchScript / state dict, adopted in memory
def tune(cohort: Any, model_dir: str | Path, rule, out: str | Path, method: str = "auto", goal: str = "suppression",
         trials: int = 30, time_budget: str | float = "10m", config_path: str | Path | None = None,
         overrides: dict | None = None, seed: int = 0, retain_weight: float = 1.0, overwrite: bool = False,
         force: bool = False, command: str = "", device: str | None = None,
         on_trial: Callable[[dict, dict | None], None] | None = None) -> TuneOutcome:
    """Tune `method` for the policy `rule` on the checkpoint at `model_dir`; every input is checked first.

    `method="auto"` tunes the method `forget --method auto` tries first for this kind of policy (famr for a device,
    site or outlier domain; psg_frozen for a class withdrawal), starting from its preset."""
    from medunlearn.tune.budget import parse_duration
    from medunlearn.tune.sealed import validation_only
    from medunlearn.tune.study import TuneSettings, check_settings, run_study
    from medunlearn.unlearn.base import check_goal
    from medunlearn.workflow.auto_method import AUTO, CHAINS, policy_kind
    from medunlearn.workflow.cohort_checks import load_cohort
    from medunlearn.workflow.splits import check_same_cohort, split_data_for, split_settings
    from medunlearn.workflow.steps_forget import load_model_dir

    if rule is None:
        raise ConfigError("Expected a forget rule (--device, --site, --patient, --where, --outliers ...), "
                          "but got none.")
    check_goal(goal)
    settings = TuneSettings(n_trials=trials, timeout_s=parse_duration(time_budget), seed=seed, goal=goal,
                            retain_weight=retain_weight, device=device)
    check_settings(settings)
    pinned = dict(overrides or {})
    out = Path(out)
    if method != AUTO:  # everything about the method is checked before any data is read
        method_cls, base_cfg, space = _method_setup(method, {}, config_path, pinned, out, overwrite)

    base, base_meta = load_model_dir(model_dir, "a base checkpoint")
    split_seed, fractions, image_size = split_settings(base_meta, seed)
    data = split_data_for(load_cohort(cohort), rule, split_seed, image_size, fractions, base_meta.get("class_names"),
                          adopted=base_meta)
    warnings = check_same_cohort(base_meta, data, force, "the base checkpoint")
    selected_by = None
    if method == AUTO:
        kind = policy_kind(data)
        method, preset = CHAINS[kind][0]
        method_cls, base_cfg, space = _method_setup(method, preset, config_path, pinned, out, overwrite)
        selected_by = f"--method auto: the first method of forget's {kind} chain"
    data = validation_only(data)

    result = run_study(method_cls, base_cfg, space, base, data, settings, on_trial=on_trial)
    summary = _summary(method, goal, rule, result, space, base_cfg, data, base_meta, command, warnings)
    summary["selected_by"] = selected_by
    yaml_path, study_dir = _outputs(out, method)
    _write(result, summary, study_dir, yaml_path, method, model_dir, data, overwrite)
    return TuneOutcome(yaml_path if result.best else None, study_dir, result, summary)


def _outputs(out: Path, method: str) -> tuple[Path, Path]:
    """(<out>/<method>.yaml, <out>/<method>-study)."""
    return out / f"{method}.yaml", out / f"{method}-study"


def _method_setup(method: str, preset: dict, config_path, pinned: dict, out: Path, overwrite: bool):
    """(method class, starting Config, searched space); refuses to clobber. The starting Config is the defaults <-
    the YAML (when given, else the auto chain's preset) <- --set."""
    from medunlearn.configio import method_config
    from medunlearn.unlearn import METHODS

    method_cls = METHODS.get(method)
    base_cfg = method_config(method_cls, config_path, pinned if config_path else {**preset, **pinned})
    space = resolve_space(method_cls, pinned)
    for p in _outputs(out, method):
        if p.exists() and not overwrite:
            raise OutputExistsError(f"Output {p} already exists; pass --overwrite to replace it.")
    return method_cls, base_cfg, space


def _summary(method: str, goal: str, rule, result, space, base_cfg, data, base_meta, command, warnings) -> dict:
    from medunlearn.tune.output import json_safe
    from medunlearn.unlearn.space import space_to_dict

    states: dict[str, int] = {}
    for r in result.records:
        states[r["state"]] = states.get(r["state"], 0) + 1
    best, ref = result.best, result.reference
    return {
        "method": method, "goal": goal, "rule": rule.describe(), "judged_on": "validation (test rows sealed)",
        "synthetic": bool(base_meta.get("synthetic")), "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "study": {"sampler": "TPE (multivariate)", "seed": result.settings.seed, "pruner": "MedianPruner",
                  "trials_requested": result.settings.n_trials, "trials_run": len(result.records),
                  "time_budget_s": result.settings.timeout_s, "wall_s": round(result.wall_s, 2), "states": states,
                  "feasible": sum(1 for r in result.records if r.get("feasible")),
                  "objective": "wall_s / wall_ref + retain_weight * (retain_original - val_retain) / retain_drop",
                  "retain_weight": result.settings.retain_weight, "constraint": "criteria_violation <= 0"},
        "search_space": space_to_dict(space), "start_config": dataclasses.asdict(base_cfg),
        "met": best is not None,
        "best": {**json_safe(best), "acceptance": best["acceptance"]} if best else None,
        "reference": json_safe(ref) if ref else None,
        "speedup_vs_reference": round(ref["wall_s"] / best["wall_s"], 3) if best and ref and ref.get(
            "state") == "complete" else None,
        "data": {"counts": data.info.get("counts", {}), "cohort_hash": data.info.get("cohort_hash", ""),
                 "split_hash": data.info.get("split_hash", "")},
        "warnings": warnings,
    }


def _header(summary: dict, method: str, config_rows: int) -> list[str]:
    best, study = summary["best"], summary["study"]
    checks = "; ".join(f"{c['name']} {c['value']}" for c in best["acceptance"]["checks"])
    states = ", ".join(f"{n} {s}" for s, n in study["states"].items())
    speedup = summary["speedup_vs_reference"]
    lines = [
        f"{method}: tuned by `medunlearn tune` on VALIDATION rows only (test rows sealed; none was read).",
        f"Command: {summary['command'] or '(Python API)'}",
        f"Date: {summary['date']}   Study seed: {study['seed']}   "
        f"Sampler: {study['sampler']}, pruner: {study['pruner']}",
        f"Policy: {summary['rule']}   Goal: {summary['goal']}   Cohort: {summary['data']['cohort_hash'][:16] or 'n/a'}"
        f"{' (SYNTHETIC)' if summary['synthetic'] else ''}",
        f"Trials: {study['trials_run']} of {study['trials_requested']} ({states}); "
        f"{study['feasible']} met the criteria; best = trial {best['number']}.",
        f"Best on validation: criteria met; {checks}; {best['wall_s']:.1f} s"
        + (f" ({speedup}x the starting config's speed)" if speedup else ""),
        f"Searched: {', '.join(f'{k} {v}' for k, v in summary['search_space'].items())}",
        "Use: medunlearn forget ... --method " + method + " --config <this file>",
        "",
    ]
    return lines


def _write(result, summary: dict, study_dir: Path, yaml_path: Path, method: str, model_dir, data, overwrite) -> None:
    from medunlearn.models.checkpoint import model_sha256
    from medunlearn.provenance import provenance_record
    from medunlearn.tune.output import importance_png, importances, trials_csv, tuned_yaml

    imp, note = importances(result.study, result.settings.seed)
    summary["importance"] = {"values": imp, "method": note}
    inputs = {"base_model": model_sha256(model_dir), "cohort": data.info.get("cohort_hash", ""),
              "split": data.info.get("split_hash", "")}
    with staging_dir(study_dir, overwrite) as tmp:
        write_text(tmp / "trials.csv", trials_csv(result.records))
        importance_png(tmp / "importance.png", imp, note, f"{method}: parameter importance (validation study)")
        write_json(tmp / "best_trial.json", summary)
        write_json(tmp / "provenance.json", provenance_record(
            {"command": summary["command"], "study": summary["study"], "search_space": summary["search_space"],
             "start_config": summary["start_config"]}, result.settings.seed, inputs))
    if result.best is not None:
        write_text(yaml_path, tuned_yaml(method, result.best_config, _header(summary, method, len(result.records))))
    elif yaml_path.exists():  # --overwrite and nothing met the criteria: a stale YAML must not outlive its study
        yaml_path.unlink()
