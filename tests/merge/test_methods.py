"""Merge math on hand-made state dicts and a tiny zoo model."""
from __future__ import annotations

import copy

import pytest
import torch

from medunlearn.errors import CheckpointError, ConfigError
from medunlearn.merge import MERGES
from medunlearn.merge.base import merge_buffers
from medunlearn.merge.dare_ties import dare_sparsify
from medunlearn.merge.greedy_soup import greedy_select
from medunlearn.merge.ties import disjoint_mean, elect_sign, trim_top_k
from medunlearn.models.zoo import create_model
from medunlearn.runtime import RunContext
from tests.conftest import make_tiny_split
from tests.merge.helpers import tiny_policies


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("small_cnn", 3, 1, 16, width=4).eval()


def _perturbed(base: dict, seed: int, scale: float = 0.05) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in base.items():
        if v.is_floating_point():
            out[k] = v + scale * torch.randn(v.shape, generator=g)
            if k.endswith("running_var"):
                out[k] = out[k].abs() + 0.1
        else:
            out[k] = v + seed  # num_batches_tracked differs per run
    return out


def _builder(model):
    def build(sd):
        m = copy.deepcopy(model)
        m.load_state_dict(sd)
        return m.eval()
    return build


@pytest.fixture(scope="module")
def states():
    model = _net()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    return model, base, [_perturbed(base, 1), _perturbed(base, 2), _perturbed(base, 3)]


def _run(name, model, base, runs, data=None, policies=(), **kw):
    method = MERGES.get(name)(**kw)
    weights = None if not method.uses_weights else [1.0, 2.0, 1.0][: len(runs)]
    return method.merge(base, runs, weights, ctx=RunContext(seed=7), data=data, build_model=_builder(model),
                        policies=policies)


FAST = {"fisher": {"fisher_samples": 4}, "learned_coefficients": {"steps": 3, "check_every": 2},
        "merge_repair": {"steps": 2}}
CRITERIA_AWARE = ("learned_coefficients", "merge_repair")


@pytest.mark.parametrize("name", MERGES.names())
def test_every_method_keeps_keys_shapes_dtypes_and_is_deterministic(name, states):
    model, base, runs = states
    data = make_tiny_split(n_train=48) if name in ("fisher", "greedy_soup", *CRITERIA_AWARE) else None
    policies = tiny_policies(data, len(runs)) if name in CRITERIA_AWARE else ()
    kw = FAST.get(name, {})
    a = _run(name, model, base, runs, data, policies, **kw)
    b = _run(name, model, base, runs, data, policies, **kw)
    assert list(a) == list(base)
    for k in base:
        assert a[k].shape == base[k].shape and a[k].dtype == base[k].dtype
        assert torch.equal(a[k], b[k]), k
    # inputs untouched
    assert torch.equal(runs[0]["head.weight"], _perturbed(base, 1)["head.weight"])
    # num_batches_tracked is never averaged
    for k in (k for k in base if k.endswith("num_batches_tracked")):
        assert a[k].dtype == torch.long and int(a[k]) in {int(base[k]) + s for s in (0, 1, 2, 3)}


@pytest.mark.parametrize("name,kw", [("linear", {}), ("task_arithmetic", {"scaling": 0.5}),
                                     ("ties", {"density": 1.0}), ("dare_ties", {"density": 1.0})])
def test_merging_a_run_with_itself_returns_it(name, kw, states):
    # linear: always; task arithmetic: when s·Σw = 1 (s=0.5, unit weights); TIES/DARE: only at density 1.
    model, base, runs = states
    x = runs[0]
    out = MERGES.get(name)(**kw).merge(base, [x, x], None, ctx=RunContext(seed=0))
    for k in base:
        if k.endswith("num_batches_tracked"):
            assert int(out[k]) == max(int(base[k]), int(x[k]))
        else:
            torch.testing.assert_close(out[k], x[k], rtol=0, atol=1e-6)


def test_linear_is_weighted_mean_and_task_arithmetic_formula():
    base = {"w": torch.tensor([0.0, 1.0])}
    r1, r2 = {"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([4.0, -2.0])}
    lin = MERGES.get("linear")().merge(base, [r1, r2], [1.0, 2.0])
    torch.testing.assert_close(lin["w"], torch.tensor([3.0, -1.0]))
    ta = MERGES.get("task_arithmetic")(scaling=0.5).merge(base, [r1, r2], [1.0, 1.0])
    # θ0 + 0.5·((1,0) + (4,-3)) = (2.5, -0.5)
    torch.testing.assert_close(ta["w"], torch.tensor([2.5, -0.5]))


def test_ties_pieces_exact():
    t = torch.tensor([0.1, -3.0, 2.0, -0.5, 1.0])
    torch.testing.assert_close(trim_top_k(t, 0.4), torch.tensor([0.0, -3.0, 2.0, 0.0, 0.0]))
    torch.testing.assert_close(trim_top_k(t, 1.0), t)
    a, b = torch.tensor([1.0, -2.0, 3.0, 0.0]), torch.tensor([-3.0, -1.0, 1.0, 2.0])
    sign = elect_sign([a, b], [1.0, 1.0])
    torch.testing.assert_close(sign, torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    dm = disjoint_mean([a, b], [1.0, 1.0], sign)
    torch.testing.assert_close(dm, torch.tensor([-3.0, -1.5, 2.0, 2.0], dtype=torch.float64))


def test_ties_merge_on_hand_made_tensors():
    base = {"w": torch.zeros(4)}
    r1 = {"w": torch.tensor([4.0, -1.0, 0.2, 2.0])}
    r2 = {"w": torch.tensor([-1.0, -3.0, 0.1, 1.5])}
    out = MERGES.get("ties")(density=0.5, scaling=2.0).merge(base, [r1, r2], [1.0, 1.0])
    # trimmed: r1 -> [4,0,0,2], r2 -> [0,-3,0,1.5]; signs [+,-,0,+]; disjoint mean [4,-3,0,1.75]; ×2
    torch.testing.assert_close(out["w"], torch.tensor([8.0, -6.0, 0.0, 3.5]))


def test_dare_sparsify_and_dare_ties_seeded():
    tau = torch.arange(1, 2001, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1, s2 = dare_sparsify(tau, 0.25, g1), dare_sparsify(tau, 0.25, g2)
    assert torch.equal(s1, s2)
    kept = s1 != 0
    torch.testing.assert_close(s1[kept], tau[kept] * 4.0)  # rescale 1/(1-p) with p = 0.75
    assert 0.2 < kept.double().mean().item() < 0.3
    base = {"w": torch.zeros(2000)}
    runs = [{"w": tau.float()}, {"w": -0.5 * tau.float()}]
    m = MERGES.get("dare_ties")(density=0.25)
    a = m.merge(base, runs, None, ctx=RunContext(seed=1))["w"]
    assert torch.equal(a, m.merge(base, runs, None, ctx=RunContext(seed=1))["w"])
    assert not torch.equal(a, m.merge(base, runs, None, ctx=RunContext(seed=2))["w"])
    # every surviving entry is an un-negated 4τ (run 1 dominates the mass) or -2τ where only run 2 survived
    nz = a != 0
    ratio = (a[nz].double() / tau[nz])
    assert set(torch.round(ratio * 10).unique().tolist()) <= {40.0, -20.0}


def test_bn_buffers():
    base = {"bn.running_mean": torch.zeros(2), "bn.running_var": torch.ones(2),
            "bn.num_batches_tracked": torch.tensor(5), "idx": torch.tensor([1, 2])}
    r1 = {"bn.running_mean": torch.tensor([1.0, 2.0]), "bn.running_var": torch.tensor([2.0, 2.0]),
          "bn.num_batches_tracked": torch.tensor(9), "idx": torch.tensor([7, 7])}
    r2 = {"bn.running_mean": torch.tensor([3.0, 0.0]), "bn.running_var": torch.tensor([4.0, 8.0]),
          "bn.num_batches_tracked": torch.tensor(7), "idx": torch.tensor([8, 8])}
    out = merge_buffers(base, [r1, r2], [1.0, 3.0])
    torch.testing.assert_close(out["bn.running_mean"], torch.tensor([2.5, 0.5]))
    torch.testing.assert_close(out["bn.running_var"], torch.tensor([3.5, 6.5]))
    assert int(out["bn.num_batches_tracked"]) == 9 and torch.equal(out["idx"], base["idx"])
    assert torch.equal(merge_buffers(base, [r1, r2], [1.0, 1.0], "base")["bn.running_var"], base["bn.running_var"])
    # task arithmetic leaves BN stats as a (weighted) average, not θ0 + Στ
    ta = MERGES.get("task_arithmetic")().merge(base, [r1, r2], [1.0, 3.0])
    torch.testing.assert_close(ta["bn.running_mean"], torch.tensor([2.5, 0.5]))


def test_bn_recompute_on_retain(states):
    model, base, runs = states
    data = make_tiny_split(n_train=48)
    out = MERGES.get("linear")(bn_stats="recompute").merge(base, runs[:2], None, data=data,
                                                           build_model=_builder(model))
    key = next(k for k in base if k.endswith("running_mean"))
    avg = MERGES.get("linear")().merge(base, runs[:2])
    assert not torch.allclose(out[key], avg[key])
    with pytest.raises(ConfigError, match="data"):
        MERGES.get("linear")(bn_stats="recompute").merge(base, runs[:2])


def test_splice_takes_backbone_and_head(states):
    model, base, runs = states
    out = MERGES.get("splice")(backbone=2, head=0).merge(base, runs, ctx=RunContext())
    for k in base:
        src = runs[0] if k.startswith("head.") else runs[2]
        assert torch.equal(out[k], src[k]), k
    ctx = RunContext(seed=0)
    data = make_tiny_split(n_train=48)
    rep = MERGES.get("splice")(repair_epochs=1, lr=1e-2).merge(base, runs, ctx=ctx, data=data,
                                                               build_model=_builder(model))
    assert not torch.equal(rep["head.weight"], runs[1]["head.weight"])
    feat = [k for k in base if k.startswith("features.") and k.endswith("weight") and base[k].dim() > 1]
    assert all(torch.equal(rep[k], runs[0][k]) for k in feat)  # head-only repair leaves the backbone alone
    assert len(ctx.log["splice"]["repair_loss"]) == 1
    with pytest.raises(ConfigError, match="index"):
        MERGES.get("splice")(head=5).merge(base, runs)


def test_greedy_select_and_soup(states):
    kept, best = greedy_select([1.0, 3.0, 2.0], lambda idx: {(1, 2): 3.5, (1, 2, 0): 3.0}[tuple(idx)])
    assert kept == [1, 2] and best == 3.5
    model, base, runs = states
    score = lambda m: -float(m.state_dict()["head.bias"].abs().sum())  # noqa: E731
    ctx = RunContext()
    out = MERGES.get("greedy_soup")().merge(base, runs, ctx=ctx, build_model=_builder(model), score_fn=score)
    kept = ctx.log["greedy_soup"]["kept"]
    expect = sum(runs[i]["head.bias"].double() for i in kept) / len(kept)
    torch.testing.assert_close(out["head.bias"], expect.float())
    with pytest.raises(ConfigError, match="weights"):
        MERGES.get("greedy_soup")().merge(base, runs, [1.0, 2.0, 3.0], build_model=_builder(model), score_fn=score)


def test_fisher_weights_by_fisher():
    from medunlearn.merge.fisher import fisher_average
    runs = [{"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])}]
    fishers = [{"w": torch.tensor([3.0, 0.0])}, {"w": torch.tensor([1.0, 0.0])}]
    out = fisher_average(runs, fishers, [1.0, 1.0], eps=1e-8)
    torch.testing.assert_close(out["w"], torch.tensor([0.25, 0.5], dtype=torch.float64))


def test_bad_inputs_refused(states):
    model, base, runs = states
    bad = dict(runs[0])
    bad.pop("head.bias")
    with pytest.raises(CheckpointError, match="missing"):
        MERGES.get("linear")().merge(base, [bad])
    with pytest.raises(ConfigError, match="one weight per run"):
        MERGES.get("linear")().merge(base, runs, [1.0])
    with pytest.raises(ConfigError, match="non-negative"):
        MERGES.get("ties")().merge(base, runs[:2], [1.0, -1.0])
    with pytest.raises(ConfigError, match='Did you mean "density"'):
        MERGES.get("ties")(densty=0.3)
    with pytest.raises(ConfigError, match=r"density in \(0"):
        MERGES.get("dare_ties")(density=0.0)
