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
MIN_SALT = 8  # characters, from every source (--salt, --salt-file, $MEDUNLEARN_SALT)


def check_salt(salt: str, where: str) -> str:
    """The salt, refused (DataError) when shorter than MIN_SALT characters; the secret is never echoed."""
    if len(salt.strip()) < MIN_SALT:
        raise DataError(f"Expected a secret salt of at least {MIN_SALT} characters from {where}, but got "
                        f"{len(salt.strip())}.")
    return salt


def resolve_salt(salt: str | None, source: str = "argument") -> tuple[str, str]:
    """(salt, source): the given salt with its `source` ("argument", "file"), else $MEDUNLEARN_SALT ("env"),
    else the public default ("public-default"). The CLI checks --salt and --salt-file with `check_salt`
    before they get here; the environment is checked here."""
    if salt:
        return salt, source
    if os.environ.get(SALT_ENV):
        return check_salt(os.environ[SALT_ENV], f"${SALT_ENV}"), "env"
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
    return check_salt(text[0].strip() if text else "", f"the first line of {p}")


def salt_fingerprint(salt: str) -> str:
    """A slow, one-way fingerprint: tells two salts apart without letting anyone test guesses quickly."""
    import hashlib

    return hashlib.pbkdf2_hmac("sha256", salt.encode("utf-8"), b"medunlearn-salt-fingerprint", 100_000)[:8].hex()


def coarsen_date(value: str, precision: str) -> str:
    """ISO date -> the first day of its month ("month") or year ("year"); "day" keeps it."""
    if not value or precision == "day":
        return value
    return f"{value[:4]}-01-01" if precision == "year" else f"{value[:7]}-01"
