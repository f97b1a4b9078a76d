"""`merge`: combine per-policy unlearning runs of one base into a single checkpoint, judge it against every
source policy's acceptance criteria on validation data, and re-evaluate it on each policy and their union."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medunlearn.attest import seal
from medunlearn.commit import prepare_out_dir, staging_dir
from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.fileio import read_json, require_dir, write_json
from medunlearn.models.finite import check_finite_outputs
from medunlearn.provenance import provenance_record
from medunlearn.runtime import RunContext
from medunlearn.workflow.cohort_checks import check_label_sets, load_cohort
from medunlearn.workflow.outputs import claims_output, merge_inputs
from medunlearn.workflow.splits import split_data_for, split_settings

if TYPE_CHECKING:
    from medunlearn.data.imageset import SplitData
    from medunlearn.merge.policies import Policy

if TYPE_CHECKING:
    from medunlearn.data.imageset import SplitData
    from medunlearn.merge.policies import Policy

log = logging.getLogger("medunlearn")

NEEDS_POLICIES = ("learned_coefficients", "merge_repair")  # methods that fit or repair on the policies


@claims_output(merge_inputs)  # inputs apart from the output; the output locked for the whole run
def merge(run_dirs: Sequence[str | Path], base_dir: str | Path, out: str | Path, method: str | None = "ties",
          cohort: Any = None, params: dict | None = None, weights: Sequence[float] | None = None,
          config_path: str | Path | None = None, seed: int = 0, overwrite: bool = False, force: bool = False,
          candidates: Sequence[str] | None = None, reference: str | Path | None = None) -> tuple[Path, dict]:
    """Merge `run_dirs` (each unlearned from `base_dir`) and write a merged checkpoint with metrics.json.

    `method=None` tries `candidates` (cheapest first) and keeps the first that meets every policy's criteria.
    With `config_path` (mergekit-style YAML) the runs, base, method and weights come from the file.
    A run whose own criteria were not met (meta.json accepted: false) is refused unless `force`.
    metrics.json = {"schema_version", "acceptance": {met, policies: [...], retain: {...}}, "policies":
    {rule: suite metrics}, "union": suite metrics, "source_runs", "selection" (auto), "warnings"}.
    Without a cohort nothing is judged: acceptance is {"met": null, "state": "not evaluated"}.
    `reference` is a union retrain (trained with --exclude on the union of every run's rule); with `cohort`
    it is evaluated beside the merged model on every policy and the union (the report's retrained column).
    """
    from medunlearn.merge.config import load_merge_config
    from medunlearn.merge.policies import assess_policies
    from medunlearn.merge.runner import merge_runs, merged_meta
    from medunlearn.models.checkpoint import load_checkpoint, model_sha256, save_checkpoint
    from medunlearn.selection.rules import AnyOf, rule_from_dict

    if config_path is not None:
        spec = load_merge_config(config_path)
        run_dirs, base_dir, method = spec.models, spec.base_model, spec.method
        params, weights, seed = spec.parameters, spec.weights, spec.seed
    if len(run_dirs) < 1:
        raise ConfigError("Expected at least one run directory to merge, but got none.")
    if method is None and (params or weights):
        raise ConfigError("Expected --method with --set/--weights (they belong to one method), but got no --method.")
    if cohort is None and (method is None or method in NEEDS_POLICIES):
        raise ConfigError(f"Expected --cohort for {'choosing a merge method' if method is None else method} "
                          "(it works on the policies' validation rows), but got none.")
    prepare_out_dir(out, overwrite)
    base_dir = require_dir(base_dir, "a base checkpoint")
    base, base_meta = load_checkpoint(base_dir)
    dirs = [require_dir(r, "an unlearning run") for r in run_dirs]
    run_metas = [read_json(r / "meta.json") for r in dirs]
    warnings = degenerate_merge_warnings(dirs) + _acceptance_gate(dirs, run_metas, force)
    rules = [rule_from_dict(m["rule"]) for m in run_metas if m.get("rule")]
    if len(rules) != len(run_metas):
        raise ConfigError("Expected every run to record its forget rule in meta.json, but at least one does not.")
    split_seed, fractions, image_size = split_settings(base_meta, seed)
    union = rules[0] if len(rules) == 1 else AnyOf(tuple(rules))
    df = load_cohort(cohort) if cohort is not None else None
    classes = base_meta.get("class_names")
    if df is not None:
        check_label_sets(df, classes, "the base checkpoint")
    ref_model = _union_reference(reference, union, base_meta) if reference is not None else None
    if ref_model is not None and df is None:
        raise ConfigError("Expected --cohort with --reference (the reference is evaluated on the cohort), "
                          "but got none.")
    dims = base_meta.get("spatial_dims")
    pre = base_meta  # an adopted base's own pipeline and membership (split_data_for reads them)
    union_data: SplitData | None = None
    datas: list[SplitData] = []
    policies: list[Policy] = []
    if df is not None:
        decoded: dict = {}  # one decode of the cohort for the union and every policy
        union_data = _split(df, union, split_seed, image_size, fractions, classes, dims, pre, decoded)
        datas = [_split(df, r, split_seed, image_size, fractions, classes, dims, pre, decoded) for r in rules]
        want, got = (base_meta.get("split") or {}).get("train_hash"), union_data.info.get("train_hash")
        if want and got and want != got:
            raise CheckpointError(f"Expected --cohort to be the cohort the base was trained on, but the base's split "
                                  f"hash {want[:12]} differs from this cohort's {got[:12]}.")
        policies, more = _policies(dirs, run_metas, rules, datas, union_data, force)
        warnings += more
    selection = None
    if method is None:
        from medunlearn.merge.select import DEFAULT_CANDIDATES, select_merge

        assert union_data is not None  # without --method, --cohort is required (checked above)
        model, info, acceptance, selection = select_merge(dirs, base_dir, base, policies, union_data,
                                                          candidates or DEFAULT_CANDIDATES, seed)
    else:
        ctx = RunContext.create(seed=seed)
        model, info = merge_runs(dirs, base_dir, method, params=params, weights=weights, data=union_data,
                                 seed=seed, ctx=ctx, policies=policies)
        acceptance = (assess_policies(model, base, policies, union_data, ctx.device)
                      if policies and union_data is not None else
                      {"met": None, "state": "not evaluated",
                       "reason": "no cohort given: the merged model was not judged against its policies' criteria"})
    check_finite_outputs(model, f"the merged ({info['method']}) model",
                         union_data.train_retain.images[:16] if union_data is not None else None)
    metrics = (_evaluate_policies(model, base, rules, dirs, datas, union_data, seed, ref_model)
               if df is not None else {})
    metrics.update({"acceptance": acceptance, "warnings": warnings})
    if selection is not None:
        metrics["selection"] = selection
    meta = merged_meta(info)
    meta["synthetic"] = bool(base_meta.get("synthetic"))
    meta["counts"] = {"policies": [m.get("counts") for m in run_metas]}
    meta["goal"] = sorted({str(m.get("goal")) for m in run_metas})
    meta["split"] = base_meta.get("split")  # the runs share the base's split, so the merge does too
    for key in ("preprocessing", "adoption"):  # an adopted base's pipeline and record travel with the merge
        if base_meta.get(key) is not None:
            meta[key] = base_meta[key]
    meta["run_sha256"] = [r["sha256"] for r in info["runs"]]
    meta["warnings"] = warnings
    meta["accepted"] = acceptance["met"]
    meta["policies"] = _policy_cards(dirs, run_metas, rules, acceptance)
    meta["split_hash"] = union_data.info.get("split_hash") if union_data is not None else None
    inputs = {"base_model": model_sha256(base_dir), **{f"run:{Path(r).name}": model_sha256(r) for r in dirs}}
    if union_data is not None:
        inputs.update({"cohort": union_data.info.get("cohort_hash", ""), "split": meta["split_hash"] or ""})
    if reference is not None:
        inputs["reference_model"] = model_sha256(reference)
    meta["inputs"] = inputs
    config = {"method": info["method"], "parameters": dict(params or {}), "weights": list(weights) if weights else None,
              "runs": [str(r) for r in dirs], "base": str(base_dir), "force": force,
              "candidates": list(candidates) if (method is None and candidates) else None}
    with staging_dir(out, overwrite) as tmp:
        save_checkpoint(tmp, model, meta, overwrite=True, provenance=provenance_record(config, seed, inputs))
        write_json(tmp / "metrics.json", seal(tmp, metrics))  # weights sha256 + signed verdict
    return Path(out), metrics


def degenerate_merge_warnings(run_dirs: Sequence[str | Path]) -> list[str]:
    """Warn (console and metrics) when a merge cannot combine anything: one run, or the same weights twice."""
    from medunlearn.models.checkpoint import model_sha256

    notes = []
    if len(run_dirs) == 1:
        notes.append("Merging a single run only rescales its change to the base; nothing is combined.")
    seen: dict[str, str] = {}
    for r in run_dirs:
        sha = model_sha256(r)
        if sha in seen:
            notes.append(f"Runs {Path(seen[sha]).name!r} and {Path(r).name!r} hold identical weights; the merge "
                         "counts that policy twice.")
        seen.setdefault(sha, str(r))
    for note in notes:
        log.warning(note)
    return notes


def _split(df, rule, seed, image_size, fractions, classes, spatial_dims, adopted=None, decoded=None) -> SplitData:
    """A policy's SplitData through the workflow's one data path (locator, 3D, disk cache of decoded images)."""
    return split_data_for(df, rule, seed, image_size, fractions, classes, spatial_dims=spatial_dims,
                          adopted=adopted, decoded=decoded)


def _acceptance_gate(run_dirs: list[Path], metas: list[dict], force: bool) -> list[str]:
    """Refuse a run whose own criteria were not met (unless `force`); note older runs without a verdict."""
    warnings = []
    for run, meta in zip(run_dirs, metas):
        if meta.get("accepted") is False:
            msg = (f"Expected accepted runs, but run {run.name} did not meet its own criteria "
                   f"(meta.json accepted: false)")
            if not force:
                raise CheckpointError(msg + "; merging cannot repair a policy its run never met. Pass --force to "
                                      "merge it anyway.")
            warnings.append(f"--force: merged run {run.name} although it did not meet its own criteria.")
        elif "accepted" not in meta:
            warnings.append(f"run {run.name} records no acceptance (an older run): its criteria are the defaults "
                            "or its recorded settings; not evaluated before the merge.")
    return warnings


def _policies(run_dirs, metas, rules, datas, union_data, force: bool) -> tuple[list[Policy], list[str]]:
    """Policy records (goal, criteria settings, validation data, run hash) and split-hash warnings."""
    from medunlearn.merge.policies import Policy, control_from_meta, shared_retain
    from medunlearn.models.checkpoint import model_sha256

    policies, warnings = [], []
    for run, meta, rule, data in zip(run_dirs, metas, rules, datas):
        recorded = _recorded_split(run)
        got = data.info.get("split_hash")
        if recorded and got and recorded != got:
            msg = (f"Expected run {run.name} to come from this cohort's split for {rule.describe()!r}, but its "
                   f"recorded split hash {recorded[:12]} differs from {got[:12]}")
            if not force:
                raise CheckpointError(msg + "; pass --force to judge it anyway.")
            warnings.append(msg + " (--force).")
        metrics_path = run / "metrics.json"
        source = read_json(metrics_path).get("acceptance", {}) if metrics_path.is_file() else {}
        policies.append(Policy(name=rule.describe(), goal=str(meta.get("goal") or "suppression"),
                               control=control_from_meta(meta), data=shared_retain(data, union_data),
                               seed=int(meta.get("seed", 0) or 0), rule=rule.to_dict(), run_dir=str(run),
                               run_sha256=model_sha256(run), accepted=meta.get("accepted"),
                               source_checks=list(source.get("checks", []))))
    return policies, warnings


def _recorded_split(run: Path) -> str | None:
    prov = run / "provenance.json"
    if not prov.is_file():
        return None
    return (read_json(prov).get("input_hashes") or {}).get("split") or None


def _policy_cards(run_dirs, metas, rules, acceptance: dict) -> list[dict]:
    """Per policy, for the merged model's card: rule, criteria, run hash, own verdict, result after the merge."""
    from medunlearn.models.checkpoint import model_sha256

    judged = {r["run"]: r for r in acceptance.get("policies", [])}
    cards = []
    for run, meta, rule in zip(run_dirs, metas, rules):
        rec = judged.get(str(run), {})
        cards.append({"policy": rule.describe(), "rule": rule.to_dict(), "goal": meta.get("goal"),
                      "method": meta.get("method"), "run": str(run), "run_sha256": model_sha256(run),
                      "run_accepted": meta.get("accepted"), "criteria": rec.get("criteria"),
                      "result": ({"met": rec["met"], "checks": rec["checks"]} if rec else
                                 {"met": None, "state": "not evaluated"})})
    return cards


def _union_reference(reference: str | Path, union, base_meta: dict):
    """The union retrain's model; refuses a checkpoint that is not a retrain of this base's split without
    exactly the merged policies' union (top-level OR terms compared in any order)."""
    from medunlearn.models.checkpoint import load_checkpoint
    from medunlearn.workflow.checks import check_union_reference

    model, meta = load_checkpoint(require_dir(reference, "a union retrain reference checkpoint"))
    check_union_reference(base_meta, meta, union.describe())  # architecture, classes, rule, split
    return model


def _evaluate_policies(model, base, rules, run_dirs, datas, union_data, seed, reference=None) -> dict:
    from medunlearn.evaluate.suite import evaluate_model

    out: dict[str, Any] = {"schema_version": 1, "policies": {}, "source_runs": {}}
    for rule, run, data in zip(rules, run_dirs, datas):
        name = rule.describe()
        out["policies"][name] = evaluate_model(model, data, original=base, reference=reference, seed=seed)
        run_metrics = Path(run) / "metrics.json"
        if run_metrics.is_file():
            src = read_json(run_metrics)
            out["source_runs"][name] = {k: src.get(k) for k in ("forget_acc", "retain_acc", "test_retain_acc",
                                                               "test_forget_acc", "test_forget_confidence",
                                                               "mia_efficacy")}
    out["union"] = evaluate_model(model, union_data, original=base, reference=reference, seed=seed)
    return out
