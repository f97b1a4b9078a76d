"""Policy records over tiny splits for the criteria-aware merge tests."""
from __future__ import annotations

from medunlearn.data.imageset import SplitData
from medunlearn.merge.policies import Policy
from medunlearn.unlearn.controller import ControlConfig


def tiny_policies(data: SplitData, n: int, **control) -> list[Policy]:
    """`n` suppression policies over the same tiny split (forget = device ScannerX)."""
    return [Policy(name=f"policy {i}", goal="suppression", control=ControlConfig(**control), data=data, seed=0,
                   run_dir=f"run{i}", run_sha256=f"{i:064d}", accepted=True) for i in range(n)]
