"""Which classes a head learns, and how cached labels map onto its outputs: 0..C-1 the chosen
classes, C "none of them" (background, and the classes left out), -1 ignored."""

from __future__ import annotations

import numpy as np

from pipeline.errors import MidlevelError


def check_classes(names: tuple[str, ...] | None, known: tuple[str, ...]) -> None:
    """Refuse --classes names that are not among `known` (the dataset's), listing them."""
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise MidlevelError(
            f"--classes {','.join(names)!r}: unknown {', '.join(unknown)}; choose from {', '.join(known)}"
        )


def select_classes(
    requested: tuple[str, ...] | None, class_names: list[str], positives: np.ndarray
) -> tuple[str, ...]:
    """The classes to train: those asked for, or every class with labelled patches.

    positives [n_class_names] counts of positive patches per cached class.
    """
    if requested is None:
        chosen = tuple(n for n, count in zip(class_names, positives, strict=True) if count > 0)
        if not chosen:
            raise MidlevelError(
                "the cache holds no labelled object patch; check the boxes in Annotations/"
            )
        return chosen
    foreign = [n for n in requested if n not in class_names]
    if foreign:
        raise MidlevelError(
            f"--classes: {', '.join(foreign)} is not a class of this cache ({', '.join(class_names)})"
        )
    empty = [n for n in requested if positives[class_names.index(n)] == 0]
    if empty:
        raise MidlevelError(
            f"--classes: {', '.join(empty)} has no labelled patch in this split; drop it from --classes"
        )
    return requested


def head_labels(
    labels: np.ndarray, class_names: list[str], selected: tuple[str, ...]
) -> np.ndarray:
    """[N] cached labels -> [N] head labels (0..C-1 chosen classes, C none of them, -1 ignored)."""
    lookup = np.full(len(class_names) + 1, len(selected), dtype=np.int64)
    for j, name in enumerate(selected):
        lookup[class_names.index(name)] = j
    return np.where(labels >= 0, lookup[np.clip(labels, 0, None)], -1)
