"""Unlearning methods; `METHODS` maps a registry name (= module = configs/unlearn/<name>.yaml) to a class."""
from medunlearn.unlearn import (  # noqa: F401  # noqa: F401  # noqa: F401
    boundary_expanding,
    boundary_shrink,
    cf_k,
    eu_k,
    famr,
    famr_budget,
    famr_retain,
    famr_salient,
    finetune,
    l1_sparse,
    neggrad,
    psg,
    psg_frozen,
    random_labels,
    ref_distill,
    salun,
    scrub,
)
from medunlearn.unlearn.base import GOALS, METHODS, Unlearner  # noqa: F401
