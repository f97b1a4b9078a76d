"""adopt: a deployed model (bundle / TorchScript / state dict) -> an ordinary medunlearn base checkpoint.

Nothing in SRC is run: its config is resolved statically (adopt.resolver), its weights read with
weights_only=True. The checkpoint carries meta["preprocessing"] (the bundle's pipeline, decomposed; every
command's loader reads it) and meta["adoption"]:
  {"source_kind", "source_sha256", "source_files", "key_map", "container", "head", "preprocessing",
   "fidelity", "membership"}
so every later command (forget, evaluate, merge, tune, report) works unchanged. Inputs are never modified.
"""
from __future__ import annotations

import functools
import inspect
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.workflow.cohort_checks import is_synthetic, load_cohort

PER_CLASS = 4


def adopt_in_memory(src: str | Path, cohort: str | Path | pd.DataFrame, arch: dict[str, Any] | None = None,
                    preprocessing: Any = None, postprocessing: Any = None, class_names: list[str] | None = None,
                    expected: str | Path | None = None, datalist: Any = None, membership: str | None = None,
                    per_class: int = PER_CLASS) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(adopted Classifier in eval mode, base-checkpoint meta) after every check; raises on any failure."""
    from medunlearn.adopt import fidelity, networks
    from medunlearn.adopt import membership as mem
    from medunlearn.adopt import preprocessing as prep
    from medunlearn.adopt.source import bundle_class_names, open_source
    from medunlearn.data.datasets import load_images

    if datalist is None and membership != "unknown":
        raise ConfigError("Expected --datalist (which rows trained the deployed model) or an explicit "
                          "--membership unknown, but got neither.")
    if datalist is not None and membership == "unknown":
        raise ConfigError("Expected either --datalist or --membership unknown, but got both.")
    start = time.perf_counter()
    source = open_source(src, arch, preprocessing, postprocessing)
    res = source.resolved
    networks.check_size(res.network)  # meta-device count before any allocation
    _, chans, outputs = networks.io_of(res.network)
    head = prep.head_kind(res.postprocessing, outputs)
    k = 2 if head == "sigmoid1" else outputs
    names = class_names or bundle_class_names(source.metadata, k)
    if names is None:
        raise ConfigError("Expected the class order of the model's outputs (metadata.json channel_def, or "
                          "--class-names), but got neither; refusing to guess it.")
    if len(names) != k:
        raise ConfigError(f"Expected {k} class names for the model's outputs, but got {len(names)}.")
    df = load_cohort(cohort)
    extra = sorted(set(df["label"].astype(str)) - set(names))
    if extra:
        raise ConfigError(f"Expected cohort labels among the model's classes {names}, but got {extra[:3]}.")
    sample = fidelity.sample_rows(df, names, per_class)
    spec = prep.plan(res.preprocessing)
    raw, _ = load_images(sample, names, 64, preprocessing=spec)
    spec = prep.with_pixel_map(spec, raw)
    if spec["in_channels"] != chans:
        raise CheckpointError(f"Expected the bundle's pipeline to give {chans} channel(s) for {res.network.name}, "
                              f"but it gives {spec['in_channels']}.")
    size = spec["spatial_size"]
    model, kmap = networks.adopt_network(res.network, source.state, head, int(size[0]), spec["intensity"])
    images, _ = load_images(sample, names, int(size[0]), preprocessing=spec)
    got = fidelity.adopted_probs(model, images)
    ref_net = networks.build_reference(res.network, source.state)
    paths = [str(p) for p in sample["path"]]
    want = fidelity.reference_probs([c for c in res.preprocessing], spec["image_key"], ref_net, head, paths)
    fid = {**fidelity.compare(got, want, fidelity.PROB_TOL, "the bundle's own pipeline and network"),
           "per_class": per_class, "reference": "bundle transforms + MONAI network (statically resolved)"}
    if expected is not None:
        fid["expected"] = fidelity.check_expected(fidelity.read_expected(Path(expected), k), paths, got)
    record = mem.unknown() if membership == "unknown" else mem.match(df, datalist)
    adoption = {"source_kind": source.kind, "source_sha256": source.weights_sha256, "source_files": source.files,
                "key_map": kmap, "container": source.container, "head": {"kind": head},
                "preprocessing": spec, "fidelity": fid, "membership": record}
    meta = {"kind": "base", "synthetic": is_synthetic(df), "class_names": list(names), "image_size": int(size[0]),
            "in_channels": chans, "spatial_dims": 2, "preprocessing": spec, "adoption": adoption,
            "config": {"adopted": True, "network": res.network.name},
            "changelog": [f"adopted {source.kind} {res.network.name} (sha256 {source.weights_sha256[:12]})"],
            "timings": {"adopt_s": round(time.perf_counter() - start, 3)}}
    return model, meta


def adopt(src: str | Path, cohort: str | Path | pd.DataFrame, out: str | Path, overwrite: bool = False,
          **kwargs: Any) -> dict[str, Any]:
    """Adopt SRC and write the base checkpoint to `out`; returns its meta."""
    from medunlearn.models.checkpoint import save_checkpoint

    if Path(out).resolve() == Path(src).resolve() or Path(src).resolve() in Path(out).resolve().parents:
        raise ConfigError("Expected --out outside SRC, but it is SRC or inside it.")
    model, meta = adopt_in_memory(src, cohort, **kwargs)
    save_checkpoint(out, model, meta, overwrite=overwrite)
    return meta


def is_adoptable(path: str | Path) -> bool:
    """True when `path` is not a medunlearn checkpoint but looks like a bundle / TorchScript / state dict."""
    p = Path(path)
    if p.is_dir():
        return not (p / "meta.json").is_file() and (p / "configs").is_dir()
    return p.is_file() and p.suffix in (".ts", ".pt", ".pth")


@contextmanager
def adopted_dir(src: str | Path, cohort: Any, options: dict[str, Any] | None) -> Iterator[Path]:
    """`src` itself when it is a medunlearn checkpoint; else SRC adopted (same checks as `adopt`) into a private
    temporary base checkpoint, removed afterwards. Its sha256 equals what `adopt --out` would write."""
    if not is_adoptable(src):
        yield Path(src)
        return
    opts = dict(options or {})
    if not opts.get("datalist") and opts.get("membership") != "unknown":
        raise ConfigError(f"Expected --datalist or --membership unknown to adopt {Path(src).name!r} (not a medunlearn "
                          "checkpoint) in memory, but got neither; refusing to guess which rows trained it.")
    with tempfile.TemporaryDirectory(prefix="medunlearn-adopt-") as tmp:
        adopt(src, cohort, Path(tmp) / "base", **{k: v for k, v in opts.items() if v is not None})
        yield Path(tmp) / "base"


def accepts_source(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Let a workflow step take SRC (bundle / TorchScript / state dict) as `model_dir`, adopted in memory.

    Adds the keyword `adopt_options` ({"datalist", "membership", "arch", "preprocessing", "class_names",
    "expected"}); the step itself is unchanged."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, adopt_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        src = bound.arguments.get("model_dir")
        if src is None or not is_adoptable(src):
            return fn(*bound.args, **bound.kwargs)
        with adopted_dir(src, bound.arguments.get("cohort"), adopt_options) as base:
            bound.arguments["model_dir"] = base
            return fn(*bound.args, **bound.kwargs)

    return wrapper
