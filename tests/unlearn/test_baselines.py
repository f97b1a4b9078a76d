"""Behaviour of the baseline unlearners and their shared loop pieces (unlearn/streams.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medunlearn.errors import DivergenceError
from medunlearn.models.zoo import parameter_subset
from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.l1_sparse import l1_norm, l1_weight
from medunlearn.unlearn.neggrad import neggrad_loss
from medunlearn.unlearn.salun import forget_gradients, saliency_mask
from medunlearn.unlearn.scrub import scrub_schedule
from medunlearn.unlearn.streams import kl_teacher_student, random_wrong_labels
from tests.unlearn.conftest import run_plan

MINE = ["cf_k", "eu_k", "finetune", "l1_sparse", "neggrad", "random_labels", "salun", "scrub"]


def _changed(a: torch.nn.Module, b: torch.nn.Module) -> set[str]:
    sa, sb = a.state_dict(), b.state_dict()
    return {k for k in sa if not torch.equal(sa[k], sb[k])}


def test_random_wrong_labels_never_true_and_cover_all_other_classes():
    y = torch.arange(5).repeat(400)
    new = random_wrong_labels(y, 5, torch.Generator().manual_seed(0))
    assert not (new == y).any() and new.min() == 0 and new.max() == 4
    assert set(new[y == 2].tolist()) == {0, 1, 3, 4}
    assert torch.equal(new, random_wrong_labels(y, 5, torch.Generator().manual_seed(0)))


def test_neggrad_loss_value_and_per_sample_clip():
    forget = torch.tensor([1.0, 9.0], requires_grad=True)
    loss = neggrad_loss(torch.tensor(2.0), forget, alpha=0.8, clip=5.0)
    assert loss.item() == pytest.approx(0.8 * 2.0 - 0.2 * (1.0 + 5.0) / 2)
    loss.backward()
    assert forget.grad.tolist() == pytest.approx([-0.1, 0.0])  # the sample past the clip is not pushed further


def test_saliency_mask_keeps_the_top_fraction_over_all_tensors():
    grads = [torch.tensor([0.1, -5.0, 0.2]), torch.tensor([[3.0, -0.01], [0.0, 4.0]])]
    masks = saliency_mask(grads, 3 / 7)
    assert [m.tolist() for m in masks] == [[False, True, False], [[True, False], [False, True]]]


def test_kl_teacher_student_zero_for_equal_logits_and_matches_definition():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    assert kl_teacher_student(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    p = F.softmax(t / 2, 1)
    manual = (p * (p.log() - F.log_softmax(s / 2, 1))).sum(1).mean() * 4
    assert kl_teacher_student(s, t, 2.0).item() == pytest.approx(manual.item(), rel=1e-5)


def test_l1_weight_decays_linearly_and_norm():
    assert [l1_weight(1e-3, t, 4) for t in (0, 2, 4)] == pytest.approx([1e-3, 5e-4, 0.0])
    assert l1_norm([torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([-3.0]))]) == 6.0


def test_scrub_schedule_runs_max_passes_only_in_the_first_msteps_rounds():
    plan = scrub_schedule(rounds=3, msteps=2, forget_steps=2, retain_steps=3)
    assert plan == [True, True, False, False, False] * 2 + [False] * 3


def test_non_finite_loss_raises_divergence_error(trained_tiny):
    model, split = trained_tiny
    with pytest.raises(DivergenceError, match="neggrad diverged: non-finite loss"):
        METHODS.get("neggrad")(batch_size=16, lr=float("1e30"), alpha=0.0).unlearn(model, split, RunContext())


def test_salun_moves_only_masked_weights(trained_tiny):
    model, split = trained_tiny
    out, _ = run_plan("salun", model, split, batch_size=16, sparsity=0.2)
    params = [p for _, p in parameter_subset(model, "all")]
    masks = saliency_mask(forget_gradients(model, params, split.train_forget, 16, torch.device("cpu")), 0.2)
    moved = [(p_out.detach() != p.detach()) for p, p_out in zip(params, out.parameters())]
    assert sum(int(m.sum()) for m in moved) > 0
    assert all(not (mv & ~mk).any() for mv, mk in zip(moved, masks))


@pytest.mark.parametrize("name", ["cf_k", "eu_k"])
def test_k_methods_change_only_the_last_k_blocks(name, trained_tiny):
    model, split = trained_tiny
    out, _ = run_plan(name, model, split, batch_size=16, k=2)
    trainable = tuple(f"features.{b}." if b != "head" else "head." for b in model.block_names()[-2:])
    changed = _changed(model, out)
    assert changed and all(k.startswith(trainable) for k in changed)  # frozen blocks keep weights AND BN stats
    assert any(k.startswith("head.") for k in changed)


def test_finetune_head_subset_changes_only_the_head(trained_tiny):
    model, split = trained_tiny
    out, _ = run_plan("finetune", model, split, batch_size=16, params="head")
    assert _changed(model, out) and all(k.startswith("head.") for k in _changed(model, out))


def test_l1_term_shrinks_the_weights(trained_tiny):
    model, split = trained_tiny
    plain, _ = run_plan("l1_sparse", model, split, batch_size=16, alpha=0.0)
    sparse, _ = run_plan("l1_sparse", model, split, batch_size=16, alpha=5e-3)
    assert l1_norm(list(sparse.parameters())) < 0.97 * l1_norm(list(plain.parameters()))


@pytest.mark.parametrize("name", MINE)
def test_controller_stops_at_the_first_met_check_with_patience_zero(name, trained_tiny):
    """Criteria that every state meets (a 100-point band, no confidence or retain demand): the controller
    returns a met state at once and stops after its first method check (EU-k: after its warm-up pass)."""
    model, split = trained_tiny
    out = METHODS.get(name)(batch_size=16, forget_tol=100.0, confidence_margin=None, retain_drop=100.0, patience=0,
                            check_every=1).run(model, split, RunContext(seed=0), "suppression")
    acc = out.acceptance
    assert acc["met"] and acc["steps_run"] < acc["budget"]
    assert acc["reason"].startswith("criteria met")
    warmup = 0 if name != "eu_k" else acc["steps_run"] - 1
    assert acc["steps_run"] == warmup + 1
