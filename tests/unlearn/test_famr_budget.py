"""famr_budget (issue 31): it forgets on tiny data, its cost counters add up, and its cost does not grow with D_f."""
from __future__ import annotations

import copy
import dataclasses

import pytest

from medunlearn.data.imageset import ImageSet
from medunlearn.errors import ConfigError
from medunlearn.evaluate.functional import accuracy, expected_accuracy, predict
from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.cost import counting

SMALL = dict(batch_size=16, lr=3e-3, steps=30, check_every=5, sample_rows=64, distil_rows=96, cert_rows=64, max_eval=64,
             params="all", budget=5.0)  # the whole model (uncached): whole-pass counts


def _expected(model, part) -> float:
    return expected_accuracy(predict(model, part.images, num_classes=3), part.labels)


def _acc(model, part) -> float:
    return accuracy(predict(model, part.images, num_classes=3).argmax(1), part.labels)


def test_it_forgets_on_tiny_data_and_its_cost_counters_add_up(trained_tiny):
    model, split = trained_tiny
    out = METHODS.get("famr_budget")(**SMALL, selectivity_margin=None).run(model, split, RunContext(seed=0))
    fa0, fa = _expected(model, split.train_forget), _expected(out.model, split.train_forget)
    ra0, ra = _acc(model, split.train_retain), _acc(out.model, split.train_retain)
    assert fa <= fa0 - 10.0, f"forget expected accuracy {fa0:.1f} -> {fa:.1f}"
    assert ra >= ra0 - 15.0, f"retain accuracy {ra0:.1f} -> {ra:.1f}"
    acc = out.acceptance
    cost, ph = acc["cost"], acc["cost"]["phases"]
    for kind in ("grad", "forward"):
        assert sum(p[kind] for p in ph.values()) == cost["total"][kind]
    assert cost["forward_equivalents"] == cost["total"]["forward"] + 3 * cost["total"]["grad"]
    # a step: one forget batch and one retain batch with a gradient; the teacher was read once, in setup
    assert ph["method"] == {"grad": acc["steps_run"] * 2 * 16, "forward": 0}
    # setup: L_f(θ0) and ∇L_f(θ0) on the 64-row forget sample, the teacher on the 96-row retain pool
    assert ph["setup"] == {"grad": 64, "forward": 64 + 96}
    assert acc["steps_run"] <= SMALL["steps"]


def test_its_budget_and_setup_do_not_grow_with_the_forget_set(trained_tiny):
    model, split = trained_tiny
    bigger = dataclasses.replace(split, train_forget=ImageSet.concat([split.train_forget] * 4))

    def planned(data):
        ctx = RunContext(seed=0)
        with counting() as counter:
            plan = METHODS.get("famr_budget")(**SMALL).plan(copy.deepcopy(model), copy.deepcopy(model).eval(), data,
                                                            ctx, "suppression")
        return plan.budget, counter.total()

    assert planned(split) == planned(bigger) == (30, {"grad": 64, "forward": 64 + 96})


def test_it_refuses_the_closed_form_solvers():
    with pytest.raises(ConfigError, match="iterative"):
        METHODS.get("famr_budget")(solver="one_step").plan(None, None, None, None, "suppression")


@pytest.mark.parametrize("field", ["steps", "sample_rows", "distil_rows"])
def test_its_fixed_sizes_are_at_least_one(field) -> None:
    cls = METHODS.get("famr_budget")
    with pytest.raises(ConfigError, match=f"{field} >= 1"):
        cls(cls.Config(**{field: 0}))
