"""ref_distill: teachers disjoint from auditors, forget outputs move toward the teachers', clear error without them."""
from __future__ import annotations

import copy

import pytest
import torch

from medunlearn.audit.teachers import auditor_indices, check_disjoint, load_teachers, teacher_indices
from medunlearn.errors import ConfigError
from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.base import release
from tests.unlearn.conftest import untrained_teacher


def test_teachers_and_auditors_are_disjoint():
    teach = teacher_indices(8)
    assert teach == [4, 5, 6, 7] and auditor_indices(8, teach) == [0, 1, 2, 3]
    check_disjoint(teach, auditor_indices(8, teach))
    with pytest.raises(ConfigError, match="left to audit"):
        auditor_indices(3, teacher_indices(3))  # one auditor: the rows it saw would have no OUT model
    with pytest.raises(ConfigError, match="disjoint"):
        check_disjoint([4, 5], [0, 5])
    with pytest.raises(ConfigError, match="left to audit"):
        auditor_indices(2, [0, 1])


def test_forget_audit_scores_with_the_non_teachers_only():
    from medunlearn.audit.judge import ScoreCache
    from medunlearn.workflow.steps_audit import auditor_cache

    member = torch.arange(6)[:, None] * torch.ones(6, 3)  # row i marks reference i
    cache = ScoreCache(["a", "b", "c"], member > 2, member, torch.zeros(3), member > 4)
    assert auditor_cache(cache, teachers=False) is cache
    audit = auditor_cache(cache, teachers=True)
    assert audit.ref_phi[:, 0].tolist() == [0, 1, 2] and audit.member.shape == (3, 3)
    with pytest.raises(ConfigError, match="left to audit"):
        auditor_cache(ScoreCache(["a"], member[:1, :1] > 0, member[:1, :1], torch.zeros(1), member[:1, :1] > 0), True)


def _kl(model, teachers, s):
    q, _ = teachers.targets(s, torch.device("cpu"), 1.0)
    with torch.no_grad():
        logp = torch.log_softmax(model.eval()(s.images), 1)
    return float(torch.nn.functional.kl_div(logp, q, reduction="batchmean"))


def test_forget_outputs_move_toward_the_teachers(trained_tiny):
    model, split = trained_tiny
    teachers = untrained_teacher(split)
    method = METHODS.get("ref_distill")(batch_size=16, epochs=3, lr=0.01)
    method.teachers = teachers
    work = copy.deepcopy(model)
    ctx = RunContext(seed=0)
    plan = method.plan(work, copy.deepcopy(model).eval(), split, ctx, "equivalence")
    for t in range(1, plan.budget + 1):
        plan.update(t)
    before, after = _kl(model, teachers, split.train_forget), _kl(release(work), teachers, split.train_forget)
    assert after < 0.5 * before


def test_missing_teachers_or_audit_folder_is_one_clear_error(trained_tiny, tmp_path):
    model, split = trained_tiny
    with pytest.raises(ConfigError, match="--audit"):
        METHODS.get("ref_distill")().plan(copy.deepcopy(model), model, split, RunContext(seed=0), "equivalence")
    with pytest.raises(ConfigError, match="audit prepare"):
        load_teachers(tmp_path / "no_such_audit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="audit prepare"):
        load_teachers(tmp_path / "empty")
    small = tmp_path / "k1"
    small.mkdir()
    (small / "manifest.json").write_text('{"k": 1}')
    (small / "membership.json").write_text('{"models": [{"members": []}]}')
    with pytest.raises(ConfigError, match="left to audit"):
        load_teachers(small)
