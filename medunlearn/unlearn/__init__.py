"""Unlearning methods; `METHODS` maps a registry name (= module = configs/unlearn/<name>.yaml) to a class."""
from medunlearn.unlearn.base import GOALS, METHODS, Unlearner  # noqa: F401
from medunlearn.unlearn import boundary_expanding, boundary_shrink, famr, famr_retain, famr_salient  # noqa: F401
from medunlearn.unlearn import psg, psg_frozen  # noqa: F401
from medunlearn.unlearn import cf_k, eu_k, finetune, l1_sparse, neggrad, random_labels, salun, scrub  # noqa: F401
