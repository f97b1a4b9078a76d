"""Run a benchmark suite: cached original + retrain models, one resumable cell per (scenario, method, goal, seed).

Layout of `out/`:
  bench.json                       the suite and settings of this output folder (refuses a different suite)
  cache/<kind>-<hash>/             original ("base") and retrain checkpoints, keyed by a hash of the training
                                   recipe + the exact training/validation tensors, reused across runs
  cells/<scenario>__<method>__<goal>__s<seed>.json   one finished cell, written atomically; a rerun skips
                                   every cell whose file exists with the same key (config, goal, seed, models)
  results.json, results.md, avg_gap_vs_rte.png       aggregated by `bench.tables`
The original and retrain models use training seed 0; `seeds` vary the unlearning run only.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medunlearn.benchmarking.suites import SUITES, SuiteOptions
from medunlearn.configio import REPO_CONFIGS, load_yaml_mapping, method_config
from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import ConfigError, MedUnlearnError, OutputExistsError
from medunlearn.fileio import read_json, write_json
from medunlearn.runtime import RunContext
from medunlearn.unlearn.types import Acceptance

Event = Callable[[str, dict], None]  # on_event(kind, info): "start" {total}, "phase" {text}, "cell" {name, skipped}
GAP_PAIRS = {"FA": "forget_acc", "RA": "retain_acc", "TA": "test_acc", "MIA": "mia_efficacy"}


@dataclass
class BenchSettings:
    """Resolved settings of one bench run (what results.md records)."""

    suite: str
    scenarios: list[str]
    methods: list[str]
    goals: list[str]
    seeds: list[int]
    quick: bool
    subset: int | None
    train: dict[str, Any]
    method_overrides: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    tuned: str | None = None  # folder of `medunlearn tune` YAMLs: adds a "<method>+tuned" row per YAML found


def digest(*parts: Any) -> str:
    """sha256 over JSON-able parts and tensors (bytes of the contiguous CPU tensor)."""
    h = hashlib.sha256()
    for p in parts:
        if torch.is_tensor(p):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _set_digest(*sets: ImageSet) -> str:
    return digest(*[t for s in sets for t in (s.images, s.labels)])


def load_bench_config(suite: str, config: str | Path | dict | None = None) -> dict[str, Any]:
    """configs/bench/<suite>.yaml (or the given path / mapping); empty when the suite has none."""
    if isinstance(config, dict):
        return config
    path = Path(config) if config is not None else REPO_CONFIGS / "bench" / f"{suite}.yaml"
    return load_yaml_mapping(path) if (config is not None or path.is_file()) else {}


def resolve_settings(suite: str, methods: list[str] | None, seeds: int | list[int], goals: list[str] | None,
                     quick: bool, subset: int | None, scenarios: list[str] | None,
                     config: str | Path | dict | None) -> BenchSettings:
    from medunlearn.unlearn import GOALS, METHODS
    from medunlearn.unlearn.base import check_goal

    s = SUITES.get(suite)
    cfg = load_bench_config(suite, config)
    quick_cfg = cfg.get("quick", {}) if quick else {}
    train = {**cfg.get("train", {}), **quick_cfg.get("train", {})}
    names = list(methods or quick_cfg.get("methods") or cfg.get("default_methods") or METHODS.names())
    for m in names:
        METHODS.get(m)  # ConfigError with did-you-mean
    goal_list = list(goals or cfg.get("default_goals") or GOALS)
    for g in goal_list:
        check_goal(g)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ConfigError(f"Expected at least one seed, but got {seeds!r}.")
    if subset is None:
        subset = quick_cfg.get("subset")
    return BenchSettings(suite, s.check_scenarios(scenarios), names, goal_list, seed_list, quick,
                         subset, train, {k: cfg.get(k, {}) for k in ("methods", "goals", "scenarios")})


def method_overrides(settings: BenchSettings, method: str, scenario: str, goal: str) -> dict[str, Any]:
    """Bench YAML overrides for one cell: methods.<m> <- goals.<g>.<m> <- scenarios.<s>.<m>."""
    o = settings.method_overrides
    out: dict[str, Any] = {}
    for layer in (o.get("methods", {}), o.get("goals", {}).get(goal, {}), o.get("scenarios", {}).get(scenario, {})):
        out.update((layer or {}).get(method) or {})
    return out


def prepare_out(out: Path, suite: str, overwrite: bool) -> None:
    """Resume a bench of the same suite; refuse anything else unless overwrite (which drops old cells)."""
    manifest = out / "bench.json"
    if out.is_dir() and any(out.iterdir()):
        prev = read_json(manifest).get("suite") if manifest.is_file() else None
        if not overwrite and prev != suite:
            what = f"a bench of suite {prev!r}" if prev else "files that are not a bench"
            raise OutputExistsError(f"Expected {out} to be empty or a {suite!r} bench to resume, but it holds "
                                    f"{what}; pass --overwrite to replace it.")
        if overwrite:  # the model cache stays: it is keyed by content and still valid
            shutil.rmtree(out / "cells", ignore_errors=True)
            for name in ("results.json", "results.md", "avg_gap_vs_rte.png", "bench.json"):
                (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def cached_model(out: Path, kind: str, data: SplitData, train_cfg: dict, exclude: bool, on_event: Event):
    """Train (or load from out/cache) the original (exclude=False) or retrain reference (exclude=True)."""
    from medunlearn.models.checkpoint import load_checkpoint, save_checkpoint
    from medunlearn.models.train import TrainConfig, make_meta, train_model

    cfg = TrainConfig.from_dict(train_cfg)
    # canonical row order (by image_id): the original then depends only on the training images, so every
    # scenario of a suite shares one cached original instead of retraining it per forget set
    sets = tuple(_canonical(x) for x in ((data.train_retain, data.val_retain) if exclude else (data.train, data.val)))
    key = digest(cfg.to_dict(), _set_digest(*sets))[:16]
    path = out / "cache" / f"{kind}-{key}"
    if (path / "meta.json").is_file():
        model, meta = load_checkpoint(path)
        return model, float(meta["wall_time_s"]), key
    on_event("phase", {"text": f"training the {kind} model ({len(sets[0])} images, {cfg.epochs} epochs)"})
    # the original sees retain + forget as one training set; a SplitData with an empty forget part does it
    empty = data.train_forget.subset([])
    view = SplitData(data.class_names, sets[0], empty, sets[1], empty, data.test_retain, data.test_forget, data.info)
    model, info = train_model(view, cfg, RunContext.create(seed=0, device="cpu"))
    info["exclude_forget"] = exclude
    save_checkpoint(path, model, make_meta("retrain" if exclude else "base", cfg, data, info, model), overwrite=True)
    return model, float(info["wall_time_s"]), key


def cached_cost(out: Path, kind: str, key: str) -> dict | None:
    """The image-pass record (unlearn/cost.py) of a cached model's training; None for caches older than it."""
    meta = read_json(out / "cache" / f"{kind}-{key}" / "meta.json") or {}
    return (meta.get("training") or {}).get("cost")


def _canonical(s: ImageSet) -> ImageSet:
    """The set sorted by meta image_id (stable), so equal sets give equal tensors and training order."""
    order = sorted(range(len(s)), key=lambda i: str(s.meta["image_id"].iloc[i]))
    return s.subset(order)


def unlearn_cell(method: str, cfg: Any, original: torch.nn.Module, data: SplitData, seed: int,
                 goal: str) -> tuple[torch.nn.Module, float, Acceptance]:
    """Run one method under the controller; returns (unlearned model, wall seconds, acceptance record).
    Tests spy on this function."""
    from medunlearn.unlearn import METHODS

    ctx = RunContext.create(seed=seed, device="cpu")
    start = time.perf_counter()
    outcome = METHODS.get(method)(cfg).run(original, data, ctx, goal)
    return outcome.model, time.perf_counter() - start, outcome.acceptance


def _score(model, data: SplitData, wall: float | None, ref: dict, goal: str | None, cost: dict | None = None) -> dict:
    """evaluate_model's metrics plus the retrain gap, computed against cached reference core metrics
    (same definitions as evaluate.suite: |model − retrain| over FA, RA, TA (all test rows), MIA-efficacy)."""
    from medunlearn.evaluate.suite import evaluate_model

    m = evaluate_model(model, data, wall_time_s=wall, reference_wall_time_s=ref.get("wall_time_s"), goal=goal,
                       cost=cost, reference_cost=ref.get("cost") if cost is not None else None)
    gaps = {g: abs(m[k] - ref[k]) if m.get(k) is not None and ref.get(k) is not None else None
            for g, k in GAP_PAIRS.items()}
    m["gap"] = gaps
    known = [v for v in gaps.values() if v is not None]
    m["avg_gap"] = sum(known) / 4 if len(known) == len(gaps) else None
    return m


def _core(m: dict) -> dict:
    from medunlearn.evaluate.suite import core_metrics

    return {**core_metrics(m), "wall_time_s": m.get("wall_time_s"), "avg_gap": m.get("avg_gap"), "rte": m.get("rte"),
            "rte_compute": m.get("rte_compute"),
            "forward_equivalents": (m.get("cost") or {}).get("forward_equivalents")}


def run_bench(suite: str, methods: list[str] | None = None, seeds: int | list[int] = 3, quick: bool = False,
              out: str | Path = "bench_out", goals: list[str] | None = None, subset: int | None = None,
              data_dir: str | Path | None = None, scenarios: list[str] | None = None, overwrite: bool = False,
              config: str | Path | dict | None = None, command: str = "", tuned: str | Path | None = None,
              on_event: Event | None = None, patients: int | None = None) -> dict[str, Any]:
    """Run (or resume) a suite; writes cells, results.json, results.md and the plot; returns results.

    `patients`: synthetic cohort size for the synthetic suites (None: the suite's default).
    `tuned`: a folder written by `medunlearn tune`; each method with a `<method>.yaml` there gets a second row,
    "<method>+tuned", run with that YAML alone (bench overrides are not applied on top of a tuned config)."""
    from medunlearn.benchmarking.tables import write_results
    from medunlearn.evaluate.suite import evaluate_model
    from medunlearn.unlearn import METHODS

    on_event = on_event or (lambda kind, info: None)
    settings = resolve_settings(suite, methods, seeds, goals, quick, subset, scenarios, config)
    settings.command = command
    rows = bench_rows(settings, tuned)
    configs = {(sc, label, g): method_config(METHODS.get(m), path,
                                             {} if label != m else method_overrides(settings, m, sc, g))
               for sc in settings.scenarios for label, m, path in rows for g in settings.goals}  # fail before training
    out = Path(out)
    prepare_out(out, suite, overwrite)
    write_json(out / "bench.json", {"suite": suite, "settings": settings.__dict__, "patients": patients})
    opts = SuiteOptions(quick=quick, subset=settings.subset, data_dir=Path(data_dir) if data_dir else None,
                        cache_dir=out / "cache", patients=patients)
    s = SUITES.get(suite)
    on_event("start", {"total": len(settings.scenarios) * len(rows) * len(settings.goals) * len(settings.seeds)})
    raw = s.prepare(opts)
    summary: dict[str, Any] = {}
    for scenario in settings.scenarios:
        data = s.split(raw, scenario, opts)
        original, orig_wall, okey = cached_model(out, "original", data, settings.train, False, on_event)
        reference, ref_wall, rkey = cached_model(out, "retrain", data, settings.train, True, on_event)
        ref_cost = cached_cost(out, "retrain", rkey)
        ref = {**_core(evaluate_model(reference, data)), "wall_time_s": ref_wall, "cost": ref_cost,
               "forward_equivalents": (ref_cost or {}).get("forward_equivalents")}
        orig = _score(original, data, None, ref, None)
        summary[scenario] = {"original": _core(orig), "retrain": {**ref, "avg_gap": 0.0, "rte": 1.0,
                                                                 "rte_compute": 1.0 if ref_cost else None},
                             "original_wall_time_s": orig_wall, "counts": data.info.get("counts"),
                             "rule": data.info.get("rule"), "cells": []}
        for label, method, _ in rows:
            for goal in settings.goals:
                cfg = configs[(scenario, label, goal)]
                for seed in settings.seeds:
                    name = f"{scenario}__{label}__{goal}__s{seed}"
                    path = out / "cells" / f"{name}.json"
                    key = digest(method, goal, seed, okey, rkey, settings.subset, repr(cfg))
                    cell = read_json(path) if path.is_file() else None
                    if cell is None or cell.get("key") != key:
                        cell = {**_run_cell(method, cfg, original, data, seed, goal, ref, key, scenario),
                                "method": label}
                        write_json(path, cell)
                        on_event("cell", {"name": name, "skipped": False, "cell": cell})
                    else:
                        on_event("cell", {"name": name, "skipped": True, "cell": cell})
                    summary[scenario]["cells"].append(cell)
    return write_results(out, settings, summary)


def bench_rows(settings: BenchSettings, tuned: str | Path | None) -> list[tuple[str, str, Path | None]]:
    """(row label, registry name, config YAML) per row: every method, then "<m>+tuned" per YAML in `tuned`."""
    rows = [(m, m, _method_yaml(m)) for m in settings.methods]
    if tuned is None:
        return rows
    folder = Path(tuned)
    found = [(f"{m}+tuned", m, folder / f"{m}.yaml") for m in settings.methods if (folder / f"{m}.yaml").is_file()]
    if not found:
        raise ConfigError(f"Expected a tuned YAML (<method>.yaml from `medunlearn tune`) in {folder} for one of "
                          f"{settings.methods}, but found none.")
    settings.tuned = str(folder)
    return rows + found


def _method_yaml(method: str) -> Path | None:
    path = REPO_CONFIGS / "unlearn" / f"{method}.yaml"
    return path if path.is_file() else None


def _run_cell(method: str, cfg: Any, original, data: SplitData, seed: int, goal: str, ref: dict, key: str,
              scenario: str) -> dict:
    import dataclasses

    cell: dict[str, Any] = {"key": key, "scenario": scenario, "method": method, "goal": goal, "seed": seed,
                            "config": dataclasses.asdict(cfg)}
    try:
        model, wall, acceptance = unlearn_cell(method, cfg, original, data, seed, goal)
    except MedUnlearnError as exc:  # e.g. divergence: a result of the benchmark, recorded, not a crash
        return {**cell, "error": f"{type(exc).__name__}: {exc}"}
    try:
        metrics = _score(model, data, wall, ref, goal, acceptance.get("cost"))
    except ValueError as exc:  # e.g. a degenerate model whose logits overflow: scikit-learn refuses NaN features
        return {**cell, "wall_time_s": wall, "error": f"evaluation failed ({type(exc).__name__}: {str(exc)[:120]})"}
    core = {**_core(metrics), "val_retain_confidence": (acceptance.get("selectivity") or {}).get("retain_confidence")}
    return {**cell, "core": core, "gap": metrics["gap"], "acceptance": _acceptance_summary(acceptance),
            "metrics": metrics}


def _acceptance_summary(acceptance: Acceptance | dict[str, Any]) -> dict[str, Any]:
    """What a bench cell keeps of a run's acceptance record: the verdict, its checks, where and why it stopped."""
    keep = ("met", "state", "step", "steps_run", "budget", "repair_steps", "check_every", "check_time_fraction",
            "reason", "first_met_step", "selectivity", "cost")
    return {**{k: acceptance.get(k) for k in keep},
            "checks": {c["name"]: {"value": c["value"], "passed": c["passed"]} for c in acceptance.get("checks", [])}}
