"""Reference models for the membership audit: K models trained once per archive with the base's own recipe on
random halves of the training PATIENTS, each one's membership recorded by image_id pseudonym.

Halves are drawn per patient (all of a patient's images are in or out together): a withdrawal removes a patient,
and an image whose sibling images were trained on is not a clean non-member. The design is balanced: every
training patient is IN for exactly floor(K/2) models and OUT for the rest, so every forget row has OUT models.
Test rows are sealed before anything is read (tune.sealed.validation_only). The cache holds the phi scores
(lira.logit_confidence) of every reference model and of the base on every training and validation row, so a
later audit only runs the audited model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medunlearn.audit.lira import logit_confidence
from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import ConfigError
from medunlearn.runtime import RunContext

if TYPE_CHECKING:
    from medunlearn.models.zoo import Classifier

MIN_K, MAX_K = 2, 64


def check_k(k: Any) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not MIN_K <= k <= MAX_K:
        raise ConfigError(f"Expected --k (reference models) an integer in [{MIN_K}, {MAX_K}], but got {k!r}.")
    return k


def patient_ids(s: ImageSet) -> np.ndarray:
    """Patient pseudonym per row; rows without one are their own patient (as selection.split.patient_keys)."""
    ids = s.meta["image_id"].astype(str).to_numpy()
    if "patient" not in s.meta:
        return np.array([f"image:{i}" for i in ids])
    pat = s.meta["patient"].fillna("").astype(str).to_numpy()
    return np.where(pat != "", pat, np.char.add("image:", ids.astype(str)))


def plan_halves(patients: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(k, N) bool membership: each distinct patient is IN for exactly k // 2 models, chosen at random."""
    names, inv = np.unique(patients, return_inverse=True)
    rng = np.random.default_rng(seed)
    per_patient = np.zeros((k, len(names)), dtype=bool)
    for j in range(len(names)):
        per_patient[rng.permutation(k)[: k // 2], j] = True
    return per_patient[:, inv]


def reference_seed(seed: int, index: int) -> int:
    """Seed of reference model `index` (distinct from the base's seed and from each other)."""
    return (seed + 1) * 10_007 + index


def _empty(s: ImageSet) -> ImageSet:
    return s.subset(torch.zeros(0, dtype=torch.long))


def reference_data(data: SplitData, members: np.ndarray) -> SplitData:
    """The SplitData one reference model trains on: train = the chosen training rows; validation as the base's."""
    train = data.train.subset(torch.as_tensor(np.flatnonzero(members)))
    return dataclasses.replace(data, train_retain=train, train_forget=_empty(train),
                               info=dict(data.info, audit_reference=True))


@torch.no_grad()
def phi_scores(model: nn.Module, s: ImageSet, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """phi (N,) float64 of `model` on `s` (eval mode, CPU result)."""
    model.eval()
    out = []
    for batch in s.loader(batch_size):
        logits = model(batch["image"].to(device)).float().cpu()
        out.append(logit_confidence(logits, batch["label"]))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@dataclass
class TrainedReferences:
    models: list[Classifier]
    member: np.ndarray  # (K, N_train) bool over data.train's rows
    infos: list[dict[str, Any]]


def train_references(data: SplitData, cfg, ctx: RunContext, k: int, seed: int) -> TrainedReferences:
    """Train k reference models (models.train.train_model, the base's recipe `cfg`) on balanced patient halves."""
    from medunlearn.models.train import train_model

    member = plan_halves(patient_ids(data.train), check_k(k), seed)
    models: list[Classifier] = []
    infos: list[dict[str, Any]] = []
    for i in range(k):
        sub = reference_data(data, member[i])
        model, info = train_model(sub, cfg, dataclasses.replace(ctx, seed=reference_seed(seed, i)))
        models.append(model)
        infos.append({"index": i, "seed": reference_seed(seed, i), "n_train": info["n_train"],
                      "wall_time_s": round(float(info["wall_time_s"]), 3), "best_epoch": info["best_epoch"],
                      "best_val_acc": info["best_val_acc"]})
    return TrainedReferences(models=models, member=member, infos=infos)
