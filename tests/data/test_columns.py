"""data.columns: one reading of cohort columns for every caller."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medunlearn.data.columns import numeric_values, require_column, text_values, try_numeric
from medunlearn.errors import ConfigError


def test_text_values_strips_blanks_and_integral_floats():
    assert text_values(pd.Series([" a ", None, "b"])).tolist() == ["a", "", "b"]
    assert text_values(pd.Series([512.0, np.nan, 1.5])).tolist() == ["512", "", "1.5"]


def test_numeric_values_blanks_are_nan_and_text_is_refused():
    df = pd.DataFrame({"m": ["1.5", "", "3"], "bad": ["1", "x", ""]})
    np.testing.assert_array_equal(numeric_values(df, "m", "test"), [1.5, np.nan, 3.0])
    with pytest.raises(ConfigError, match="Expected numeric values in column 'bad'.*'x'"):
        numeric_values(df, "bad", "test")
    assert try_numeric(df["bad"])[1] == "x"


def test_require_column_suggests_the_nearest_name():
    with pytest.raises(ConfigError, match='Did you mean "measurement_mm"'):
        require_column(pd.DataFrame({"measurement_mm": [1]}), "measurement_m", "--where")
