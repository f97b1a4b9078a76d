"""`merge`: combine per-policy unlearning runs of one base into a single checkpoint, then re-evaluate it
on every source policy's forget set and on their union."""
from __future__ import annotations

from pathlib import Path
import logging
from typing import Any, Sequence

from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.models.finite import check_finite_outputs
from medunlearn.fileio import prepare_out_dir, read_json, staging_dir, write_json
from medunlearn.provenance import provenance_record
from medunlearn.runtime import RunContext
from medunlearn.workflow.common import check_label_sets, load_cohort, require_dir, split_data_for, split_settings

log = logging.getLogger("medunlearn")


def merge(run_dirs: Sequence[str | Path], base_dir: str | Path, out: str | Path, method: str = "ties",
          cohort: Any = None, params: dict | None = None, weights: Sequence[float] | None = None,
          config_path: str | Path | None = None, seed: int = 0, overwrite: bool = False,
          reference: str | Path | None = None) -> tuple[Path, dict]:
    """Merge `run_dirs` (each unlearned from `base_dir`) and write a merged checkpoint with metrics.json.

    With `config_path` (mergekit-style YAML) the runs, base, method and weights come from the file.
    metrics.json = {"schema_version", "policies": {rule: suite metrics}, "union": suite metrics,
    "source_runs": {rule: the source run's own headline metrics}}.
    `reference` is a union retrain (trained with --exclude on the union of every run's rule); with `cohort`
    it is evaluated beside the merged model on every policy and the union (the report's retrained column).
    """
    from medunlearn.forget.rules import AnyOf, rule_from_dict
    from medunlearn.merge.config import load_merge_config
    from medunlearn.merge.runner import merge_runs, merged_meta
    from medunlearn.models.checkpoint import load_checkpoint, model_sha256, save_checkpoint

    if config_path is not None:
        spec = load_merge_config(config_path)
        run_dirs, base_dir, method = spec.models, spec.base_model, spec.method
        params, weights, seed = spec.parameters, spec.weights, spec.seed
    if len(run_dirs) < 1:
        raise ConfigError("Expected at least one run directory to merge, but got none.")
    prepare_out_dir(out, overwrite)
    base_dir = require_dir(base_dir, "a base checkpoint")
    base, base_meta = load_checkpoint(base_dir)
    run_metas = [read_json(require_dir(r, "an unlearning run") / "meta.json") for r in run_dirs]
    rules = [rule_from_dict(m["rule"]) for m in run_metas if m.get("rule")]
    if len(rules) != len(run_metas):
        raise ConfigError("Expected every run to record its forget rule in meta.json, but at least one does not.")
    split_seed, fractions, image_size = split_settings(base_meta, seed)
    union = rules[0] if len(rules) == 1 else AnyOf(rules)
    df = load_cohort(cohort) if cohort is not None else None
    if df is not None:
        check_label_sets(df, base_meta.get("class_names"), "the base checkpoint")
    warnings = degenerate_merge_warnings(run_dirs)
    ref_model = _union_reference(reference, union, base_meta) if reference is not None else None
    if ref_model is not None and df is None:
        raise ConfigError("Expected --cohort with --reference (the reference is evaluated on the cohort), but got none.")
    union_data = (split_data_for(df, union, split_seed, image_size, fractions, base_meta.get("class_names"),
                                 spatial_dims=base_meta.get("spatial_dims"))
                  if df is not None else None)
    if union_data is not None:
        want, got = (base_meta.get("split") or {}).get("train_hash"), union_data.info.get("train_hash")
        if want and got and want != got:
            raise CheckpointError(f"Expected --cohort to be the cohort the base was trained on, but the base's split "
                                  f"hash {want[:12]} differs from this cohort's {got[:12]}.")
    ctx = RunContext.create(seed=seed)
    model, info = merge_runs(run_dirs, base_dir, method, params=params, weights=weights, data=union_data,
                             seed=seed, ctx=ctx)
    check_finite_outputs(model, f"the merged ({method}) model",
                         union_data.train_retain.images[:16] if union_data is not None else None)
    metrics = _evaluate_policies(model, base, df, rules, run_dirs, union_data, split_seed, fractions, image_size,
                                 base_meta, seed, ref_model) if df is not None else {}
    meta = merged_meta(info)
    meta["synthetic"] = bool(base_meta.get("synthetic"))
    meta["counts"] = {"policies": [m.get("counts") for m in run_metas]}
    meta["goal"] = sorted({str(m.get("goal")) for m in run_metas})
    meta["split"] = base_meta.get("split")  # the runs share the base's split, so the merge does too
    meta["run_sha256"] = [r["sha256"] for r in info["runs"]]
    meta["warnings"] = warnings
    if metrics:
        metrics["warnings"] = warnings
    inputs = {"base_model": model_sha256(base_dir), **{f"run:{Path(r).name}": model_sha256(r) for r in run_dirs}}
    if reference is not None:
        inputs["reference_model"] = model_sha256(reference)
    config = {"method": method, "parameters": dict(params or {}), "weights": list(weights) if weights else None,
              "runs": [str(r) for r in run_dirs], "base": str(base_dir)}
    with staging_dir(out, overwrite) as tmp:
        save_checkpoint(tmp, model, meta, overwrite=True, provenance=provenance_record(config, seed, inputs))
        if metrics:
            write_json(tmp / "metrics.json", metrics)
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


def _union_reference(reference: str | Path, union, base_meta: dict):
    """The union retrain's model; refuses a checkpoint that is not a retrain of this base's split without
    exactly the merged policies' union (top-level OR terms compared in any order)."""
    from medunlearn.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(require_dir(reference, "a union retrain reference checkpoint"))
    if meta.get("kind") != "retrain":
        raise ConfigError(f"Expected --reference to be a retrain checkpoint (medunlearn train --exclude), but "
                          f"{reference} is a {meta.get('kind', 'unknown')!r} checkpoint.")
    terms = lambda text: sorted(t.strip() for t in str(text).split(" OR "))  # noqa: E731
    if terms(meta.get("rule")) != terms(union.describe()):
        raise ConfigError(f"Expected --reference to be retrained without the union of the merged policies "
                          f"({union.describe()}), but it excluded {meta.get('rule')!r}.")
    want, got = (base_meta.get("split") or {}).get("train_hash"), (meta.get("split") or {}).get("train_hash")
    if want and got and want != got:
        raise ConfigError(f"Expected --reference to use the base model's training split, but its split hash "
                          f"{got[:12]} differs from {want[:12]}.")
    return model


def _evaluate_policies(model, base, df, rules, run_dirs, union_data, split_seed, fractions, image_size,
                       base_meta, seed, reference=None) -> dict:
    from medunlearn.evaluate.suite import evaluate_model

    out: dict[str, Any] = {"schema_version": 1, "policies": {}, "source_runs": {}}
    for rule, run in zip(rules, run_dirs):
        data = split_data_for(df, rule, split_seed, image_size, fractions, base_meta.get("class_names"),
                              spatial_dims=base_meta.get("spatial_dims"))
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
