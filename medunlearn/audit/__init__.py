"""Per-example membership audit of a withdrawal: reference models (references.py), the LiRA score (lira.py),
the per-patient and per-set verdicts (verdict.py)."""
