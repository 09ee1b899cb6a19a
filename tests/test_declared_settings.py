"""A setting is declared once, as its config field (pipeline/config.py), and the rest follows
from it: the heads' defaults are the configs', every setting name has its flag with the
config's default, and a best config file lists its keys in the order files always had."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from pipeline.cli import cli
from pipeline.config import PLACES, FitConfig, MLPConfig, SVMConfig, WeakConfig, setting
from pipeline.heads.image_svm import ImageSVMHead
from pipeline.heads.linear_svm import LinearSVMHead
from pipeline.heads.mlp import MLPHead
from pipeline.heads.weak import WeakPatchHead
from pipeline.training.settings import (
    FEATURE_SETTINGS,
    HEAD_SETTINGS,
    SWEEPABLE,
    WEAK_SETTINGS,
    fit_options,
)

# Head arguments a config sets another way: class weights from background_weight, and the
# device, which the config resolves ("auto") before a head sees it.
NOT_CONFIG = {"class_weight", "device"}


@pytest.mark.parametrize(
    ("head", "configs"),
    [
        (MLPHead, (MLPConfig, FitConfig)),
        (WeakPatchHead, (WeakConfig, MLPConfig, FitConfig)),
        (LinearSVMHead, (SVMConfig, FitConfig)),
        (ImageSVMHead, (SVMConfig, FitConfig)),
    ],
)
def test_each_head_default_is_its_config_default(head, configs):
    """An estimator built alone (scikit-learn style) trains as `pipeline fit` does by default."""
    declared = {}
    for config in reversed(configs):  # the first config that has the field wins
        declared |= {f.name: f.default for f in fields(config)}
    for name, param in inspect.signature(head.__init__).parameters.items():
        if name == "self" or name in NOT_CONFIG:
            continue
        assert name in declared, f"{head.__name__}({name}): no config declares it"
        assert param.default == declared[name], (head.__name__, name)


def test_every_setting_name_is_a_flag_of_fit_with_the_config_default():
    params = {p.name: p for p in cli.commands["fit"].params}
    names = {*PLACES, *HEAD_SETTINGS, *WEAK_SETTINGS, *FEATURE_SETTINGS}
    for name in sorted(names):
        assert name in params, f"setting {name!r} has no flag of pipeline fit"
        assert params[name].default == setting(FitConfig(), name), name
        assert params[name].show_default, name


def test_a_best_config_lists_its_keys_in_the_order_files_always_had():
    head = ["head", "k", "seed", "hidden", "dropout", "lr", "momentum", "weight_decay", "epochs",
            "batch_size", "svm_c", "svm_epochs", "background_weight"]  # fmt: skip
    weak = ["pool", "lse_r", "top_fraction", "bottom_fraction", "bottom_weight", "batch_images"]
    # weights and input_size are None by default, and a None is left out
    # precision and keep are written where not their default, so rows keyed before stay
    features = ["backbone", "mode", "grid_kind", "scales", "min_scale", "overlap",
                "min_patch_cover", "min_box_cover", "background_ratio", "task_name", "context",
                "split"]  # fmt: skip
    assert list(fit_options(FitConfig())) == [*head, *features]
    assert list(fit_options(FitConfig(head="weak"))) == [*head, *weak, *features]
    assert list(SWEEPABLE) == [n for n in head if n != "seed"] + weak
