"""Sweep settings: parse a grid from a TOML file or `--param` options, apply one setting to
a FitConfig, and write the best one back as a file `pipeline fit --config` accepts.

Names are the `pipeline fit` option names with underscores (hidden, dropout, lr, momentum,
weight_decay, epochs, batch_size, background_weight, svm_c, svm_epochs, k, head, and the
weak head's pool, lse_r, top_fraction, bottom_fraction, bottom_weight, batch_images), so a
setting reads the same on the command line, in sweep.csv and in the best-config file.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import replace
from pathlib import Path

from pipeline.config import POOLS, BackboneConfig, FitConfig
from pipeline.errors import MidlevelError
from pipeline.training.fit import HEADS

MLP_FIELDS = {
    "hidden": "hidden",
    "dropout": "dropout",
    "lr": "lr",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "epochs": "epochs",
    "batch_size": "batch_size",
}
SVM_FIELDS = {"svm_c": "C", "svm_epochs": "epochs"}
WEAK_FIELDS = {
    "pool": "pool",
    "lse_r": "r",
    "top_fraction": "top_fraction",
    "bottom_fraction": "bottom_fraction",
    "bottom_weight": "bottom_weight",
    "batch_images": "batch_images",
}
TYPES = {
    "hidden": int,
    "epochs": int,
    "batch_size": int,
    "svm_epochs": int,
    "batch_images": int,
    "head": str,
    "pool": str,
    **dict.fromkeys(
        ("dropout", "lr", "momentum", "weight_decay", "background_weight", "svm_c", "k"), float
    ),
    **dict.fromkeys(("lse_r", "top_fraction", "bottom_fraction", "bottom_weight"), float),
}
ALIASES = {"c": "svm_c", "C": "svm_c"}


def _name(raw: str, where: str) -> str:
    name = ALIASES.get(raw, raw.replace("-", "_"))
    if name not in TYPES:
        raise MidlevelError(f"{where}: unknown sweep parameter {raw!r}; use {', '.join(TYPES)}")
    return name


def _value(name: str, raw, where: str):
    try:
        value = TYPES[name](raw)
    except (TypeError, ValueError):
        raise MidlevelError(f"{where}: {name} = {raw!r} is not a {TYPES[name].__name__}") from None
    if name == "head" and value not in HEADS:
        raise MidlevelError(f"{where}: head = {value!r}; choose one of {', '.join(HEADS)}")
    if name == "pool" and value not in POOLS:
        raise MidlevelError(f"{where}: pool = {value!r}; choose one of {', '.join(POOLS)}")
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
    """Settings of a sweep file and its top-level options (folds, head, ...).

    [grid] holds lists whose combinations are all run; [[settings]] tables are run as given;
    both may be present. Other top-level keys are `pipeline sweep` options.
    """
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MidlevelError(f"{path}: cannot read the sweep file ({exc}); fix its TOML") from None
    settings = grid_settings(data.pop("grid", {}), str(path)) if "grid" in data else []
    for entry in data.pop("settings", []):
        settings.append(
            {
                _name(n, str(path)): _value(_name(n, str(path)), v, str(path))
                for n, v in entry.items()
            }
        )
    return settings, data


def apply_setting(config: FitConfig, setting: dict) -> FitConfig:
    """The fit config with one setting's values in place of the base values."""
    mlp = {MLP_FIELDS[n]: v for n, v in setting.items() if n in MLP_FIELDS}
    svm = {SVM_FIELDS[n]: v for n, v in setting.items() if n in SVM_FIELDS}
    if "background_weight" in setting:
        mlp["background_weight"] = svm["background_weight"] = setting["background_weight"]
    weak = {WEAK_FIELDS[n]: v for n, v in setting.items() if n in WEAK_FIELDS}
    top = {n: setting[n] for n in ("head", "k") if n in setting}
    return replace(
        config,
        mlp=replace(config.mlp, **mlp),
        svm=replace(config.svm, **svm),
        weak=replace(config.weak, **weak),
        **top,
    )


def fit_options(config: FitConfig) -> dict:
    """The `pipeline fit` option values that reproduce `config` (head, features and all)."""
    head = {"head": config.head, "k": config.k, "seed": config.seed}
    head |= {n: getattr(config.mlp, f) for n, f in MLP_FIELDS.items()}
    head |= {n: getattr(config.svm, f) for n, f in SVM_FIELDS.items()}
    head["background_weight"] = (
        config.mlp if config.head == "mlp" else config.svm
    ).background_weight
    if config.head == "weak":  # other heads' keys stay as they were before the weak head
        head |= {n: getattr(config.weak, f) for n, f in WEAK_FIELDS.items()}
    features = {
        "backbone": config.backbone.name,
        "weights": config.backbone.weights,
        "input_size": config.backbone.input_size,
        "mode": config.backbone.mode,
        "grid_kind": config.grid.kind,
        "scales": config.grid.scales,
        "min_scale": config.grid.min_scale,
        "overlap": config.grid.overlap,
        "min_patch_cover": config.labels.min_patch_cover,
        "min_box_cover": config.labels.min_box_cover,
        "background_ratio": config.labels.background_ratio,
        "task_name": config.task.name,
        "context": config.task.context,
        "split": config.split,
    }
    if config.classes:
        features["classes"] = ",".join(config.classes)
    return {**head, **{n: v for n, v in features.items() if v is not None}}


def read_head_setting(path: Path) -> dict:
    """The head settings of a config file (a sweep's best config holds feature options too,
    which a comparison on given caches must not change; and its head is the method's)."""
    options = read_options_file(path, set(TYPES) - {"head"})
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
    """Option values of a config file for a command whose options are `known`; keys that
    belong to another verb (a sweep's best config holds fit and score options) are skipped,
    keys no verb knows are refused."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MidlevelError(f"{path}: cannot read the config ({exc}); fix its TOML") from None
    full = FitConfig(classes=("car",), backbone=BackboneConfig(weights="w", input_size=1))
    allowed = known | set(TYPES) | set(fit_options(full))
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise MidlevelError(f"{path}: unknown option(s) {', '.join(unknown)}; remove them")
    return {n: v for n, v in data.items() if n in known}
