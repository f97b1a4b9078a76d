"""`forget`: revise a deployed checkpoint with an unlearning method and measure what happened."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import yaml

from medunlearn.attest import seal
from medunlearn.commit import prepare_out_dir, staging_dir
from medunlearn.errors import ConfigError
from medunlearn.fileio import require_dir, write_json, write_text
from medunlearn.provenance import provenance_record
from medunlearn.runtime import RunContext
from medunlearn.workflow.auto_method import AUTO, chain_configs, policy_kind, run_chain
from medunlearn.workflow.cohort_checks import check_label_sets, load_cohort
from medunlearn.workflow.outputs import claims_output, forget_inputs
from medunlearn.workflow.splits import (
    UNKNOWN_MEMBERSHIP,
    check_same_cohort,
    membership_unknown,
    split_data_for,
    split_settings,
)
from medunlearn.workflow.steps_adopt import accepts_source


def load_model_dir(path: str | Path, what: str):
    from medunlearn.models.checkpoint import load_checkpoint

    return load_checkpoint(require_dir(path, what))


@claims_output(forget_inputs)  # inputs apart from the output; the output locked for the whole run
@accepts_source  # --model may be a bundle / TorchScript / state dict, adopted in memory
def forget(cohort: Any, model_dir: str | Path, rule, out: str | Path, method: str = "auto",
           goal: str = "suppression", config_path: str | Path | None = None, overrides: dict | None = None,
           reference: str | Path | None = None, seed: int = 0, overwrite: bool = False, force: bool = False,
           progress: bool = False, torch_device: str | None = None,
           audit: str | Path | None = None) -> tuple[Path, dict]:
    """Unlearn the rows matching `rule` from the checkpoint at `model_dir`; write a run directory at `out`.

    The run holds the unlearned checkpoint, metrics.json (evaluation suite: original vs unlearned, and vs
    the retrain reference when given), config.yaml (resolved hyperparameters) and provenance.json.
    Under torchrun every rank runs the method on the whole forget/retain data and only rank 0 writes.
    audit: an `audit prepare` folder; the membership audit then judges every check (the stop rule) and the
    returned state (workflow.steps_audit.judge_forget) instead of the equivalence interval checks.
    """
    from medunlearn.configio import method_config
    from medunlearn.evaluate.suite import evaluate_model
    from medunlearn.models.checkpoint import model_sha256, save_checkpoint
    from medunlearn.runtime import is_main_process
    from medunlearn.unlearn import METHODS
    from medunlearn.unlearn.base import check_goal
    from medunlearn.workflow.diagnose import reference_hint

    if rule is None:
        raise ConfigError("Expected a forget rule (--device, --site, --patient, --where, --outliers ...), "
                          "but got none.")
    check_goal(goal)
    chains = chain_configs(config_path, overrides) if method == AUTO else None
    if chains is None:
        cfg = method_config(METHODS.get(method), config_path, overrides)
    teach = method == "ref_distill"  # its teachers are the audit folder's second half; the first half audits
    if teach:
        if audit is None:
            raise ConfigError("Expected --audit audit/ with --method ref_distill (it distils toward the reference "
                              "models of `medunlearn audit prepare`), but got none.")
        cfg = dataclasses.replace(cfg, audit=str(audit))
    if audit is not None:
        from medunlearn.workflow.steps_audit import audit_checks, check_forget_audit, judge_forget
        check_forget_audit(audit, model_dir, goal)
    if is_main_process():
        prepare_out_dir(out, overwrite)

    base, base_meta = load_model_dir(model_dir, "a base checkpoint")
    if membership_unknown(base_meta) and goal == "equivalence" and reference is None:
        raise ConfigError("Expected --reference for goal equivalence on a model adopted with --membership unknown, "
                          "but got none: without the training datalist equivalence to a retrain cannot be judged.")
    ref_model, ref_meta = load_model_dir(reference, "a retrain reference checkpoint") if reference else (None, None)
    split_seed, fractions, image_size = split_settings(base_meta, seed)
    df = load_cohort(cohort)
    check_label_sets(df, base_meta.get("class_names"), "the base checkpoint")
    data = split_data_for(df, rule, split_seed, image_size, fractions, base_meta.get("class_names"),
                          spatial_dims=base_meta.get("spatial_dims"), adopted=base_meta)
    warnings = check_same_cohort(base_meta, data, force, "the base checkpoint")
    if ref_meta is not None:
        from medunlearn.workflow.checks import check_reference

        check_reference(base_meta, ref_meta, rule, data)

    ctx = RunContext.create(seed=seed, device=torch_device or "cpu", show_progress=progress)
    start = time.perf_counter()
    chain = chains[policy_kind(data)] if chains is not None else [(method, {}, cfg)]
    checks = audit_checks(audit, base, data, ctx, teachers=teach) if audit is not None else None
    method, cfg, outcome, attempts = run_chain(chain, base, data, ctx, goal, extra_checks=checks)
    if chains is not None:
        outcome.acceptance = dataclasses.replace(outcome.acceptance, auto=attempts)
    model, acceptance = outcome.model, outcome.acceptance
    if audit is not None:
        acceptance = judge_forget(audit, model, data, ctx, acceptance, teachers=teach)
    wall = time.perf_counter() - start  # with auto: every candidate tried (what the user waited for)

    ref_wall = ref_meta.get("wall_time_s") if ref_meta else None
    metrics = evaluate_model(model, data, original=base, reference=ref_model, wall_time_s=wall,
                             reference_wall_time_s=ref_wall, goal=goal, seed=seed,  # cost: every candidate's
                             cost=acceptance.get("cost_chain"),
                             reference_cost=((ref_meta or {}).get("training") or {}).get("cost"))
    metrics["warnings"] = warnings
    if membership_unknown(base_meta):
        metrics["membership"] = dict(UNKNOWN_MEMBERSHIP)
        if isinstance(metrics.get("mia"), dict):
            metrics["mia"]["evaluable"] = False
    elif data.info.get("split_source") == "membership":
        metrics["membership"] = {"status": "datalist", "split": "the deployed model's datalist"}
    hint = reference_hint(acceptance, metrics.get("reference"))
    if hint:
        acceptance = dataclasses.replace(acceptance, reference_hint=hint)
    metrics["acceptance"] = acceptance.to_json()
    metrics["rule_text"] = rule.describe()
    metrics["method_log"] = ctx.log
    metrics["method"] = method
    config = {"method": method, "goal": goal, "hyperparameters": dataclasses.asdict(cfg), "seed": seed,
              "rule": rule.to_dict(), "rule_text": rule.describe()}
    if chains is not None:
        config["selected_by"] = "--method auto: " + ", ".join(f"{a['method']} {'met' if a['met'] else 'not met'}"
                                                              for a in acceptance["auto"])
    meta = _unlearned_meta(base_meta, model_dir, method, goal, cfg, rule, data, wall, metrics, seed)
    meta["accepted"] = bool(acceptance["met"])
    inputs = {"base_model": model_sha256(model_dir), "cohort": data.info.get("cohort_hash", ""),
              "split": data.info.get("split_hash", "")}
    if reference:
        inputs["reference_model"] = model_sha256(reference)
    if not ctx.is_main:
        ctx.barrier()
        return Path(out), metrics
    with staging_dir(out, overwrite) as tmp:
        save_checkpoint(tmp, model, meta, overwrite=True,
                        provenance=provenance_record(config, seed, inputs, run=ctx.run_record()))
        write_json(tmp / "metrics.json", seal(tmp, metrics))  # weights sha256 + signed verdict
        write_text(tmp / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        write_text(tmp / acceptance["trace_file"], trace_csv(outcome.trace))
    ctx.barrier()
    return Path(out), metrics


def trace_csv(trace: list[dict]) -> str:
    """The controller's check trace as CSV (one row per check; columns = the union of the rows' keys)."""
    import csv
    import io

    columns: list[str] = []
    for row in trace:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(trace)
    return buf.getvalue()


def removed_counts(data) -> dict:
    """What the policy removes from training: images, patients, devices, sites (pseudonymised ids only)."""
    meta = data.train_forget.meta
    return {"images": len(data.train_forget),
            "patients": int(meta["patient"].nunique()) if "patient" in meta else None,
            "devices": sorted(map(str, meta["device"].unique())) if "device" in meta else [],
            "sites": sorted(map(str, meta["site"].unique())) if "site" in meta else []}


def _unlearned_meta(base_meta: dict, model_dir, method: str, goal: str, cfg, rule, data, wall: float,
                    metrics: dict, seed: int) -> dict:
    from medunlearn.models.checkpoint import model_sha256

    headline = {k: metrics.get(k) for k in ("forget_acc", "retain_acc", "test_retain_acc", "test_forget_acc",
                                            "mia_efficacy", "avg_gap", "rte")}
    acceptance = metrics.get("acceptance", {})
    entry = {"policy": rule.describe(), "method": method, "goal": goal,
             "counts": data.info.get("counts", {}), "metrics": headline,
             "acceptance": {"met": acceptance.get("met"), "checks": acceptance.get("checks", [])},
             "date": time.strftime("%Y-%m-%d")}
    meta = dict(base_meta)
    meta.update({
        "kind": "unlearned", "method": method, "goal": goal, "seed": seed,
        "unlearn_config": dataclasses.asdict(cfg), "rule": rule.to_dict(), "rule_text": rule.describe(),
        "base_sha256": model_sha256(model_dir), "wall_time_s": wall, "metrics": headline,
        "counts": removed_counts(data), "synthetic": bool(base_meta.get("synthetic")),
        "changelog": list(base_meta.get("changelog", [])) + [entry],
    })
    return meta
