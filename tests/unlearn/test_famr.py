"""FAMR: λ from the budget, a-priori bound, movement toward uniform, solvers, parameter subsets, certificate."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from medunlearn.errors import ConfigError
from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.base import release
from medunlearn.unlearn.famr_math import conjugate_gradient, kl_u_p, support_mask, uniform_loss


def _run(trained_tiny, goal="suppression", name="famr", **kw):
    """FAMR's plan run to its budget with no controller (the method's math alone)."""
    model, split = trained_tiny
    ctx = RunContext(seed=0)
    work = copy.deepcopy(model)
    plan = METHODS.get(name)(**kw).plan(work, copy.deepcopy(model).eval(), split, ctx, goal)
    for t in range(1, plan.budget + 1):
        plan.update(t)
    out = release(plan.finalize(work))
    return model, out, ctx.log[name]


def test_iterative_respects_apriori_bound_and_flattens_forget_predictions(trained_tiny):
    # FAMR proper (no retain term) on the head: the variant the a-priori bound and the head-only check describe
    model, out, log = _run(trained_tiny, epochs=30.0, budget=5.0, params="head", lr=1e-2)
    cert, meas = log["certificate"], log["certificate"]["measured"]
    assert cert["label"].startswith("bounds under stated assumptions and measurements")
    assert log["lam_source"] == "budget"
    assert math.isclose(log["lam"], 2 * (meas["L_f_before"] - math.log(3)) / 25.0, rel_tol=1e-6)
    apriori = cert["bounds"]["apriori_delta_norm"]
    assert math.isclose(apriori["value"], 5.0, rel_tol=1e-6)
    assert apriori["condition_holds"] and apriori["holds"] and meas["delta_norm"] <= apriori["value"]
    assert cert["bounds"]["convex_delta_norm"]["assumption_verified"] is False
    assert meas["kl_u_p_after"] < 0.25 * meas["kl_u_p_before"]
    assert math.isclose(meas["delta_norm"], math.sqrt(sum(v ** 2 for v in meas["delta_norm_per_tensor"].values())),
                        rel_tol=1e-5)
    assert set(meas["delta_norm_per_tensor"]) == {"head.weight", "head.bias"}
    assert meas["retain"]["secant_slope_max"] >= meas["retain"]["secant_slope_median"] > 0
    for name, t in model.state_dict().items():  # params="head": the feature extractor is untouched
        if not name.startswith("head."):
            assert torch.equal(t, out.state_dict()[name])
    assert all(p.requires_grad for p in out.parameters())


@pytest.mark.parametrize("solver", ["one_step", "newton_cg"])
def test_closed_form_solvers_move_toward_uniform(trained_tiny, solver):
    _, _, log = _run(trained_tiny, solver=solver, lam=1.0, cg_iters=5)
    cert = log["certificate"]["measured"]
    assert cert["kl_u_p_after"] < 0.8 * cert["kl_u_p_before"]
    assert cert["delta_norm"] > 0 and log["lam_source"] == "given"
    if solver == "newton_cg":
        assert 1 <= log["cg_iterations"] <= 5
    else:  # one step of length ‖∇L_f(θ0)‖/λ
        assert math.isclose(cert["delta_norm"], cert["grad_norm_theta0"] / 1.0, rel_tol=1e-4)


def test_all_parameters_move_the_features(trained_tiny):
    model, out, log = _run(trained_tiny, params="all", epochs=2.0)
    assert any(k.startswith("features.") for k in log["certificate"]["measured"]["delta_norm_per_tensor"])
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


def test_famr_retain_zero_weight_is_famr(trained_tiny):
    _, a, _ = _run(trained_tiny, epochs=1.0)
    _, b, _ = _run(trained_tiny, name="famr_retain", epochs=1.0, retain_weight=0.0)
    _, c, _ = _run(trained_tiny, name="famr_retain", epochs=1.0)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_the_certificate_reads_at_most_cert_rows_retain_and_validation_rows(trained_tiny, monkeypatch):
    import medunlearn.unlearn.famr_certificate as fc

    _, split = trained_tiny
    n_forget = len(split.train_forget)
    seen: list[int] = []
    real = fc._logits_at
    monkeypatch.setattr(fc, "_logits_at", lambda model, prm, images, dev, bs=256: (
        seen.append(len(images)), real(model, prm, images, dev, bs))[1])
    _run(trained_tiny, solver="one_step", lam=1.0, cert_rows=8)
    assert len(split.train_retain) > 8 and len(split.val_retain) + len(split.val_forget) > 8
    assert seen[:2] == [n_forget, n_forget]  # the forget set's KL before / after: every forget row
    assert seen[2:] == [8, 8, 8, 8]  # retain (θ0, θ) then validation (θ0, θ): capped at cert_rows


def test_cg_rows_caps_the_rows_of_newton_cg_hessian_vector_products(trained_tiny, monkeypatch):
    import medunlearn.unlearn.famr as famr

    _, split = trained_tiny
    rows_seen: list[int] = []
    real = famr.hvp_fn
    monkeypatch.setattr(famr, "hvp_fn", lambda model, params, rows, *a: (
        rows_seen.append(len(rows)), real(model, params, rows, *a))[1])
    _run(trained_tiny, solver="newton_cg", lam=1.0, cg_iters=2, cg_rows=8)
    assert len(split.train_forget) > 8 and rows_seen and set(rows_seen) == {8}
