"""Stage two: train the adaptation layers (or a linear SVM baseline) from cached shards.

Never reads a JPEG. Patch heads stream the shards one at a time in a seeded order per epoch,
so memory is bounded by one shard whatever the size of the split. The whole-image baseline
(grid "whole") has one row per image and trains in memory on the image labels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.caches import open_dataset_of, split_cache
from pipeline.classes import check_classes, head_labels, select_classes
from pipeline.config import FitConfig
from pipeline.errors import CacheError
from pipeline.head_store import head_path, save_head
from pipeline.shards import FeatureCache, read_shard

HEADS = ("mlp", "svm", "weak")
IMAGE_LABEL_HEADS = ("weak",)  # patch heads that learn from image labels, never from boxes


@dataclass(frozen=True)
class FitSummary:
    head_path: str
    classes: tuple[str, ...]
    patches: int
    epochs: int
    final_loss: float
    seconds: float

    def line(self, head: str) -> str:
        if not self.epochs:  # the whole-image SVM: solved exactly, one row per image
            return (
                f"fit {head}: {len(self.classes)} classes, one SVM each on {self.patches} images "
                f"in {self.seconds:.1f} s -> {self.head_path}"
            )
        return (
            f"fit {head}: {len(self.classes)} classes + background, {self.patches} patches, "
            f"{self.epochs} epochs in {self.seconds:.1f} s, final loss {self.final_loss:.4f} "
            f"-> {self.head_path}"
        )


def cache_classes(cache: FeatureCache) -> list[str]:
    return json.loads(cache.attrs()["class_names"])


def open_fit_cache(config: FitConfig) -> FeatureCache:
    """The training split's cache; refuses one whose patches have no labels to learn from."""
    dataset = open_dataset_of(config)
    if dataset is not None:
        check_classes(config.classes, dataset.task_classes(config.task))
    cache = split_cache(config, config.split, dataset)
    attrs = cache.attrs()
    if not attrs.get("labelled", True):
        raise CacheError(
            f"{cache.directory}: split {config.split!r} has no labels to train on; fit on a "
            "labelled split (--split)"
        )
    if config.grid.kind == "patches" and not attrs.get("boxes", True):
        raise CacheError(
            f"{cache.directory}: this {attrs.get('data', 'image-label')} dataset has image-level "
            "labels only, no boxes, so no patch has a label to train a patch head on; extract "
            "and fit with --grid whole --head svm (the whole-image baseline)"
        )
    return cache


def learns_from_image_labels(config: FitConfig) -> bool:
    """Whether the head trains on image labels (the whole-image SVM, the weak head) rather
    than on the patch labels that boxes give."""
    return config.grid.kind == "whole" or config.head in IMAGE_LABEL_HEADS


def training_classes(config: FitConfig, cache: FeatureCache) -> tuple[str, ...]:
    """--classes, or every class with a positive: patches for patch heads, images for heads
    that learn from image labels."""
    names = cache_classes(cache)
    positives = np.zeros(len(names), dtype=np.int64)
    for shard in cache.iter_shards(features=False):
        if learns_from_image_labels(config):
            positives += (shard.image_labels == 1).sum(axis=0)
        else:
            valid = shard.labels[(shard.labels >= 0) & (shard.labels < len(names))]
            positives += np.bincount(valid, minlength=len(names))
    return select_classes(config.classes, names, positives)


def has_background(cache: FeatureCache, classes: tuple[str, ...]) -> bool:
    """Whether any training patch is "none of the classes" (action regions can hold none)."""
    names = cache_classes(cache)
    return any(
        (head_labels(shard.labels, names, classes) == len(classes)).any()
        for shard in cache.iter_shards(features=False)
    )


def build_head(config: FitConfig, n_classes: int, *, background: bool = True):
    """The estimator for --head, with the background weight as a class weight."""
    from pipeline.heads import LinearSVMHead, MLPHead
    from pipeline.image_head import ImageSVMHead

    if config.grid.kind == "whole":
        if config.head != "svm":
            raise CacheError(
                f"--head {config.head}: whole-image features have image labels only, no patch "
                "labels to train the adaptation layers; use --head svm with --grid whole"
            )
        return ImageSVMHead(C=config.svm.C, seed=config.seed)
    if config.head == "mlp":
        import torch

        if config.device == "cuda" and not torch.cuda.is_available():
            raise CacheError("--device cuda: no CUDA device here; use --device cpu or auto")
        m = config.mlp
        return MLPHead(
            hidden=m.hidden,
            dropout=m.dropout,
            lr=m.lr,
            momentum=m.momentum,
            weight_decay=m.weight_decay,
            epochs=m.epochs,
            batch_size=m.batch_size,
            class_weight={n_classes: m.background_weight} if background else None,
            seed=config.seed,
            device=config.device,
        )
    if config.head == "svm":
        s = config.svm
        return LinearSVMHead(
            C=s.C,
            epochs=s.epochs,
            class_weight={n_classes: s.background_weight} if background else None,
            seed=config.seed,
        )
    raise CacheError(f"--head {config.head!r}: unknown head; choose one of {', '.join(HEADS)}")


def train_head(
    config: FitConfig,
    cache: FeatureCache,
    classes: tuple[str, ...],
    *,
    exclude: frozenset[str] = frozenset(),
    progress=None,
):
    """A head trained on the cache, leaving out the images in `exclude` (cross-validation)."""
    background = config.grid.kind == "whole" or has_background(cache, classes)
    head = build_head(config, len(classes), background=background)
    paths = cache.shard_paths()
    names = cache_classes(cache)
    if config.grid.kind == "whole":
        columns = [names.index(c) for c in classes]
        X, Y = [], []
        for shard in map(read_shard, paths):  # one row per image, in image order
            kept = ~np.isin(shard.image_ids, list(exclude))
            X.append(shard.features[kept])
            Y.append(shard.image_labels[kept][:, columns])
        return head.fit(np.concatenate(X), np.concatenate(Y))

    def chunks(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(paths))
        for k in order:
            shard = read_shard(paths[k])
            y = head_labels(shard.labels, names, classes)
            keep = y >= 0
            if exclude:
                keep &= ~np.isin(np.asarray(shard.image_ids)[shard.image_index], list(exclude))
            yield shard.features[keep], y[keep]

    return head.fit_stream(chunks, progress=progress)


def fit_head(config: FitConfig, *, progress=None) -> FitSummary:
    """Train the head of `config` on its split's cache and save it beside the features."""
    started = time.perf_counter()
    cache = open_fit_cache(config)
    classes = training_classes(config, cache)
    head = train_head(config, cache, classes, progress=progress)
    path = head_path(cache.directory, config.head)
    record = {
        "head": config.head,
        "classes": list(classes),
        "params": head.get_params(),
        "k": config.k,
        "digest": cache.digest,
        "fingerprint": cache.fingerprint,
        "config": asdict(config),
        "patches": int(head.n_samples_seen_),
        "loss_curve": [float(v) for v in head.loss_curve_],
    }
    save_head(path, head, record)
    return FitSummary(
        head_path=str(path),
        classes=classes,
        patches=int(head.n_samples_seen_),
        epochs=len(head.loss_curve_),
        final_loss=float(head.loss_curve_[-1]) if len(head.loss_curve_) else float("nan"),
        seconds=time.perf_counter() - started,
    )
