from __future__ import annotations

import pytest

from medunlearn.tune.sealed import SealedTestRows, validation_only
from tests.conftest import make_tiny_split


def test_validation_only_seals_both_test_splits_and_keeps_the_rest() -> None:
    data = make_tiny_split(n_train=40)
    sealed = validation_only(data)
    for name in ("test_retain", "test_forget"):
        part = getattr(sealed, name)
        with pytest.raises(SealedTestRows, match=name):
            len(part)
        with pytest.raises(SealedTestRows, match="sealed"):
            part.images  # noqa: B018
    with pytest.raises(SealedTestRows):
        sealed.test  # noqa: B018  (concatenating the test splits reads them)
    assert sealed.val_forget is data.val_forget and sealed.train_retain is data.train_retain
    assert "sealed" in sealed.info["tuning"]
    assert len(data.test_forget) > 0  # the input is not modified
