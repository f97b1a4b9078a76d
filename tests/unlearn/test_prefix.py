"""Frozen-prefix caching gives the same model as the uncached run, and leaves the caller's model alone."""
from __future__ import annotations

import copy

import pytest
import torch

from medunlearn.models.zoo import parameter_subset
from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.prefix import EncodedRows, encode_split, frozen_prefix_length, split_model


def _run(model, split, **cfg):
    return METHODS.get(cfg.pop("method", "famr"))(**cfg).run(model, split, RunContext(seed=0))


@pytest.mark.parametrize("method,params", [("famr", "last-2"), ("famr_retain", "head")])
def test_cached_run_equals_uncached(trained_tiny, method, params):
    model, split = trained_tiny
    before = copy.deepcopy(model.state_dict())
    cfg = dict(method=method, params=params, lr=1e-3, epochs=2, check_every=2)
    plain, cached = _run(model, split, cache_prefix=False, **cfg), _run(model, split, cache_prefix=True, **cfg)
    assert [r["step"] for r in plain.trace] == [r["step"] for r in cached.trace]
    for a, b in zip(plain.trace, cached.trace):
        assert a["forget_expected"] == pytest.approx(b["forget_expected"], abs=1e-3)
        assert a["retain_acc"] == pytest.approx(b["retain_acc"], abs=1e-3)
    sa, sb = plain.model.state_dict(), cached.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(sb[k], before[k]) for k in sb if k.startswith("head")), "the head did not move"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"caller's model changed at {k}"
    # the whole model comes back, trainable and in eval mode, with frozen blocks untouched
    assert all(p.requires_grad for p in cached.model.parameters()) and not cached.model.training
    cut = frozen_prefix_length(model, {n for n, _ in parameter_subset(model, params)})
    frozen = tuple(f"features.{name}." for name, _ in list(model.features.named_children())[:cut])
    assert cut > 0 and all(torch.equal(sb[k], before[k]) for k in sb if k.startswith(frozen))


def test_prefix_split_and_encoding(trained_tiny):
    model, split = trained_tiny
    work = copy.deepcopy(model)
    names = {n for n, _ in parameter_subset(work, "last-2")}
    cut = frozen_prefix_length(work, names)
    assert 0 < cut < len(work.features)
    prefix, suffix = split_model(work, cut)
    x = split.val_retain.images[:8]
    with torch.no_grad():
        torch.testing.assert_close(suffix(prefix(x)), work(x))
    assert all(p is q for p, q in zip(suffix.head.parameters(), work.head.parameters()))
    enc = encode_split(prefix, split, torch.device("cpu"))
    assert len(enc.test_forget) == 0 and len(enc.test_retain) == 0  # a run never reads test rows
    assert len(enc.train_forget) == len(split.train_forget) and torch.equal(enc.val_forget.labels,
                                                                              split.val_forget.labels)
    assert frozen_prefix_length(work, {n for n, _ in work.named_parameters()}) <= 1  # "all": nothing to cache


def test_a_cached_run_under_tune_leaves_the_sealed_test_rows_unread(trained_tiny):
    from medunlearn.tune.sealed import Sealed, validation_only

    model, split = trained_tiny  # tune runs famr_budget (auto's first domain method) on its last blocks, cached
    out = _run(model, validation_only(split), method="famr_budget", params="last-2", steps=4, check_every=2)
    assert out.model is not None and len(out.trace) >= 2
    enc = encode_split(split_model(copy.deepcopy(model), 1)[0], validation_only(split), torch.device("cpu"))
    assert isinstance(enc.test_forget, Sealed) and isinstance(enc.test_retain, Sealed)


def test_encoded_rows_encode_on_first_read(trained_tiny):
    model, split = trained_tiny
    work = copy.deepcopy(model)
    prefix, _ = split_model(work, frozen_prefix_length(work, {n for n, _ in parameter_subset(work, "head")}))
    rows = EncodedRows(split.train_retain, prefix, torch.device("cpu"))
    batch = next(iter(rows.loader(16, shuffle=True, seed=3)))
    assert int(rows._done.sum()) == 16  # only the drawn rows were encoded
    with torch.no_grad():
        want = prefix(split.train_retain.images)
    order = next(iter(split.train_retain.loader(16, shuffle=True, seed=3)))["label"]
    assert torch.equal(batch["label"], order)  # same order as the raw set's loader
    sub = rows.subset([0, 5, 7])
    torch.testing.assert_close(sub.images, want[[0, 5, 7]])
    torch.testing.assert_close(rows.images, want)
    assert len(rows) == len(split.train_retain) and bool(rows._done.all())


def test_pass_through_a_part_counts_its_flop_share(trained_tiny):
    from medunlearn.unlearn.cost import WEIGHT_ATTR, counting, flop_share

    model, split = trained_tiny
    work = copy.deepcopy(model)
    cut = frozen_prefix_length(work, {n for n, _ in parameter_subset(work, "last-2")})
    x = split.val_retain.images[:8]
    prefix, suffix = split_model(work, cut, x[:1])
    share = getattr(suffix, WEIGHT_ATTR)
    assert 0.0 < share < 1.0 and getattr(prefix, WEIGHT_ATTR) == pytest.approx(1.0 - share)
    assert not hasattr(work, WEIGHT_ATTR)  # the whole model still counts whole passes
    assert flop_share(work, x[:1], work, x[:1]) == 1.0
    with torch.no_grad(), counting() as counter:
        suffix(prefix(x))
    assert counter.total() == {"grad": 0, "forward": 8}  # prefix + suffix = one whole pass per image
    with torch.no_grad(), counting() as counter:
        suffix(prefix(x))
        suffix(prefix(x)[:4])  # the prefix on 8 rows, the suffix on 4: each at its share
    expected = 8 + 8 * (1 - share) + 4 * share
    assert counter.total()["forward"] == round(expected)


def test_cached_run_is_charged_what_it_computes(trained_tiny):
    model, split = trained_tiny
    cfg = dict(params="last-2", lr=1e-3, epochs=2, check_every=2)
    plain, cached = _run(model, split, cache_prefix=False, **cfg), _run(model, split, cache_prefix=True, **cfg)
    p, c = plain.acceptance["cost"], cached.acceptance["cost"]
    assert c["forward_equivalents"] < p["forward_equivalents"]  # the frozen blocks run once per row, not per pass
    # the same steps on the same batches: the cached method phase is the uncached one at the suffix's FLOP share
    work = copy.deepcopy(model)
    cut = frozen_prefix_length(work, {n for n, _ in parameter_subset(work, "last-2")})
    from medunlearn.unlearn.cost import WEIGHT_ATTR

    share = getattr(split_model(work, cut, split.train_forget.images[:1])[1], WEIGHT_ATTR)
    assert c["phases"]["method"]["grad"] == pytest.approx(share * p["phases"]["method"]["grad"], abs=1.0)


def test_take_encodes_only_the_rows_asked_for(trained_tiny):
    model, split = trained_tiny
    work = copy.deepcopy(model)
    prefix, _ = split_model(work, frozen_prefix_length(work, {n for n, _ in parameter_subset(work, "head")}))
    rows = EncodedRows(split.train_retain, prefix, torch.device("cpu"))
    got = rows.take(torch.tensor([3, 1, 3]))
    assert int(rows._done.sum()) == 2  # a method step's batch costs its rows, not the archive (issue 31: flat cost)
    with torch.no_grad():
        torch.testing.assert_close(got, prefix(split.train_retain.images[[3, 1, 3]]))
    torch.testing.assert_close(split.train_retain.take(torch.tensor([2])), split.train_retain.images[[2]])
