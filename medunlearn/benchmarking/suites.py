"""Benchmark suites (registry): how each builds its SplitData per scenario.

A suite owns its data and its scenarios; the training recipe, default methods and per-method
hyperparameters live in `configs/bench/<suite>.yaml` (read by the runner). The data split never depends
on the unlearning seed (it uses `data_seed`, default 0), so the original and retrain models are trained
once per scenario and shared by every method and seed.

Fashion-MNIST: a seeded validation split (1/12 of train, 5,000 images) is carved from the 60k training
images (val feeds the methods' stop rules and the hyperparameter choices); t10k is the test set.
  class      forget every train image of class 0; val/test_forget = val/test rows of class 0.
  selective  forget a seeded 10 % of class-0 train images; val/test_forget = val/test rows of class 0
             (the held-out rows of the forgotten rows' domain, which the retrain model still classifies).
  random     forget a seeded 10 % of all train images; val/test_forget = a seeded random 10 % of val/test
             (random forgetting has no domain: held-out forget rows are simply unseen rows of the same
             distribution, which is what the equivalence stop rule and the test-forget columns need).
Synthetic (SYNTHETIC multi-vendor DICOM cohort, patient-level 60/20/20 split): `device` forgets scanner
ScannerX, `site` one institution that hosts no ScannerX, `outlier` the measurement outliers (auto rule).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import ConfigError
from medunlearn.registry import Registry, did_you_mean


@dataclass
class SuiteOptions:
    """What a suite needs to build its data. subset: cap on training images (None = all)."""

    quick: bool = False
    subset: int | None = None
    data_dir: Path | None = None  # Fashion-MNIST IDX folder (None: env var, then the Debian path)
    cache_dir: Path = Path("bench_out/cache")  # where synthetic archives are generated once
    data_seed: int = 0
    patients: int | None = None  # synthetic cohort size (None: suite default)
    image_size: int | None = None  # synthetic pixel size (None: suite default)


@dataclass
class Suite:
    """prepare(opts) loads the raw data once; split(raw, scenario, opts) -> SplitData."""

    name: str
    summary: str
    scenarios: tuple[str, ...]
    prepare: Callable[[SuiteOptions], Any]
    split: Callable[[Any, str, SuiteOptions], SplitData]
    extra: dict[str, Any] = field(default_factory=dict)

    def check_scenarios(self, names: list[str] | None) -> list[str]:
        if not names:
            return list(self.scenarios)
        for n in names:
            if n not in self.scenarios:
                raise ConfigError(f"Expected a {self.name} scenario in {list(self.scenarios)}, but got {n!r}."
                                  f"{did_you_mean(n, list(self.scenarios))}")
        return list(names)


SUITES: Registry[Suite] = Registry("benchmark suite")


def _register(suite: Suite) -> Suite:
    SUITES.register(suite.name)(suite)
    return suite


# ---------------------------------------------------------------- Fashion-MNIST
def _choose(n: int, k: int, seed: int) -> torch.Tensor:
    """k distinct indices of range(n), seeded (k is clipped to n)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(k, n)]


def _mask(n: int, idx: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[idx] = True
    return m


def fashion_prepare(opts: SuiteOptions) -> dict[str, ImageSet]:
    """Load IDX files, apply the subset (seeded; test shrinks in proportion), carve val from train."""
    from medunlearn.benchmarking.fashion_mnist import load_fashion_mnist

    train, test = load_fashion_mnist(opts.data_dir)
    if opts.subset is not None:
        if opts.subset < 20:
            raise ConfigError(f"Expected --subset >= 20 training images, but got {opts.subset}.")
        n_test = max(10, round(len(test) * opts.subset / len(train)))
        train = train.subset(_choose(len(train), opts.subset, opts.data_seed))
        test = test.subset(_choose(len(test), n_test, opts.data_seed + 1))
    perm = _choose(len(train), len(train), opts.data_seed + 2)
    n_val = max(2, len(train) // 12)
    return {"train": train.subset(perm[n_val:]), "val": train.subset(perm[:n_val]), "test": test}


def _forget_mask(s: ImageSet, scenario: str, seed: int, held_out: bool) -> torch.Tensor:
    if scenario == "class" or (scenario == "selective" and held_out):
        return s.labels == 0
    if scenario == "selective":
        rows = torch.nonzero(s.labels == 0).flatten()
        return _mask(len(s), rows[_choose(len(rows), max(1, round(0.1 * len(rows))), seed)])
    return _mask(len(s), _choose(len(s), max(1, round(0.1 * len(s))), seed))  # random


def split_parts(raw: dict[str, ImageSet],
                forget_mask: Callable[[int, str, ImageSet], torch.Tensor]) -> dict[str, ImageSet]:
    """train/val/test → {<part>_forget, <part>_retain}; forget_mask(i, name, set) is a bool mask over the set."""
    parts: dict[str, ImageSet] = {}
    for i, name in enumerate(("train", "val", "test")):
        s = raw[name]
        m = forget_mask(i, name, s)
        parts[f"{name}_forget"] = s.subset(torch.nonzero(m).flatten())
        parts[f"{name}_retain"] = s.subset(torch.nonzero(~m).flatten())
    return parts


def fashion_split(raw: dict[str, ImageSet], scenario: str, opts: SuiteOptions) -> SplitData:
    from medunlearn.benchmarking.fashion_mnist import CLASS_NAMES

    parts = split_parts(raw, lambda i, name, s: _forget_mask(s, scenario, opts.data_seed + 10 + i,
                                                            held_out=name != "train"))
    info = {"rule": {"class": "class = t-shirt", "selective": "10 % of class t-shirt",
                     "random": "random 10 % of train"}[scenario],
            "suite": "fashion-mnist", "scenario": scenario, "seed": opts.data_seed, "subset": opts.subset,
            "counts": {k: len(v) for k, v in parts.items()}}
    return SplitData(class_names=list(CLASS_NAMES), info=info, **parts)


_register(Suite("fashion-mnist", "Fashion-MNIST (Debian dataset-fashion-mnist): class, selective and random forgetting",
                ("class", "selective", "random"), fashion_prepare, fashion_split))


# ---------------------------------------------------------------- synthetic cohort
SYNTH_PATIENTS, SYNTH_QUICK_PATIENTS, SYNTH_SIZE = 200, 60, 48
SYNTH_RULES = {"device": {"device": ["ScannerX"]}, "site": {"site": ["Synthetic Imaging Centre"]},
               "outlier": {"outliers": "auto"}}


def synthetic_prepare(opts: SuiteOptions) -> Any:
    """Generate (once, cached by size and seed) and index the SYNTHETIC cohort; returns the cohort table."""
    from medunlearn.data.cohort import index_archive
    from medunlearn.data.synthetic import synthesize_cohort

    n = opts.patients or (SYNTH_QUICK_PATIENTS if opts.quick else SYNTH_PATIENTS)
    if opts.subset is not None:
        n = max(12, min(n, opts.subset // 4))  # about 4.5 images per patient
    root = Path(opts.cache_dir) / "data" / f"synthetic-p{n}-s{opts.data_seed}"
    if not (root / "labels.csv").is_file():
        synthesize_cohort(root, n_patients=n, seed=opts.data_seed, image_size=64, overwrite=True)
    df, _ = index_archive(root, labels_csv=root / "labels.csv", salt=f"bench-{opts.data_seed}", workers=1,
                          pool="thread")
    return df


def synthetic_split(df: Any, scenario: str, opts: SuiteOptions) -> SplitData:
    from medunlearn.data.synthetic import CLASS_NAMES
    from medunlearn.selection.rules import rule_from_dict
    from medunlearn.selection.splitdata import build_split_data

    rule = rule_from_dict(SYNTH_RULES[scenario])
    data = build_split_data(df, rule, seed=opts.data_seed, image_size=opts.image_size or SYNTH_SIZE,
                            class_names=list(CLASS_NAMES))
    data.info.update({"suite": "synthetic", "scenario": scenario})
    return data


for _name, _summary in (("device", "SYNTHETIC cohort: forget scanner ScannerX (device deprecation)"),
                        ("site", "SYNTHETIC cohort: forget one institution (Synthetic Imaging Centre)"),
                        ("outlier", "SYNTHETIC cohort: forget measurement outliers (--outliers auto)")):
    _register(Suite(_name, _summary, (_name,), synthetic_prepare, synthetic_split))
