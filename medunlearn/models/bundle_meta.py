"""configs/metadata.json of an exported MONAI bundle: MONAI's schema fields plus each policy's verdict.

The changelog has one version per unlearning policy (and one for a merge), newest first; `acceptance`
records, per policy, whether the forget criteria were met (from the checkpoint's meta.json or the
metrics.json beside it; "not evaluated" when a run predates acceptance criteria).
"""
from __future__ import annotations

import json
import math
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from medunlearn.fileio import read_json
from medunlearn.models.bundle_safety import inert
from medunlearn.provenance import environment

MONAI_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
INTENDED_USE = ("Research use only. A classifier for de-identified medical images after machine unlearning of "
                "named data groups; not a medical device and not for clinical decisions.")
NOT_EVALUATED = "not evaluated"
_RUNTIME_PACKAGES = ("pytorch-ignite", "fire", "pydicom", "nibabel")  # engines, CLI, readers
_CHECK_KEYS = ("name", "label", "value", "op", "threshold", "unit", "passed")
_VERDICT_KEYS = ("goal", "judged_on", "criteria", "state", "reason", "step", "steps_run", "budget")


def verdict(acceptance: Any) -> dict[str, Any]:
    """A compact acceptance record: status "met" / "not met" / "not evaluated", the criteria and each check."""
    if not isinstance(acceptance, dict) or not isinstance(acceptance.get("met"), bool):
        return {"status": NOT_EVALUATED, "met": None}
    out: dict[str, Any] = {"status": "met" if acceptance["met"] else "not met", "met": acceptance["met"]}
    out.update({k: acceptance[k] for k in _VERDICT_KEYS if k in acceptance})
    checks = acceptance.get("checks")
    if isinstance(checks, list):
        out["checks"] = [{k: c[k] for k in _CHECK_KEYS if k in c} for c in checks if isinstance(c, dict)]
    return out


def _stored_acceptance(meta: dict[str, Any], ckpt_dir: Path | None) -> Any:
    """meta["acceptance"], else metrics.json["acceptance"] beside the checkpoint, else meta["accepted"]."""
    if isinstance(meta.get("acceptance"), dict):
        return meta["acceptance"]
    metrics = ckpt_dir / "metrics.json" if ckpt_dir is not None else None
    if metrics is not None and metrics.is_file():
        try:
            stored = read_json(metrics).get("acceptance")
        except Exception:  # an unreadable metrics.json loses the verdict, not the export
            stored = None
        if isinstance(stored, dict):
            return stored
    return {"met": meta["accepted"]} if isinstance(meta.get("accepted"), bool) else None


def _text(rule: Any) -> str:
    if isinstance(rule, str):
        return rule
    return json.dumps(rule, sort_keys=True) if rule else "n/a"


def _match(run: dict[str, Any], per_policy: list[Any]) -> Any:
    """The merged acceptance entry for one source run: same run sha256, else same policy text."""
    text = run.get("rule_text") or _text(run.get("rule"))
    for entry in per_policy:
        if isinstance(entry, dict) and run.get("sha256") and entry.get("run_sha256") == run.get("sha256"):
            return entry
    return next((e for e in per_policy if isinstance(e, dict) and e.get("policy") == text), None)


def policies(meta: dict[str, Any], ckpt_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One record per unlearning policy in this checkpoint: {policy, method, goal, run_sha256, acceptance}."""
    acc = _stored_acceptance(meta, Path(ckpt_dir) if ckpt_dir is not None else None)
    kind = meta.get("kind")
    if kind == "unlearned":
        text = meta.get("rule_text") or _text(meta.get("rule"))
        return [{"policy": text, "method": meta.get("method"), "goal": meta.get("goal"), "acceptance": verdict(acc)}]
    if kind != "merged":
        return []
    runs = [r for r in ((meta.get("merge") or {}).get("runs") or []) if isinstance(r, dict)]
    per = acc.get("policies") if isinstance(acc, dict) else None
    if not isinstance(per, list):
        per = []
    if not runs:  # a merged checkpoint without its merge record: the verdicts still name the policies
        return [{"policy": p.get("policy"), "method": None, "goal": p.get("goal"), "run_sha256": p.get("run_sha256"),
                 "acceptance": verdict(p)} for p in per if isinstance(p, dict)]
    return [{"policy": r.get("rule_text") or _text(r.get("rule")), "method": r.get("method"), "goal": r.get("goal"),
             "run_sha256": r.get("sha256"), "acceptance": verdict(_match(r, per))} for r in runs]


def acceptance_summary(meta: dict[str, Any], pols: list[dict[str, Any]], ckpt_dir: Path | None) -> dict[str, Any]:
    """{"status", "met", "policies": [...]} (+ "retain" for a merged model) for metadata.json."""
    acc = _stored_acceptance(meta, ckpt_dir)
    overall = verdict(acc)
    if not pols:
        status, met = NOT_EVALUATED, None
    elif overall["met"] is not None:
        status, met = overall["status"], overall["met"]
    else:  # no overall verdict recorded: met only if every policy's is
        states = [p["acceptance"]["met"] for p in pols]
        met = None if any(s is None for s in states) else all(states)
        status = NOT_EVALUATED if met is None else ("met" if met else "not met")
    out: dict[str, Any] = {"status": status, "met": met,
                           "policies": [{"policy": p["policy"], **p["acceptance"]} for p in pols]}
    if isinstance(acc, dict) and isinstance(acc.get("retain"), dict):
        out["retain"] = acc["retain"]
    return out


def changelog(meta: dict[str, Any], pols: list[dict[str, Any]]) -> dict[str, str]:
    """MONAI changelog {version: text}, newest first: the trained model, one version per policy, the merge."""
    arch = meta["architecture"]["name"]
    origin = "SYNTHETIC built-in cohort" if meta.get("synthetic") else "the cohort recorded in its provenance"
    lines = [f"{arch} classifier trained by medunlearn on {origin}"]
    for p in pols:
        how = f" with {p['method']}" if p.get("method") else ""
        goal = f" (goal: {p['goal']})" if p.get("goal") else ""
        lines.append(f"unlearned policy '{p['policy']}'{how}{goal}; acceptance: {p['acceptance']['status']}")
    if meta.get("kind") == "merged":
        method = (meta.get("merge") or {}).get("method") or (meta.get("config") or {}).get("method") or "n/a"
        lines.append(f"merged {len(pols)} unlearning policies into one model with {method}")
    log = {f"0.{i}.0": text for i, text in enumerate(lines, start=1)}
    return dict(reversed(list(log.items())))


def _versions() -> dict[str, str]:
    out = {}
    for name in _RUNTIME_PACKAGES:
        try:
            out[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            continue
    return out


def data_format(meta: dict[str, Any], num_classes: int, spatial_dims: int) -> dict[str, Any]:
    """network_data_format: the input image and the output class probabilities, with channel meanings."""
    size, chans = int(meta.get("image_size") or 0), int(meta.get("in_channels") or 1)
    names = list(meta.get("class_names") or [f"class{k}" for k in range(num_classes)])
    grey = "grey intensity, min-max scaled to [0, 1]"
    return {
        "inputs": {"image": {
            "type": "image", "format": "magnitude", "modality": str(meta.get("modality") or "any"),
            "num_channels": chans, "spatial_shape": [size] * spatial_dims, "dtype": "float32",
            "value_range": [0, 1], "is_patch_data": False,
            "channel_def": {str(i): grey if chans == 1 else f"{grey} (copy {i + 1} of {chans})" for i in range(chans)},
        }},
        "outputs": {"pred": {
            "type": "probabilities", "format": "classes", "num_channels": len(names), "spatial_shape": [len(names)],
            "dtype": "float32", "value_range": [0, 1], "is_onehot": False,
            "channel_def": {str(i): n for i, n in enumerate(names)},
        }},
    }


def bundle_metadata(meta: dict[str, Any], num_classes: int, spatial_dims: int, ckpt_dir: str | Path | None,
                    extra: dict[str, Any]) -> dict[str, Any]:
    """The metadata.json dictionary (every user-supplied string made inert for MONAI's parser)."""
    env = environment()
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    pols = policies(meta, ckpt)
    log = changelog(meta, pols)
    arch, kind = meta["architecture"]["name"], meta.get("kind", "base")
    synthetic = " Trained on the SYNTHETIC built-in cohort (no patient data)." if meta.get("synthetic") else ""
    scalars = {k: v for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    forgotten = "; ".join(p["policy"] for p in pols) or "none"
    record = {
        "schema": MONAI_SCHEMA,
        "version": next(iter(log)),
        "changelog": log,
        "monai_version": env["monai"],
        "pytorch_version": env["torch"].split("+")[0],
        "numpy_version": env["numpy"],
        "required_packages_version": _versions(),
        "name": f"medunlearn {arch} ({kind})",
        "task": f"{num_classes}-class {spatial_dims}D medical image classification",
        "description": (f"{arch} classifier ({kind} checkpoint exported by medunlearn); unlearned policies: "
                        f"{forgotten}.{synthetic} Runs with MONAI alone through models/model.ts."),
        "authors": "medunlearn",
        "copyright": "Copyright (c) the medunlearn authors",
        "license": "Apache-2.0",
        "data_source": "SYNTHETIC built-in cohort (medunlearn.data.synthetic)" if meta.get("synthetic")
        else "recorded in configs/medunlearn_meta.json (cohort hash)",
        "intended_use": INTENDED_USE,
        "eval_metrics": scalars,
        "network_data_format": data_format(meta, num_classes, spatial_dims),
        "acceptance": acceptance_summary(meta, pols, ckpt),
        "medunlearn": extra,
    }
    return inert(record)
