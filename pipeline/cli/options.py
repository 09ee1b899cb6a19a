"""What the verbs share: option groups made from the configs' declared settings (flag, default,
type, help: pipeline/config.py), and configs built by keyword from the options (PLACES says
where each setting goes)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from pipeline.cli.errors import UserError
from pipeline.config import (
    DEVICES,
    RUNTIMES,
    BackboneConfig,
    CacheSettings,
    ExtractConfig,
    FitConfig,
    GridConfig,
    LabelRule,
    MLPConfig,
    ScoredSplit,
    SVMConfig,
    TaskConfig,
    WeakConfig,
    setting_name,
    with_settings,
)
from pipeline.errors import MidlevelError
from pipeline.features.registry import RANDOM, REGISTRY, get_spec


def options(*decorators):
    """Several click options as one decorator."""

    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def setting_option(config_type: type, field_name: str, **click_settings):
    """The click option of a declared setting: its flags, default (shown), type (a whole or
    real number, a choice, text) and help from its field; `click_settings` add to them."""
    declared = next(f for f in fields(config_type) if f.name == field_name)
    name, meta = setting_name(declared), declared.metadata
    allowed = meta.get("range")
    kind = (
        click.Choice(meta["choices"]) if meta["choices"]
        else (int if allowed.whole else float) if allowed else None
    )  # fmt: skip
    flags = meta["flags"] or ("--" + name.replace("_", "-"),)
    own = {"type": kind, "default": declared.default, "show_default": True, "help": meta["help"]}
    return click.option(*flags, name, **(own | click_settings))


def setting_options(*config_types: type) -> list:
    """The click options of the settings `config_types` declare with a help text, in field
    order (a setting that two configs share has its help, so its flag, in the first only)."""
    return [
        setting_option(config_type, f.name)
        for config_type in config_types
        for f in fields(config_type)
        if f.metadata.get("help")
    ]


def build(config, opts: dict):
    """`config` (a config of defaults, or with its required fields) with every option in
    its place; --weights random says loudly that the features are not pretrained."""
    if opts.get("weights") == RANDOM:
        click.secho(
            "warning: --weights random: untrained network, features are NOT pretrained",
            fg="yellow",
            err=True,
        )
    return with_settings(config, opts)


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """'bus,car' -> ('bus', 'car'), duplicates dropped, order kept; None stays None."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise MidlevelError(f"--classes {text!r}: unknown (empty); name at least one class")
    return names


def data_spec(opts: dict, *, required: bool = False) -> str:
    """Pop --data and --voc-root into one dataset spec ("" when neither is given). --data wins
    over a --voc-root taken from the environment; both on the command line is refused."""
    data, voc_root = opts.pop("data"), opts.pop("voc_root")
    for flag, given in (("--data", data), ("--voc-root", voc_root)):
        if given is not None and not given.strip():
            raise UserError(f"{flag} is empty: name a dataset (or leave the option out)")
    if data and voc_root:
        source = click.get_current_context().get_parameter_source("voc_root")
        if source == click.core.ParameterSource.COMMANDLINE:
            raise UserError("--data and --voc-root both name a dataset; pass one of them")
    spec = data or (f"voc:{voc_root}" if voc_root else "")
    if required and not spec:
        raise UserError(
            "no dataset: pass --data KIND:PATH or --voc-root DIR (env MIDLEVEL_DATA, "
            "MIDLEVEL_VOC_ROOT); try pipeline demo-data"
        )
    return spec


def dataset_of(opts: dict, *, required: bool = False) -> dict:
    """The dataset options as settings: `data` one spec, `classes` a tuple."""
    opts["data"] = data_spec(opts, required=required)
    opts["classes"] = parse_classes(opts["classes"])
    return opts


def _check_backbone(ctx: click.Context, param: click.Parameter, name: str) -> str:
    """A typo is one line before any work; the table's names are checked without torch."""
    try:
        get_spec(name)
    except MidlevelError as exc:
        raise UserError(str(exc)) from None
    return name


def _load_config_file(ctx: click.Context, param, value) -> None:
    """--config FILE: its values become this command's defaults; options given win."""
    if value:
        from pipeline.training.settings import read_options_file

        known = {p.name for p in ctx.command.params}
        try:
            ctx.default_map = {**(ctx.default_map or {}), **read_options_file(Path(value), known)}
        except MidlevelError as exc:
            raise UserError(str(exc)) from None


data_help = (
    "Dataset: KIND:PATH, KIND one of voc, coco, labelstudio, imagefolder, csv, images; or a PATH "
    "whose kind is detected. Env: MIDLEVEL_DATA."
)
backbone_help = (
    f"Frozen net: {', '.join(REGISTRY)}, any torchvision classification model (convnext_tiny, "
    "vit_b_16...), or timm:NAME (pip install 'midlevel[timm]')."
)

config_file = click.option(
    "--config", type=click.Path(exists=True, dir_okay=False), is_eager=True, expose_value=False,
    callback=_load_config_file, help="TOML file of option values (e.g. a sweep's best config).",
)  # fmt: skip

dataset = options(
    click.option("--data", envvar="MIDLEVEL_DATA", default=None, help=data_help),
    click.option("--voc-root", envvar="MIDLEVEL_VOC_ROOT", type=click.Path(file_okay=False),
                 help="A VOC tree (year dir or its VOCdevkit parent): --data voc:DIR. Env: MIDLEVEL_VOC_ROOT."),
    click.option("--image-dir", default=None, type=click.Path(file_okay=False),
                 help="Where a COCO JSON's, a Label Studio export's or a labels CSV's images are [default: beside it]."),
    click.option("--cache-dir", envvar="MIDLEVEL_CACHE_DIR", default=ExtractConfig.cache_dir, show_default=True,
                 help="Root of feature shards and trained heads. Env: MIDLEVEL_CACHE_DIR."),
    click.option("--classes", default=None,
                 help="Comma-separated classes (or actions) to train/score (default: all with labels)."),
)  # fmt: skip

features = options(
    setting_option(BackboneConfig, "name", callback=_check_backbone, help=backbone_help),
    *setting_options(BackboneConfig, TaskConfig, GridConfig, LabelRule),
    setting_option(CacheSettings, "keep"),
)

compute = options(
    click.option("--device", type=click.Choice(DEVICES), default=ExtractConfig.device,
                 help="Compute device."),
    click.option("--runtime", type=click.Choice(RUNTIMES), default=ExtractConfig.runtime, show_default=True,
                 envvar="MIDLEVEL_RUNTIME",
                 help="Frozen net's runtime: auto is ONNX Runtime on a CPU, torch on CUDA."),
    click.option("--batch-size", type=int, default=None,
                 help="Patches per forward pass [default: the backbone's fastest for the runtime]."),
    click.option("--workers", type=int, default=ExtractConfig.workers,
                 help="DataLoader decode workers."),
)  # fmt: skip

head = options(
    setting_option(FitConfig, "split"),
    setting_option(FitConfig, "head"),
    *setting_options(MLPConfig, SVMConfig, WeakConfig),
    setting_option(FitConfig, "k"),
    setting_option(FitConfig, "device"),
)


trust_pickled_head = click.option(
    "--trust-pickled-head", "trust_pickle", is_flag=True,
    help="Load a head that midlevel 0.3 saved as a pickle (.joblib). Loading a pickle runs any "
    "code it holds: pass this only for a head file you made yourself, never one you were sent.",
)  # fmt: skip

scored_split = options(
    click.option("--split", default=ScoredSplit.split, help="Split the head scores (its features must be extracted)."),
    click.option("--train-split", default=ScoredSplit.train_split, help="Split the head was fitted on."),
    click.option("--head", default=ScoredSplit.head,
                 help="Which fitted head: mlp, svm, weak, or a head FILE (heads/<name>.safetensors)."),
    trust_pickled_head,
)  # fmt: skip


def fit_config(opts: dict) -> FitConfig:
    """The FitConfig of a verb's dataset, feature and head options."""
    return build(FitConfig(), dataset_of(opts))


method_config = click.option(
    "--method-config", "method_configs", multiple=True,
    help="METHOD=FILE: head settings of one method (whole-svm, patches-svm, patches-mlp, "
    "patches-weak) from a config file such as a sweep's best; repeatable.",
)  # fmt: skip


def method_settings(texts: tuple[str, ...]) -> dict[str, dict]:
    """--method-config METHOD=FILE options -> {method: its head settings}."""
    from pipeline.training.methods import METHODS, SHORT
    from pipeline.training.settings import read_head_setting

    settings = {}
    for text in texts:
        method, _, path = text.partition("=")
        method = SHORT.get(method, method)
        if method not in METHODS or not path:
            raise UserError(
                f"--method-config {text!r}: write METHOD=FILE, METHOD one of {', '.join(METHODS)}"
            )
        if not Path(path).is_file():
            raise UserError(f"{path}: config file not found; pass an existing file")
        settings[method] = read_head_setting(Path(path))
    return settings
