"""Manufacturer-name normalisation: the many spellings one vendor writes into (0008,0070) → one family.

Real headers carry "GE MEDICAL SYSTEMS", "G.E. Medical Systems", "GE Healthcare Japan", "PMS",
"Philips Medical Systems, Inc.", "SIEMENS", "TOSHIBA_MEC" ... A forget rule such as `--vendor GE`
must match all of them, so the cohort keeps both the raw string and this family name.
"""
from __future__ import annotations

import re

# Family → token phrases. A phrase matches when its tokens appear consecutively in the normalised
# name, so "ge" matches "GE Healthcare" but not "Agfa-Gevaert". Order matters: the first hit wins,
# which lets e.g. "Hitachi Aloka" count as Hitachi and "Fujifilm SonoSite" as Fujifilm.
_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GE", ("ge", "gems", "general electric", "ge medical", "ge healthcare", "ge vingmed", "ge oec")),
    ("Philips", ("philips", "pms", "philips medical", "philips healthcare", "adac", "marconi")),
    ("Siemens", ("siemens", "siemens healthineers", "siemens ag", "acuson")),
    ("Canon", ("canon", "toshiba", "toshiba mec", "toshiba medical")),
    ("Hitachi", ("hitachi",)),
    ("Fujifilm", ("fujifilm", "fuji", "fuji photo film", "fujifilm sonosite")),
    ("Agfa", ("agfa", "agfa gevaert")),
    ("Hologic", ("hologic", "lorad")),
    ("Carestream", ("carestream", "kodak", "eastman kodak")),
    ("Samsung", ("samsung", "medison", "samsung medison")),
    ("Aloka", ("aloka",)),
    ("Konica Minolta", ("konica", "konica minolta")),
    ("United Imaging", ("uih", "united imaging")),
    ("Esaote", ("esaote",)),
    ("Mindray", ("mindray",)),
    ("SonoSite", ("sonosite",)),
    ("Shimadzu", ("shimadzu",)),
    ("Varian", ("varian",)),
    ("Elekta", ("elekta",)),
    ("Planmeca", ("planmeca",)),
    ("Sirona", ("sirona", "dentsply sirona")),
    ("Bruker", ("bruker",)),
    ("Neusoft", ("neusoft",)),
)


def _tokens(raw: str) -> list[str]:
    """Lower-case word tokens; dots are dropped first so "G.E." becomes "ge"."""
    text = raw.lower().replace(".", "")
    return [t for t in re.split(r"[^a-z0-9]+", text) if t]


def _contains(tokens: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(tokens[i:i + n]) == phrase for i in range(len(tokens) - n + 1))


_PHRASES = tuple((family, tuple(tuple(p.split()) for p in phrases)) for family, phrases in _FAMILIES)


def normalise_manufacturer(raw: object) -> str:
    """Map a raw Manufacturer string to its vendor family ("GE", "Philips", "Siemens", "Canon", ...).

    Unknown vendors come back as the whitespace-collapsed raw string (title-cased when it was all
    upper or all lower case); blank or missing input gives "".
    """
    if raw is None:
        return ""
    text = " ".join(str(raw).split())
    if not text:
        return ""
    tokens = _tokens(text)
    for family, phrases in _PHRASES:
        if any(_contains(tokens, p) for p in phrases):
            return family
    return text.title() if (text.isupper() or text.islower()) else text


def known_families() -> list[str]:
    """Every family name normalise_manufacturer can return for a recognised vendor."""
    return [family for family, _ in _FAMILIES]
