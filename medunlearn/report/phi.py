"""Patient-data hygiene for reports: drop identifying keys from inputs, refuse to write identifying text.

Reports only read pseudonymised fields. As a last line of defence the rendered HTML / Markdown / JSON are
scanned for a deny-list of regular expressions (default: DICOM person-name values such as "DOE^JANE" or
"SYNTH^"); any hit refuses the whole report (MedUnlearnError) without echoing the matched text.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from medunlearn.errors import MedUnlearnError

# DICOM PN values join name components with '^' (FAMILY^GIVEN^MIDDLE); no report text uses a caret.
DEFAULT_DENY_PATTERNS: tuple[str, ...] = (r"[A-Za-z][A-Za-z0-9 .'-]*\^",)
# Keys whose values are identifying whatever they hold; dropped from every input before rendering.
DENY_KEYS = frozenset(k.lower() for k in (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs", "OtherPatientNames",
    "patient_name", "patient_id_raw", "raw_patient_id", "birth_date", "birthdate", "dob", "PatientAddress",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
))


def strip_identifying(obj: Any) -> Any:
    """A copy of a JSON-like object with every DENY_KEYS entry removed (at any depth)."""
    if isinstance(obj, dict):
        return {k: strip_identifying(v) for k, v in obj.items() if str(k).lower() not in DENY_KEYS}
    if isinstance(obj, (list, tuple)):
        return [strip_identifying(v) for v in obj]
    return obj


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}" if path else str(k), str(k)
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    elif isinstance(obj, str):
        yield path, obj


def compile_patterns(patterns: Sequence[str] | None) -> list[re.Pattern]:
    from medunlearn.errors import ConfigError

    out = []
    for p in DEFAULT_DENY_PATTERNS if patterns is None else patterns:
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise ConfigError(f"Expected a valid regular expression in the PHI deny-list, "
                              f"but got {p!r} ({exc}).") from exc
    return out


def find_identifying(obj: Any, patterns: Iterable[re.Pattern]) -> list[str]:
    """Paths (not values) of strings in `obj` that match a deny pattern."""
    pats = list(patterns)
    return [path for path, text in _walk(obj) if any(p.search(text) for p in pats)]


def scrub_check(outputs: dict[str, str], patterns: Iterable[re.Pattern], sources: Any = None) -> None:
    """Raise MedUnlearnError if any rendered output matches a deny pattern; name fields, never values."""
    pats = list(patterns)
    hits = {name: sum(len(p.findall(text)) for p in pats) for name, text in outputs.items()}
    hits = {k: v for k, v in hits.items() if v}
    if hits:
        where = find_identifying(sources, pats)[:5] if sources is not None else []
        raise MedUnlearnError(
            f"Expected a report free of identifying values, but the PHI deny-list matched {sum(hits.values())} "
            f"time(s) in {sorted(hits)}" + (f" (input fields: {where})" if where else "")
            + "; nothing was written. Pseudonymise the inputs first.")
