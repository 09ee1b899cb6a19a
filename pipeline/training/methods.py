"""The heads that compare and curve fit side by side, by name: a head on a feature grid."""

from __future__ import annotations

from dataclasses import replace

from pipeline.config import HEADS, FitConfig
from pipeline.errors import MidlevelError
from pipeline.training.head_kinds import HEAD_KINDS
from pipeline.training.settings import apply_setting

METHODS = HEAD_KINDS  # name -> its kind of head, in the paper's order
_ON_PATCHES = {kind.head: name for name, kind in METHODS.items() if kind.grid == "patches"}
SHORT = {head: _ON_PATCHES[head] for head in HEADS}  # a patch head's short name is its --head


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
    kind = METHODS[name]
    return apply_setting(
        replace(base, head=kind.head, grid=replace(base.grid, kind=kind.grid)), settings or {}
    )
