"""Plain-language diagnoses attached to a run's acceptance record (read by the CLI and the report).

A suppression band at chance is natural when the forget domain was a shortcut the model leaned on: a retrain that
never saw it is near chance there too. When the retrain still classifies the domain well, the model generalises
to it, and suppression asks for a model *worse* than a retrain on that domain: it has to learn to tell the domain
apart and go uncertain there, which usually costs retain accuracy. Users should hear that instead of only "not met".
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def reference_hint(acceptance: Mapping[str, Any], reference: Mapping[str, Any] | None) -> str | None:
    """A note when the retrain reference's val_forget accuracy lies far above a domain suppression band, else None.

    "Far" = more than one tolerance above the band's top (the reference's top-1 accuracy on the same validation rows
    the controller judged on; no test row is read).
    """
    crit = acceptance.get("criteria") or {}
    if not reference or crit.get("goal") != "suppression" or crit.get("policy_kind") != "domain":
        return None
    ref_acc = reference.get("val_forget_acc")
    target, tol = crit.get("forget_target"), crit.get("forget_tol")
    if ref_acc is None or target is None or tol is None or ref_acc <= target + 2 * tol:
        return None
    return (f"The retrain reference, which never saw the forget rows, scores {ref_acc:.1f} % on val_forget "
            f"(suppression band {target - tol:.1f}–{target + tol:.1f} %): the model generalises to this domain rather "
            f"than leaning on it as a shortcut, so suppression asks for a model worse there than a retrain, which "
            f"usually costs retain accuracy. goal=equivalence asks for the retrain's behaviour instead.")
