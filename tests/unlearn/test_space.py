"""Every registered method declares a search space next to its Config; its starting values lie inside it and
both ends of every range give a configuration the method accepts (plan() builds without a ConfigError)."""
from __future__ import annotations

import copy

import pytest

from medunlearn.errors import ConfigError
from medunlearn.runtime import RunContext
from medunlearn.unlearn import METHODS
from medunlearn.unlearn.base import apply_overrides
from medunlearn.unlearn.space import Choice, Float, Int, check_space, space_to_dict
from tests.unlearn.conftest import untrained_teacher


def _inside(p, v) -> bool:
    return v in p.options if isinstance(p, Choice) else p.low <= v <= p.high


def _ends(space, end: int) -> dict:
    return {k: (p.options[min(end, len(p.options) - 1)] if isinstance(p, Choice) else (p.low, p.high)[end])
            for k, p in space.items()}


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_a_valid_space_containing_its_defaults(name: str) -> None:
    cls = METHODS.get(name)
    assert cls.search_space, f"{name} declares no search space"
    check_space(cls.Config, cls.search_space)
    cfg = cls.Config()
    for key, p in cls.search_space.items():
        assert _inside(p, getattr(cfg, key)), f"{name}.{key} default {getattr(cfg, key)} outside {p.describe()}"
    assert set(space_to_dict(cls.search_space)) == set(cls.search_space)


@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("end", [0, 1])
def test_both_ends_of_every_space_build_a_plan(name: str, end: int, trained_tiny) -> None:
    model, split = trained_tiny
    cls = METHODS.get(name)
    cfg = apply_overrides(cls.Config(), _ends(cls.search_space, end))
    method = cls(cfg)
    if name == "ref_distill":  # distils toward reference teachers (from --audit; test_ref_distill: none = error)
        method.teachers = untrained_teacher(split)
    plan = method.plan(copy.deepcopy(model), copy.deepcopy(model).eval(), split, RunContext(seed=0), "suppression")
    assert plan.budget >= 1


def test_bad_spaces_are_refused() -> None:
    cfg_cls = METHODS.get("psg").Config
    with pytest.raises(ConfigError, match="fields"):
        check_space(cfg_cls, {"learning_rate": Float(0.1, 1.0)})
    with pytest.raises(ConfigError, match="low < high"):
        check_space(cfg_cls, {"lr": Float(1.0, 0.1)})
    with pytest.raises(ConfigError, match="positive lower bound"):
        check_space(cfg_cls, {"lr": Float(0.0, 0.1, log=True)})
    with pytest.raises(ConfigError, match="low < high"):
        check_space(cfg_cls, {"inner_steps": Int(3, 3)})
    with pytest.raises(ConfigError, match="at least one option"):
        check_space(cfg_cls, {"target": Choice()})
