from __future__ import annotations

import pytest

from medunlearn.errors import ConfigError
from medunlearn.tune.budget import format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h30m", 5400), ("600", 600), ("2.5m", 150),
                                           (" 1H ", 3600), (45, 45)])
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "ten minutes", "10 m", "5x", "m", "inf", "nan"])
def test_bad_durations_are_refused(text) -> None:
    with pytest.raises(ConfigError, match="Expected a time budget > 0"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(45.26) == "45.3s"
    assert format_duration(552) == "9m12s"
    assert format_duration(3720) == "1h02m"
