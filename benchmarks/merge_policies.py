"""Benchmark: one deployed model, per-policy unlearning runs merged by every merge method, with two references
in the same table: ONE run that forgets the union of the policies, and SEQUENTIAL application (run B on run
A's output, ...; each run's retain set excludes every policy's rows, or B's retain repair would relearn A's).
Two workloads:
  synthetic      the built-in SYNTHETIC cohort: device ScannerX, one site, measurement outliers (3 policies);
                 the base is trained per seed with the `bench device` recipe (its time stands in for one retrain)
  fashion-mnist  real Fashion-MNIST: two disjoint classes (t-shirt, trouser), one policy each; the base is the
                 `bench fashion-mnist` original (trained once, cached under --out/cache, wall time recorded)

Per seed: unlearn each policy (`--method`, under the controller), run the two references, then merge with every
merge method (and the validation-chosen default). Every merged model is judged on VALIDATION rows against
every policy's criteria (criteria met, n/seeds) and measured on TEST rows:
  forget Δ  = merged − own run, per policy, on the policy's test_forget rows, in the measure its criterion (a)
              reads: expected accuracy (mean true-label probability) for a domain, top-1 for a removed class
              (read with `no further from target` below; the former |Δ| <= 2 is no longer a target)
  retain Δ  = merged − best single run top-1 on the test_retain rows no policy forgets  (target: >= −1)
  time      = the merge (or the reference) in seconds; budget: the merge of existing runs <= half of one union run.
  targets   = every policy no further from its target than its own run (+ 2), retain Δ >= −1, retain
              confidence >= the original's − 5 (test), time <= union run / 2 (issue 31; `targets_met`).
Mean ± std over seeds. Prints a table and writes markdown (`--md`).

    nice -n 5 python benchmarks/merge_policies.py --seeds 0 1 2 --md docs/results/merge-synthetic.md
    nice -n 5 python benchmarks/merge_policies.py --workload fashion-mnist --seeds 0 1 2 --md docs/results/merge-fashion-mnist.md
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
SYNTHETIC_POLICIES = {"device": {"device": ["ScannerX"]}, "site": {"site": ["Synthetic Imaging Centre"]},
                      "outlier": {"outliers": "auto"}}
FASHION_CLASSES = {"t-shirt": 0, "trouser": 1}  # two disjoint class withdrawals
DEFAULT_METHOD = {"synthetic": "famr", "fashion-mnist": "psg_frozen"}  # README: which method for which policy


def prepare_synthetic(args):
    """The SYNTHETIC cohort decoded once; (per-policy splits, union split)."""
    from medunlearn.data.cohort import index_archive
    from medunlearn.data.synthetic import CLASS_NAMES, synthesize_cohort
    from medunlearn.selection.rules import AnyOf, rule_from_dict
    from medunlearn.selection.splitdata import build_split_data

    root = args.out / f"synthetic-p{args.patients}"
    if not (root / "labels.csv").is_file():
        synthesize_cohort(root, n_patients=args.patients, seed=0, image_size=64, overwrite=True)
    df, _ = index_archive(root, labels_csv=root / "labels.csv", salt="bench-merge", workers=1, pool="thread")
    load, names = decode_once(df, list(CLASS_NAMES), args.image_size), list(CLASS_NAMES)
    rules = {k: rule_from_dict(v) for k, v in SYNTHETIC_POLICIES.items()}

    def split(rule):
        return build_split_data(df, rule, seed=0, image_size=args.image_size, loader=load, class_names=names)

    return {k: split(r) for k, r in rules.items()}, split(AnyOf(tuple(rules.values())))


def prepare_fashion(args):
    """Fashion-MNIST with the bench's val carve-out; (one split per withdrawn class, union split)."""
    from medunlearn.benchmarking.fashion_mnist import CLASS_NAMES
    from medunlearn.benchmarking.suites import SuiteOptions, fashion_prepare, split_parts
    from medunlearn.data.imageset import SplitData

    raw = fashion_prepare(SuiteOptions(data_dir=args.data_dir))

    def split(classes, rule):
        parts = split_parts(raw, lambda i, name, s: torch.isin(s.labels, torch.tensor(classes)))
        return SplitData(class_names=list(CLASS_NAMES), info={"rule": rule, "suite": "fashion-mnist"}, **parts)

    datas = {n: split([c], f"class = {n}") for n, c in FASHION_CLASSES.items()}
    return datas, split(list(FASHION_CLASSES.values()), " or ".join(f"class = {n}" for n in FASHION_CLASSES))


def base_model(seed: int, args, union):
    """(base model, seconds one training run takes: the retrain stand-in)."""
    from medunlearn.benchmarking.runner import cached_model, load_bench_config
    from medunlearn.models.train import TrainConfig, train_model
    from medunlearn.runtime import RunContext

    if args.workload == "fashion-mnist":  # the bench's original, trained once (same cache key as `bench`)
        model, wall, _ = cached_model(args.out, "original", union, load_bench_config("fashion-mnist")["train"],
                                      False, lambda kind, info: print(info.get("text", ""), flush=True))
        return model.cpu().eval(), wall
    t0 = time.perf_counter()
    recipe = {**load_bench_config("device")["train"], "model": args.model, "epochs": args.epochs,
              "image_size": args.image_size}
    model, _ = train_model(union, TrainConfig.from_dict(recipe), RunContext(seed=seed))
    return model.cpu().eval(), time.perf_counter() - t0


def method_settings(args):
    """(data -> the candidates to run, the first candidate's Config: its criteria judge the merge). A named method:
    configs/unlearn defaults <- the bench YAML's overrides for this kind of policy. `auto`: `forget --method auto`'s
    chain for the policy's kind (workflow/auto_method.py)."""
    from medunlearn.benchmarking.runner import method_overrides, resolve_settings
    from medunlearn.configio import method_config
    from medunlearn.unlearn import METHODS
    from medunlearn.workflow.auto_method import AUTO, chain_configs, policy_kind

    if args.method == AUTO:
        chains = chain_configs(None, None)
        kind = "class" if args.workload == "fashion-mnist" else "domain"  # each workload's policies are one kind
        return (lambda data: chains[policy_kind(data)]), chains[kind][0][2]
    cls = METHODS.get(args.method)
    over = {}
    if args.workload == "fashion-mnist":  # class withdrawal: the bench's layered overrides for the class scenario
        settings = resolve_settings("fashion-mnist", [args.method], 1, ["suppression"], False, None, ["class"], None)
        over = method_overrides(settings, args.method, "class", "suppression")
    cfg = method_config(cls, None, over)
    return (lambda data: [(args.method, over, cfg)]), cfg


def decode_once(df, class_names, image_size):
    """A loader for build_split_data that decodes the whole cohort once and then slices rows by image_id."""
    from medunlearn.data.datasets import load_images

    images, labels = load_images(df, class_names, image_size)
    row = {i: n for n, i in enumerate(df["image_id"])}

    def load(frame, names, size, progress=False):
        assert list(names) == list(class_names) and size == image_size
        idx = torch.tensor([row[i] for i in frame["image_id"]], dtype=torch.long)
        return images[idx], labels[idx]

    return load


def test_scores(model, datas, union) -> dict:
    """TEST-row scores: each policy's test_forget in its criterion-(a) measure, and top-1 on the test_retain rows
    no policy forgets."""
    from medunlearn.evaluate.functional import accuracy, expected_accuracy, predict
    from medunlearn.unlearn.judging import removed_classes

    k = union.num_classes

    def logits(s):
        return predict(model.eval(), s.images, device="cpu", num_classes=k)

    def forget(d):
        measure = accuracy if removed_classes(d) else expected_accuracy
        return measure(logits(d.test_forget), d.test_forget.labels)

    retain = logits(union.test_retain)
    return {"forget": {p: forget(d) for p, d in datas.items()},
            "retain": accuracy(retain, union.test_retain.labels),
            "retain_conf": 100.0 * float(retain.float().softmax(1).max(1).values.mean())}  # criterion (d), test rows


def one_seed(seed: int, args, datas, union) -> dict:
    from medunlearn.merge import MERGES
    from medunlearn.merge.policies import Policy, assess_policies, control_from_meta, shared_retain
    from medunlearn.merge.select import DEFAULT_CANDIDATES, select_by
    from medunlearn.models.checkpoint import load_state_into
    from medunlearn.runtime import RunContext
    from medunlearn.workflow.auto_method import run_chain

    base, t_retrain = base_model(seed, args, union)
    base_conf = test_scores(base, datas, union)["retain_conf"]
    chains, cfg = method_settings(args)
    kept = {}

    def unlearn(model, data, label=None):  # a named method is a one-candidate chain, as in `forget`
        t = time.perf_counter()
        name, _, out, _ = run_chain(chains(data), model, data, RunContext(seed=seed), "suppression")
        if label:
            kept[label] = name
        return out.model.cpu().eval(), out.acceptance, time.perf_counter() - t

    runs = {p: unlearn(base, d, p) for p, d in datas.items()}
    control = control_from_meta({"unlearn_config": dataclasses.asdict(cfg)})
    policies = [Policy(name=p, goal="suppression", control=control, data=shared_retain(d, union), seed=seed,
                       accepted=runs[p][1]["met"]) for p, d in datas.items()]
    run_scores = {p: test_scores(m, datas, union) for p, (m, _, _) in runs.items()}
    own = {p: run_scores[p]["forget"][p] for p in datas}
    best_retain = max(s["retain"] for s in run_scores.values())
    t_runs = sum(t for _, _, t in runs.values())
    rows = {}
    union_model, _, t_union = unlearn(base, union)
    goal = {p: forget_target_pct(cfg, d) for p, d in datas.items()}

    def record(name, model, seconds, total):
        verdict = assess_policies(model, base, policies, union)
        sc = test_scores(model, datas, union)
        d_forget = {p: sc["forget"][p] - own[p] for p in datas}
        d_val = next((c for c in verdict["retain"]["checks"] if c["name"] == "retain_confidence"), None)
        rows[name] = {"met": verdict["met"], "d_forget": d_forget, "d_retain": sc["retain"] - best_retain,
                      "d_val": None if d_val is None else bool(d_val["passed"]),
                      "d_conf": sc["retain_conf"] - base_conf, "time": seconds, "total": total,
                      "targets": targets_met(sc, own, goal, best_retain, sc["retain_conf"] - base_conf,
                                             seconds, t_union)}

    record("union run", union_model, t_union, t_union)
    seq, t_seq = base, 0.0
    for d in datas.values():  # each later run's retain set excludes every policy's rows (they are withdrawn)
        seq, _, t = unlearn(seq, shared_retain(d, union))
        t_seq += t
    record("sequential", seq, t_seq, t_seq)
    base_sd = {k: v.detach().cpu() for k, v in base.cpu().state_dict().items()}
    run_sds = [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m, _, _ in runs.values()]

    def build(sd):
        return load_state_into(copy.deepcopy(base), sd, source="merged").eval()

    def merge_with(done):  # the search's merge_one: each merge kept for merge_repair's first merge (MergeEnv.done)
        def merge_one(name):
            method, params = args.variants.get(name, (name, {}))
            merger = MERGES.get(method)(**params)
            sd = merger.merge(base_sd, run_sds, None, ctx=RunContext(seed=seed), data=union, build_model=build,
                              policies=policies, done=done)
            done[name] = (dataclasses.asdict(merger.config), sd)
            return build(sd), {"method": name}, torch.device("cpu")
        return merge_one

    for name in args.merges:  # each on its own: its time is the whole method's
        t = time.perf_counter()
        model, _, _ = merge_with({})(name)
        dt = time.perf_counter() - t
        record(name, model, dt, t_runs + dt)
    t = time.perf_counter()
    model, info, _, sel = select_by(merge_with({}), base, policies, union, DEFAULT_CANDIDATES)
    dt = time.perf_counter() - t
    record(f"default (chose {info['method']})", model, dt, t_runs + dt)
    return {"rows": rows, "runs_met": {p: r[1]["met"] for p, r in runs.items()}, "kept": kept, "t_runs": t_runs,
            "base_conf": base_conf,
            "t_retrain": t_retrain, "t_union": t_union, "own": own, "best_retain": best_retain, "chosen": info["method"]}


def no_further(forget, own, goal) -> bool:
    """Every policy: |merged − target| <= |own run − target| + 2 points (TEST rows)."""
    return all(abs(forget[p] - goal[p]) <= abs(own[p] - goal[p]) + 2 for p in own)


def targets_met(scores, own, goal, best_retain, d_conf, seconds, t_union) -> bool:
    """Issue 31's merge targets on TEST rows: every policy no further from its criterion's target than its own run
    (+ 2 points), retain top-1 >= the best single run − 1, retain confidence >= the original's − 5 (criterion (d)),
    and the merge itself (the runs already exist) at most half of one union run."""
    return no_further(scores["forget"], own, goal) and scores["retain"] >= best_retain - 1 and d_conf >= -5 and seconds <= t_union / 2


def forget_target_pct(cfg, data) -> float:
    """Criterion (a)'s target for one policy, as the controller resolves it (chance for a domain, 0 for a removed
    class, or the configured forget_target)."""
    from medunlearn.unlearn.criteria import resolve_criteria
    from medunlearn.unlearn.judging import is_class_removal

    return resolve_criteria(cfg, "suppression", data.num_classes, is_class_removal(data), 100.0).forget_target


def ms(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    return f"{statistics.mean(values):+.1f} ± {statistics.pstdev(values):.1f}" if len(values) > 1 else f"{values[0]:+.1f}"


def render(results: list[dict], args, cmd: str, targets: dict[str, float]) -> str:
    from medunlearn.benchmarking.tables import markdown_table

    pols = list(results[0]["own"])
    names = list(results[0]["rows"])
    by_default: dict[str, list[str]] = {}
    for r in results:  # the default row's label names its choice; pool them under one row
        for n in list(r["rows"]):
            if n.startswith("default"):
                by_default.setdefault("default (chosen on validation)", []).append(n)
                r["rows"]["default (chosen on validation)"] = r["rows"].pop(n)
    names = [n for n in names if not n.startswith("default")] + ["default (chosen on validation)"]
    n = len(results)
    head = (["merge", "criteria met (val)", "(d) met (val)"] + [f"forget Δ {p}" for p in pols]
            + ["retain Δ", "retain conf Δ (test)", "time s", "runs + merge s", "targets met", "no further from target"])

    def further_ok(r, x):  # merged forget = own run + Δ
        return no_further({p: r["own"][p] + x["d_forget"][p] for p in pols}, r["own"], targets)

    rows = []
    for name in names:
        rs = [r["rows"][name] for r in results]
        d_val = [x.get("d_val") for x in rs]
        rows.append([name, f"{sum(x['met'] for x in rs)}/{n}",
                     "–" if None in d_val else f"{sum(d_val)}/{n}"] + [ms([x["d_forget"][p] for x in rs]) for p in pols]
                    + [ms([x["d_retain"] for x in rs]), ms([x.get("d_conf", float("nan")) for x in rs]),
                       f"{statistics.mean(x['time'] for x in rs):.1f}",
                       f"{statistics.mean(x['total'] for x in rs):.1f}", f"{sum(x['targets'] for x in rs)}/{n}",
                       f"{sum(further_ok(r, r['rows'][name]) for r in results)}/{n}"])
    lines = markdown_table(head, rows)
    budget = statistics.mean(r["t_union"] / 2 for r in results)
    runs_met = {p: sum(r["runs_met"][p] for r in results) for p in pols}
    what = (f"the SYNTHETIC cohort ({args.patients} patients, {args.model} {args.image_size} px, {args.epochs} epochs)"
            if args.workload == "synthetic" else "real Fashion-MNIST (the `bench fashion-mnist` original)")
    return "\n".join([
        f"Merging {len(pols)} per-policy `{args.method}` runs on {what}, seeds {args.seeds}. Command:",
        "", f"    {cmd}", "",
        "Criteria met: every policy's own criteria + retain on VALIDATION rows. Δ: TEST rows, points; "
        "forget Δ = merged − the policy's own run in its criterion-(a) measure (expected accuracy for a domain, "
        "top-1 for a removed class; the former target |Δ| ≤ 2 gave way to \"no further from target\"); "
        "retain Δ = merged − best single run, top-1 on rows no policy "
        "forgets (target ≥ −1); (d) met (val): val_retain mean max-softmax ≥ the original's − the policies' "
        "selectivity_margin; retain conf Δ (test): merged − original mean max-softmax on those test rows "
        "(target ≥ −5). References run once on their own (time = the reference). No further from target: "
        "on every policy the merged model's test forget measure is no further from the criterion's target "
        f"({', '.join(f'{p} {t:.1f} %' for p, t in targets.items())}) than the policy's own run, plus 2 points (issue 31's merge target; |Δ| ≤ 2 also failed a merge "
        "that forgets *closer* to the target than its source run).",
        "Targets met: no further from target, retain Δ ≥ −1, retain conf Δ ≥ −5 and the merge's own time ≤ half "
        f"a union run ({budget:.1f} s on average; the runs already exist). The {len(pols)} runs took "
        f"{statistics.mean(r['t_runs'] for r in results):.1f} s, one retrain {statistics.mean(r['t_retrain'] for r in results):.1f} s.",
        "Source runs meeting their own criteria: " + ", ".join(f"{p} {c}/{n}" for p, c in runs_met.items())
        + "; own-run test forget: " + ", ".join(
            f"{p} {statistics.mean(r['own'][p] for r in results):.1f}" for p in pols)
        + f". Default chose: {', '.join(r['chosen'] for r in results)}."
        + ("" if args.method != "auto" else " Auto kept: " + "; ".join(
            f"{p} " + ", ".join(r.get("kept", {}).get(p, "?") for r in results) for p in pols) + "."),
        "", *lines, ""])


def parse_variant(text: str) -> tuple[str, tuple[str, dict]]:
    """"NAME=METHOD:k=v,k=v" -> (NAME, (METHOD, {k: v})); values typed by the method's Config (apply_overrides)."""
    name, _, rest = text.partition("=")
    method, _, sets = rest.partition(":")
    if not name or not method:
        raise SystemExit(f"--variant expects NAME=METHOD:KEY=VALUE,..., got {text!r}")
    return name, (method, dict(kv.split("=", 1) for kv in sets.split(",") if kv))


def main() -> None:
    import sys

    from medunlearn.fileio import read_json, write_json
    from medunlearn.merge import MERGES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(DEFAULT_METHOD), default="synthetic")
    # synthetic defaults: the `bench device|site|outlier` recipe (configs/bench/device.yaml: AllCNN, 12 epochs, 48 px)
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--model", default="allcnn")
    ap.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST IDX folder (default: the Debian path)")
    ap.add_argument("--method", default=None, help="unlearning method for every policy and the references "
                    "(default famr on synthetic, psg_frozen on fashion-mnist: README 'which method for which policy')")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--merges", nargs="+", default=MERGES.names())
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=METHOD:KEY=VALUE,...",
                    help="a merge method with settings, run under NAME beside --merges "
                         "(e.g. merge_repair+distill=merge_repair:distill_steps=40)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/merge"))
    ap.add_argument("--md", type=Path, default=None, help="also write the table as markdown here")
    args = ap.parse_args()
    args.method = args.method or DEFAULT_METHOD[args.workload]
    args.variants = dict(parse_variant(v) for v in args.variant)
    args.merges = list(args.merges) + [v for v in args.variants if v not in args.merges]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    datas, union = (prepare_synthetic if args.workload == "synthetic" else prepare_fashion)(args)
    results = []
    for seed in args.seeds:  # each finished seed is kept (written atomically), so an interrupted run resumes
        done = args.out / (f"merge-{args.workload}-{args.method}-p{args.patients}-{args.model}{args.image_size}"
                           f"-e{args.epochs}-seed{seed}.json")
        cached = read_json(done) if done.is_file() else {}
        if cached.get("merges") == args.merges:
            results.append(cached)
            print(f"seed {seed}: reusing {done}", flush=True)
            continue
        t = time.perf_counter()
        results.append({**one_seed(seed, args, datas, union), "merges": args.merges})
        write_json(done, results[-1])
        print(f"seed {seed} done in {time.perf_counter() - t:.0f} s", flush=True)
    _, cfg = method_settings(args)
    targets = {p: forget_target_pct(cfg, d) for p, d in datas.items()}
    text = render(results, args, "python benchmarks/merge_policies.py " + " ".join(sys.argv[1:]), targets)
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        title = "SYNTHETIC cohort" if args.workload == "synthetic" else "Fashion-MNIST, two class withdrawals"
        args.md.write_text(f"# Merging per-policy runs ({title})\n\n" + text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
