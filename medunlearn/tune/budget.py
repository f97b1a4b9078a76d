"""Parse a study time budget such as "90s", "10m", "1h30m" or a plain number of seconds."""
from __future__ import annotations

import re

from medunlearn.errors import ConfigError

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration(text: str | float | int) -> float:
    """Seconds in `text` ("10m", "1h30m", "45s", "600"); must be > 0."""
    raw = str(text).strip().lower()
    seconds: float | None = None
    try:
        seconds = float(raw)
    except ValueError:
        if raw and _PART.sub("", raw) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(raw))
    if seconds is None or not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ConfigError(f"Expected a time budget > 0 such as 90s, 10m or 1h30m, but got {str(text)!r}.")
    return seconds


def format_duration(seconds: float) -> str:
    """'1h02m', '9m12s', '45.3s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
