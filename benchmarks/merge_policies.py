"""Benchmark: one deployed model, three per-policy unlearning runs (device ScannerX, one site, measurement
outliers) on the built-in SYNTHETIC cohort, merged by every merge method; two references in the same table:
ONE run that forgets the union of the policies, and SEQUENTIAL application (run B on run A's output, ...).

Per seed: train the base (its time stands in for one retrain), unlearn each policy (`--method`, under the
controller), run the two references, then merge with every method (and the validation-chosen default).
Every merged model is judged on VALIDATION rows against every policy's criteria (criteria met, n/seeds) and
measured on TEST rows:
  forget Δ  = merged − own run test-forget accuracy, per policy     (target: |Δ| <= 2 points)
  retain Δ  = merged − best single run test-retain accuracy on the rows no policy forgets  (target: >= −1)
  time      = the merge (or the reference) in seconds; budget: runs + merge < union run + retrain / 10.
Mean ± std over seeds. Prints a table and writes markdown (`--md`).

    nice -n 5 python benchmarks/merge_policies.py --patients 80 --epochs 8 --seeds 0 1 2 --md docs/results/merge.md
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
POLICIES = {"device": {"device": ["ScannerX"]}, "site": {"site": ["Synthetic Imaging Centre"]},
            "outlier": {"outliers": "auto"}}
REFERENCES = ("union run", "sequential")


def prepare(args):
    """The SYNTHETIC cohort decoded once; (per-policy splits, union split)."""
    from medunlearn.data.cohort import index_archive
    from medunlearn.data.synthetic import CLASS_NAMES, synthesize_cohort
    from medunlearn.forget.rules import AnyOf, rule_from_dict
    from medunlearn.forget.splitdata import build_split_data
    from medunlearn.workflow.steps_merge import _decode_once

    root = args.out / f"synthetic-p{args.patients}"
    if not (root / "labels.csv").is_file():
        synthesize_cohort(root, n_patients=args.patients, seed=0, image_size=64, overwrite=True)
    df, _ = index_archive(root, labels_csv=root / "labels.csv", salt="bench-merge", workers=1, pool="thread")
    load, names = _decode_once(), list(CLASS_NAMES)
    rules = {k: rule_from_dict(v) for k, v in POLICIES.items()}

    def split(rule):
        return build_split_data(df, rule, seed=0, image_size=args.image_size, loader=load, class_names=names)

    return {k: split(r) for k, r in rules.items()}, split(AnyOf(list(rules.values()))), rules


def test_scores(model, datas, union) -> dict:
    """TEST-row accuracies: each policy's test_forget, and the test_retain rows no policy forgets."""
    from medunlearn.unlearn.probes import accuracy_pct, predict_logits

    k = union.num_classes

    def a(s):
        return accuracy_pct(predict_logits(model.eval(), s.images, k, torch.device("cpu")), s.labels)

    return {"forget": {p: a(d.test_forget) for p, d in datas.items()}, "retain": a(union.test_retain)}


def one_seed(seed: int, args, datas, union) -> dict:
    from medunlearn.merge import MERGES
    from medunlearn.merge.policies import Policy, assess_policies, control_from_meta, shared_retain
    from medunlearn.merge.select import DEFAULT_CANDIDATES, select_by
    from medunlearn.models.checkpoint import load_state_into
    from medunlearn.models.train import TrainConfig, train_model
    from medunlearn.runtime import RunContext
    from medunlearn.unlearn import METHODS

    t0 = time.perf_counter()
    base, _ = train_model(union, TrainConfig(model=args.model, epochs=args.epochs, batch_size=32,
                                             image_size=args.image_size), RunContext(seed=seed))
    t_retrain = time.perf_counter() - t0
    method = METHODS.get(args.method)

    def unlearn(model, data):
        t = time.perf_counter()
        out = method().run(model, data, RunContext(seed=seed), goal="suppression")
        return out.model.cpu().eval(), out.acceptance, time.perf_counter() - t

    runs = {p: unlearn(base, d) for p, d in datas.items()}
    control = control_from_meta({"unlearn_config": dataclasses.asdict(method.Config())})
    policies = [Policy(name=p, goal="suppression", control=control, data=shared_retain(d, union), seed=seed,
                       accepted=runs[p][1]["met"]) for p, d in datas.items()]
    run_scores = {p: test_scores(m, datas, union) for p, (m, _, _) in runs.items()}
    own = {p: run_scores[p]["forget"][p] for p in datas}
    best_retain = max(s["retain"] for s in run_scores.values())
    t_runs = sum(t for _, _, t in runs.values())
    rows = {}
    union_model, _, t_union = unlearn(base, union)
    budget = t_union + t_retrain / 10

    def record(name, model, seconds, total):
        verdict = assess_policies(model, base, policies, union)
        sc = test_scores(model, datas, union)
        d_forget = {p: sc["forget"][p] - own[p] for p in datas}
        rows[name] = {"met": verdict["met"], "d_forget": d_forget, "d_retain": sc["retain"] - best_retain,
                      "time": seconds, "total": total,
                      "targets": all(abs(v) <= 2 for v in d_forget.values()) and sc["retain"] >= best_retain - 1
                      and total < budget}

    record("union run", union_model, t_union, t_union)
    seq, t_seq = base, 0.0
    for p, d in datas.items():
        seq, _, t = unlearn(seq, d)
        t_seq += t
    record("sequential", seq, t_seq, t_seq)
    base_sd = {k: v.detach().cpu() for k, v in base.cpu().state_dict().items()}
    run_sds = [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m, _, _ in runs.values()]

    def build(sd):
        return load_state_into(copy.deepcopy(base), sd, source="merged").eval()

    def merge_one(name):
        ctx = RunContext(seed=seed)
        sd = MERGES.get(name)().merge(base_sd, run_sds, None, ctx=ctx, data=union, build_model=build,
                                      policies=policies)
        return build(sd), {"method": name}, torch.device("cpu")

    for name in args.merges:
        t = time.perf_counter()
        model, _, _ = merge_one(name)
        dt = time.perf_counter() - t
        record(name, model, dt, t_runs + dt)
    t = time.perf_counter()
    model, info, _, sel = select_by(merge_one, base, policies, union, DEFAULT_CANDIDATES)
    dt = time.perf_counter() - t
    record(f"default (chose {info['method']})", model, dt, t_runs + dt)
    return {"rows": rows, "runs_met": {p: r[1]["met"] for p, r in runs.items()}, "t_runs": t_runs,
            "t_retrain": t_retrain, "t_union": t_union, "own": own, "best_retain": best_retain, "chosen": info["method"]}


def ms(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    return f"{statistics.mean(values):+.1f} ± {statistics.pstdev(values):.1f}" if len(values) > 1 else f"{values[0]:+.1f}"


def render(results: list[dict], args, cmd: str) -> str:
    pols = list(POLICIES)
    names = list(results[0]["rows"])
    by_default = {}
    for r in results:  # the default row's label names its choice; pool them under one row
        for n in list(r["rows"]):
            if n.startswith("default"):
                by_default.setdefault("default (chosen on validation)", []).append(n)
                r["rows"]["default (chosen on validation)"] = r["rows"].pop(n)
    names = [n for n in names if not n.startswith("default")] + ["default (chosen on validation)"]
    n = len(results)
    head = ["merge", "criteria met (val)"] + [f"forget Δ {p}" for p in pols] + ["retain Δ", "time s",
                                                                                 "runs + merge s", "targets met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        rs = [r["rows"][name] for r in results]
        lines.append("| " + " | ".join(
            [name, f"{sum(x['met'] for x in rs)}/{n}"] + [ms([x["d_forget"][p] for x in rs]) for p in pols]
            + [ms([x["d_retain"] for x in rs]), f"{statistics.mean(x['time'] for x in rs):.1f}",
               f"{statistics.mean(x['total'] for x in rs):.1f}", f"{sum(x['targets'] for x in rs)}/{n}"]) + " |")
    budget = statistics.mean(r["t_union"] + r["t_retrain"] / 10 for r in results)
    runs_met = {p: sum(r["runs_met"][p] for r in results) for p in pols}
    return "\n".join([
        f"Merging three per-policy `{args.method}` runs on the SYNTHETIC cohort ({args.patients} patients, "
        f"{args.model} {args.image_size} px, {args.epochs} epochs), seeds {args.seeds}. Command:",
        "", f"    {cmd}", "",
        "Criteria met: every policy's own criteria + retain on VALIDATION rows. Δ: TEST-row accuracy, points; "
        "forget Δ = merged − the policy's own run (target |Δ| ≤ 2); retain Δ = merged − best single run on "
        "rows no policy forgets (target ≥ −1). References run once on their own (time = the reference).",
        f"Time budget (runs + merge < union run + retrain/10): {budget:.1f} s on average; the three runs took "
        f"{statistics.mean(r['t_runs'] for r in results):.1f} s, one retrain {statistics.mean(r['t_retrain'] for r in results):.1f} s.",
        f"Source runs meeting their own criteria: " + ", ".join(f"{p} {c}/{n}" for p, c in runs_met.items())
        + f". Default chose: {', '.join(r['chosen'] for r in results)}.", "", *lines, ""])


def main() -> None:
    import sys

    from medunlearn.merge import MERGES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=80)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--method", default="psg", help="unlearning method for every policy and the references")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--merges", nargs="+", default=MERGES.names())
    ap.add_argument("--out", type=Path, default=Path("bench_out/merge"))
    ap.add_argument("--md", type=Path, default=None, help="also write the table as markdown here")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    datas, union, _ = prepare(args)
    results = []
    for seed in args.seeds:
        t = time.perf_counter()
        results.append(one_seed(seed, args, datas, union))
        print(f"seed {seed} done in {time.perf_counter() - t:.0f} s", flush=True)
    text = render(results, args, "python benchmarks/merge_policies.py " + " ".join(sys.argv[1:]))
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text("# Merging per-policy runs (SYNTHETIC cohort)\n\n" + text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
