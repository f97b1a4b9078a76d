"""Contract tests over EVERY registered unlearner (a new method is covered by registering it).

The behavioural check runs on the tiny device-forgetting problem (`trained_tiny`: small_cnn, 16 px, 3 classes,
forget set = device ScannerX, 60 forget / 180 retain rows). All methods get the same override, batch_size=16,
so the tiny sets give several steps per pass; every other hyperparameter is the method's default.
Tolerances (the same for every method): under the suppression goal, forget accuracy (train_forget) must fall
by at least FA_DROP points and retain accuracy (train_retain) must stay within RA_TOL points of the original.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from medunlearn.configio import method_config
from medunlearn.errors import ConfigError
from medunlearn.evaluate.functional import accuracy, expected_accuracy, predict
from medunlearn.models.zoo import Classifier
from medunlearn.runtime import RunContext
from medunlearn.unlearn import GOALS, METHODS
from medunlearn.unlearn.controller import ControlConfig
from tests.unlearn.conftest import untrained_teacher

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "unlearn"
TINY = {"batch_size": 16}
# The structural contracts (a new model, the input untouched, determinism) do not depend on how far a run gets, so
# they run on a short budget: at most SHORT_EPOCHS passes (8 steps of PSG / FAMR on the tiny forget set, which still
# cross checks, repairs and backtracks). The behavioural check below runs every method at its default budget.
SHORT_EPOCHS = 2.0
FA_DROP = 10.0  # percentage points the forget expected accuracy (mean true-label probability) must fall
RA_TOL = 15.0  # percentage points the retain accuracy may fall at most

# Methods that cannot meet the suppression check on this problem, and why. The forget domain (ScannerX) differs
# from the retain domains only by an intensity offset and a marker stripe, so it shares every class feature.
_RETAIN_ONLY = ("never sees the forget set; when the forget domain shares the retain domains' class features, "
                "fitting D_r keeps forget accuracy high (docs/background.md table B: fine-tune FA 99.0 -> 96.8)")
CANNOT_SUPPRESS = {
    "finetune": _RETAIN_ONLY,
    "l1_sparse": _RETAIN_ONLY,
    "cf_k": _RETAIN_ONLY,
}  # eu_k left this list when (a) began reading expected accuracy: its re-initialised blocks start uncertain on
#   the forget domain and the controller keeps such a state (top-1 there stays high: the features are shared)


def _short(name: str) -> dict:
    return {"epochs": min(METHODS.get(name).Config().epochs, SHORT_EPOCHS)}


def _unlearn(name: str, model: torch.nn.Module, split, goal: str, seed: int = 0, **overrides):
    ctx = RunContext(seed=seed)
    method = METHODS.get(name)(**{**TINY, **overrides})
    if name == "ref_distill":  # needs reference teachers (from --audit): one untrained model that saw no row
        method.teachers = untrained_teacher(split)
    out = method.unlearn(model, split, ctx, goal)
    return out, ctx


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _acc(model: torch.nn.Module, images) -> float:
    return accuracy(predict(model, images.images, num_classes=3), images.labels)


def _expected(model: torch.nn.Module, images) -> float:  # criterion (a)'s measure on a domain
    return expected_accuracy(predict(model, images.images, num_classes=3), images.labels)


@pytest.mark.parametrize("goal", GOALS)
@pytest.mark.parametrize("name", METHODS.names())
def test_returns_new_classifier_of_same_architecture(name, goal, trained_tiny):
    model, split = trained_tiny
    out, _ = _unlearn(name, model, split, goal, **_short(name))
    assert isinstance(out, Classifier) and out is not model
    assert {k: v.shape for k, v in out.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert out.arch == model.arch


@pytest.mark.parametrize("goal", GOALS)
@pytest.mark.parametrize("name", METHODS.names())
def test_leaves_input_model_untouched(name, goal, trained_tiny):
    model = copy.deepcopy(trained_tiny[0]).train()  # train mode: a method must not flip BN layers of its input
    before, flags = _state(model), [(m.training, p.requires_grad) for m, p in zip(model.modules(), model.parameters())]
    _unlearn(name, model, trained_tiny[1], goal, **_short(name))
    after = model.state_dict()
    for key, value in before.items():  # parameters and BatchNorm buffers (running stats, num_batches_tracked)
        assert torch.equal(after[key], value), f"{name} modified the input model's {key}"
    assert [(m.training, p.requires_grad) for m, p in zip(model.modules(), model.parameters())] == flags


@pytest.mark.parametrize("goal", GOALS)
@pytest.mark.parametrize("name", METHODS.names())
def test_deterministic_for_a_seed(name, goal, trained_tiny):
    model, split = trained_tiny
    a, _ = _unlearn(name, model, split, goal, seed=3, **_short(name))
    b, _ = _unlearn(name, model, split, goal, seed=3, **_short(name))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), f"{name} gave different weights for the same seed"


@pytest.mark.parametrize("name", METHODS.names())
def test_suppression_lowers_forget_accuracy_and_keeps_retain(name, trained_tiny, request):
    if name in CANNOT_SUPPRESS:
        request.applymarker(pytest.mark.xfail(reason=CANNOT_SUPPRESS[name], strict=True))
    model, split = trained_tiny
    fa0, ra0 = _expected(model, split.train_forget), _acc(model, split.train_retain)
    # (d) off: this test is about the step's mechanics (does it move the forget domain at all); with (d) on, most
    # methods cannot move this tiny cohort's forget domain without flattening retain, and the controller then
    # returns a barely-moved state (tests/unlearn/test_selectivity.py checks (d) itself)
    out, _ = _unlearn(name, model, split, "suppression", selectivity_margin=None)
    fa, ra = _expected(out, split.train_forget), _acc(out, split.train_retain)
    assert fa <= fa0 - FA_DROP, f"{name}: forget expected accuracy {fa0:.1f} -> {fa:.1f}, expected a drop of >= {FA_DROP}"
    assert ra >= ra0 - RA_TOL, f"{name}: retain accuracy {ra0:.1f} -> {ra:.1f}, expected a drop of <= {RA_TOL}"


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _assert_yaml_holds_the_defaults(path, defaults: dict) -> dict:
    assert path.is_file(), f"missing {path}"
    loaded = yaml.safe_load(path.read_text())
    assert set(loaded) == set(defaults), f"{path.name}: {sorted(set(loaded) ^ set(defaults))}"
    for key, value in defaults.items():
        same_type = type(loaded[key]) is type(value) or (type(value) is float and type(loaded[key]) is int)
        assert loaded[key] == value and same_type, f"{path.name} {key}: {loaded[key]!r}, default {value!r}"
    return loaded


CONTROL_DEFAULTS = {f.name: _plain(getattr(ControlConfig(), f.name)) for f in dataclasses.fields(ControlConfig)}


def test_controller_yaml_has_exactly_the_control_config_defaults():
    _assert_yaml_holds_the_defaults(CONFIG_DIR / "controller.yaml", CONTROL_DEFAULTS)


@pytest.mark.parametrize("name", METHODS.names())
def test_config_yaml_has_exactly_the_dataclass_defaults(name):
    """A method's YAML holds its own fields (and any controller field whose default it changes); controller.yaml
    the rest. Together they give the dataclass defaults, and so does method_config with no --config or --set."""
    cfg = METHODS.get(name).Config()
    defaults = {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    own = {k: v for k, v in defaults.items() if k not in CONTROL_DEFAULTS or CONTROL_DEFAULTS[k] != v}
    loaded = _assert_yaml_holds_the_defaults(CONFIG_DIR / f"{name}.yaml", own)
    assert METHODS.get(name)(**{**CONTROL_DEFAULTS, **loaded}).config == cfg
    assert method_config(METHODS.get(name)) == cfg


def test_method_config_resolution_order(tmp_path, monkeypatch):
    """defaults <- controller.yaml <- <method>.yaml <- --config <- --set; a missing shipped YAML is skipped."""
    import medunlearn.configio as configio

    monkeypatch.setattr(configio, "UNLEARN_CONFIGS", tmp_path)
    cls = METHODS.get("psg")
    assert method_config(cls) == cls.Config()  # neither YAML there (an installed wheel): the defaults
    (tmp_path / "controller.yaml").write_text("patience: 5\nmax_eval: 100\nbootstrap: 50\nrepair_steps: 9\n")
    (tmp_path / "psg.yaml").write_text("lr: 0.003\nmax_eval: 200\nbootstrap: 60\nrepair_steps: 8\n")
    (tmp_path / "run.yaml").write_text("bootstrap: 70\nrepair_steps: 7\n")
    cfg = method_config(cls, tmp_path / "run.yaml", {"repair_steps": "6"})
    assert (cfg.patience, cfg.max_eval, cfg.lr, cfg.bootstrap, cfg.repair_steps) == (5, 200, 0.003, 70, 6)
    assert cfg.epochs == cls.Config().epochs


@pytest.mark.parametrize("name", METHODS.names())
def test_name_and_summary(name):
    cls = METHODS.get(name)
    assert cls.name == name
    assert isinstance(cls.summary, str) and cls.summary.strip() and "\n" not in cls.summary


@pytest.mark.parametrize("name", METHODS.names())
def test_unknown_override_raises_config_error_with_suggestion(name):
    with pytest.raises(ConfigError, match='Did you mean "epochs"'):
        METHODS.get(name)(epoch=2)
    with pytest.raises(ConfigError, match="Expected a number for lr"):
        METHODS.get(name)(lr="fast")


@pytest.mark.parametrize("name", METHODS.names())
def test_unknown_goal_raises_config_error(name, trained_tiny):
    model, split = trained_tiny
    with pytest.raises(ConfigError, match='Did you mean "suppression"'):
        METHODS.get(name)().unlearn(model, split, RunContext(seed=0), goal="supression")
