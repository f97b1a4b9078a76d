"""Issue 28's target: unlearn a DenseNet121 bundle that medunlearn did not train.

Per seed: a SYNTHETIC cohort (`medunlearn cohort synth`), a DenseNet121 bundle in the classification template's
layout trained on it by plain MONAI + torch code (examples/deployed_bundle.py, no medunlearn import), then
`medunlearn adopt` (with the bundle's datalist as membership; fidelity check), `medunlearn forget --device
ScannerX` (forget's default method), and a retrain with the bundle's own recipe on its datalist without
ScannerX. Prints one row per seed and the mean ± std.

    python benchmarks/adopt_foreign.py --seeds 0 1 2 --patients 120 --out bench_out/adopt
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import deployed_bundle as foreign  # noqa: E402  (the hospital team's own code, examples/)


def _cli(*args: str) -> tuple[int, float, str]:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "medunlearn", *args], capture_output=True, text=True)
    return res.returncode, time.perf_counter() - start, res.stdout + res.stderr


def one_seed(seed: int, patients: int, out: Path, epochs: int) -> dict:
    work = out / f"seed{seed}"
    archive, cohort = work / "archive", work / "cohort.csv"
    rc, _, log = _cli("cohort", "synth", str(archive), "--patients", str(patients), "--seed", str(seed), "--overwrite")
    assert rc == 0, log[-400:]
    rc, _, log = _cli("cohort", "index", str(archive), "--labels", str(archive / "labels.csv"), "--out", str(cohort),
                      "--overwrite")
    assert rc == 0, log[-400:]
    trained = foreign.train_densenet_bundle(archive, work / "bundle", epochs=epochs, seed=seed)
    rc, adopt_s, log = _cli("adopt", str(work / "bundle"), "--cohort", str(cohort), "--datalist",
                            trained["datalist"], "--out", str(work / "base"), "--overwrite")
    if rc != 0:
        return {"seed": seed, "adopted": False, "error": log.strip().splitlines()[-1][:200]}
    meta = json.loads((work / "base" / "meta.json").read_text())
    rc, forget_s, log = _cli("forget", "--cohort", str(cohort), "--model", str(work / "base"), "--device",
                             "ScannerX", "--out", str(work / "run"), "--seed", str(seed), "--overwrite")
    metrics = json.loads((work / "run" / "metrics.json").read_text()) if (work / "run" / "metrics.json").exists() else {}
    acc = metrics.get("acceptance", {})
    monai = hand_back(work, cohort, archive) if rc in (0, 3) and metrics else {"error": log.strip().splitlines()[-1][:200]}
    retrain_list = foreign.make_datalist(archive, seed=seed, exclude_device="ScannerX")
    _, info = foreign.train_network(archive, retrain_list, epochs=epochs, seed=seed)
    checks = {c["name"]: c["value"] for c in acc.get("checks", [])}
    return {"seed": seed, "adopted": True, "fidelity_max_prob_diff": meta["adoption"]["fidelity"]["max_prob_diff"],
            "adopt_s": round(adopt_s, 1), "forget_rc": rc, "met": bool(acc.get("met")), "method": metrics.get("method"),
            "forget_s": round(forget_s, 1), "retrain_s": info["wall_time_s"], "bundle_train_s": trained["train"]["wall_time_s"],
            "checks": checks, "test_retain_confidence": metrics.get("test_retain_confidence"),
            "test_forget_expected": metrics.get("test_forget_expected_acc", metrics.get("test_forget_acc")),
            "monai": monai}


def hand_back(work: Path, cohort: Path, archive: Path) -> dict:
    """export-bundle --like the original, then MONAI's own `monai.bundle run` on the result, compared with
    medunlearn's predictions for the run (on the datalist's test images)."""
    from medunlearn.data.cohort import read_cohort
    from medunlearn.models.monai_run import compare_predictions, run_bundle

    rc, export_s, log = _cli("export-bundle", str(work / "run"), str(work / "handback"), "--like", str(work / "bundle"),
                             "--overwrite")
    if rc != 0:
        return {"error": log.strip().splitlines()[-1][:200]}
    start = time.perf_counter()
    preds = run_bundle(work / "handback", archive, work / "monai_eval")
    rec = compare_predictions(work / "run", preds, read_cohort(cohort))
    return {**rec, "export_s": round(export_s, 1), "monai_run_s": round(time.perf_counter() - start, 1)}


def _monai_cell(rec: dict) -> str:
    if "error" in rec:
        return f"not run: {rec['error']}"
    return f"{rec['max_prob_diff']:.1e} on {rec['matched']} images ({'equal' if rec['passed'] else 'DIFFERENT'})"


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--patients", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("bench_out/adopt"))
    a = ap.parse_args()
    rows = [one_seed(s, a.patients, a.out, a.epochs) for s in a.seeds]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "adopt_foreign.json").write_text(json.dumps(rows, indent=2))
    print("| seed | fidelity max Δp | adopt s | method | met | forget s | retrain s (bundle recipe) | MONAI runs --like: "
          "max Δp vs medunlearn | checks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["adopted"]:
            print(f"| {r['seed']} | refused: {r['error']} | | | | | | |")
            continue
        print(f"| {r['seed']} | {r['fidelity_max_prob_diff']:.1e} | {r['adopt_s']} | {r['method']} | "
              f"{'yes' if r['met'] else 'no'} | {r['forget_s']} | {r['retrain_s']} | {_monai_cell(r['monai'])} | "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["checks"].items() if isinstance(v, (int, float))) + " |")
    ok = [r for r in rows if r["adopted"]]
    if ok:
        print(f"met {sum(r['met'] for r in ok)}/{len(rows)}; adopt {_ms([r['adopt_s'] for r in ok])} s; "
              f"forget {_ms([r['forget_s'] for r in ok])} s; retrain {_ms([r['retrain_s'] for r in ok])} s; "
              f"wall RTE {_ms([r['retrain_s'] / r['forget_s'] for r in ok])}x")


if __name__ == "__main__":
    main()
