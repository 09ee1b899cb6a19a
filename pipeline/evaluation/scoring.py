"""A head over a cached split: image score per class = log of the mean over the image's
label-blind patch sample of p(class|patch)^k (paper, k = 5), never a choice that depends on
where the objects are, and per-class AP against the truth stored in the shards."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.config import ScoreConfig, ScoredSplit
from pipeline.errors import CacheError
from pipeline.evaluation.metrics import area_ap, mean_ap, voc07_ap
from pipeline.evaluation.pooling import describe_pooling, image_log_scores
from pipeline.features.caches import open_split
from pipeline.store.cache import SplitCache
from pipeline.store.head_files import (
    HeadRecord,
    check_same_int8_net,
    check_serves,
    find_head,
    head_of_split,
    load_head_file,
    names_a_file,
)


@dataclass(frozen=True)
class ImageScores:
    image_ids: list[str]
    scores: np.ndarray  # [n_images, n_classes] log of the mean of p^k; nan: no sampled patch
    truth: np.ndarray  # [n_images, n_classes] 1 / -1 / 0 (all 0 in an unlabelled split)


def score_images(
    head,
    cache: SplitCache,
    classes: tuple[str, ...],
    head_classes: tuple[str, ...],
    k: float,
    *,
    only: frozenset[str] | None = None,
) -> ImageScores:
    """Pooled log scores of the cached images (or of those in `only`), with their truth."""
    columns = [head_classes.index(c) for c in classes]
    truth_columns = _truth_columns(cache, classes)
    image_ids, pooled, truth = [], [], []
    for shard in cache.iter_shards():
        images = np.ones(len(shard.image_ids), dtype=bool)
        if only is not None:
            images = np.isin(shard.image_ids, list(only))
        patches = shard.sampled & images[shard.image_index]
        scores = image_log_scores(
            head, shard.features[patches], shard.image_index[patches], len(shard.image_ids), k
        )[:, columns]
        pooled.append(scores[images])
        labels = np.zeros((len(shard.image_ids), len(classes)), dtype=np.int8)
        if truth_columns is not None:
            labels = shard.image_labels[:, truth_columns]
        truth.append(labels[images])
        image_ids.extend(np.asarray(shard.image_ids)[images].tolist())
    return ImageScores(image_ids, np.concatenate(pooled), np.concatenate(truth))


def blind_scores(
    head, cache: SplitCache, classes, head_classes, k: float, image_ids: list[str]
) -> np.ndarray:
    """[len(image_ids), C] pooled log scores of these images, in this order, over their
    label-blind samples; their truth is not returned, so a choice made from it sees no label."""
    scored = score_images(head, cache, classes, head_classes, k, only=frozenset(image_ids))
    where = {i: n for n, i in enumerate(scored.image_ids)}
    return scored.scores[[where[i] for i in image_ids]]


def _truth_columns(cache: SplitCache, classes: tuple[str, ...]) -> list[int] | None:
    """Where each class's truth is in the cache's image labels (None: an unlabelled split,
    all 0); refuses a labelled split without one of the classes (AP would be undefined)."""
    if not cache.labelled:
        return None
    names = cache.class_names()
    missing = [c for c in classes if c not in names]
    if missing:
        raise CacheError(
            f"{cache.directory}: the head scores {', '.join(missing)}, which this split's "
            f"dataset does not have ({', '.join(names)}); pass --classes with classes of both"
        )
    return [names.index(c) for c in classes]


def average_precisions(scores: ImageScores) -> tuple[np.ndarray, np.ndarray]:
    """[n_classes] VOC07 11-point and area APs (fractions); images without a score are left
    out of the ranking, like difficult ones."""
    truth = np.where(np.isnan(scores.scores), 0, scores.truth)
    ranked = np.nan_to_num(scores.scores, nan=-np.inf)
    n = truth.shape[1]
    return (
        np.array([voc07_ap(ranked[:, c], truth[:, c]) for c in range(n)]),
        np.array([area_ap(ranked[:, c], truth[:, c]) for c in range(n)]),
    )


@dataclass(frozen=True)
class ScoreResult:
    classes: tuple[str, ...]
    images: ImageScores
    labelled: bool
    ap_voc07: np.ndarray  # [n_classes], fractions
    ap_area: np.ndarray
    k: float
    seconds: float
    left_out: tuple[dict, ...]  # images extract skipped (--on-error skip): not scored
    pooling: str  # how the image scores were pooled, in words ("k 5", "max pooling")
    config: ScoreConfig  # with the k and classes used
    cache: SplitCache
    head: dict  # the head's part of the provenance sidecar

    def table(self) -> list[dict]:
        """Rows of ap.csv: one per class, then the mean; AP in percent."""
        truth = self.images.truth
        rows = [
            {
                "class": name,
                "ap_voc07": round(100 * a07, 2),
                "ap_area": round(100 * area, 2),
                "positives": int((truth[:, c] == 1).sum()),
                "images": int((truth[:, c] != 0).sum()),
            }
            for c, (name, a07, area) in enumerate(
                zip(self.classes, self.ap_voc07, self.ap_area, strict=True)
            )
        ]
        rows.append(
            {
                "class": "mean",
                "ap_voc07": round(100 * mean_ap(self.ap_voc07), 2),
                "ap_area": round(100 * mean_ap(self.ap_area), 2),
                "positives": sum(r["positives"] for r in rows),
                "images": len(self.images.image_ids),
            }
        )
        return rows


def head_for_split(config: ScoredSplit, cache: SplitCache):
    """The head `config.head` names (a head file, or a name: the head of that name trained
    on `config.train_split` with the scored split's settings, found as fit finds that split:
    head_files.head_of_split), its record and file; refuses one trained on other features,
    naming both settings."""
    if names_a_file(config.head):
        path = find_head(config.head, config.cache_dir)
    else:
        path = head_of_split(
            config, config.train_split, config.head, cache.dataset, cache.key, prefer=cache.source
        )
    head, record = load_head_file(path, trust_pickle=config.trust_pickle)
    check_serves(record, cache.key, path)
    check_same_int8_net(path, record, cache)
    return head, record, path


def head_columns(record: HeadRecord, requested: tuple[str, ...] | None, head: str):
    """The classes to score (those asked for, else the head's) and their columns in the
    head's output; refuses classes the head was not trained on."""
    head_classes = record.classes
    classes = requested or head_classes
    missing = [c for c in classes if c not in head_classes]
    if missing:
        raise CacheError(
            f"--classes: the {head} head was not trained on {', '.join(missing)}; fit with them"
        )
    return classes, [head_classes.index(c) for c in classes]


@dataclass(frozen=True)
class HeadOnSplit:
    """A fitted head and the cached split it scores: what score and localize open first."""

    head: object
    record: HeadRecord
    classes: tuple[str, ...]  # the classes to score
    columns: list[int]  # their columns in the head's output
    cache: SplitCache
    path: Path  # the head file

    def sidecar(self) -> dict:
        """The head's part of a result's provenance sidecar."""
        return self.record.sidecar()


def open_head_on_split(config: ScoredSplit) -> HeadOnSplit:
    """The split's cache, then the head (refusing one trained on other features or classes)."""
    cache = open_split(config, config.split)
    head, record, path = head_for_split(config, cache)
    classes, columns = head_columns(record, config.classes, config.head)
    return HeadOnSplit(head, record, classes, columns, cache, path)


def score_split(config: ScoreConfig) -> ScoreResult:
    """The head's pooled image scores over the split, and AP where it is labelled."""
    started = time.perf_counter()
    opened = open_head_on_split(config)
    classes, cache = opened.classes, opened.cache
    k = config.k if config.k is not None else opened.record.k
    images = score_images(opened.head, cache, classes, opened.record.classes, k)
    labelled = cache.labelled
    ap_voc07, ap_area = (
        average_precisions(images) if labelled else (np.full(len(classes), np.nan),) * 2
    )
    return ScoreResult(
        classes, images, labelled, ap_voc07, ap_area, k, time.perf_counter() - started,
        tuple(cache.skipped()), describe_pooling(opened.head, k),
        replace(config, k=k, classes=classes), cache, opened.sidecar(),
    )  # fmt: skip
