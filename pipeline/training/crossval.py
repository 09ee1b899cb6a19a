"""K-fold cross-validation of a head on the cached training split, folded by whole images (a
patch split would score near-copies of training rows) and scored on each held-out image's
label-blind sample; a fold the data cannot train is refused before any training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import FitConfig
from pipeline.errors import CacheError
from pipeline.evaluation.metrics import mean_ap
from pipeline.evaluation.scoring import average_precisions, score_images
from pipeline.store.cache import FeatureCache
from pipeline.training.classes import head_labels
from pipeline.training.fit import (
    learns_from_image_labels,
    open_fit_cache,
    train_head,
    training_classes,
)


def image_folds(image_ids: list[str], n_folds: int, seed: int) -> list[frozenset[str]]:
    """`n_folds` disjoint sets of image ids covering all of them, sizes within one."""
    if not 2 <= n_folds <= len(image_ids):
        raise ValueError(f"folds must be between 2 and the {len(image_ids)} images; got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(image_ids))
    return [frozenset(image_ids[i] for i in order[f::n_folds]) for f in range(n_folds)]


@dataclass(frozen=True)
class SplitLabels:
    """What each image of the split gives each class to learn from (no feature is read)."""

    image_ids: list[str]
    positives: np.ndarray  # [n_images, n_classes] positive patches, or positive image labels
    negatives: np.ndarray | None  # [n_images, n_classes] bool: image label -1 (whole grid)


def split_labels(config: FitConfig, cache: FeatureCache, classes: tuple[str, ...]) -> SplitLabels:
    """Per image and class: for heads on image labels, whether its image label is 1 (and,
    for the whole-image SVM, which needs both, whether it is -1); for patch heads, how many
    of its patches have the class's label, as train_head gives them to the head."""
    names = cache.class_names()
    columns = [names.index(c) for c in classes]
    on_images = learns_from_image_labels(config)
    ids, positives, negatives = [], [], []
    for shard in cache.iter_shards(features=False):
        ids.extend(shard.image_ids)
        labels = shard.image_labels[:, columns]
        negatives.append(labels == -1)
        if on_images:
            positives.append((labels == 1).astype(np.int64))
            continue
        y = head_labels(shard.labels, names, classes)
        of_class = (y >= 0) & (y < len(classes))
        counts = np.zeros((len(shard.image_ids), len(classes)), dtype=np.int64)
        np.add.at(counts, (shard.image_index[of_class], y[of_class]), 1)
        positives.append(counts)
    n = len(classes)
    positives = np.concatenate(positives) if positives else np.zeros((0, n), np.int64)
    negatives = np.concatenate(negatives) if negatives else np.zeros((0, n), bool)
    return SplitLabels(ids, positives, negatives if config.grid.kind == "whole" else None)


def _folds_for(config: FitConfig, cache: FeatureCache, image_ids: list[str], n_folds: int):
    if not 2 <= n_folds <= len(image_ids):
        raise CacheError(
            f"{cache.directory}: {n_folds} cross-validation folds: need between 2 and the "
            f"{len(image_ids)} images of split {config.split!r}; give fit --cv K or sweep "
            "--folds K in that range"
        )
    return image_folds(image_ids, n_folds, config.seed)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_fold(
    config: FitConfig,
    cache: FeatureCache,
    classes: tuple[str, ...],
    labels: SplitLabels,
    held_out: frozenset[str],
    fold: int,
    n_folds: int,
) -> None:
    """Refuse a fold whose training images hold no positive of a class (or, for the
    whole-image SVM, no negative), naming the classes, how many such images the split has,
    and the fix: fewer folds, or the other classes with --classes."""
    training = ~np.isin(labels.image_ids, list(held_out))
    checks = [("positive", labels.positives > 0)]
    if labels.negatives is not None:
        checks.append(("negative", labels.negatives))
    for kind, has in checks:
        lacking = [c for j, c in enumerate(classes) if not has[training, j].any()]
        if not lacking:
            continue
        in_split = {c: int(has[:, classes.index(c)].sum()) for c in lacking}
        counts = ", ".join(
            f"{c} ({_plural(n, kind + ' image')} in split {config.split!r})"
            for c, n in in_split.items()
        )
        rest = [c for c in classes if c not in lacking]
        it = "it" if len(lacking) == 1 else "them"
        drop = f"drop {it} with --classes {','.join(rest)}" if rest else "choose other --classes"
        if all(n <= 1 for n in in_split.values()):
            fix = f"one image cannot be both trained on and held out: {drop}, or label more images"
        else:
            fix = f"use fewer folds (fit --cv K, sweep --folds K) or {drop}"
        raise CacheError(
            f"{cache.directory}: cross-validation fold {fold} of {n_folds} holds every {kind} "
            f"image of {', '.join(lacking)}, so its training images have none to learn from: "
            f"{counts}; {fix}"
        )


def check_head_columns(
    config: FitConfig, cache: FeatureCache, head, classes: tuple[str, ...], fold: int, n_folds: int
) -> None:
    """A patch head's outputs are its `classes_` (the labels it saw), scored by position:
    refuse one without the labels 0..C-1 first. Heads on image labels have one output per
    class column by construction."""
    if learns_from_image_labels(config):
        return
    known = np.asarray(getattr(head, "classes_", []))
    n = len(classes)
    if len(known) >= n and np.array_equal(known[:n], np.arange(n)):
        return
    missing = [c for j, c in enumerate(classes) if j not in known] or list(classes)
    raise CacheError(
        f"{cache.directory}: cross-validation fold {fold} of {n_folds}: its head has no output "
        f"for {', '.join(missing)} (its training images gave it no such label); use fewer folds "
        "(fit --cv K, sweep --folds K) or drop them with --classes"
    )


def cross_validate(
    config: FitConfig, n_folds: int, cache: FeatureCache | None = None
) -> list[float]:
    """Mean AP (VOC07 11-point, fractions) of each held-out fold, pooled with config.k; on
    `cache` when given (a sweep opens and checks it once for all its settings). Refuses
    folds the data cannot support (see check_fold) before training any."""
    cache = cache or open_fit_cache(config)
    classes = training_classes(config, cache)
    labels = split_labels(config, cache, classes)
    folds = _folds_for(config, cache, labels.image_ids, n_folds)
    for fold, held_out in enumerate(folds, 1):
        check_fold(config, cache, classes, labels, held_out, fold, n_folds)
    scores = []
    for fold, held_out in enumerate(folds, 1):
        head = train_head(config, cache, classes, exclude=held_out)
        check_head_columns(config, cache, head, classes, fold, n_folds)
        images = score_images(head, cache, classes, classes, config.k, only=held_out)
        scores.append(mean_ap(average_precisions(images)[0]))
    return scores
