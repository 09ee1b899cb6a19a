"""Stage two: a head trained from cached shards alone, never a JPEG, saved beside them. Patch
heads stream one shard at a time in a seeded order; the whole-image SVM (one row per image)
trains in memory on the image labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.config import FitConfig
from pipeline.errors import CacheError, ConfigError
from pipeline.features.caches import open_split
from pipeline.store.cache import SplitCache
from pipeline.store.head_files import HeadRecord, save_head
from pipeline.store.opening import open_dataset_of
from pipeline.store.shards import read_shard
from pipeline.training.classes import check_classes, head_labels, select_classes

HELD_BYTES = 256 * 2**20  # a head's rows up to this size are read once, not once an epoch
IMAGE_LABEL_HEADS = ("weak",)  # patch heads that learn from image labels, never from boxes


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


def open_fit_cache(config: FitConfig) -> SplitCache:
    """The training split's cache; refuses one whose patches have no labels to learn from."""
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
    return config.grid.kind == "whole" or config.head in IMAGE_LABEL_HEADS


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


def build_head(config: FitConfig, n_classes: int, *, background: bool = True):
    """The estimator of `config.head`, the background's loss weight as a class weight."""
    from pipeline.heads.image_svm import ImageSVMHead
    from pipeline.heads.linear_svm import LinearSVMHead
    from pipeline.heads.mlp import MLPHead
    from pipeline.heads.weak import WeakPatchHead

    m, s, w = config.mlp, config.svm, config.weak
    layers = dict(
        hidden=m.hidden, dropout=m.dropout, lr=m.lr, momentum=m.momentum,
        weight_decay=m.weight_decay, epochs=m.epochs, seed=config.seed, device=config.device,
    )  # fmt: skip
    if config.grid.kind == "whole":
        return ImageSVMHead(C=s.C, seed=config.seed)
    if config.head == "weak":
        return WeakPatchHead(
            pool=w.pool, r=w.r, top_fraction=w.top_fraction, bottom_fraction=w.bottom_fraction,
            bottom_weight=w.bottom_weight, k=config.k, batch_images=w.batch_images, **layers,
        )  # fmt: skip
    if config.head == "mlp":
        weight = {n_classes: m.background_weight} if background else None
        return MLPHead(batch_size=m.batch_size, class_weight=weight, **layers)
    weight = {n_classes: s.background_weight} if background else None
    return LinearSVMHead(C=s.C, epochs=s.epochs, class_weight=weight, seed=config.seed)


def shard_order(config: FitConfig, n_shards: int, epoch: int) -> np.ndarray:
    """The seeded order the shards are read in at `epoch`."""
    return np.random.default_rng([config.seed, epoch]).permutation(n_shards)


def held(read: Callable[[int], tuple], limit: int = HELD_BYTES) -> Callable[[int], tuple]:
    """read(k), the rows a head learns from in shard k, kept after the first read while all
    of them fit in `limit` bytes: the epochs of a small draw (a label budget, a fold) read the
    split once; a split larger than that streams from disk every epoch, one shard at a time."""
    kept: dict[int, tuple] = {}
    size = 0

    def get(k: int) -> tuple:
        nonlocal size
        if k in kept:
            return kept[k]
        chunk = read(k)
        if size is not None:
            size += sum(a.nbytes for a in chunk)
            if size <= limit:
                kept[k] = chunk
            else:
                kept.clear()
                size = None
        return chunk

    return get


def weak_chunks(config: FitConfig, paths: list, names: list[str], classes, exclude):
    """chunks(epoch) of the weak head: per shard, the patches of its label-blind sample (every
    patch in a split that keeps them all; never the patches a box selected) of the images not
    in `exclude`, their image index, and the image labels of `classes`."""
    columns = [names.index(c) for c in classes]

    def read(k: int) -> tuple:
        shard = read_shard(paths[k])
        images = ~np.isin(shard.image_ids, list(exclude))
        keep = shard.sampled & images[shard.image_index]
        return shard.features[keep], shard.image_index[keep], shard.image_labels[:, columns]

    rows = held(read)
    return lambda epoch: (rows(k) for k in shard_order(config, len(paths), epoch))


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
    if class_images is not None and config.grid.kind != "whole":
        raise ValueError("per-class images need per-class SVMs: the whole-image SVM")
    background = learns_from_image_labels(config) or has_background(cache, classes)
    head = build_head(config, len(classes), background=background)
    try:
        return _trained(head, config, cache, classes, exclude, class_images, progress)
    except ConfigError:  # a setting (a device there is none of): its own line
        raise
    except ValueError as exc:
        raise CacheError(
            f"{cache.directory}: the {config.head} head cannot learn from these features "
            f"({' '.join(str(exc).split())}); check --classes and the split's labels"
        ) from None


def _trained(head, config: FitConfig, cache, classes, exclude, class_images, progress):
    paths = cache.shard_paths()
    names = cache.class_names()
    if config.head == "weak":
        chunks = weak_chunks(config, paths, names, classes, exclude)
        return head.fit_stream(chunks, progress=progress)
    if config.grid.kind == "whole":
        columns = [names.index(c) for c in classes]
        X, Y = [], []
        for shard in map(read_shard, paths):  # one row per image, in image order
            kept = ~np.isin(shard.image_ids, list(exclude))
            labels = shard.image_labels[kept][:, columns]
            for j, name in enumerate(classes if class_images is not None else ()):
                hidden = ~np.isin(np.asarray(shard.image_ids)[kept], list(class_images[name]))
                labels[hidden, j] = 0  # not this class's images: left out of its SVM
            X.append(shard.features[kept])
            Y.append(labels)
        X, Y = np.concatenate(X), np.concatenate(Y)
        lacking = [c for j, c in enumerate(classes) if not (Y[:, j] == -1).any()]
        if lacking:
            raise CacheError(
                f"{cache.directory}: the whole-image SVM of {', '.join(lacking)} needs training "
                "images without it too, and every image has it; drop it with --classes"
            )
        return head.fit(X, Y)

    def read(k: int) -> tuple[np.ndarray, np.ndarray]:
        shard = read_shard(paths[k])
        y = head_labels(shard.labels, names, classes)
        keep = y >= 0
        if exclude:
            keep &= ~np.isin(np.asarray(shard.image_ids)[shard.image_index], list(exclude))
        return shard.features[keep], y[keep]

    rows = held(read)
    chunks = lambda epoch: (rows(k) for k in shard_order(config, len(paths), epoch))  # noqa: E731
    return head.fit_stream(chunks, progress=progress)


def fit_head(config: FitConfig, *, progress=None, path: Path | None = None) -> FitResult:
    """Train the head of `config` on its split's cache and save it beside the features (or
    at `path`: compare keeps its heads apart from those fit made)."""
    started = time.perf_counter()
    cache = open_fit_cache(config)
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
