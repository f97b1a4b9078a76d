"""`audit prepare` / `audit run`, and the `forget --audit` judgement: per-example membership evidence that a
withdrawn patient's images are forgotten (LiRA offline against reference models; medunlearn/audit/).

The audit reads training rows (the forget patients) and validation rows (held-out calibration patients) only:
the split's test rows are sealed (tune.sealed.validation_only) before anything is read.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medunlearn.commit import prepare_out_dir, staging_dir
from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.fileio import read_json, require_dir, write_bytes, write_json
from medunlearn.runtime import RunContext
from medunlearn.unlearn.types import Acceptance
from medunlearn.workflow.cohort_checks import check_label_sets, load_cohort
from medunlearn.workflow.splits import check_same_cohort, split_data_for, split_settings

log = logging.getLogger("medunlearn")
MANIFEST, MEMBERSHIP, SCORES, REFS = "manifest.json", "membership.json", "scores.safetensors", "refs"
NOT_A_BASE = ("unlearned", "merged", "retrain")


def recipe_from_meta(meta: dict[str, Any], dims: int, image_size: int):
    """(TrainConfig, where it came from): the base's recorded recipe (meta["config"]; an adopted bundle's when meta
    says it was adopted), else this dimensionality's default recipe with the base's architecture (said aloud)."""
    from medunlearn.models.train import TrainConfig
    from medunlearn.workflow.steps_train import training_config

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        cfg = {}
    adopted = bool(meta.get("adopted") or meta.get("kind") == "adopted")
    if "epochs" in cfg and "lr" in cfg:
        given = {k: v for k, v in cfg.items() if k in fields}
        source = f"the {'adopted bundle' if adopted else 'base'}'s recorded recipe (meta.config)"
        return TrainConfig.from_dict({**given, "image_size": image_size}), source
    arch = (meta.get("architecture") or {}).get("name", "")
    log.warning("The base checkpoint records no training recipe (meta.config); the reference models use the default "
                f"recipe for {dims}D data with the base's architecture {arch!r}: their membership scores may not "
                "match the base's training.")
    return training_config(dims, image_size, {"model": arch}), "default recipe (no recipe in the base's meta)"


def _split_for(df, meta_like: dict[str, Any], rule, seed: int):
    split_seed, fractions, image_size = split_settings(meta_like, seed)
    return split_data_for(df, rule, split_seed, image_size, fractions, meta_like.get("class_names"),
                          spatial_dims=meta_like.get("spatial_dims"))


def prepare(cohort: Any, model_dir: str | Path, out: str | Path, k: int = 8, seed: int = 0, overwrite: bool = False,
            progress: bool = False, torch_device: str | None = None, force: bool = False) -> tuple[Path, dict]:
    """Train k reference models with the base's recipe on balanced patient halves of the training rows; cache
    them, their membership (by image_id pseudonym) and every model's phi scores on train + validation rows."""
    from safetensors.torch import save

    from medunlearn.audit.references import (
        check_k,
        patient_ids,
        phi_scores,
        plan_halves,
        train_references,
    )
    from medunlearn.data.imageset import ImageSet
    from medunlearn.models.checkpoint import (
        load_checkpoint,
        model_sha256,
        save_checkpoint,
    )
    from medunlearn.models.train import make_meta
    from medunlearn.provenance import provenance_record
    from medunlearn.tune.sealed import validation_only

    check_k(k)
    base, meta = load_checkpoint(require_dir(model_dir, "a base checkpoint"))
    if meta.get("kind") in NOT_A_BASE:
        raise CheckpointError(f"Expected the deployed base checkpoint for `audit prepare`, but got a {meta['kind']} "
                              "one; reference models copy the base's training recipe.")
    ctx = RunContext.create(seed=seed, device=torch_device or "cpu", show_progress=progress)
    if ctx.is_main:
        prepare_out_dir(out, overwrite)
    df = load_cohort(cohort)
    check_label_sets(df, meta.get("class_names"), "the base checkpoint")
    data = _split_for(df, meta, None, seed)
    warnings = check_same_cohort(meta, data, force, "the base checkpoint")
    data = validation_only(data)  # the audit never reads a test row
    cfg, source = recipe_from_meta(meta, data.spatial_dims, int(data.in_shape[-1]))
    start = time.perf_counter()
    refs = train_references(data, cfg, ctx, k, seed)
    cost = time.perf_counter() - start
    universe = ImageSet.concat([data.train, data.val])
    n_train = len(data.train)
    member = np.concatenate([refs.member, np.zeros((k, len(universe) - n_train), dtype=bool)], axis=1)
    pseudo = plan_halves(patient_ids(data.val), k, seed + 1)  # calibration rows: as many OUT models as training rows
    excluded = np.concatenate([refs.member, pseudo], axis=1)
    ref_phi = torch.stack([phi_scores(m, universe, ctx.device) for m in refs.models])
    base_phi = phi_scores(base.to(ctx.device), universe, ctx.device)
    ids = universe.meta["image_id"].astype(str).tolist()
    manifest = {
        "kind": "audit_references", "method": "lira_offline", "k": k, "seed": seed, "recipe": cfg.to_dict(),
        "recipe_source": source, "base_sha256": model_sha256(model_dir), "base_kind": meta.get("kind"),
        "cohort_hash": data.info.get("cohort_hash"), "split_hash": data.info.get("split_hash"),
        "train_hash": data.info.get("train_hash"), "split": meta.get("split") or {}, "class_names": data.class_names,
        "image_size": meta.get("image_size"), "spatial_dims": data.spatial_dims, "in_channels": meta.get("in_channels"),
        "rows": {"train": n_train, "validation": len(universe) - n_train}, "halves": "balanced, by patient",
        "models": refs.infos, "cost": {"wall_time_s": round(cost, 3), "trainings": k, "device": str(ctx.device),
                                       "world_size": ctx.world_size},
        "warnings": warnings, "created": time.strftime("%Y-%m-%d"),
    }
    membership = {"image_ids_note": "image_id pseudonyms of the training rows each reference model saw",
                  "models": [{"index": i, "seed": refs.infos[i]["seed"],
                              "members": [ids[j] for j in np.flatnonzero(member[i])]} for i in range(k)]}
    if not ctx.is_main:
        ctx.barrier()
        return Path(out), manifest
    inputs = {"cohort": manifest["cohort_hash"] or "", "split": manifest["split_hash"] or "",
              "base_model": manifest["base_sha256"]}
    with staging_dir(out, overwrite) as tmp:
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / MEMBERSHIP, membership)
        write_bytes(tmp / SCORES, save({"ref_phi": ref_phi.contiguous(), "base_phi": base_phi.contiguous(),
                                        "member": torch.from_numpy(np.ascontiguousarray(member, dtype=np.uint8)),
                                        "excluded": torch.from_numpy(np.ascontiguousarray(excluded, dtype=np.uint8))}))
        write_json(tmp / "image_ids.json", ids)
        for i, model in enumerate(refs.models):
            # checkpoint kinds are fixed (base | retrain | unlearned | merged): a reference is a "base" trained on a
            # half, marked by its role
            ref_meta = make_meta("base", cfg, data, {"wall_time_s": refs.infos[i]["wall_time_s"],
                                                     "seed": refs.infos[i]["seed"]}, model)
            ref_meta.update(role="audit_reference", reference_index=i, split=manifest["split"])
            save_checkpoint(tmp / REFS / f"ref_{i:02d}", model.cpu(), ref_meta, overwrite=True,
                            provenance=provenance_record(cfg.to_dict(), refs.infos[i]["seed"], inputs,
                                                         run=ctx.run_record()))
        write_json(tmp / "provenance.json", provenance_record({"k": k, "recipe": cfg.to_dict()}, seed, inputs,
                                                              run=ctx.run_record()))
    ctx.barrier()
    return Path(out), manifest


def load_audit(audit_dir: str | Path):
    """(ScoreCache, manifest) of an `audit prepare` folder."""
    from safetensors.torch import load

    from medunlearn.audit.judge import ScoreCache

    d = require_dir(audit_dir, "an audit folder (from `medunlearn audit prepare`)")
    if not (d / MANIFEST).is_file() or not (d / SCORES).is_file():
        raise ConfigError(f"Expected {MANIFEST} and {SCORES} in the audit folder, but they are missing; run "
                          "`medunlearn audit prepare` first.")
    manifest = read_json(d / MANIFEST)
    t = load((d / SCORES).read_bytes())
    ids = read_json(d / "image_ids.json")
    cache = ScoreCache(image_ids=[str(i) for i in ids], member=t["member"].bool(), ref_phi=t["ref_phi"].double(),
                       base_phi=t["base_phi"].double(), excluded=t["excluded"].bool())
    return cache, manifest


def check_derived(manifest: dict[str, Any], meta: dict[str, Any], sha: str, what: str) -> None:
    """Refuse a model that does not descend from the audited base (or is not its retrain on the same split)."""
    base = manifest.get("base_sha256")
    if sha == base or meta.get("base_sha256") == base:
        return
    if meta.get("kind") == "retrain" and (meta.get("split") or {}).get("train_hash") == manifest.get("train_hash"):
        return
    raise CheckpointError(f"Expected {what} to be the audited base, a model unlearned from it, or its retrain on "
                          f"the same split, but its base sha256 {str(meta.get('base_sha256') or sha)[:12]} differs "
                          f"from the audit's {str(base)[:12]}.")


def audit_split(cache, data, model, device: torch.device, retrain=None, alpha: float | None = None) -> dict[str, Any]:
    """Audit `model` (and the retrain) on data.train_forget against held-out data.val; test rows never read."""
    from medunlearn.audit.judge import DEFAULT_FPR, audit
    from medunlearn.audit.references import phi_scores

    forget, cal, f_rows, c_rows = _rows(cache, data)

    def phi(m):
        m = m.to(device)
        return {"forget": phi_scores(m, forget, device), "calibration": phi_scores(m, cal, device)}

    return audit(cache, f_rows, c_rows, phi(model), phi(retrain) if retrain is not None else None,
                 alpha=DEFAULT_FPR if alpha is None else alpha)


def run_audit(audit_dir: str | Path, model_dir: str | Path, cohort: Any, rule, out: str | Path,
              reference: str | Path | None = None, alpha: float | None = None, overwrite: bool = False,
              torch_device: str | None = None) -> tuple[Path, dict]:
    """Audit a checkpoint (base, unlearned or merged from the audited base) for the rule's forget rows; write
    audit.json at `out`."""
    from medunlearn.models.checkpoint import load_checkpoint, model_sha256

    if rule is None:
        raise ConfigError("Expected the withdrawn patients (--patient ...) or another forget rule, but got none.")
    check_alpha(alpha)
    cache, manifest = load_audit(audit_dir)
    model, meta = load_checkpoint(require_dir(model_dir, "a checkpoint to audit"))
    check_derived(manifest, meta, model_sha256(model_dir), "the audited model")
    retrain = None
    if reference is not None:
        retrain, ref_meta = load_checkpoint(require_dir(reference, "a retrain reference checkpoint"))
        check_derived(manifest, ref_meta, model_sha256(reference), "the retrain reference")
    out = Path(out)
    if out.exists() and not overwrite:
        from medunlearn.errors import OutputExistsError

        raise OutputExistsError(f"Output {out} already exists; pass --overwrite to replace it.")
    df = load_cohort(cohort)
    data = _split_for(df, manifest, rule, int(manifest.get("split", {}).get("seed", 0)))
    check_split(manifest, data)
    device = torch.device(torch_device or "cpu")
    result = audit_split(cache, data, model, device, retrain, alpha)
    result.update({"rule": data.info.get("rule"), "model_kind": meta.get("kind"), "audit_base_sha256":
                   manifest.get("base_sha256"), "recipe_source": manifest.get("recipe_source"),
                   "reference_cost_s": manifest.get("cost", {}).get("wall_time_s")})
    write_json(out, result)
    return out, result


def check_alpha(alpha: float | None) -> None:
    if alpha is not None and not 0 < float(alpha) < 0.5:
        raise ConfigError(f"Expected the false-positive rate --fpr in (0, 0.5), but got {alpha}.")


def check_split(manifest: dict[str, Any], data) -> None:
    want, got = manifest.get("train_hash"), data.info.get("train_hash")
    if want and got and want != got:
        raise CheckpointError(f"Expected the cohort's training split of `audit prepare` (hash {want[:12]}), but got "
                              f"{got[:12]}: re-run `medunlearn audit prepare` for this cohort.")


# ------------------------------------------------------------------ forget --audit
def check_forget_audit(audit_dir: str | Path, model_dir: str | Path, goal: str) -> None:
    """Before any output: the audit folder exists and was prepared for this base; the goal is equivalence."""
    from medunlearn.models.checkpoint import model_sha256

    if goal != "equivalence":
        raise ConfigError(f"Expected --goal equivalence with --audit (a membership audit judges 'as if never "
                          f"trained on'), but got {goal!r}.")
    _, manifest = load_audit(audit_dir)
    if manifest.get("base_sha256") != model_sha256(model_dir):
        raise CheckpointError("Expected the audit folder to be prepared for this base model, but its base sha256 "
                              f"{str(manifest.get('base_sha256'))[:12]} differs; run `medunlearn audit prepare`.")


def auditor_cache(cache, teachers: bool):
    """The cache of the references that audit: all of them, or (after ref_distill) those that did not teach."""
    from medunlearn.audit.judge import ScoreCache
    from medunlearn.audit.teachers import reference_roles

    if not teachers:
        return cache
    _, idx = reference_roles(int(cache.member.shape[0]))
    return ScoreCache(cache.image_ids, cache.member[idx], cache.ref_phi[idx], cache.base_phi, cache.excluded[idx])


def audit_checks(audit_dir: str | Path, base, data, ctx: RunContext, alpha: float | None = None,
                 teachers: bool = False):
    """The controller's extra check (an `ExtraChecks` observer) for `forget --audit`: every checked state
    must show no membership of the forget set or of any patient, on either tail, at the stated FPR.

    Rows, reference statistics and the calibration are fixed up front; a check runs the model on the forget and
    calibration rows only. A model whose feature extractor has fewer blocks than the base's is a suffix on cached
    prefix outputs (FAMR's prefix cache): it cannot read images, so it gets no in-loop audit check (the returned
    state is still judged by judge_forget)."""
    from medunlearn.audit.judge import DEFAULT_FPR

    cache, manifest = load_audit(audit_dir)
    check_split(manifest, data)
    return checks_from_cache(auditor_cache(cache, teachers), base, data, ctx, DEFAULT_FPR if alpha is None else alpha)


def checks_from_cache(cache, base, data, ctx: RunContext, alpha: float):
    """audit_checks on a loaded ScoreCache (benchmarks build one in memory)."""
    from medunlearn.audit.lira import logit_confidence
    from medunlearn.evaluate.functional import predict

    forget, cal, f_rows, c_rows = _rows(cache, data)
    blocks = len(list(base.features.children())) if hasattr(base, "features") else None

    def check(model) -> list[dict[str, Any]]:
        if blocks is not None and len(list(model.features.children())) != blocks:
            return []
        # predict restores every module's train/eval flag (BatchNorm frozen by a method stays frozen)

        def phi(s):
            return logit_confidence(predict(model, s.images, device=ctx.device, num_classes=data.num_classes),
                                    s.labels)

        return in_loop_checks(cache, f_rows, c_rows, {"forget": phi(forget), "calibration": phi(cal)}, alpha)

    return AuditCheck(check)


class AuditCheck:
    """The in-loop audit as the controller's judge of forgetting (controller.Observer.judges_forgetting): a checked
    state is met when the retain guard holds and the audit finds no membership, set or patient, on either tail;
    the equivalence interval checks are recorded beside it, not required. It stops the run and picks the state, so
    the returned state is the one the audit passed (judge_forget re-audits it for the record)."""

    judges_forgetting = True

    def __init__(self, check) -> None:
        self.check = check

    def __call__(self, model) -> list[dict[str, Any]]:
        return self.check(model)


def in_loop_checks(cache, f_rows, c_rows, target, alpha: float) -> list[dict[str, Any]]:
    """Check records of one state: passed = no membership detected on either tail (set, and each patient)."""
    from medunlearn.audit.judge import judge_model, lira_scores
    from medunlearn.audit.lira import pooled_sigma

    sigma = pooled_sigma(cache.ref_phi, ~cache.excluded)
    res = judge_model(lira_scores(cache, f_rows, target["forget"], sigma),
                      lira_scores(cache, c_rows, target["calibration"], sigma), f_rows, c_rows, alpha, with_power=False)
    s = res["set"]
    out = [{"name": "membership_audit", "label": f"LiRA: forget-set TPR at {100 * alpha:g} % FPR (lower CI bound)",
            "value": round(100 * s["tpr_interval"][0], 3), "op": "<=", "threshold": round(100 * s["fpr_realised"], 3),
            "unit": "%", "passed": not (s["detected"] or s["below"])}]
    m = max(len(res["patients"]), 1)
    for p, e in res["patients"].items():
        out.append({"name": "membership_audit_patient",
                    "label": f"LiRA: patient {p} p-value vs held-out (Holm over {m})",
                    "value": round(100 * min(e["p"], e["p_low"]), 3), "op": ">=",
                    "threshold": round(100 * alpha / m, 3), "unit": "%", "passed": not e["still_detected"]})
    return out


def _rows(cache, data):
    from medunlearn.audit.judge import Rows
    from medunlearn.audit.references import patient_ids
    from medunlearn.errors import DataError
    from medunlearn.tune.sealed import validation_only

    data = validation_only(data)
    if len(data.train_forget) == 0:
        raise DataError("Expected forget rows among the training rows to audit, but the rule matches none.")
    forget, cal = data.train_forget, data.val
    f_rows = Rows(cache.positions(forget.meta["image_id"].astype(str).tolist(), "forget"), patient_ids(forget))
    c_rows = Rows(cache.positions(cal.meta["image_id"].astype(str).tolist(), "validation"), patient_ids(cal))
    return forget, cal, f_rows, c_rows


def judge_forget(audit_dir: str | Path, model, data, ctx: RunContext, acceptance: Acceptance,
                 teachers: bool = False) -> Acceptance:
    """`acceptance` with the equivalence interval checks replaced by the audit's (the retain guard stays): met =
    retain guard passed and the forget set and every patient forgotten; the interval checks move to
    interval_checks (and their verdict to interval_met)."""
    cache, manifest = load_audit(audit_dir)
    check_split(manifest, data)
    result = audit_split(auditor_cache(cache, teachers), data, model, ctx.device)
    if teachers:  # which references taught (ref_distill) and so were left out of the audit, which audited
        from medunlearn.audit.teachers import reference_roles

        result["teacher_references"], result["auditor_references"] = reference_roles(int(cache.member.shape[0]))
    checks = [c for c in acceptance.checks if not c["name"].startswith("membership_audit")]
    retain = [c for c in checks if c["name"] == "retain_accuracy"]
    judged = audit_check_records(result) + retain
    met = all(c["passed"] for c in judged)
    reason = acceptance.reason if met else (acceptance.reason + "; membership audit: " + result["summary"]).lstrip("; ")
    return dataclasses.replace(
        acceptance, interval_checks=[c for c in checks if c["name"] != "retain_accuracy"],
        interval_met=acceptance.met, checks=judged, met=bool(met), reason=reason, audit=result,
        judged_by=(f"membership audit ({result['method']}, {result['reference_models']} reference models, "
                   f"{result['fpr']:.0%} FPR) on the returned state + retain guard"))


def audit_check_records(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Check records (controller format) for the set verdict and each patient's."""
    s = result["set"]["audited"]
    fpr = 100 * result["fpr"]
    out = [{"name": "membership_audit", "label": f"LiRA: forget-set TPR at {fpr:g} % FPR (lower CI bound)",
            "value": round(100 * s["tpr_interval"][0], 3), "op": "<=", "threshold": round(100 * s["fpr_realised"], 3),
            "unit": "%", "passed": result["set"]["verdict"] == "forgotten", "interval":
            [round(100 * v, 3) for v in s["tpr_interval"]], "verdict": result["set"]["verdict"]}]
    m = max(len(result["patients"]), 1)
    for p, e in result["patients"].items():
        out.append({"name": "membership_audit_patient", "label": f"LiRA: patient {p} ({e['verdict']}): no membership "
                    f"left (p-value vs held-out, Holm over {m})", "value": round(100 * e["p_audited"], 3), "op": ">=",
                    "threshold": round(fpr / m, 3), "unit": "%", "passed": not e["still_detected"],
                    "verdict": e["verdict"]})
    return out
