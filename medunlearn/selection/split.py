"""Patient-level train/val/test split and the forget/retain selection on top of it.

No patient ever appears in two splits. Patients are ordered by (majority label, majority device, seeded
shuffle) and dealt to the split furthest below its quota, so every label — and within a label every
device — is spread over train/val/test in proportion to ``fractions`` (±1 patient). The first patient of
each label goes to train, so every class is trainable. Same cohort + seed → same split, whatever the row
order.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medunlearn.data.columns import text_values
from medunlearn.errors import ConfigError, DataError, SelectionError
from medunlearn.provenance import hash_strings
from medunlearn.selection.rules import Rule, validate

SPLITS = ("train", "val", "test")
PARTS = tuple(f"{s}_{g}" for s in SPLITS for g in ("forget", "retain"))
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6 or fr[0] <= 0:
        raise ConfigError(f"Expected three train/val/test fractions >= 0 summing to 1 with train > 0, "
                          f"but got {tuple(fractions)}.")
    return fr  # type: ignore[return-value]


def majority(keys: pd.Series, values: pd.Series) -> pd.Series:
    """Most frequent value per key (ties → alphabetically first, for determinism), indexed by sorted key."""
    pairs = pd.DataFrame({"key": keys.to_numpy(), "value": values.to_numpy()})
    counts = pairs.groupby(["key", "value"], sort=False).size().rename("n").reset_index()
    counts = counts.assign(neg=-counts["n"]).sort_values(["key", "neg", "value"], kind="mergesort")
    return counts.drop_duplicates("key").set_index("key")["value"]


def patient_keys(df: pd.DataFrame) -> pd.Series:
    """Patient id per row; rows with no patient id count as their own patient ('image:<image_id>')."""
    for col in ("patient", "image_id"):
        if col not in df.columns:
            raise DataError(f"Expected a '{col}' column in the cohort table, but got {list(df.columns)}.")
    pat = text_values(df["patient"])
    return pat.where(pat != "", "image:" + text_values(df["image_id"]))


def patient_split(df: pd.DataFrame, seed: int = 0,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> pd.Series:
    """"train" / "val" / "test" per row (Series indexed like ``df``), assigned by patient."""
    fr = np.array(check_fractions(fractions))
    if len(df) == 0:
        raise DataError("Expected cohort rows to split, but got an empty table.")
    keys = patient_keys(df)
    blank = pd.Series("", index=df.index)
    per = pd.DataFrame({
        "label": majority(keys, text_values(df["label"]) if "label" in df.columns else blank),
        "device": majority(keys, text_values(df["device"]) if "device" in df.columns else blank),
    }).sort_index()
    per["order"] = np.random.default_rng(seed).permutation(len(per))  # patients sorted by id first
    per = per.sort_values(["label", "device", "order"], kind="mergesort")
    assigned = np.zeros(3)
    choice: dict[str, str] = {}
    prev = None
    for n, (pid, label) in enumerate(zip(per.index, per["label"]), start=1):
        k = 0 if label != prev else int(np.argmax(n * fr - assigned))  # largest deficit; ties → train first
        assigned[k] += 1
        choice[pid] = SPLITS[k]
        prev = label
    return pd.Series(keys.map(choice).to_numpy(), index=df.index, name="split")


MEMBERSHIP_SPLITS = {"training": "train", "validation": "val", "test": "test"}


def membership_split(df: pd.DataFrame, rows: dict[str, str], seed: int = 0) -> pd.Series:
    """"train" / "val" / "test" per row from a deployed model's datalist membership ({image_id: split}).

    Datalist training rows are train, validation val, test test. Rows in no list never trained the model:
    they are test rows, or, when the datalist has no validation list, dealt by patient into val and test
    (a local split, recorded as such in Selection.split_source).
    """
    ids = text_values(df["image_id"])
    bad = sorted(set(rows.values()) - set(MEMBERSHIP_SPLITS))
    if bad:
        raise DataError(f"Expected membership splits among {list(MEMBERSHIP_SPLITS)}, but got {bad[:3]}.")
    split = ids.map(lambda i: MEMBERSHIP_SPLITS.get(rows.get(i, ""), ""))
    if not (split == "train").any():
        raise SelectionError("Expected some cohort rows in the datalist's training list, but none matched.")
    unseen = split == ""
    if unseen.any():
        if (split == "val").any():
            split[unseen] = "test"
        else:
            local = patient_split(df.loc[unseen], seed, (0.5, 0.5, 0.0))
            split[unseen] = local.map({"train": "val", "val": "test", "test": "test"})
    return split.rename("split")


def _tally(values: pd.Series, group: np.ndarray) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for v in sorted(set(values)):
        sel = (values == v).to_numpy()
        out[v or "(unknown)"] = {g: int((sel & (group == g)).sum()) for g in ("forget", "retain")}
    return out


def selection_counts(frame: pd.DataFrame, split: pd.Series, forget: np.ndarray) -> dict[str, Any]:
    """Images and patients per split × forget/retain, plus per class / device / site image counts.

    A patient counts in a group when at least one of their images is in it (a date rule can split one).
    """
    group = np.where(forget, "forget", "retain")
    keys = patient_keys(frame).to_numpy()
    out: dict[str, Any] = {"images": {}, "patients": {}, "per_class": {}, "per_device": {}, "per_site": {}}
    for s in SPLITS:
        in_s = (split == s).to_numpy()
        out["images"][s] = {g: int((in_s & (group == g)).sum()) for g in ("forget", "retain")}
        out["patients"][s] = {g: len(set(keys[in_s & (group == g)])) for g in ("forget", "retain")}
        for name, col in (("per_class", "label"), ("per_device", "device"), ("per_site", "site")):
            if col in frame.columns:
                out[name][s] = _tally(text_values(frame[col])[in_s], group[in_s])
    out["total"] = {"images": len(frame), "patients": len(set(keys)), "forget_images": int(forget.sum()),
                    "forget_patients": len(set(keys[forget]))}
    return out


@dataclass
class Selection:
    """A patient-level split plus the forget mask of one rule.

    split / forget are indexed like the kept (labelled) rows of the input table; the ``<split>_<forget|retain>``
    arrays hold that table's INDEX LABELS (use ``df.loc[...]``).
    """

    rule: Rule
    seed: int
    fractions: tuple[float, float, float]
    split: pd.Series
    forget: pd.Series
    train_forget: np.ndarray
    train_retain: np.ndarray
    val_forget: np.ndarray
    val_retain: np.ndarray
    test_forget: np.ndarray
    test_retain: np.ndarray
    counts: dict[str, Any]
    split_hash: str  # identifies the six parts (depends on the rule)
    train_hash: str  # identifies the train rows only (rule-free: base and unlearned runs must agree)
    frame: pd.DataFrame = field(repr=False)
    split_source: str = "local"  # "local" (patient split here) | "membership" (the deployed model's datalist)

    def part(self, name: str) -> np.ndarray:
        if name not in PARTS:
            raise ConfigError(f"Expected a part in {list(PARTS)}, but got {name!r}.")
        return getattr(self, name)

    def to_json(self) -> dict[str, Any]:
        """JSON-able record (for fileio.write_json): rule, seed, split hash, counts and the pseudonymised
        image / patient ids of each part (never paths or raw tags)."""
        ids = text_values(self.frame["image_id"])
        keys = patient_keys(self.frame)
        return {
            "rule": {"text": self.rule.describe(), "spec": self.rule.to_dict()},
            "seed": self.seed, "fractions": list(self.fractions), "split_hash": self.split_hash,
            "train_hash": self.train_hash, "counts": self.counts,
            "image_ids": {p: ids.loc[self.part(p)].tolist() for p in PARTS},
            "patients": {s: sorted(set(keys[(self.split == s).to_numpy()])) for s in SPLITS},
        }

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per split plus a total: forget/retain images and patients (for a printed table)."""
        rows = [{"split": s,
                 "forget_images": self.counts["images"][s]["forget"],
                 "retain_images": self.counts["images"][s]["retain"],
                 "forget_patients": self.counts["patients"][s]["forget"],
                 "retain_patients": self.counts["patients"][s]["retain"]} for s in SPLITS]
        total = {"split": "total"}
        for k in ("forget_images", "retain_images", "forget_patients", "retain_patients"):
            total[k] = sum(r[k] for r in rows)
        return rows + [total]


def _labelled(df: pd.DataFrame, drop_unlabelled: bool) -> tuple[pd.DataFrame, int]:
    if "label" not in df.columns:
        raise DataError(f"Expected a 'label' column in the cohort table, but got {list(df.columns)}.")
    has = (text_values(df["label"]) != "").to_numpy()
    n_un = int((~has).sum())
    if not has.any():
        raise SelectionError(f"Expected labelled images to split, but all {len(df)} are unlabelled.")
    if n_un and not drop_unlabelled:
        raise SelectionError(f"Expected every image to have a label for splitting, but got {n_un} unlabelled "
                             f"of {len(df)} (drop them with drop_unlabelled=True).")
    return df.loc[has], n_un


def select(df: pd.DataFrame, rule: Rule | None, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
           drop_unlabelled: bool = True, membership: dict[str, str] | None = None) -> Selection:
    """Split ``df`` by patient, then mark the rows ``rule`` matches (outlier statistics from train rows).

    ``rule=None`` selects no forget rows (used to train the deployed model on the whole train split).
    A rule that removes every training image of a class is allowed (class forgetting); the classes are
    listed in ``counts["total"]["classes_fully_forgotten"]``.
    ``membership`` ({image_id: "training" | "validation" | "test"}, an adopted model's datalist): the split
    comes from it (membership_split) instead of the seeded patient split.
    """
    fr = check_fractions(fractions)
    if not df.index.is_unique:
        raise DataError("Expected a cohort table with a unique index, but got repeated index labels.")
    frame, n_unlabelled = _labelled(df, drop_unlabelled)
    ids = text_values(frame["image_id"]) if "image_id" in frame.columns else None
    if ids is not None and ids.duplicated().any():
        raise DataError(f"Expected unique image_id values, but got a duplicate: {ids[ids.duplicated()].iloc[0]!r}.")
    rule = rule if rule is not None else NoRule()
    validate(rule, frame)
    split = membership_split(frame, membership, seed) if membership else patient_split(frame, seed, fr)
    is_train = (split == "train").to_numpy()
    forget = np.asarray(rule.mask(frame, reference=frame.loc[is_train]), dtype=bool)
    desc = rule.describe()
    n_train, n_tf = int(is_train.sum()), int((forget & is_train).sum())
    if n_tf == 0 and not isinstance(rule, NoRule):
        raise SelectionError(f"Expected the forget rule ({desc}) to match some training images, but it matches "
                             f"none of {n_train} (and {int(forget.sum())} of {len(frame)} overall).")
    if n_tf == n_train:
        raise SelectionError(f"Expected the forget rule ({desc}) to leave training images to retain, but it "
                             f"matches all {n_train}.")
    labels = text_values(frame["label"]).to_numpy()
    fully_forgotten = sorted(set(labels[is_train]) - set(labels[is_train & ~forget]))
    parts = {f"{s}_{g}": frame.index[(split == s).to_numpy() & (forget if g == "forget" else ~forget)].to_numpy()
             for s in SPLITS for g in ("forget", "retain")}
    counts = selection_counts(frame, split, forget)
    counts["total"]["dropped_unlabelled"] = n_unlabelled
    counts["total"]["classes_fully_forgotten"] = fully_forgotten
    part_of = np.array([f"{s}_{'forget' if f else 'retain'}" for s, f in zip(split, forget)], dtype=object)
    split_hash = hash_strings(f"{p}:{i}" for p, i in zip(part_of, text_values(frame["image_id"])))
    train_hash = hash_strings(text_values(frame["image_id"])[is_train])
    return Selection(rule=rule, seed=seed, fractions=fr, split=split,
                     forget=pd.Series(forget, index=frame.index, name="forget"), counts=counts,
                     split_hash=split_hash, train_hash=train_hash, frame=frame,
                     split_source="membership" if membership else "local", **parts)


class NoRule:
    """The empty forget rule: matches nothing (training the deployed model on every train row)."""

    def mask(self, df: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        return np.zeros(len(df), dtype=bool)

    def describe(self) -> str:
        return "(no forget rule)"

    def to_dict(self) -> dict:
        return {}

    def validate(self, df: pd.DataFrame) -> None:
        return None
