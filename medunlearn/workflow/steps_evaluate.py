"""`evaluate`: the evaluation suite for one checkpoint against a cohort and forget rule."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medunlearn.errors import ConfigError
from medunlearn.fileio import write_json
from medunlearn.models.checkpoint import model_sha256
from medunlearn.models.finite import check_finite_outputs
from medunlearn.workflow.checks import check_original, check_reference
from medunlearn.workflow.cohort_checks import check_label_sets, load_cohort
from medunlearn.workflow.outputs import claims_output, evaluate_inputs
from medunlearn.workflow.splits import check_same_cohort, split_data_for, split_settings
from medunlearn.workflow.steps_adopt import accepts_source
from medunlearn.workflow.steps_forget import load_model_dir


@claims_output(evaluate_inputs, kind="file")  # inputs apart from --out; --out locked for the run
@accepts_source  # --model may be a bundle / TorchScript / state dict, adopted in memory
def evaluate(model_dir: str | Path, cohort: Any, rule, original: str | Path | None = None,
             reference: str | Path | None = None, out: str | Path | None = None, seed: int = 0,
             force: bool = False, overwrite: bool = False, cache_dir: str | Path | None = None) -> dict:
    """Evaluate `model_dir` on the split implied by its own training recipe; optionally write metrics.json."""
    from medunlearn.evaluate.suite import evaluate_model

    if rule is None:
        raise ConfigError("Expected a forget rule (--device, --site, ...) to define the forget set, but got none.")
    model, meta = load_model_dir(model_dir, "a checkpoint")
    orig = load_model_dir(original, "an original checkpoint") if original else (None, None)
    ref = load_model_dir(reference, "a retrain reference checkpoint") if reference else (None, None)
    # finite weights can still overflow to NaN logits: refuse at load, not mid-metric
    for net, name in ((model, model_dir), (orig[0], original), (ref[0], reference)):
        if net is not None and name is not None:
            check_finite_outputs(net, f"checkpoint {Path(name).name!r}")
    split_seed, fractions, image_size = split_settings(meta, seed)
    df = load_cohort(cohort)
    check_label_sets(df, meta.get("class_names"), "the checkpoint")
    data = split_data_for(df, rule, split_seed, image_size, fractions, meta.get("class_names"),
                          spatial_dims=meta.get("spatial_dims"), cache_dir=cache_dir,
                          adopted=meta)
    warnings = check_same_cohort(meta, data, force, "the checkpoint")
    if ref[1] is not None:
        check_reference(meta, ref[1], rule, data)
    if orig[1] is not None and original is not None:
        check_original(meta, orig[1], model_sha256(original), data)
    wall = meta.get("wall_time_s") if meta.get("kind") in ("unlearned", "merged") else None
    ref_wall = ref[1].get("wall_time_s") if ref[1] else None
    metrics = evaluate_model(model, data, original=orig[0], reference=ref[0], wall_time_s=wall,
                             reference_wall_time_s=ref_wall, goal=meta.get("goal"), seed=seed)
    metrics["warnings"] = warnings
    from medunlearn.workflow.splits import UNKNOWN_MEMBERSHIP, membership_unknown

    if membership_unknown(meta):  # an adopted model whose training datalist is unknown
        metrics["membership"] = dict(UNKNOWN_MEMBERSHIP)
        if isinstance(metrics.get("mia"), dict):
            metrics["mia"]["evaluable"] = False
    metrics["rule_text"] = rule.describe()  # the report refuses metrics of another rule or other weights
    metrics["model_sha256"] = model_sha256(model_dir)
    from medunlearn.runtime import is_main_process

    if out is not None and is_main_process():  # under torchrun every rank evaluates; rank 0 writes
        write_json(out, metrics)
    return metrics
