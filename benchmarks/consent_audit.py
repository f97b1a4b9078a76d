"""Consent withdrawal audit benchmark: does the LiRA membership audit flag the original, pass the retrain, and
pass an unlearned model at RTE >= 10x (unlearning only; the reference models are a one-time cost)?

Workloads (small so two shared CPU cores finish them; the numbers are noisy wall clocks):
  fm         Fashion-MNIST (Debian `dataset-fashion-mnist`): a random subset of the training images (--fm-train
             rows train, --fm-val held out), random 10 % of the train rows withdrawn; every image is its own patient.
  synthetic  the built-in SYNTHETIC cohort (--patients), 5 random training patients withdrawn.
Per seed: base and retrain (same recipe: small_cnn), K = 8 reference models as two balanced sets of 4 (so K = 4 is
the first set, K = 8 both), the audit of original / retrain / unlearned, and the calibration on validation rows
(held-out patients no model saw: leave-one-patient-out FPR, and the image-level FPR at a threshold set on the
other half of them). Test rows are never built (the split's test parts are Sealed).

    nice -n 10 python benchmarks/consent_audit.py --out /tmp/consent --seeds 0 1 2
Prints a markdown table (mean ± std over seeds) and writes one JSON per (workload, seed) under --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from medunlearn.audit.judge import ScoreCache
from medunlearn.audit.lira import tpr_at_fpr
from medunlearn.audit.references import phi_scores, train_references
from medunlearn.audit.teachers import ReferenceTeachers, auditor_indices
from medunlearn.audit.verdict import clopper_pearson
from medunlearn.benchmarking.tables import format_stat, markdown_table, mean_std
from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.models.train import TrainConfig, train_model
from medunlearn.runtime import RunContext
from medunlearn.tune.sealed import Sealed
from medunlearn.unlearn.cost import rte_compute
from medunlearn.workflow.steps_audit import audit_split, checks_from_cache

TEACHERS = [4, 5, 6, 7]  # ref_distill's teachers: the second set of 4 references; the first set audits


def sealed(data: SplitData) -> SplitData:
    return dataclasses.replace(data, test_retain=Sealed("test_retain"), test_forget=Sealed("test_forget"))


def fm_split(seed: int, n_train: int, n_val: int, fraction: float = 0.1) -> SplitData:
    from medunlearn.benchmarking.fashion_mnist import CLASS_NAMES, load_fashion_mnist

    train, _test = load_fashion_mnist()  # the test part is never used
    g = torch.Generator().manual_seed(1000 + seed)
    idx = torch.randperm(len(train), generator=g)[: n_train + n_val]
    tr, va = train.subset(idx[:n_train]), train.subset(idx[n_train:])
    forget = torch.zeros(n_train, dtype=torch.bool)
    forget[torch.randperm(n_train, generator=g)[: int(round(fraction * n_train))]] = True
    empty = va.subset(torch.zeros(0, dtype=torch.long))
    return sealed(SplitData(class_names=list(CLASS_NAMES), train_retain=tr.subset(torch.nonzero(~forget).flatten()),
                            train_forget=tr.subset(torch.nonzero(forget).flatten()), val_retain=va, val_forget=empty,
                            test_retain=empty, test_forget=empty, info={"rule": "random 10 %"}))


def synthetic_split(out: Path, seed: int, patients: int, image_size: int, withdrawn: int = 5) -> SplitData:
    from medunlearn.data.cohort import index_archive
    from medunlearn.data.synthetic import synthesize_cohort
    from medunlearn.selection.rules import build_rule
    from medunlearn.selection.split import select
    from medunlearn.workflow.splits import split_data_for

    archive = out / f"synthetic_{patients}"
    if not (archive / "labels.csv").is_file():
        synthesize_cohort(archive, n_patients=patients, seed=0, image_size=64, overwrite=True)
    df, _ = index_archive(archive, labels_csv=archive / "labels.csv", salt="consent-bench")
    sel = select(df, None, seed=0)
    train_patients = sorted(set(sel.frame.loc[sel.part("train_retain"), "patient"].astype(str)))
    chosen = list(np.random.default_rng(seed).choice(train_patients, withdrawn, replace=False))
    return sealed(split_data_for(df, build_rule(patient=chosen), seed=0, image_size=image_size))


def calibration_halves(cache: ScoreCache, data: SplitData, model, alpha: float, seed: int) -> dict:
    """Image-level FPR on held-out rows: threshold from one half of the validation patients, FPR on the other."""
    from medunlearn.audit.judge import Rows, lira_scores
    from medunlearn.audit.lira import pooled_sigma
    from medunlearn.audit.references import patient_ids

    cal = data.val
    pos = cache.positions(cal.meta["image_id"].astype(str).tolist(), "validation")
    pats = patient_ids(cal)
    names = np.unique(pats)
    rng = np.random.default_rng(seed)
    half = set(rng.permutation(names)[: len(names) // 2])
    a = np.array([p in half for p in pats])
    z = lira_scores(cache, Rows(pos, pats), phi_scores(model, cal, torch.device("cpu")),
                    pooled_sigma(cache.ref_phi, ~cache.excluded))
    _, _, thr = tpr_at_fpr(torch.as_tensor(z[~a]), torch.as_tensor(z[a]), alpha)
    k, n = int((z[~a] > thr).sum()), int((~a).sum())
    lo, hi = clopper_pearson(k, n)
    return {"fpr": k / n, "interval": [lo, hi], "n": n, "within_bound": lo <= alpha}


def subset_cache(cache: ScoreCache, models: list[int]) -> ScoreCache:
    return ScoreCache(cache.image_ids, cache.member[models], cache.ref_phi[models], cache.base_phi,
                      cache.excluded[models])


def model_settings(workload: str, args) -> dict:
    """What the cached models depend on (besides the seed): the workload's data and the training recipe."""
    data = ({"fm_train": args.fm_train, "fm_val": args.fm_val} if workload == "fm"
            else {"patients": args.patients, "image_size": args.image_size})
    return {"workload": workload, **data, "epochs": args.epochs, "width": args.width,
            "weight_decay": args.weight_decay}


def settings_key(workload: str, args) -> str:
    """A short hash of model_settings: part of every cache name, so other settings never reuse these models."""
    blob = json.dumps(model_settings(workload, args), sort_keys=True).encode()
    return f"{workload}_{hashlib.sha256(blob).hexdigest()[:8]}"


def run_settings(args) -> dict:
    """What a result JSON depends on beyond its models: the methods, modes and operating point."""
    return {"methods": list(args.method), "modes": list(args.modes), "fpr": args.fpr,
            "retime_retrain": args.retime_retrain}


def run_one(workload: str, seed: int, args) -> dict:
    torch.set_num_threads(args.threads)
    data = (fm_split(seed, args.fm_train, args.fm_val) if workload == "fm"
            else synthetic_split(Path(args.out), seed, args.patients, args.image_size))
    size = int(data.in_shape[-1])
    cfg = TrainConfig(model="small_cnn", model_kwargs={"width": args.width}, epochs=args.epochs, batch_size=64,
                      lr=0.05, weight_decay=args.weight_decay, image_size=size, amp=False)
    ctx = RunContext(seed=seed)
    trained = _trained(Path(args.out) / f"models_{settings_key(workload, args)}_seed{seed}.pt", data, cfg, ctx, seed)
    base, base_info, retrain, re_info, refs_a, refs_b = trained
    models = refs_a.models + refs_b.models
    universe = ImageSet.concat([data.train, data.val])
    n_tr = len(data.train)
    member = np.concatenate([np.concatenate([refs_a.member, refs_b.member]),
                             np.zeros((8, len(universe) - n_tr), dtype=bool)], axis=1)
    from medunlearn.audit.references import patient_ids, plan_halves

    val_p = patient_ids(data.val)  # calibration rows: balanced pseudo-halves, as prepare does (per set of 4)
    excluded = np.concatenate([np.concatenate([refs_a.member, refs_b.member]),
                               np.concatenate([plan_halves(val_p, 4, seed + 1), plan_halves(val_p, 4, seed + 501)])],
                              axis=1)
    device = torch.device("cpu")
    cache = ScoreCache(universe.meta["image_id"].astype(str).tolist(), torch.from_numpy(member),
                       torch.stack([phi_scores(m, universe, device) for m in models]), phi_scores(base, universe, device),
                       excluded=torch.from_numpy(excluded))
    ref_cost = {"k4_s": sum(i["wall_time_s"] for i in refs_a.infos),
                "k8_s": sum(i["wall_time_s"] for i in refs_a.infos + refs_b.infos)}
    out = {"workload": workload, "seed": seed, "settings": model_settings(workload, args),
           "run_settings": run_settings(args), "n_train": n_tr, "n_forget": len(data.train_forget),
           "n_val": len(data.val), "base_s": base_info["wall_time_s"], "retrain_s": re_info["wall_time_s"],
           "base_val_acc": base_info["best_val_acc"], "reference_cost_s": ref_cost, "audit": {}}
    for k, idx in (("k4", list(range(4))), ("k8", list(range(8)))):
        c = subset_cache(cache, idx)
        res = audit_split(c, data, retrain, device, alpha=args.fpr)  # audited = retrain: the retrain's pass
        out["audit"][k] = {"original": res["set"]["original"], "retrain": res["set"]["audited"],
                           "retrain_verdict": res["set"]["verdict"],
                           "patients_original": {p: e["p_original"] for p, e in res["patients"].items()},
                           "patients_retrain": {p: e["verdict"] for p, e in res["patients"].items()},
                           "min_detectable_effect": {p: e["min_detectable_effect"] for p, e in res["patients"].items()},
                           "effect_original": {p: e["effect_original"] for p, e in res["patients"].items()},
                           "calibration_lopo": res["calibration"],
                           "calibration_halves": calibration_halves(c, data, base, args.fpr, seed)}
    if args.retime_retrain:  # RTE's numerator measured now, beside the unlearning (the machine's load drifts)
        _, again = train_model(data, cfg, RunContext(seed=seed), exclude_forget=True)
        out["retrain_s_cached"], out["retrain_s"] = out["retrain_s"], again["wall_time_s"]
        re_info = again
    out["unlearn"] = []
    for spec, in_loop in [(m, mode == "in_loop") for m in args.method for mode in args.modes]:
        name, *kv = spec.split()
        overrides = {k: _num(v) for k, v in (x.split("=", 1) for x in kv)}
        from medunlearn.unlearn import METHODS

        uctx = RunContext(seed=seed)
        judge = cache
        t0, c0 = time.perf_counter(), time.process_time()  # unlearning only: the in-loop audit checks count, the reference models do not
        try:
            method = METHODS.get(name)(**overrides)
            if name == "ref_distill":  # teachers = the second set of 4; only the first set (K = 4) audits
                method.teachers = ReferenceTeachers(refs_b.models, TEACHERS, data.train.meta["image_id"].astype(
                    str).tolist(), refs_b.member)
                judge = subset_cache(cache, auditor_indices(8, TEACHERS))
            method.extra_checks = checks_from_cache(judge, base, data, uctx, args.fpr) if in_loop else None
            outcome = method.run(base, data, uctx, goal="equivalence")
        except Exception as exc:  # a diverged method is a result too
            out["unlearn"].append({"method": spec, "mode": "in_loop" if in_loop else "post", "error": str(exc)[:200], "wall_s": time.perf_counter() - t0,
                                   "rte": 0.0, "set_verdict": "error", "patients": [], "forgotten": False})
            continue
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        res = audit_split(judge, data, outcome.model, device, alpha=args.fpr)
        acc = outcome.acceptance
        patients = [e["verdict"] for e in res["patients"].values()]
        out["unlearn"].append({"method": spec, "mode": "in_loop" if in_loop else "post", "wall_s": wall, "rte": re_info["wall_time_s"] / wall,
                               "auditors": res["reference_models"], "original_flagged": res["set"]["original"]["detected"],
                               "cpu_s": cpu, "cost": acc.get("cost"), "rte_compute": rte_compute(re_info.get("cost"), acc.get("cost")),
                               "controller": {k: acc.get(k) for k in ("steps_run", "budget", "step", "check_every",
                                                                      "repair_steps", "check_time_fraction", "reason")},
                               "set_verdict": res["set"]["verdict"], "audited": res["set"]["audited"],
                               "patients": patients, "forgotten": res["forgotten"],
                               "still": [e["still_detected"] for e in res["patients"].values()],
                               "interval_met": outcome.acceptance["met"],
                               "retain_acc": next(c["value"] for c in outcome.acceptance["checks"]
                                                  if c["name"] == "retain_accuracy")})
    return out


def _trained(path: Path, data, cfg, ctx, seed: int):
    """base, retrain and 2 x 4 reference models: trained once per (workload, seed), cached as state dicts."""
    from medunlearn.audit.references import TrainedReferences
    from medunlearn.models.zoo import create_model

    def build():
        return create_model("small_cnn", data.num_classes, data.in_shape[0], data.in_shape[1], **cfg.model_kwargs)

    if path.is_file():
        blob = torch.load(path, weights_only=True)
        models = []
        for sd in blob["models"]:
            m = build()
            m.load_state_dict(sd)
            models.append(m.eval())
        refs = [TrainedReferences(models[2 + 4 * j: 6 + 4 * j], np.asarray(blob["member"][j].numpy(), dtype=bool),
                                  blob["infos"][j]) for j in range(2)]
        return models[0], blob["base_info"], models[1], blob["re_info"], refs[0], refs[1]
    base, base_info = train_model(data, cfg, ctx)
    retrain, re_info = train_model(data, cfg, ctx, exclude_forget=True)
    refs_a = train_references(data, cfg, ctx, 4, seed)
    refs_b = train_references(data, cfg, ctx, 4, seed + 500)
    keep = lambda i: {k: v for k, v in i.items() if k != "history"}  # noqa: E731
    torch.save({"models": [m.state_dict() for m in [base, retrain] + refs_a.models + refs_b.models],
                "member": [torch.from_numpy(refs_a.member), torch.from_numpy(refs_b.member)],
                "infos": [refs_a.infos, refs_b.infos], "base_info": keep(base_info), "re_info": keep(re_info)}, path)
    return base, base_info, retrain, re_info, refs_a, refs_b


def _num(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def table(results: list[dict]) -> str:
    lines = markdown_table(["workload", "K", "ref. cost s", "original TPR@1%FPR %", "flagged (original)",
                            "retrain TPR@1%FPR %", "retrain shows none", "calib. FPR (LOPO) %",
                            "calib. FPR (halves) %", "mean smallest detectable effect"])
    for w in sorted({r["workload"] for r in results}):
        rs = [r for r in results if r["workload"] == w]
        for k in ("k4", "k8"):
            a = [r["audit"][k] for r in rs]
            stat = lambda xs: format_stat(mean_std(xs))  # noqa: E731
            lines.append(
                f"| {w} | {k[1:]} | {stat([r['reference_cost_s'][k + '_s'] for r in rs])} | "
                f"{stat([100 * x['original']['tpr'] for x in a])} | {sum(x['original']['detected'] for x in a)}/{len(a)} | "
                f"{stat([100 * x['retrain']['tpr'] for x in a])} | "
                f"{sum(not (x['retrain']['detected'] or x['retrain']['below']) for x in a)}/{len(a)} | "
                f"{stat([100 * x['calibration_lopo']['fpr'] for x in a])} | "
                f"{stat([100 * x['calibration_halves']['fpr'] for x in a])} | "
                f"{stat([float(np.mean(list(x['min_detectable_effect'].values()))) for x in a])} |")
    lines += ["", *markdown_table(["workload", "method", "wall s", "RTE", "RTE compute", "set verdict (seeds)",
                                   "patients forgotten", "patients still detected", "audit passes",
                                   "RTE >= 10x and passes"])]
    for w in sorted({r["workload"] for r in results}):
        rs = [r for r in results if r["workload"] == w]
        for i, u in enumerate(rs[0]["unlearn"]):
            us = [r["unlearn"][i] for r in rs]
            verdicts = ", ".join(x["set_verdict"] for x in us)
            pats = ", ".join(f"{sum(v == 'forgotten' for v in x['patients'])}/{len(x['patients'])}" for x in us)
            still = ", ".join(str(sum(x.get("still", []))) for x in us)
            passes = sum(x["forgotten"] for x in us)
            both = sum(x["forgotten"] and x["rte"] >= 10 for x in us)
            lines.append(f"| {w} | {u['method']} ({u.get('mode', 'in_loop')}) | {format_stat(mean_std([x['wall_s'] for x in us]))} | "
                         f"{format_stat(mean_std([x['rte'] for x in us]))} | "
                         f"{format_stat(mean_std([x.get('rte_compute') for x in us]))} | {verdicts} | {pats} | {still} | "
                         f"{passes}/{len(us)} | {both}/{len(us)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workloads", nargs="+", default=["fm", "synthetic"])
    p.add_argument("--method", action="append", default=None, help="'NAME KEY=VALUE ...' (repeatable)")
    p.add_argument("--fm-train", type=int, default=2000)
    p.add_argument("--fm-val", type=int, default=1000)
    p.add_argument("--patients", type=int, default=120)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--fpr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table-only", action="store_true", help="re-render the table from the cached JSONs")
    p.add_argument("--no-retime-retrain", dest="retime_retrain", action="store_false",
                   help="use the cached retrain's wall time for RTE instead of retraining once more beside the methods")
    p.add_argument("--modes", nargs="+", default=["in_loop", "post"], choices=["in_loop", "post"],
                   help="in_loop: the audit judges forgetting at every controller check point, so it stops the run and "
                        "picks the returned state (forget --audit); post: the "
                        "controller runs on its interval criteria and the audit judges only the returned state")
    args = p.parse_args()
    args.method = args.method or ["neggrad"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for w in args.workloads:
        for s in args.seeds:
            f = out / f"{settings_key(w, args)}_seed{s}.json"
            if f.is_file():
                cached = json.loads(f.read_text())
                if args.table_only or cached.get("run_settings") == run_settings(args):
                    results.append(cached)
                    continue
            if args.table_only:
                continue
            t0 = time.perf_counter()
            r = run_one(w, s, args)
            r["total_s"] = time.perf_counter() - t0
            f.write_text(json.dumps(r, indent=1, default=float))
            results.append(r)
            print(f"{w} seed {s}: done in {r['total_s']:.0f} s", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
