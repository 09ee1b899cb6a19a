"""Stage two: a head trained from cached shards alone, never a JPEG, saved beside them; each
kind of head builds and trains as its entry says (pipeline/training/head_kinds.py)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.config import FitConfig
from pipeline.datasets import Dataset, open_dataset_of
from pipeline.errors import CacheError, ConfigError
from pipeline.features.caches import SAME, open_split
from pipeline.store.cache import SplitCache
from pipeline.store.head_files import HeadRecord, save_head
from pipeline.training.classes import check_classes, head_labels, select_classes
from pipeline.training.head_kinds import head_kind


@dataclass(frozen=True)
class FitResult:
    head_path: str
    classes: tuple[str, ...]
    patches: int
    epochs: int
    final_loss: float
    seconds: float
    images: int = 0  # images learned from (a head on image labels)
    pool: str | None = None  # the weak head's pooling


def open_fit_cache(config: FitConfig, dataset: Dataset | None = SAME) -> SplitCache:
    """The training split's cache (of `dataset`, else the one the config names); refuses one
    whose patches have no labels to learn from."""
    if dataset is SAME:
        dataset = open_dataset_of(config)
    if dataset is not None:
        check_classes(config.classes, dataset.task_classes(config.task))
    cache = open_split(config, config.split, dataset)
    attrs = cache.attrs()
    if not cache.labelled:
        raise CacheError(
            f"{cache.directory}: split {config.split!r} has no labels to train on; fit on a "
            "labelled split (--split)"
        )
    if not learns_from_image_labels(config) and not attrs.get("boxes", True):
        raise CacheError(
            f"{cache.directory}: this {attrs.get('data', 'image-label')} dataset has image-level "
            f"labels only, no boxes, so no patch has a label to train --head {config.head} on; "
            "fit --head weak (patch scores learned from image labels) or, on --grid whole "
            "features, --head svm (the whole-image baseline)"
        )
    return cache


def learns_from_image_labels(config: FitConfig) -> bool:
    """Whether the head trains on image labels (the whole-image SVM, the weak head) rather
    than on the patch labels that boxes give."""
    return head_kind(config).image_labels


def training_classes(config: FitConfig, cache: SplitCache) -> tuple[str, ...]:
    """--classes, or every class with a positive: patches for patch heads, images for heads
    that learn from image labels."""
    names = cache.class_names()
    positives = np.zeros(len(names), dtype=np.int64)
    for shard in cache.iter_shards(features=False):
        if learns_from_image_labels(config):
            positives += (shard.image_labels == 1).sum(axis=0)
        else:
            valid = shard.labels[(shard.labels >= 0) & (shard.labels < len(names))]
            positives += np.bincount(valid, minlength=len(names))
    return select_classes(config.classes, names, positives)


def has_background(cache: SplitCache, classes: tuple[str, ...]) -> bool:
    """Whether any training patch is "none of the classes" (action regions can hold none)."""
    names = cache.class_names()
    return any(
        (head_labels(shard.labels, names, classes) == len(classes)).any()
        for shard in cache.iter_shards(features=False)
    )


def train_head(
    config: FitConfig,
    cache: SplitCache,
    classes: tuple[str, ...],
    *,
    exclude: frozenset[str] = frozenset(),
    class_images: dict[str, frozenset[str]] | None = None,
    progress=None,
):
    """A head trained on the cache, leaving out the images in `exclude` (cross-validation, a
    label budget); `class_images`: the whole-image SVM of each class sees the labels of these
    images only. Data a head cannot learn from (its ValueError) is one line naming the cache."""
    kind = head_kind(config)
    if class_images is not None and not kind.per_class:
        raise ValueError("per-class images need per-class SVMs: the whole-image SVM")
    background = kind.image_labels or has_background(cache, classes)
    head = kind.build(config, len(classes), background)
    try:
        return kind.train(head, config, cache, classes, exclude, class_images, progress)
    except ConfigError:  # a setting (a device there is none of): its own line
        raise
    except ValueError as exc:
        raise CacheError(
            f"{cache.directory}: the {config.head} head cannot learn from these features "
            f"({' '.join(str(exc).split())}); check --classes and the split's labels"
        ) from None


def fit_head(
    config: FitConfig, *, progress=None, path: Path | None = None, dataset: Dataset | None = SAME
) -> FitResult:
    """Train the head of `config` on its split's cache and save it beside the features (or
    at `path`: compare keeps its heads apart from those fit made); `dataset` as open_fit_cache."""
    started = time.perf_counter()
    cache = open_fit_cache(config, dataset)
    classes = training_classes(config, cache)
    head = train_head(config, cache, classes, progress=progress)
    path = path or cache.head_path(config.head)
    record = HeadRecord(
        head=config.head,
        classes=classes,
        params=head.get_params(),
        k=config.k,
        digest=cache.digest,
        fingerprint=cache.key.settings,
        config=asdict(config),
        patches=int(head.n_samples_seen_),
        images=int(getattr(head, "n_images_seen_", 0)),
        loss_curve=tuple(float(v) for v in head.loss_curve_),
        net=cache.int8_net(),
    )
    save_head(path, head, record)
    return FitResult(
        head_path=str(path),
        classes=classes,
        patches=int(head.n_samples_seen_),
        epochs=len(head.loss_curve_),
        final_loss=float(head.loss_curve_[-1]) if len(head.loss_curve_) else float("nan"),
        seconds=time.perf_counter() - started,
        images=record.images,
        pool=config.weak.pool if config.head == "weak" else None,
    )
