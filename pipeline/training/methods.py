"""The heads that compare and curve fit side by side, by name: a head on a feature grid."""

from __future__ import annotations

from dataclasses import replace

from pipeline.config import FitConfig
from pipeline.errors import MidlevelError
from pipeline.training.settings import apply_setting

METHODS = {  # name -> (grid kind, head), in the paper's order
    "whole-svm": ("whole", "svm"),
    "patches-svm": ("patches", "svm"),
    "patches-mlp": ("patches", "mlp"),
    "patches-weak": ("patches", "weak"),  # image labels alone (Oquab et al., CVPR 2015)
}
SHORT = {"mlp": "patches-mlp", "svm": "patches-svm", "weak": "patches-weak"}


def method_names(text: str, option: str) -> tuple[str, ...]:
    """'mlp,whole-svm' -> ('patches-mlp', 'whole-svm'): a patch head's short name is its own."""
    names = [SHORT.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise MidlevelError(
            f"{option} {text!r}: unknown {', '.join(unknown) or 'empty'}; choose from "
            f"{', '.join([*SHORT, *METHODS])}"
        )
    return tuple(dict.fromkeys(names))


def method_config(base: FitConfig, name: str, settings: dict | None = None) -> FitConfig:
    """`base` fitting method `name`, with its own head settings (a sweep's best) in place."""
    kind, head = METHODS[name]
    return apply_setting(
        replace(base, head=head, grid=replace(base.grid, kind=kind)), settings or {}
    )
