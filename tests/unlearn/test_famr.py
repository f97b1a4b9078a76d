"""FAMR: λ from the budget, a-priori bound, movement toward uniform, solvers, parameter subsets, certificate."""
from __future__ import annotations

import math

import pytest
import torch

from medunlearn.errors import ConfigError
from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.famr import conjugate_gradient, kl_u_p, support_mask, uniform_loss

NO_STOP = {"check_every": 100000}


def _run(trained_tiny, goal="suppression", **kw):
    model, split = trained_tiny
    ctx = RunContext(seed=0)
    out = METHODS.get("famr")(**{**NO_STOP, **kw}).unlearn(model, split, ctx, goal)
    return model, out, ctx.log["famr"]


def test_iterative_respects_apriori_bound_and_flattens_forget_predictions(trained_tiny):
    # FAMR proper (no retain term) on the head: the variant the a-priori bound and the head-only check describe
    model, out, log = _run(trained_tiny, epochs=30.0, budget=5.0, params="head", retain_weight=0.0, lr=1e-2, tol=0.05)
    cert = log["certificate"]
    assert cert["label"] == "bounds under stated assumptions, not a formal privacy guarantee"
    assert log["lam_source"] == "budget"
    assert math.isclose(log["lam"], 2 * (cert["L_f_before"] - math.log(3)) / 25.0, rel_tol=1e-6)
    assert math.isclose(cert["bound_apriori"], 5.0, rel_tol=1e-6)
    assert cert["bound_apriori_applies"] and cert["delta_norm"] <= cert["bound_apriori"]
    assert cert["kl_u_p_after"] < 0.25 * cert["kl_u_p_before"]
    assert math.isclose(cert["delta_norm"], math.sqrt(sum(v ** 2 for v in cert["delta_norm_per_tensor"].values())),
                        rel_tol=1e-5)
    assert set(cert["delta_norm_per_tensor"]) == {"head.weight", "head.bias"}
    assert cert["retain"]["certified_but_flipped"] == 0
    for name, t in model.state_dict().items():  # params="head": the feature extractor is untouched
        if not name.startswith("head."):
            assert torch.equal(t, out.state_dict()[name])
    assert all(p.requires_grad for p in out.parameters())


@pytest.mark.parametrize("solver", ["one_step", "newton_cg"])
def test_closed_form_solvers_move_toward_uniform(trained_tiny, solver):
    _, _, log = _run(trained_tiny, solver=solver, lam=1.0, cg_iters=5)
    cert = log["certificate"]
    assert cert["kl_u_p_after"] < 0.8 * cert["kl_u_p_before"]
    assert cert["delta_norm"] > 0 and log["lam_source"] == "given"
    if solver == "newton_cg":
        assert 1 <= log["cg_iterations"] <= 5
    else:  # one step of length ‖∇L_f(θ0)‖/λ
        assert math.isclose(cert["delta_norm"], cert["grad_norm_theta0"] / 1.0, rel_tol=1e-4)


def test_all_parameters_move_the_features(trained_tiny):
    model, out, log = _run(trained_tiny, params="all", epochs=2.0)
    assert any(k.startswith("features.") for k in log["certificate"]["delta_norm_per_tensor"])
    assert not torch.equal(model.state_dict()["features.conv1.0.weight"], out.state_dict()["features.conv1.0.weight"])


def test_uniform_losses_and_support():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    full = torch.ones(3, dtype=torch.bool)
    assert torch.allclose(kl_u_p(logits, full)[1], torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(uniform_loss(logits, "ce_uniform", full) - math.log(3), kl_u_p(logits, full))
    assert torch.allclose(uniform_loss(logits, "kl_p_u", full)[1], torch.tensor(0.0), atol=1e-6)
    assert support_mask("remaining", torch.tensor([0, 0]), 3).tolist() == [False, True, True]
    with pytest.raises(ConfigError, match="every class"):
        support_mask("remaining", torch.tensor([0, 1, 2]), 3)


def test_conjugate_gradient_solves_a_spd_system():
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    b = [torch.tensor([1.0, -1.0])]
    x, _ = conjugate_gradient(lambda v: [a @ v[0]], b, lam=0.5, iters=10)
    assert torch.allclose((a + 0.5 * torch.eye(2)) @ x[0], b[0], atol=1e-4)


def test_famr_config_errors(trained_tiny):
    with pytest.raises(ConfigError, match="newton_cg"):
        _run(trained_tiny, solver="newton")
    with pytest.raises(ConfigError, match="lam > 0"):
        _run(trained_tiny, lam=-1.0)
    with pytest.raises(ConfigError, match="every class"):
        _run(trained_tiny, support="remaining")
