"""De-identification settings of the cohort index: the site's pseudonymisation salt, and study-date coarsening.

The salt comes from a salt file, the argument or $MEDUNLEARN_SALT; only its slow fingerprint is ever written.
"""
from __future__ import annotations

import os
from pathlib import Path

from medunlearn.errors import DataError

# Salt used when none is given; documented so that cohorts indexed without one stay reproducible,
# but the report warns: anyone who knows it can test a guessed PatientID against a pseudonym.
DEFAULT_SALT = "medunlearn-default-salt-v1"
SALT_ENV = "MEDUNLEARN_SALT"
PUBLIC_SALT_SOURCE = "public-default"
DATE_PRECISIONS = ("day", "month", "year")


def resolve_salt(salt: str | None, source: str = "argument") -> tuple[str, str]:
    """(salt, source): the given salt with its `source` ("argument", "file"), else $MEDUNLEARN_SALT ("env"),
    else the public default ("public-default")."""
    if salt:
        return salt, source
    if os.environ.get(SALT_ENV):
        return os.environ[SALT_ENV], "env"
    return DEFAULT_SALT, PUBLIC_SALT_SOURCE


def read_salt_file(path: str | Path) -> str:
    """The secret salt in a file (first line, surrounding whitespace dropped); never echoed."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Expected a salt file at {p}, but it does not exist.")
    try:
        text = p.read_text(encoding="utf-8").strip().splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"Expected a UTF-8 text salt file at {p}, but it is binary.") from exc
    if not text or len(text[0].strip()) < 8:
        raise DataError(f"Expected a secret of at least 8 characters on the first line of {p}, but got "
                        f"{len(text[0].strip()) if text else 0}.")
    return text[0].strip()


def salt_fingerprint(salt: str) -> str:
    """A slow, one-way fingerprint: tells two salts apart without letting anyone test guesses quickly."""
    import hashlib

    return hashlib.pbkdf2_hmac("sha256", salt.encode("utf-8"), b"medunlearn-salt-fingerprint", 100_000)[:8].hex()


def coarsen_date(value: str, precision: str) -> str:
    """ISO date -> the first day of its month ("month") or year ("year"); "day" keeps it."""
    if not value or precision == "day":
        return value
    return f"{value[:4]}-01-01" if precision == "year" else f"{value[:7]}-01"
