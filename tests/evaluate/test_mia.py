"""MIA sanity: clear separation when members have lower loss, chance on identical distributions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medunlearn.errors import ConfigError
from medunlearn.evaluate.mia import AttackInputs, LossLRAttack, SVCShadowAttack, modified_entropy


def _inputs(n: int, k: int, margin: float, seed: int) -> AttackInputs:
    """Logits whose true-class margin is `margin` on average: larger margin = lower loss."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), labels] += margin + torch.randn(n, generator=g)
    return AttackInputs.from_logits(logits, labels)


def test_loss_lr_separates_and_is_chance_on_same_distribution() -> None:
    members, nonmembers = _inputs(600, 3, 5.0, 0), _inputs(600, 3, 0.5, 1)
    res = LossLRAttack(seed=0).run(members, nonmembers)
    assert res["acc_mean"] > 0.7 and res["auc_mean"] > 0.8 and res["n"] == 600 and res["n_splits"] == 5
    same = LossLRAttack(seed=0).run(_inputs(600, 3, 2.0, 2), _inputs(600, 3, 2.0, 3))
    assert abs(same["acc_mean"] - 0.5) < 0.1 and abs(same["auc_mean"] - 0.5) < 0.1


def test_loss_lr_balances_and_caps() -> None:
    res = LossLRAttack(seed=0, max_per_side=100).run(_inputs(300, 3, 4.0, 0), _inputs(150, 3, 0.0, 1))
    assert res["n"] == 100
    tiny = LossLRAttack().run(_inputs(1, 3, 1.0, 0), _inputs(5, 3, 1.0, 1))
    assert tiny["n"] == 1 and np.isnan(tiny["acc_mean"])
    again = LossLRAttack(seed=0, max_per_side=100).run(_inputs(300, 3, 4.0, 0), _inputs(150, 3, 0.0, 1))
    assert again == res  # seeded


def test_svc_efficacy_follows_target_distribution() -> None:
    retain, test = _inputs(800, 3, 5.0, 0), _inputs(800, 3, 0.0, 1)
    attack = SVCShadowAttack(seed=0)
    remembered = attack.run(retain, test, _inputs(400, 3, 5.0, 2))  # forget rows look like members
    forgotten = attack.run(retain, test, _inputs(400, 3, 0.0, 3))  # forget rows look like test rows
    assert remembered["shadow_acc"] > 0.7
    assert remembered["efficacy"] < 30 and forgotten["efficacy"] > 70
    assert remembered["n_train"] == 800 and remembered["features"] == ["confidence"]
    same = SVCShadowAttack(seed=0).run(_inputs(600, 3, 2.0, 4), _inputs(600, 3, 2.0, 5), _inputs(200, 3, 2.0, 6))
    assert abs(same["shadow_acc"] - 0.5) < 0.1


@pytest.mark.parametrize("features,width", [(("entropy",), 1), (("m_entropy",), 1), (("prob",), 3),
                                            (("correctness", "confidence"), 2)])
def test_svc_feature_sets(features: tuple[str, ...], width: int) -> None:
    inp = _inputs(50, 3, 2.0, 0)
    attack = SVCShadowAttack(feature_set=features, max_per_side=40)
    assert attack.inputs_features(inp).shape == (50, width)
    res = attack.run(_inputs(60, 3, 5.0, 1), _inputs(60, 3, 0.0, 2), inp)
    assert 0 <= res["efficacy"] <= 100 and res["n_train"] == 40


def test_modified_entropy_and_bad_feature() -> None:
    probs = np.array([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3], [0.01, 0.98, 0.01]])
    m = modified_entropy(probs, np.array([0, 0, 0]))
    assert m[0] < m[1] < m[2]  # confident-correct < uncertain < confident-wrong
    with pytest.raises(ConfigError, match='Did you mean "entropy"'):
        SVCShadowAttack(feature_set=("entrpy",))
