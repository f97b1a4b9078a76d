"""Provenance checks for the checkpoints a step compares against (--reference, --original).

A comparison is only meaningful between models of one architecture and class list, trained on one
cohort split; a retrain reference must be a retrain that left out exactly this forget rule, and the
original must be the base the evaluated model was unlearned from.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medunlearn.errors import CheckpointError


def _train_hash(meta: Mapping[str, Any]) -> str | None:
    split = meta.get("split")
    return split.get("train_hash") if isinstance(split, Mapping) else None


def _same_model_family(meta: Mapping[str, Any], other: Mapping[str, Any], what: str, data) -> None:
    if other.get("architecture") != meta.get("architecture"):
        raise CheckpointError(f"Expected {what} to have the evaluated model's architecture {_arch(meta)}, but got "
                              f"{_arch(other)}.")
    if list(other.get("class_names") or []) != list(data.class_names):
        raise CheckpointError(f"Expected {what} to have the classes {list(data.class_names)}, but got "
                              f"{other.get('class_names')}.")
    want, got = data.info.get("train_hash"), _train_hash(other)
    if want and got != want:
        raise CheckpointError(f"Expected {what} to come from this cohort's training split (hash {want[:12]}), but it "
                              f"records {str(got)[:12] if got else 'no split hash'}.")


def check_reference(meta: Mapping[str, Any], ref_meta: Mapping[str, Any], rule, data) -> None:
    """--reference: a retrain of this architecture and split that excluded exactly `rule`."""
    what = "the --reference checkpoint"
    kind = ref_meta.get("kind")
    cfg = ref_meta.get("config")
    excluded = bool(cfg.get("exclude_forget")) if isinstance(cfg, Mapping) else False
    if kind != "retrain" or not excluded:
        raise CheckpointError(f"Expected {what} to be a retrain-from-scratch model (train --exclude), but it is a "
                              f"{kind or 'unknown'} checkpoint.")
    _same_model_family(meta, ref_meta, what, data)
    if str(ref_meta.get("rule")) != rule.describe():
        raise CheckpointError(f"Expected {what} to exclude exactly the forget rule {rule.describe()!r}, but it "
                              f"excluded {ref_meta.get('rule')!r}.")


def check_original(meta: Mapping[str, Any], orig_meta: Mapping[str, Any], orig_sha: str, data) -> None:
    """--original: the base the model was unlearned (or merged) from; same architecture and split."""
    what = "the --original checkpoint"
    _same_model_family(meta, orig_meta, what, data)
    base_sha = meta.get("base_sha256")
    if base_sha and base_sha != orig_sha:
        raise CheckpointError(f"Expected {what} to be the base this model was unlearned from (sha256 "
                              f"{str(base_sha)[:12]}), but its weights hash to {orig_sha[:12]}.")
    if not base_sha and orig_meta.get("kind") == "retrain":
        raise CheckpointError(f"Expected {what} to be a deployed (base) model, but it is a retrain reference.")


def check_union_reference(base_meta: Mapping[str, Any], ref_meta: Mapping[str, Any], union_text: str) -> None:
    """merge --reference: a retrain (train --exclude) of the base's architecture, classes and split that
    excluded exactly the union of the merged policies (top-level OR terms compared in any order) — the same
    architecture and rule checks `evaluate` and `forget` apply to their --reference."""
    what = "--reference"
    excluded = isinstance(ref_meta.get("config"), Mapping) and bool(ref_meta["config"].get("exclude_forget"))
    if ref_meta.get("kind") != "retrain" or not excluded:
        raise CheckpointError(f"Expected {what} to be a retrain checkpoint (medunlearn train --exclude), but it is a "
                              f"{ref_meta.get('kind', 'unknown')!r} checkpoint.")
    if ref_meta.get("architecture") != base_meta.get("architecture"):
        raise CheckpointError(f"Expected {what} to have the base model's architecture {_arch(base_meta)}, but got "
                              f"{_arch(ref_meta)}.")
    if list(ref_meta.get("class_names") or []) != list(base_meta.get("class_names") or []):
        raise CheckpointError(f"Expected {what} to have the base model's classes {base_meta.get('class_names')}, but "
                              f"got {ref_meta.get('class_names')}.")
    terms = lambda text: sorted(t.strip() for t in str(text).split(" OR "))  # noqa: E731
    if terms(ref_meta.get("rule")) != terms(union_text):
        raise CheckpointError(f"Expected {what} to be retrained without the union of the merged policies "
                              f"({union_text}), but it excluded {ref_meta.get('rule')!r}.")
    want, got = _train_hash(base_meta), _train_hash(ref_meta)
    if want and got != want:
        raise CheckpointError(f"Expected {what} to use the base model's training split (hash {want[:12]}), but it "
                              f"records {str(got)[:12] if got else 'no split hash'}.")


def _arch(m: Mapping[str, Any]) -> str:
    a = m.get("architecture")
    if not isinstance(a, Mapping):
        a = {}
    return f"{a.get('name')} {a.get('kwargs')}"
