"""Per-policy acceptance of a merged model, the learned coefficients and merge + repair; no test row is read."""
from __future__ import annotations

import copy
import dataclasses

import pandas as pd
import pytest
import torch
from torch import nn

from medunlearn.data.imageset import ImageSet, SplitData
from medunlearn.errors import ConfigError
from medunlearn.merge import MERGES
from medunlearn.merge.learned_coefficients import coefficients, sign_agreement
from medunlearn.merge.policies import (
    Policy,
    PolicyJudge,
    assess_policies,
    control_from_meta,
    shared_retain,
    violation_total,
)
from medunlearn.models.zoo import create_model
from medunlearn.runtime import RunContext
from medunlearn.unlearn.controller import ControlConfig
from tests.conftest import make_tiny_split
from tests.merge.helpers import tiny_policies

K = 3


class Poison:
    """Stands in for test rows: any use raises, so a test fails if anything fits or judges on them."""

    def __getattribute__(self, name):
        raise AssertionError(f"test rows were read ({name})")

    def __len__(self):
        raise AssertionError("test rows were read (len)")


def poisoned(data: SplitData) -> SplitData:
    return dataclasses.replace(data, test_retain=Poison(), test_forget=Poison())


# ---------------------------------------------------------------- scripted models: exact verdicts
def _coded(n: int, domain: int, offset: int) -> ImageSet:
    """Rows carrying their id, label and domain (0 retain, 1 policy A, 2 policy B) in pixels."""
    ids = torch.arange(n) + offset
    x = torch.zeros(n, 1, 4, 4)
    x[:, 0, 0, 0], x[:, 0, 0, 1], x[:, 0, 0, 2] = ids.float() / 1000, (ids % K).float() / 10, float(domain)
    return ImageSet(x, ids % K, pd.DataFrame({"image_id": [str(i) for i in ids.tolist()]}))


class Merged(nn.Module):
    """Right and confident (0.95) everywhere, except forgotten domains: right on a third of rows, confidence 0.36."""

    def __init__(self, forgets: set[int], retain_ok: bool = True) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.forgets, self.retain_ok = forgets, retain_ok

    def forward(self, x):
        ids, y, dom = (x[:, 0, 0, 0] * 1000).round().long(), (x[:, 0, 0, 1] * 10).round().long(), x[:, 0, 0, 2].round()
        forgotten = torch.tensor([int(d) in self.forgets for d in dom.tolist()])
        right = torch.where(forgotten, ids % 3 == 0, torch.full_like(ids, self.retain_ok, dtype=torch.bool) | (dom > 0))
        pred = torch.where(right, y, (y + 1) % K)
        p = torch.where(forgotten, torch.tensor(0.36), torch.tensor(0.95))
        probs = ((1 - p) / (K - 1))[:, None].repeat(1, K)
        probs[torch.arange(len(x)), pred] = p
        return probs.log() + 0 * self.w


def _scripted_policies(n: int = 60, **control_b) -> tuple[list[Policy], SplitData]:
    def split(domain: int, off: int) -> SplitData:
        return SplitData([f"c{k}" for k in range(K)], _coded(n, 0, off), _coded(n, domain, off + 100),
                         _coded(n, 0, off + 200), _coded(n, domain, off + 300), Poison(), Poison())
    union = SplitData([f"c{k}" for k in range(K)], _coded(n, 0, 0), ImageSet.concat([_coded(n, 1, 100), _coded(n, 2, 1100)]),
                      _coded(n, 0, 200), ImageSet.concat([_coded(n, 1, 300), _coded(n, 2, 1300)]), Poison(), Poison())
    a, b = split(1, 0), split(2, 1000)
    pols = [Policy("device = A", "suppression", ControlConfig(), shared_retain(a, union), run_dir="ra", run_sha256="1" * 64),
            Policy("site = B", "suppression", ControlConfig(**control_b), shared_retain(b, union), run_dir="rb",
                   run_sha256="2" * 64)]
    return pols, union


def test_merged_model_meeting_every_policy_is_met():
    pols, union = _scripted_policies()
    acc = assess_policies(Merged({1, 2}), Merged(set()), pols, union)
    assert acc["met"] is True and acc["judged_on"] == "validation" and violation_total(acc) == 0
    assert [p["policy"] for p in acc["policies"]] == ["device = A", "site = B"]
    assert acc["policies"][0]["run_sha256"] == "1" * 64 and acc["retain"]["met"] is True


def test_a_merge_that_undoes_one_policy_is_not_met_and_names_it():
    pols, union = _scripted_policies()
    acc = assess_policies(Merged({1}), Merged(set()), pols, union)
    assert acc["met"] is False and [p["met"] for p in acc["policies"]] == [True, False]
    assert "site = B" in acc["reason"] and "device = A" not in acc["reason"] and violation_total(acc) > 0
    fa = next(c for c in acc["policies"][1]["checks"] if c["name"] == "forget_accuracy")
    assert fa["value"] == 95.0 and fa["passed"] is False  # expected accuracy: p(true label) = 0.95 on every row


def test_each_policy_is_judged_by_its_own_criteria_settings():
    pols, union = _scripted_policies(forget_tol=100.0, confidence_margin=None)
    acc = assess_policies(Merged({1}), Merged(set()), pols, union)
    assert acc["met"] is True and acc["policies"][1]["criteria"]["forget_tol"] == 100.0


class Counting(Merged):
    """Merged, counting the rows it is asked about."""

    rows = 0

    def forward(self, x):
        self.rows += len(x)
        return super().forward(x)


def test_a_policy_judge_reads_the_base_once_and_judges_like_assess_policies():
    pols, union = _scripted_policies()
    base = Counting(set())
    judge = PolicyJudge(base, pols, union)
    read = base.rows
    assert read > 0
    for forgets in ({1, 2}, {1}, set()):
        assert judge(Merged(forgets)) == assess_policies(Merged(forgets), Merged(set()), pols, union)
    assert base.rows == read  # judging three models read the base no further


def test_retain_is_judged_on_the_rows_no_policy_forgets():
    pols, union = _scripted_policies()
    acc = assess_policies(Merged({1, 2}, retain_ok=False), Merged(set()), pols, union)
    assert acc["met"] is False and acc["retain"]["met"] is False and acc["retain"]["original"] == 100.0
    assert "retain" in acc["reason"]


class Flat(nn.Module):
    """A merged model's logits / 100: same argmax as `inner`, every output near uniform."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) / 100.0


def test_a_merge_that_flattens_retain_fails_selectivity_per_policy_and_for_the_union():
    pols, union = _scripted_policies()
    acc = assess_policies(Flat(Merged({1, 2})), Merged(set()), pols, union)
    assert acc["met"] is False
    for p in acc["policies"]:
        checks = {c["name"]: c["passed"] for c in p["checks"]}
        assert checks["forget_accuracy"] and checks["forget_confidence"] and checks["retain_accuracy"]
        assert checks["retain_confidence"] is False
        assert p["selectivity"]["retain_confidence_original"] == pytest.approx(95.0, abs=0.01)
    retain = {c["name"]: c for c in acc["retain"]["checks"]}
    assert retain["retain_accuracy"]["passed"] and not retain["retain_confidence"]["passed"]
    assert acc["retain"]["selectivity"]["routed"] == pytest.approx(100.0)
    assert "mean max-softmax on val_retain" in acc["reason"]


def test_control_from_meta_reads_the_run_settings_and_defaults_older_runs():
    cfg = control_from_meta({"unlearn_config": {"forget_tol": 2.0, "retain_drop": 0.5, "lr": 1e-3, "epochs": 3}})
    assert cfg.forget_tol == 2.0 and cfg.retain_drop == 0.5 and cfg.confidence_margin == 10.0
    assert control_from_meta({}) == ControlConfig()


# ---------------------------------------------------------------- the two criteria-aware methods
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model("small_cnn", K, 1, 16, width=4).eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    runs = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        runs.append({k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point()
                         and not k.endswith(("running_mean", "running_var")) else v.clone()) for k, v in base.items()})
    data = poisoned(make_tiny_split(n_train=48))
    return model, base, runs, data


def _build(model):
    def build(sd):
        m = copy.deepcopy(model)
        m.load_state_dict({k: v.to(m.state_dict()[k].dtype) for k, v in sd.items()})
        return m.eval()
    return build


def test_learned_coefficients_stay_in_bounds_and_only_scale_the_changes(tiny):
    model, base, runs, data = tiny
    ctx = RunContext(seed=0)
    method = MERGES.get("learned_coefficients")(granularity="run", sign_split=False, c_max=1.5, init=0.5,
                                                lr=50.0, steps=6, check_every=1, patience=0)
    out = method.merge(base, runs, None, ctx=ctx, data=data, build_model=_build(model),
                       policies=tiny_policies(data, 2))
    rec = ctx.log["learned_coefficients"]
    lam = torch.tensor(rec["coefficients"])  # (runs, groups, parts)
    assert lam.shape == (2, 1, 1) and bool(((lam >= 0) & (lam <= 1.5)).all())
    assert [c["step"] for c in rec["checks"]] == list(range(7)) and rec["chosen_step"] in range(7)
    for k, b in base.items():  # θ = θ0 + Σ λ_i τ_i exactly: the weights themselves were never trained
        if b.is_floating_point() and not k.endswith(("running_mean", "running_var")):
            want = b.double() + sum(float(lam[i, 0, 0]) * (runs[i][k].double() - b.double()) for i in range(2))
            torch.testing.assert_close(out[k].double(), want, rtol=0, atol=1e-5)
    assert float(coefficients(torch.tensor([-1e4, 1e4]), 1.5).min()) == 0.0
    assert float(coefficients(torch.tensor([1e4]), 1.5).max()) == 1.5


def test_learned_coefficients_keep_the_best_checked_state(tiny):
    model, base, runs, data = tiny
    ctx = RunContext(seed=0)
    MERGES.get("learned_coefficients")(steps=4, check_every=2).merge(
        base, runs, None, ctx=ctx, data=data, build_model=_build(model), policies=tiny_policies(data, 2))
    rec = ctx.log["learned_coefficients"]
    assert len(rec["groups"]) > 2 and rec["parts"] == ["agree", "conflict"]
    chosen = next(c for c in rec["checks"] if c["step"] == rec["chosen_step"])
    assert chosen["violation"] == min(c["violation"] for c in rec["checks"])
    lam = torch.tensor(rec["coefficients"])
    assert lam.shape[0] == 2 and bool(((lam >= 0) & (lam <= 2.0)).all())


def test_learned_coefficients_stop_patience_checks_after_a_state_that_meets(tiny, monkeypatch):
    """Every check meets, retain peaks at the second: the fit stops `patience` checks later and keeps the peak."""
    import medunlearn.merge.policies as pol

    model, base, runs, data = tiny
    retain = iter([90.0, 95.0, 94.0, 93.0, 92.0, 91.0, 90.0])
    monkeypatch.setattr(pol, "PolicyJudge", lambda *a, **k: lambda model: {
        "met": True, "policies": [], "retain": {"value": next(retain), "checks": []}})
    monkeypatch.setattr(pol, "violation_total", lambda acc: 0.0)
    ctx = RunContext(seed=0)
    MERGES.get("learned_coefficients")(steps=6, check_every=1, patience=2).merge(
        base, runs, None, ctx=ctx, data=data, build_model=_build(model), policies=tiny_policies(data, 2))
    rec = ctx.log["learned_coefficients"]
    assert [c["step"] for c in rec["checks"]] == [0, 1, 2, 3] and rec["steps_run"] == 3
    assert rec["chosen_step"] == 1


def test_an_equivalence_policy_is_fitted_to_its_own_run_and_a_suppression_policy_to_its_criteria(tiny):
    """The forget objective follows each policy's goal: distil the run (equivalence), CE to uniform (suppression)."""
    import math

    from medunlearn.merge.base import MergeEnv

    model, base, runs, data = tiny
    build = _build(model)
    suppress, equal = tiny_policies(data, 2)
    equal = dataclasses.replace(equal, goal="equivalence")
    env = MergeEnv(ctx=RunContext(seed=0), data=data, build_model=build, run_sds=runs, policies=[suppress, equal])
    terms = MERGES.get("learned_coefficients")(retain_weight=0.0)._terms(env, build(base))
    assert len(terms) == 2  # one forget term per policy, no retain term at weight 0
    run_1 = build(runs[1])

    def loss(term, net):  # a term is (weight, rows, loss of the logits on those rows)
        with torch.no_grad():
            return float(term[2](net.eval()(term[1])))

    assert loss(terms[1], run_1) < 1e-5 < loss(terms[1], build(base))  # KL to run 1: zero at run 1 itself
    assert loss(terms[0], build(runs[0])) >= math.log(K) - 1e-5  # CE to uniform: never below log K


def test_learned_coefficients_fit_on_train_rows_read_no_validation_row(tiny):
    from medunlearn.merge.base import MergeEnv

    model, base, runs, data = tiny
    no_val = dataclasses.replace(data, val_retain=Poison(), val_forget=Poison())
    env = MergeEnv(ctx=RunContext(seed=0), data=no_val, build_model=_build(model), run_sds=runs,
                   policies=tiny_policies(no_val, 2))
    terms = MERGES.get("learned_coefficients")(fit_on="train")._terms(env, _build(model)(base))
    net = _build(model)(runs[0])
    assert len(terms) == 3 and all(float(fn(net(x)).detach()) >= 0 for _, x, fn in terms)
    with pytest.raises(AssertionError, match="test rows were read"):  # the default fits on validation rows
        MERGES.get("learned_coefficients")()._terms(env, _build(model)(base))
    with pytest.raises(ConfigError, match="fit_on"):
        MERGES.get("learned_coefficients")(fit_on="test")


def test_sign_agreement():
    a, b = torch.tensor([1.0, -1.0, 0.0, 2.0]), torch.tensor([2.0, 1.0, -3.0, 0.0])
    assert sign_agreement([a, b]).tolist() == [True, False, True, True]


def test_criteria_aware_methods_need_policies_and_validate(tiny):
    model, base, runs, data = tiny
    for name in ("learned_coefficients", "merge_repair"):
        with pytest.raises(ConfigError, match="cohort"):
            MERGES.get(name)().merge(base, runs, None, data=data, build_model=_build(model))
    with pytest.raises(ConfigError, match="init"):
        MERGES.get("learned_coefficients")(init=2.0, c_max=2.0)
    with pytest.raises(ConfigError, match="another method"):
        MERGES.get("merge_repair")(merge="merge_repair")
    with pytest.raises(ConfigError, match='Did you mean "famr_retain"'):
        MERGES.get("merge_repair")(unlearner="famr_retian")


def test_merge_repair_runs_the_guarded_controller_on_the_union(tiny):
    model, base, runs, data = tiny
    ctx = RunContext(seed=0)
    pols = tiny_policies(data, 2)
    out = MERGES.get("merge_repair")(steps=3, merge="task_arithmetic").merge(
        base, runs, None, ctx=ctx, data=data, build_model=_build(model), policies=pols)
    log = ctx.log["merge_repair"]
    assert log["trace"][0]["phase"] == "original" and log["union_acceptance"]["budget"] == 3
    assert log["union_acceptance"]["judged_on"] == "validation"
    # per_policy (default): every policy's own forget checks are part of every checked state's verdict
    names = [c["name"] for c in log["union_acceptance"]["checks"]]
    assert all(f"{p.name}: forget_accuracy" in names for p in pols)
    union_only = RunContext(seed=0)
    MERGES.get("merge_repair")(steps=3, merge="task_arithmetic", per_policy=False).merge(
        base, runs, None, ctx=union_only, data=data, build_model=_build(model), policies=pols)
    assert not any(":" in c["name"] for c in union_only.log["merge_repair"]["union_acceptance"]["checks"])
    plain = MERGES.get("task_arithmetic")().merge(base, runs)
    zero = MERGES.get("merge_repair")(steps=0, merge="task_arithmetic").merge(
        base, runs, None, ctx=RunContext(), data=data, build_model=_build(model), policies=pols)
    assert all(torch.equal(zero[k], plain[k]) for k in base)  # no steps: exactly the first merge
    assert list(out) == list(base)
    mixed = [pols[0], dataclasses.replace(pols[1], goal="equivalence")]
    with pytest.raises(ConfigError, match="one goal"):
        MERGES.get("merge_repair")(steps=2).merge(base, runs, None, data=data, build_model=_build(model),
                                                  policies=mixed)


def test_merge_repair_reuses_a_first_merge_the_search_already_made_with_the_same_config(tiny):
    model, base, runs, data = tiny
    made = MERGES.get("ties")()
    marker = {k: v + 1 if v.is_floating_point() else v.clone() for k, v in base.items()}  # not what ties gives
    same = {"ties": (dataclasses.asdict(made.config), marker)}
    ctx = RunContext(seed=0)
    out = MERGES.get("merge_repair")(merge="ties", steps=0).merge(base, runs, None, ctx=ctx, data=data, done=same)
    assert all(torch.equal(out[k], marker[k]) for k in base)  # taken as it was made, not merged again
    other = {"ties": ({**dataclasses.asdict(made.config), "density": 0.5}, marker)}
    out = MERGES.get("merge_repair")(merge="ties", steps=0).merge(base, runs, None, data=data, done=other)
    assert all(torch.equal(out[k], made.merge(base, runs)[k]) for k in base)  # another config: merged afresh


def test_merge_repair_targets_the_remaining_classes_when_every_policy_removes_a_class():
    from types import SimpleNamespace

    from medunlearn.merge.merge_repair import union_control
    from medunlearn.unlearn.famr import FAMRConfig

    def policy(forget, retain):
        data = SimpleNamespace(train_forget=SimpleNamespace(labels=torch.tensor(forget)),
                               train_retain=SimpleNamespace(labels=torch.tensor(retain)))
        return Policy("p", "suppression", ControlConfig(), data)

    classes = [policy([0, 0], [2, 3]), policy([1], [2, 3])]
    assert union_control(classes, FAMRConfig, 0.0).support == "remaining"
    domains = [policy([0, 1], [0, 1, 2]), policy([1], [2, 3])]  # a domain keeps its classes in retain
    assert union_control(domains, FAMRConfig, 0.0).support == "all"


def test_selection_keeps_the_cheapest_candidate_that_meets_and_skips_inapplicable_ones():
    from medunlearn.merge.select import select_by

    pols, union = _scripted_policies()
    models = {"linear": Merged(set()), "ties": Merged({1}), "task_arithmetic": Merged({1, 2}),
              "learned_coefficients": Merged({1, 2})}
    called = []

    def merge_one(name):
        called.append(name)
        if name == "merge_repair":
            raise ConfigError("Expected policies with one goal for merge_repair, but got two.")
        return models[name], {"method": name}, torch.device("cpu")

    model, info, acc, sel = select_by(merge_one, Merged(set()), pols, union,
                                      ["merge_repair", "linear", "ties", "task_arithmetic", "learned_coefficients"])
    assert info["method"] == "task_arithmetic" and acc["met"] is True
    assert called == ["merge_repair", "linear", "ties", "task_arithmetic"]  # stops at the first that meets
    assert sel["candidates"][0]["reason"].startswith("skipped") and sel["candidates"][0]["violation"] is None
    assert "cheapest" in sel["why"] and "linear" in sel["why"]
    _, info, acc, sel = select_by(merge_one, Merged(set()), pols, union, ["linear", "ties"])
    assert info["method"] == "ties" and acc["met"] is False and "closest" in sel["why"]  # ties misses less
    with pytest.raises(ConfigError, match="Did you mean"):
        select_by(merge_one, Merged(set()), pols, union, ["lineer"])
