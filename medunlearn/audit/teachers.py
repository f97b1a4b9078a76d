"""Reference models as distillation teachers (for the `ref_distill` unlearner), kept disjoint from the auditors.

The K references of `audit prepare` are split in two by index: the second half (K//2 .. K-1) may teach, the
first half audits. A model distilled toward some references is judged only by the others, otherwise the audit
would compare the model with its own teachers and be trivially fooled. For each forget row the target is the mean
softmax of the teachers that did NOT see that row (their recorded membership).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medunlearn.data.imageset import ImageSet
from medunlearn.errors import ConfigError, DataError
from medunlearn.fileio import read_json


def teacher_indices(k: int) -> list[int]:
    """Reference indices that may teach: the second half; the first half (auditor_indices) audits."""
    return list(range(k // 2, k))


def auditor_indices(k: int, teachers: Sequence[int]) -> list[int]:
    """Every reference that did not teach; refuses fewer than 2 (with one, the rows it saw have no OUT model)."""
    out = [i for i in range(k) if i not in set(teachers)]
    if len(out) < 2:
        raise ConfigError(f"Expected at least 2 reference models left to audit after the {len(teachers)} teachers, "
                          f"but {len(out)} of {k} are: prepare K >= 4 references (--k).")
    return out


def check_disjoint(teachers: Sequence[int], auditors: Sequence[int]) -> None:
    both = sorted(set(teachers) & set(auditors))
    if both:
        raise ConfigError(f"Expected the audit's reference models to be disjoint from the distillation teachers, "
                          f"but references {both} are both: the audit would compare the model with its own teachers.")


def reference_roles(k: int) -> tuple[list[int], list[int]]:
    """(teachers, auditors) among k reference models: the second half teaches, the rest audits (checked disjoint)."""
    teach = teacher_indices(k)
    audit = auditor_indices(k, teach)
    check_disjoint(teach, audit)
    return teach, audit


@dataclass
class ReferenceTeachers:
    models: list[nn.Module]
    indices: list[int]  # reference indices in the audit folder
    image_ids: list[str]  # rows of `member`
    member: np.ndarray  # (T, N) bool: teacher t trained on image_ids[n]

    @torch.no_grad()
    def targets(self, s: ImageSet, device: torch.device, temperature: float,
                batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, C) mean softmax(logits / T) over the teachers that did not see each row of `s`, and the (n,) bool
        mask of the rows that have such a teacher (a row every teacher saw gets no target: teaching it with
        models that saw it would teach membership)."""
        where = {i: n for n, i in enumerate(self.image_ids)}
        ids = s.meta["image_id"].astype(str).tolist()
        missing = [i for i in ids if i not in where]
        if missing:
            raise DataError(f"Expected every forget row in the teachers' membership record, but {len(missing)} are "
                            f"not (e.g. image {missing[0]}).")
        out_mask = torch.as_tensor(~self.member[:, [where[i] for i in ids]], dtype=torch.float32)  # (T, n)
        has = out_mask.sum(0) > 0
        if not bool(has.any()):
            raise DataError("Expected a forget row that some teacher never saw, but every teacher saw every one: "
                            "prepare more references (--k).")
        probs = []
        for m in self.models:
            m.eval().to(device)
            probs.append(torch.cat([torch.softmax(m(b["image"].to(device)).float() / temperature, 1).cpu()
                                    for b in s.loader(batch_size)]))
        p = torch.stack(probs)  # (T, n, C)
        return (p * out_mask[..., None]).sum(0) / out_mask.sum(0).clamp(min=1)[:, None], has


def load_teachers(audit_dir: str | Path) -> ReferenceTeachers:
    """The teacher half of an `audit prepare` folder's references, with their recorded membership."""
    from medunlearn.models.checkpoint import load_checkpoint

    d = Path(audit_dir)
    if not (d / "manifest.json").is_file() or not (d / "membership.json").is_file():
        raise ConfigError(f"Expected an audit folder with manifest.json and membership.json at {d} (the reference "
                          "models ref_distill distils toward), but found none; run `medunlearn audit prepare` first.")
    k = int(read_json(d / "manifest.json")["k"])
    idx, _ = reference_roles(k)  # refuses K < 4: fewer than 2 references would be left to audit
    membership = read_json(d / "membership.json")["models"]
    ids = sorted({i for j in idx for i in membership[j]["members"]} | set(read_json(d / "image_ids.json")))
    pos = {i: n for n, i in enumerate(ids)}
    member = np.zeros((len(idx), len(ids)), dtype=bool)
    for t, j in enumerate(idx):
        member[t, [pos[i] for i in membership[j]["members"]]] = True
    models = [load_checkpoint(d / "refs" / f"ref_{j:02d}")[0] for j in idx]
    return ReferenceTeachers(models=list(models), indices=idx, image_ids=ids, member=member)
