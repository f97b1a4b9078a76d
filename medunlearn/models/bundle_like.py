"""`export-bundle RUN OUT --like SRC`: hand an adopted model back in the form it came in.

OUT is SRC's own tree (every file copied) with models/model.pt replaced by the unlearned weights under the
original key names, wrapper and prefix (`meta["adoption"]`, written by `medunlearn adopt`), so it drops in where
SRC was deployed and MONAI runs it with SRC's own configs. A sigmoid1 head goes back to one logit
(z = l1 − l0). models/model.ts is written only when SRC had one. configs/metadata.json gets a patch-version
bump, one changelog entry per policy and the acceptance record. Nothing in SRC is run or imported.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from medunlearn.commit import staging_dir
from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.fileio import check_apart, read_json, write_bytes, write_json
from medunlearn.models.bundle_meta import acceptance_summary, policies
from medunlearn.models.bundle_safety import inert
from medunlearn.models.checkpoint import load_checkpoint
from medunlearn.provenance import sha256_file


def original_state(model: torch.nn.Module, adoption: dict[str, Any], source: dict[str, torch.Tensor]) -> dict:
    """The model's weights as the original state dict (unwrapped, unprefixed keys): mapped keys replaced, any
    key medunlearn did not map kept from `source` unchanged. Shapes must match the original's."""
    state = model.state_dict()
    key_map: dict[str, str] = adoption.get("key_map") or {}
    sigmoid = (adoption.get("head") or {}).get("kind") == "sigmoid1"
    out = {k: v.clone() for k, v in source.items()}
    for ours, theirs in key_map.items():
        if ours not in state:
            raise CheckpointError(f"Expected key {ours!r} of the adoption key map in the run's weights, but it is "
                                  "missing; the run is not the adopted architecture.")
        value = state[ours].detach().cpu()
        if sigmoid and ours.startswith("head.") and value.shape[:1] == (2,):
            value = (value[1] - value[0]).unsqueeze(0)  # logits [l0, l1] -> the one logit z = l1 - l0
        if theirs in out and tuple(out[theirs].shape) != tuple(value.shape):
            raise CheckpointError(f"Expected {theirs!r} of shape {tuple(out[theirs].shape)} as in the original, "
                                  f"but the run has {tuple(value.shape)}.")
        out[theirs] = value.to(out[theirs].dtype if theirs in out else value.dtype).contiguous()
    return out


def _container(state: dict[str, torch.Tensor], container: dict[str, Any]) -> Any:
    prefix = container.get("prefix") or ""
    state = {prefix + k: v for k, v in state.items()}
    wrapper = container.get("wrapper")
    return {wrapper: state} if wrapper else state


def _unwrap(obj: Any, container: dict[str, Any]) -> dict[str, torch.Tensor]:
    wrapper, prefix = container.get("wrapper"), container.get("prefix") or ""
    if wrapper:
        obj = obj[wrapper]
    return {(k[len(prefix):] if prefix and k.startswith(prefix) else k): v for k, v in obj.items()}


def _bump(version: Any) -> str:
    parts = str(version or "0.1.0").split(".")
    try:
        nums = [int(p) for p in parts[:3]] + [0] * (3 - len(parts[:3]))
    except ValueError:
        return "0.1.1"
    nums[2] += 1
    return ".".join(str(n) for n in nums)


def _metadata(original: dict[str, Any], meta: dict[str, Any], run_dir: Path, weights_sha: str) -> dict[str, Any]:
    pols = policies(meta, run_dir)
    version = _bump(original.get("version"))
    entries = [f"unlearned policy '{p['policy']}'" + (f" with {p['method']}" if p.get("method") else "")
               + f"; acceptance: {p['acceptance']['status']}" for p in pols] or ["weights revised by medunlearn"]
    log = dict(original.get("changelog") or {})
    out = dict(original)
    out["version"] = version
    out["changelog"] = {version: inert("; ".join(entries)), **log}
    out["acceptance"] = inert(acceptance_summary(meta, pols, run_dir))
    source_sha = (meta.get("adoption") or {}).get("source_sha256")
    out["medunlearn"] = inert({"kind": meta.get("kind"), "source_sha256": source_sha,
                               "model_pt_sha256": weights_sha, "like": True})
    return out


def export_like(run_dir: str | Path, out_dir: str | Path, like_dir: str | Path, overwrite: bool = False) -> Path:
    """Write SRC's bundle tree with RUN's weights in SRC's container; refuses a run not adopted from SRC."""
    run_dir, out_dir, like_dir = Path(run_dir), Path(out_dir), Path(like_dir)
    if not (like_dir / "models" / "model.pt").is_file() or not (like_dir / "configs" / "metadata.json").is_file():
        raise ConfigError(f"Expected --like to be a MONAI bundle folder (configs/metadata.json and models/model.pt), "
                          f"but got {like_dir.name!r}.")
    check_apart([out_dir], [run_dir, like_dir])
    model, meta = load_checkpoint(run_dir)
    adoption = meta.get("adoption")
    if not isinstance(adoption, dict) or adoption.get("source_kind") != "bundle":
        raise CheckpointError("Expected a run whose base was adopted from a bundle (`medunlearn adopt`), but its "
                              "meta.json has no bundle adoption record; use export-bundle without --like.")
    sha = sha256_file(like_dir / "models" / "model.pt")
    if sha != adoption.get("source_sha256"):
        raise CheckpointError(f"Expected --like to be the bundle the base was adopted from (model.pt sha256 "
                              f"{str(adoption.get('source_sha256'))[:12]}…), but got {sha[:12]}…: another bundle.")
    container = adoption.get("container") or {}
    source = _unwrap(torch.load(like_dir / "models" / "model.pt", map_location="cpu", weights_only=True), container)
    state = original_state(model, adoption, source)
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise CheckpointError("Expected finite weights to export, but got NaN or inf; refusing to write.")
    with staging_dir(out_dir, overwrite=overwrite) as tmp:
        for path in sorted(like_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                dest = tmp / path.relative_to(like_dir)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        torch.save(_container(state, container), tmp / "models" / "model.pt")
        weights_sha = sha256_file(tmp / "models" / "model.pt")
        if (like_dir / "models" / "model.ts").is_file():
            write_bytes(tmp / "models" / "model.ts", _torchscript(like_dir, state, meta))
        write_json(tmp / "configs" / "metadata.json",
                   _metadata(read_json(like_dir / "configs" / "metadata.json"), meta, run_dir, weights_sha))
    return out_dir


def _torchscript(like_dir: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """models/model.ts: the original MONAI network (from the statically resolved network_def) with the new
    weights, scripted; the original's extra files are not carried (they describe the old weights)."""
    import io

    from medunlearn.models.bundle import strip_debug_records

    arch = (meta.get("architecture") or {}).get("kwargs") or {}
    network, net_args = arch.get("network"), arch.get("net_args")
    if not network or not isinstance(net_args, dict):
        raise CheckpointError("Expected the adopted architecture's MONAI network name and arguments in meta.json "
                              "to rebuild models/model.ts, but they are missing.")
    import monai.networks.nets as nets

    net = getattr(nets, str(network))(**net_args)
    net.load_state_dict(state)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net.eval()), buf,
                   _extra_files={"metadata.json": json.dumps({"medunlearn": "unlearned"}).encode()})
    return strip_debug_records(buf.getvalue())
