"""Merging unlearning runs that share one base: one method per file, chosen by registry name.

Methods: linear, task_arithmetic, ties, dare_ties, fisher, greedy_soup, splice, and the criteria-aware
learned_coefficients and merge_repair (see each module; `select` chooses one on validation data).
"""
from medunlearn.merge import (  # noqa: F401
                              dare_ties,
                              fisher,
                              greedy_soup,
                              learned_coefficients,
                              linear,
                              merge_repair,
                              splice,
                              task_arithmetic,
                              ties,
)
from medunlearn.merge.base import MERGES, MergeConfig, MergeMethod
from medunlearn.merge.config import MergeSpec, load_merge_config, parse_merge_config
from medunlearn.merge.runner import merge_from_config, merge_runs, merged_meta, save_merged

__all__ = ["MERGES", "MergeConfig", "MergeMethod", "MergeSpec", "load_merge_config", "parse_merge_config",
           "merge_from_config", "merge_runs", "merged_meta", "save_merged"]
