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

from pipeline.config import POOLS, FitConfig
from pipeline.errors import CacheError
from pipeline.store.freshness import open_dataset_of, split_cache
from pipeline.store.head_files import head_path, save_head
from pipeline.store.shards import FeatureCache, read_shard
from pipeline.training.classes import check_classes, head_labels, select_classes

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
    images: int = 0  # images learned from (a head on image labels)
    pool: str | None = None  # the weak head's pooling

    def line(self, head: str) -> str:
        if self.pool is not None:
            return (
                f"fit {head}: {len(self.classes)} classes from image labels ({self.pool} "
                f"pooling), {self.patches} patches of {self.images} images, {self.epochs} epochs "
                f"in {self.seconds:.1f} s, final loss {self.final_loss:.4f} -> {self.head_path}"
            )
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


def check_head_grid(config: FitConfig) -> None:
    """Refuse a head the grid cannot train, before any cache is looked for."""
    if config.grid.kind == "whole" and config.head != "svm":
        raise CacheError(
            f"--head {config.head}: whole-image features are one row per image, no patches to "
            f"score and pool; use --head svm with --grid whole, or fit --head {config.head} on "
            "the patch grid"
        )


def open_fit_cache(config: FitConfig) -> FeatureCache:
    """The training split's cache; refuses one whose patches have no labels to learn from."""
    check_head_grid(config)
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
    from pipeline.heads.image_svm import ImageSVMHead
    from pipeline.heads.patch_heads import LinearSVMHead, MLPHead

    check_head_grid(config)
    if config.grid.kind == "whole":
        return ImageSVMHead(C=config.svm.C, seed=config.seed)
    if config.head in ("mlp", "weak"):
        import torch

        if config.device == "cuda" and not torch.cuda.is_available():
            raise CacheError("--device cuda: no CUDA device here; use --device cpu or auto")
    if config.head == "weak":
        return build_weak_head(config)
    if config.head == "mlp":
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


def build_weak_head(config: FitConfig):
    """The weak head of `config`: the MLP's layer and optimiser settings, its own pooling."""
    from pipeline.heads.weak import WeakPatchHead

    w, m = config.weak, config.mlp
    if w.pool not in POOLS:
        raise CacheError(f"--pool {w.pool!r}: choose one of {', '.join(POOLS)}")
    if not 0 < w.top_fraction <= 1 or not 0 <= w.bottom_fraction <= 1:
        raise CacheError(
            f"--top-fraction {w.top_fraction} / --bottom-fraction {w.bottom_fraction}: give "
            "shares of an image's patches, top in (0, 1], bottom in [0, 1]"
        )
    if w.r <= 0 or w.batch_images < 1:
        raise CacheError(f"--lse-r {w.r} must be > 0 and --batch-images {w.batch_images} >= 1")
    return WeakPatchHead(
        pool=w.pool, r=w.r, top_fraction=w.top_fraction, bottom_fraction=w.bottom_fraction,
        bottom_weight=w.bottom_weight, k=config.k, hidden=m.hidden, dropout=m.dropout,
        lr=m.lr, momentum=m.momentum, weight_decay=m.weight_decay, epochs=m.epochs,
        batch_images=w.batch_images, seed=config.seed, device=config.device,
    )  # fmt: skip


def shard_order(config: FitConfig, n_shards: int, epoch: int) -> np.ndarray:
    """The seeded order the shards are read in at `epoch`."""
    return np.random.default_rng([config.seed, epoch]).permutation(n_shards)


def weak_chunks(config: FitConfig, paths: list, names: list[str], classes, exclude):
    """chunks(epoch) of the weak head: per shard, the patches of its label-blind sample (every
    patch in a split that keeps them all; never the patches a box selected) of the images not
    in `exclude`, their image index, and the image labels of `classes`."""
    columns = [names.index(c) for c in classes]

    def chunks(epoch: int):
        for k in shard_order(config, len(paths), epoch):
            shard = read_shard(paths[k])
            images = ~np.isin(shard.image_ids, list(exclude))
            keep = shard.sampled & images[shard.image_index]
            yield shard.features[keep], shard.image_index[keep], shard.image_labels[:, columns]

    return chunks


def train_head(
    config: FitConfig,
    cache: FeatureCache,
    classes: tuple[str, ...],
    *,
    exclude: frozenset[str] = frozenset(),
    progress=None,
):
    """A head trained on the cache, leaving out the images in `exclude` (cross-validation)."""
    background = learns_from_image_labels(config) or has_background(cache, classes)
    head = build_head(config, len(classes), background=background)
    paths = cache.shard_paths()
    names = cache_classes(cache)
    if config.head == "weak":
        chunks = weak_chunks(config, paths, names, classes, exclude)
        return head.fit_stream(chunks, progress=progress)
    if config.grid.kind == "whole":
        columns = [names.index(c) for c in classes]
        X, Y = [], []
        for shard in map(read_shard, paths):  # one row per image, in image order
            kept = ~np.isin(shard.image_ids, list(exclude))
            X.append(shard.features[kept])
            Y.append(shard.image_labels[kept][:, columns])
        X, Y = np.concatenate(X), np.concatenate(Y)
        lacking = [c for j, c in enumerate(classes) if not (Y[:, j] == -1).any()]
        if lacking:
            raise CacheError(
                f"{cache.directory}: the whole-image SVM of {', '.join(lacking)} needs training "
                "images without it too, and every image has it; drop it with --classes"
            )
        return head.fit(X, Y)

    def chunks(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k in shard_order(config, len(paths), epoch):
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
        "images": int(getattr(head, "n_images_seen_", 0)),
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
        images=record["images"],
        pool=config.weak.pool if config.head == "weak" else None,
    )
