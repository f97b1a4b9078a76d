"""Merge unlearning checkpoints that share one base: load, check compatibility, merge, describe, save."""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medunlearn.data.imageset import SplitData
from medunlearn.errors import CheckpointError
from medunlearn.merge.base import MERGES, ScoreFn
from medunlearn.merge.config import MergeSpec, load_merge_config, method_config
from medunlearn.models.checkpoint import load_checkpoint, load_state_into, model_sha256, save_checkpoint
from medunlearn.runtime import RunContext


def _policy(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a run forgot and how, from its meta.json (pseudonymised fields only)."""
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        cfg = {}
    return {"rule": meta.get("rule"), "rule_text": meta.get("rule_text"),
            "method": meta.get("method", cfg.get("method")),
            "goal": meta.get("goal", cfg.get("goal")), "counts": meta.get("counts"),
            "kind": meta.get("kind"), "synthetic": bool(meta.get("synthetic", False))}


def check_compatible(base_meta: Mapping[str, Any], base_sha: str, run_meta: Mapping[str, Any], run: str) -> None:
    """Refuse a run not unlearned from this base, or with another architecture or class list."""
    got = run_meta.get("base_sha256")
    if got != base_sha:
        raise CheckpointError(f"Expected run {run} to start from base sha256 {base_sha[:12]}…, but its meta "
                              f"records {str(got)[:12] + '…' if got else 'no base_sha256'}; refusing to merge.")
    if run_meta.get("architecture") != base_meta.get("architecture"):
        raise CheckpointError(f"Expected run {run} to have the base architecture {base_meta.get('architecture')}, "
                              f"but got {run_meta.get('architecture')}.")
    if list(run_meta.get("class_names", [])) != list(base_meta.get("class_names", [])):
        raise CheckpointError(f"Expected run {run} to have class names {base_meta.get('class_names')}, but got "
                              f"{run_meta.get('class_names')}.")


@dataclasses.dataclass
class Sources:
    """The base and the unlearned runs a merge reads, loaded and checked once (a merge search reuses them)."""

    base_model: nn.Module
    base_meta: dict[str, Any]
    base_sha: str
    runs: list[dict[str, torch.Tensor]]  # each run's state dict, on the CPU
    records: list[dict[str, Any]]  # each run's path, sha256 and policy (merge_info["runs"])


def load_sources(run_dirs: Sequence[str | Path], base_dir: str | Path) -> Sources:
    """Load the base and every run; CheckpointError for a run not unlearned from this base."""
    base_model, base_meta = load_checkpoint(base_dir)
    base_sha = model_sha256(base_dir)
    runs, records = [], []
    for d in run_dirs:
        run_model, meta = load_checkpoint(d)
        check_compatible(base_meta, base_sha, meta, str(d))
        runs.append({k: v.detach().cpu() for k, v in run_model.state_dict().items()})
        records.append({"path": str(d), "sha256": model_sha256(d), **_policy(meta)})
    return Sources(base_model, base_meta, base_sha, runs, records)


def merge_runs(run_dirs: Sequence[str | Path], base_dir: str | Path, method: str,
               params: Mapping[str, Any] | None = None, weights: Sequence[float] | None = None,
               run_params: list[dict[str, Any]] | None = None, data: SplitData | None = None, seed: int = 0,
               ctx: RunContext | None = None, score_fn: ScoreFn | None = None,
               policies: Sequence[Any] = (), done: Mapping[str, Any] | None = None,
               sources: Sources | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Merge unlearned checkpoints `run_dirs` of base `base_dir` with MERGES[method].

    `policies` (merge.policies.Policy per run) feed the criteria-aware methods (learned_coefficients,
    merge_repair); `done`: merges of these runs already made with this seed (MergeEnv.done: the merge search);
    `sources`: load_sources(run_dirs, base_dir) when the caller has already loaded them.

    Returns (merged model in eval mode, merge_info). Raises CheckpointError for incompatible runs.
    """
    cls = MERGES.get(method)
    cfg = method_config(method, dict(params or {}))
    merger = cls(cfg)
    ctx = ctx or RunContext(seed=seed)
    t0 = time.perf_counter()
    src = sources or load_sources(run_dirs, base_dir)
    base_model, base_meta, base_sha, run_records = src.base_model, src.base_meta, src.base_sha, src.records
    runs = [{k: v.clone() for k, v in sd.items()} for sd in src.runs]  # copies: a method never alters the sources

    def build(state: Mapping[str, torch.Tensor]) -> nn.Module:
        return load_state_into(copy.deepcopy(base_model), state, source="merged state").eval()

    base_sd = {k: v.detach().cpu().clone() for k, v in base_model.state_dict().items()}
    merged = merger.merge(base_sd, runs, weights, ctx=ctx, data=data, build_model=build, score_fn=score_fn,
                          run_params=run_params, policies=policies, done=done)
    model = build(merged)
    info = {
        "method": method, "summary": cls.summary, "config": dataclasses.asdict(cfg),
        "weights": list(weights) if weights is not None else None, "run_params": run_params, "seed": ctx.seed,
        "base": {"path": str(base_dir), "sha256": base_sha, "architecture": base_meta.get("architecture"),
                 "class_names": base_meta.get("class_names")},
        "runs": run_records, "log": {k: ctx.log[k] for k in (method,) if k in ctx.log},
        "wall_time_s": time.perf_counter() - t0,
        "synthetic": bool(base_meta.get("synthetic")) or any(r["synthetic"] for r in run_records),
        "_base_meta": base_meta,
    }
    return model, info


def merge_from_config(spec: MergeSpec | str | Path, data: SplitData | None = None, ctx: RunContext | None = None,
                      score_fn: ScoreFn | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Run a merge described by a mergekit-style YAML file (or an already-loaded MergeSpec)."""
    if not isinstance(spec, MergeSpec):
        spec = load_merge_config(spec)
    model, info = merge_runs(spec.models, spec.base_model, spec.method, spec.parameters, spec.weights,
                             spec.run_params, data=data, seed=spec.seed, ctx=ctx or RunContext(seed=spec.seed),
                             score_fn=score_fn)
    info["spec"] = spec.raw
    return model, info


def merged_meta(info: Mapping[str, Any]) -> dict[str, Any]:
    """meta.json of a merged checkpoint: the base's architecture record plus the merge record."""
    base_meta = info["_base_meta"]
    public = {k: v for k, v in info.items() if not k.startswith("_")}
    entry = {"kind": "merged", "method": info["method"], "runs": [r["path"] for r in info["runs"]],
             "weights": info["weights"]}
    return {
        "kind": "merged", "architecture": base_meta["architecture"], "class_names": base_meta["class_names"],
        "image_size": base_meta.get("image_size"), "in_channels": base_meta.get("in_channels"),
        "config": {"method": info["method"], **info["config"]}, "seed": info["seed"],
        "base_sha256": info["base"]["sha256"], "rule": [r.get("rule") for r in info["runs"]],
        "cohort_hash": base_meta.get("cohort_hash"), "wall_time_s": info["wall_time_s"],
        "changelog": list(base_meta.get("changelog", [])) + [entry], "metrics": {},
        "synthetic": info["synthetic"], "merge": public,
    }


def save_merged(out_dir: str | Path, model: nn.Module, info: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Write the merged checkpoint (model.safetensors + meta.json with the merge record + provenance.json)."""
    return save_checkpoint(out_dir, model, merged_meta(info), overwrite=overwrite)
