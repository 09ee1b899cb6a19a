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
from pipeline.store.cache import SplitCache
from pipeline.training.classes import head_labels
from pipeline.training.fit import open_fit_cache, train_head, training_classes
from pipeline.training.head_kinds import head_kind
from pipeline.words import plural


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
    present: np.ndarray  # [n_images, n_classes] bool: image label 1
    scored: np.ndarray  # [n_images] bool: a patch in its label-blind sample, what scores it
    background: np.ndarray | None  # [n_images] background rows (patch heads that have any)


def split_labels(config: FitConfig, cache: SplitCache, classes: tuple[str, ...]) -> SplitLabels:
    """Per image and class: for heads on image labels, whether its image label is 1 (for the
    weak head, with a patch in its label-blind sample to learn it from; for the whole-image
    SVM, which needs both, also whether it is -1); for patch heads, how many of its patches
    have the class's label, and how many are "none of them", as train_head gives them."""
    names = cache.class_names()
    columns, n = [names.index(c) for c in classes], len(classes)
    kind = head_kind(config)
    parts: dict[str, list] = {k: [] for k in ("ids", "labels", "scored", "counts")}
    for shard in cache.iter_shards(features=False):
        parts["ids"].extend(shard.image_ids)
        parts["labels"].append(shard.image_labels[:, columns])
        sampled = np.bincount(shard.image_index[shard.sampled], minlength=len(shard.image_ids))
        parts["scored"].append(sampled > 0)
        y = head_labels(shard.labels, names, classes)
        counts = np.zeros((len(shard.image_ids), n + 1), dtype=np.int64)  # last: background
        np.add.at(counts, (shard.image_index[y >= 0], y[y >= 0]), 1)
        parts["counts"].append(counts)
    labels = np.concatenate(parts["labels"]) if parts["labels"] else np.zeros((0, n), np.int8)
    scored = np.concatenate(parts["scored"]) if parts["scored"] else np.zeros(0, bool)
    counts = np.concatenate(parts["counts"]) if parts["counts"] else np.zeros((0, n + 1), np.int64)
    if kind.image_labels:
        learnt = scored[:, None] if kind.sampled else True  # the label-blind sample
        positives = ((labels == 1) & learnt).astype(np.int64)
        background = None
    else:
        positives, background = counts[:, :n], counts[:, n] if counts[:, n].any() else None
    negatives = labels == -1 if kind.per_class else None
    return SplitLabels(parts["ids"], positives, negatives, labels == 1, scored, background)


@dataclass(frozen=True)
class Shortfall:
    """What the training images of a fold or a label budget lack to train a head: an image
    with a `row` ("positive", "negative" or "background") of each of `classes`."""

    row: str
    classes: list[str]  # the classes lacking one (none for background rows)
    has: np.ndarray  # [n_images, n_classes] bool: the split's images with such a row


def shortfall(labels: SplitLabels, classes, training: np.ndarray) -> Shortfall | None:
    """The first thing the `training` images ([n_images, n_classes] bool: the images each
    class learns from) lack: a positive of a class (as split_labels counts them for the
    head), a negative (the whole-image SVM), a background row (a patch head that has any);
    None when they can train the head."""
    checks = [("positive", labels.positives > 0)]
    if labels.negatives is not None:
        checks.append(("negative", labels.negatives))
    for row, has in checks:
        lacking = [c for j, c in enumerate(classes) if not (has[:, j] & training[:, j]).any()]
        if lacking:
            return Shortfall(row, lacking, has)
    if labels.background is not None:
        has = labels.background[:, None] > 0
        if not has[training[:, 0]].any():
            return Shortfall("background", [], has)
    return None


def _folds_for(config: FitConfig, cache: SplitCache, image_ids: list[str], n_folds: int):
    if not 2 <= n_folds <= len(image_ids):
        raise CacheError(
            f"{cache.directory}: {n_folds} cross-validation folds: need between 2 and the "
            f"{len(image_ids)} images of split {config.split!r}; give fit --cv K or sweep "
            "--folds K in that range"
        )
    return image_folds(image_ids, n_folds, config.seed)


def check_fold(
    config: FitConfig,
    cache: SplitCache,
    classes: tuple[str, ...],
    labels: SplitLabels,
    held_out: frozenset[str],
    fold: int,
    n_folds: int,
) -> None:
    """Refuse a fold the data cannot support, naming what is missing (see shortfall), how
    much of it the split has, and the fix; or held-out images that give no class an AP (no
    positive with a patch to score it by)."""
    where = f"{cache.directory}: cross-validation fold {fold} of {n_folds}"
    held = np.isin(labels.image_ids, list(held_out))
    short = shortfall(labels, classes, np.broadcast_to(~held[:, None], labels.present.shape))
    if short is not None and short.row != "background":
        noun = f"{short.row} image"
        detail = head_kind(config).sample_note if short.row == "positive" else ""
        counts = _counts(config, classes, short.classes, short.has, noun, detail)
        raise CacheError(
            f"{where} holds every {noun}{detail} of {', '.join(short.classes)}, so its training "
            f"images have none to learn from: {counts}"
        )
    if short is not None:
        images = int(short.has.sum())
        raise CacheError(
            f"{where} holds every image with background patches ({plural(images, 'image')} "
            f"in split {config.split!r}), so its training rows are all of the classes; use "
            "fewer folds (fit --cv K, sweep --folds K), or extract with a larger "
            "--background-ratio"
        )
    if not (labels.present[held] & labels.scored[held, None]).any():
        raise CacheError(
            f"{where}: none of its held-out images with a class has a patch in its label-blind "
            "sample to score it by, so its AP is undefined; use fewer folds (fit --cv K, sweep "
            "--folds K), or extract with a larger --background-ratio"
        )


def _counts(config: FitConfig, classes, lacking: list[str], has, noun: str, detail: str) -> str:
    """How many such images the split has, and the fix: fewer folds, or other --classes."""
    in_split = {c: int(has[:, classes.index(c)].sum()) for c in lacking}
    counts = ", ".join(
        f"{c} ({plural(n, noun)}{detail} in split {config.split!r})" for c, n in in_split.items()
    )
    rest = [c for c in classes if c not in lacking]
    it = "it" if len(lacking) == 1 else "them"
    drop = f"drop {it} with --classes {','.join(rest)}" if rest else "choose other --classes"
    if all(n <= 1 for n in in_split.values()):
        return f"{counts}; one image cannot be both trained on and held out: {drop}, or label more images"
    return f"{counts}; use fewer folds (fit --cv K, sweep --folds K) or {drop}"


def check_head_columns(
    config: FitConfig, cache: SplitCache, head, classes: tuple[str, ...], fold: int, n_folds: int
) -> None:
    """A patch head's outputs are its `classes_` (the labels it saw), scored by position:
    refuse one without the labels 0..C-1 first. Heads on image labels have one output per
    class column by construction."""
    if head_kind(config).image_labels:
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


def cross_validate(config: FitConfig, n_folds: int, cache: SplitCache | None = None) -> list[float]:
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
