"""Labelled subsets of a training split, as a labelling budget buys them: whole images with all
their labels, drawn from image labels alone, so that every head of a curve sees the same draws.
Draws of one seed are nested (k=2 holds k=1); docs/labels.md says why each protocol is so."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import CurveConfig
from pipeline.errors import MidlevelError

ALL = "all"


@dataclass(frozen=True)
class Budget:
    """k positive images per class (`shots`), a number of labelled images (`images`), or all."""

    kind: str
    size: int | None = None

    @property
    def label(self) -> str:
        return ALL if self.kind == ALL else f"{self.kind}={self.size}"


def parse_counts(text: str, option: str) -> tuple[tuple[int, ...], bool]:
    """`--shots 1,2,all` -> ((1, 2), True): the counts, and whether "all" is among them."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    counts = [p for p in parts if p != ALL]
    if not all(p.isdigit() and int(p) > 0 for p in counts):
        raise MidlevelError(
            f"{option} {text!r}: give positive whole numbers or all, e.g. 1,2,4,all"
        )
    return tuple(dict.fromkeys(int(p) for p in counts)), ALL in parts


def budgets_of(config: CurveConfig) -> list[Budget]:
    """The budgets of a curve, "all" last."""
    budgets = [Budget("shots", k) for k in config.shots]
    budgets += [Budget("images", n) for n in config.images]
    return budgets + ([Budget(ALL)] if config.all_data else [])


@dataclass(frozen=True)
class SplitTruth:
    """The image labels a draw is made from: ids sorted, labels [n, C] 1 / -1 / 0 (difficult)."""

    image_ids: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    @classmethod
    def of(cls, image_ids, labels: np.ndarray, classes: tuple[str, ...]) -> SplitTruth:
        order = np.argsort(np.asarray(image_ids, dtype=object), kind="stable")
        return cls(tuple(np.asarray(image_ids, dtype=object)[order]), labels[order], classes)


@dataclass(frozen=True)
class Draw:
    """The labelled images of one budget and seed; `class_images` (protocol vissl) the images
    each class's SVM sees, with the labels of the others hidden from it."""

    budget: Budget
    seed: int
    images: frozenset[str]
    class_images: dict[str, frozenset[str]] | None = None

    def mask(self, image_ids, classes: tuple[str, ...]) -> np.ndarray:
        """[n_images, C] bool: the label of class c of image_ids[i] is in the draw."""
        drawn = np.isin(np.asarray(image_ids, dtype=object), list(self.images))
        if self.class_images is None:
            return np.repeat(drawn[:, None], len(classes), axis=1)
        ids = np.asarray(image_ids, dtype=object)
        return np.stack([np.isin(ids, list(self.class_images[c])) for c in classes], axis=1)

    def positives(self, truth: SplitTruth) -> dict[str, int]:
        """Per class, the positive images whose label the draw holds (co-occurrence adds)."""
        counts = ((truth.labels == 1) & self.mask(truth.image_ids, truth.classes)).sum(axis=0)
        return dict(zip(truth.classes, map(int, counts), strict=True))


def _order(truth: SplitTruth, seed: int, stream: int, rows: np.ndarray) -> list[int]:
    """The indices of `rows` in the seeded order of `stream` (one stream per class and role)."""
    found = np.flatnonzero(rows)
    return found[np.random.default_rng([seed, stream]).permutation(len(found))].tolist()


def _shots(truth: SplitTruth, seed: int, k: int) -> list[int]:
    """The first k positives of every class in its own seeded order, the union kept in order."""
    chosen: dict[int, None] = {}
    for c in range(len(truth.classes)):
        chosen |= dict.fromkeys(_order(truth, seed, 1 + c, truth.labels[:, c] == 1)[:k])
    return list(chosen)


def image_order(truth: SplitTruth, seed: int) -> list[str]:
    """The order `--images` budgets (and the random arm of a simulation) label images in: one
    positive of every class first (a head needs one), then the rest in a seeded order."""
    first = _shots(truth, seed, 1)
    taken = set(first)
    rest = [
        i for i in _order(truth, seed, 0, np.ones(len(truth.image_ids), bool)) if i not in taken
    ]
    return [truth.image_ids[i] for i in first + rest]


def random_order(truth: SplitTruth, seed: int) -> list[str]:
    """Every image in a seeded order: the random arm of a simulation from no label."""
    return [truth.image_ids[i] for i in _order(truth, seed, 0, np.ones(len(truth.image_ids), bool))]


def draw(truth: SplitTruth, budget: Budget, seed: int, protocol: str = "union") -> Draw:
    """The images `budget` buys at `seed` under `protocol` (PROTOCOLS)."""
    ids = truth.image_ids
    if budget.kind == ALL:
        return Draw(budget, seed, frozenset(ids))
    if budget.kind == "images":
        return Draw(budget, seed, frozenset(image_order(truth, seed)[: budget.size]))
    if protocol == "union":
        return Draw(budget, seed, frozenset(ids[i] for i in _shots(truth, seed, budget.size)))
    k, n_classes = budget.size, len(truth.classes)
    per_class = {}
    for c, name in enumerate(truth.classes):
        positives = _order(truth, seed, 1 + c, truth.labels[:, c] == 1)[:k]
        negatives = _order(truth, seed, 1 + n_classes + c, truth.labels[:, c] == -1)
        chosen = positives + negatives[: (n_classes - 1) * k]
        per_class[name] = frozenset(ids[i] for i in chosen)
    return Draw(budget, seed, frozenset().union(*per_class.values()), per_class)
