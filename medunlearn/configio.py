"""Reading YAML configs safely (yaml.safe_load only: no tags, no _target_, no code) and --set overrides."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from medunlearn.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
UNLEARN_CONFIGS = REPO_CONFIGS / "unlearn"
CONTROLLER_YAML = "controller.yaml"  # in UNLEARN_CONFIGS: the fields every method shares


def yaml_problem(exc: BaseException) -> str:
    """One line for a YAML read error: what is wrong and where ("line 3, column 7: ...").

    A refused Python tag (!!python/object ...) is named as such; a syntax error gets its own problem text.
    """
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(problem):
        return f"{where}{problem} (tags such as !!python/object are refused: rule and config files are plain data)"
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and cmark is not None:
        return f"{where}{problem} ({context} that starts at line {cmark.line + 1}, column {cmark.column + 1})"
    return f"{where}{context + ': ' if context else ''}{problem}"


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Load a YAML file that must be a mapping. Python tags and other unsafe constructs are refused."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Expected a YAML config file at {path}, but it does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Expected plain YAML in {path}, but {yaml_problem(exc)}.") from exc
    except RecursionError as exc:
        raise ConfigError(f"Expected plain YAML in {path}, but it is nested too deeply to read.") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Expected a mapping of key: value in {path}, but got {type(data).__name__}.")
    return data


def parse_set_options(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """Parse ['lr=0.01', 'params=head'] into a dict; values are parsed as YAML scalars (safe)."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"Expected --set KEY=VALUE, but got {item!r}.")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"Expected --set KEY=VALUE with a non-empty KEY, but got {item!r}.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) and not isinstance(value, list):
            raise ConfigError(f"Expected a scalar for --set {key}, but got a mapping.")
        out[key] = value
    return out


def shipped_method_yamls(method_cls: type) -> list[Path]:
    """The repository's YAMLs of a method, in the order they apply: configs/unlearn/controller.yaml (the controller
    and criteria fields every method shares), then configs/unlearn/<name>.yaml (its own fields). Both hold exactly
    the dataclass defaults (tests/unlearn/test_contract.py); a file that is not there (an installed wheel carries
    no configs/) is skipped, which gives the same values."""
    name = getattr(method_cls, "name", None) or method_cls.__name__
    return [p for p in (UNLEARN_CONFIGS / CONTROLLER_YAML, UNLEARN_CONFIGS / f"{name}.yaml") if p.is_file()]


def method_config(method_cls: type, config_path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """Resolve a method's hyperparameters: dataclass defaults <- configs/unlearn/controller.yaml <-
    configs/unlearn/<method>.yaml <- the YAML file `config_path` (--config) <- --set `overrides`."""
    from medunlearn.unlearn.base import apply_overrides

    cfg = method_cls.Config()
    fields = {f.name for f in dataclasses.fields(cfg)}
    for path in shipped_method_yamls(method_cls):
        values = load_yaml_mapping(path)
        if path.name == CONTROLLER_YAML:  # a Config without the controller's fields takes none of them
            values = {k: v for k, v in values.items() if k in fields}
        cfg = apply_overrides(cfg, values)
    if config_path is not None:
        cfg = apply_overrides(cfg, load_yaml_mapping(config_path))
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    from medunlearn.bounds import check_config_bounds

    check_config_bounds(cfg, getattr(method_cls, "name", None) or method_cls.__name__)
    return cfg
