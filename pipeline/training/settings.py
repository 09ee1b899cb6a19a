"""Sweep settings: a grid of head settings from `--param` options or a TOML file, one setting
applied to a FitConfig, and the best written back as a config file `fit --config` reads.
Names are the settings' own, declared with their fields (pipeline/config.py), so a setting
reads the same on the command line, in sweep.csv and in the config file."""

from __future__ import annotations

import itertools
import tomllib
import typing
from dataclasses import fields
from pathlib import Path

from pipeline.config import (
    NESTED,
    FitConfig,
    MLPConfig,
    SVMConfig,
    WeakConfig,
    places,
    setting,
    setting_name,
    with_settings,
)
from pipeline.errors import ConfigError, MidlevelError


def declared_names(*config_types: type) -> tuple[str, ...]:
    """The public names of the settings `config_types` declare, in field order; a setting that
    several of them declare (background_weight) comes once, after each one's own."""
    names = [setting_name(f) for config_type in config_types for f in fields(config_type)]
    shared = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    return (*(n for n in names if n not in shared), *shared)


# What a sweep may vary and a config file lists, in the file's order: the head, its pooling
# power and seed, the heads' settings, the weak head's, then the features'.
HEAD_SETTINGS = ("head", "k", "seed", *declared_names(MLPConfig, SVMConfig))
WEAK_SETTINGS = declared_names(WeakConfig)
# in the order files have always listed them; precision and keep (issue 28) are written only
# where not their default, so that files, and the keys of sweep and curve rows, made before
# them stay the same
FEATURE_SETTINGS = (  # with keep and precision: which cache the features are read from
    "backbone", "weights", "input_size", "mode", "precision", "grid_kind", "scales", "min_scale",
    "overlap", "min_patch_cover", "min_box_cover", "background_ratio", "task_name", "context",
    "split", "keep",
)  # fmt: skip
UNWRITTEN = {"precision": "fp32", "keep": "auto"}  # defaults that older files never held
SWEEPABLE = tuple(n for n in (*HEAD_SETTINGS, *WEAK_SETTINGS) if n != "seed")
ALIASES = {"c": "svm_c", "C": "svm_c"}


def setting_type(name: str) -> type:
    """The Python type of a FitConfig setting, from its dataclass field."""
    root, leaf = places(FitConfig, name)[0]
    owner = NESTED[root] if leaf else FitConfig
    hint = typing.get_type_hints(owner)[leaf or root]
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint)


def _name(raw: str, where: str) -> str:
    name = ALIASES.get(raw, raw.replace("-", "_"))
    if name not in SWEEPABLE:
        raise MidlevelError(f"{where}: unknown sweep parameter {raw!r}; use {', '.join(SWEEPABLE)}")
    return name


def _value(name: str, raw, where: str):
    kind = setting_type(name)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise MidlevelError(f"{where}: {name} = {raw!r} is not a {kind.__name__}") from None
    try:
        with_settings(FitConfig(), {name: value})
    except ConfigError as exc:
        raise MidlevelError(f"{where}: {name} = {value!r}; {exc.problem}") from None
    return value


def grid_settings(grid: dict[str, list], where: str) -> list[dict]:
    """Every combination of the values of `grid` (name -> list of values)."""
    names = [_name(n, where) for n in grid]
    values = [
        [_value(n, v, where) for v in (vs if isinstance(vs, list) else [vs])]
        for n, vs in zip(names, grid.values(), strict=True)
    ]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def parse_params(params: tuple[str, ...]) -> dict[str, list]:
    """`--param hidden=512,2048 --param k=3,5` -> {"hidden": ["512", "2048"], "k": [...]}."""
    grid = {}
    for text in params:
        name, sep, values = text.partition("=")
        if not sep or not values.strip():
            raise MidlevelError(f"--param {text!r}: write NAME=V1,V2,... (e.g. dropout=0.3,0.5)")
        grid[name.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def read_sweep_file(path: Path) -> tuple[list[dict], dict]:
    """Settings of a sweep file ([grid]: every combination; [[settings]]: each as given) and
    its other top-level keys (sweep options such as folds)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MidlevelError(f"{path}: cannot read the sweep file ({exc}); fix its TOML") from None
    settings = grid_settings(data.pop("grid", {}), str(path)) if "grid" in data else []
    for entry in data.pop("settings", []):
        names = [_name(n, str(path)) for n in entry]
        settings.append(
            {n: _value(n, v, str(path)) for n, v in zip(names, entry.values(), strict=True)}
        )
    return settings, data


def apply_setting(config: FitConfig, values: dict) -> FitConfig:
    """The fit config with one setting's values in place of the base values."""
    return with_settings(config, values)


def fit_options(config: FitConfig) -> dict:
    """The `pipeline fit` option values that reproduce `config` (head, features and all)."""
    head = {n: setting(config, n) for n in HEAD_SETTINGS}
    head["background_weight"] = (
        config.mlp if config.head == "mlp" else config.svm
    ).background_weight
    if config.head == "weak":  # other heads' keys stay as they were before the weak head
        head |= {n: setting(config, n) for n in WEAK_SETTINGS}
    features = {n: setting(config, n) for n in FEATURE_SETTINGS}
    if config.classes:
        features["classes"] = ",".join(config.classes)
    written = {n: v for n, v in features.items() if v is not None and UNWRITTEN.get(n) != v}
    return {**head, **written}


def read_head_setting(path: Path) -> dict:
    """The head settings of a config file (a sweep's best holds feature options too, which a
    comparison on given caches must not change; and its head is the method's)."""
    options = read_options_file(path, set(SWEEPABLE) - {"head"})
    return {n: _value(n, v, str(path)) for n, v in options.items()}


def write_options_file(path: Path, options: dict, comment: str) -> None:
    """A flat TOML file of option values (`pipeline fit --config` reads it)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for name, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else repr(value)
        if isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{name} = {text}")
    path.write_text("\n".join(lines) + "\n")


def read_options_file(path: Path, known: set[str]) -> dict:
    """Option values of a config file for a command whose options are `known`; keys of
    another verb (a sweep's best holds fit and score options) are skipped, keys no verb
    knows are refused."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MidlevelError(f"{path}: cannot read the config ({exc}); fix its TOML") from None
    # Every key fit_options writes, for any head: fit's options are known to every verb.
    allowed = known | {*HEAD_SETTINGS, *WEAK_SETTINGS, *FEATURE_SETTINGS, "classes"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise MidlevelError(f"{path}: unknown option(s) {', '.join(unknown)}; remove them")
    return {n: v for n, v in data.items() if n in known}
