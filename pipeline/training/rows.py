"""The rows a head learns from, read from the cached shards: labelled patches (patch heads),
the label-blind sample with its image labels (the weak head), or one row per image with its
image labels (the whole-image SVM). Patch rows stream one shard at a time in a seeded order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.config import FitConfig
from pipeline.errors import CacheError
from pipeline.store.cache import SplitCache
from pipeline.store.shards import read_shard
from pipeline.training.classes import head_labels

HELD_BYTES = 256 * 2**20  # a head's rows up to this size are read once, not once an epoch


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


def _epochs(config: FitConfig, n_shards: int, read: Callable[[int], tuple]):
    """chunks(epoch): the rows of every shard, `held`, in the seeded order of that epoch."""
    rows = held(read)
    return lambda epoch: (rows(k) for k in shard_order(config, n_shards, epoch))


def patch_chunks(config: FitConfig, cache: SplitCache, classes, exclude):
    """chunks(epoch) of a patch head: per shard, the features and head labels of the patches
    with a label among `classes` (or background) of the images not in `exclude`."""
    paths, names = cache.shard_paths(), cache.class_names()

    def read(k: int) -> tuple[np.ndarray, np.ndarray]:
        shard = read_shard(paths[k])
        y = head_labels(shard.labels, names, classes)
        keep = y >= 0
        if exclude:
            keep &= ~np.isin(np.asarray(shard.image_ids)[shard.image_index], list(exclude))
        return shard.features[keep], y[keep]

    return _epochs(config, len(paths), read)


def sample_chunks(config: FitConfig, cache: SplitCache, classes, exclude):
    """chunks(epoch) of the weak head: per shard, the patches of its label-blind sample (every
    patch in a split that keeps them all; never the patches a box selected) of the images not
    in `exclude`, their image index, and the image labels of `classes`."""
    paths, names = cache.shard_paths(), cache.class_names()
    columns = [names.index(c) for c in classes]

    def read(k: int) -> tuple:
        shard = read_shard(paths[k])
        images = ~np.isin(shard.image_ids, list(exclude))
        keep = shard.sampled & images[shard.image_index]
        return shard.features[keep], shard.image_index[keep], shard.image_labels[:, columns]

    return _epochs(config, len(paths), read)


def image_rows(cache: SplitCache, classes, exclude, class_images) -> tuple[np.ndarray, ...]:
    """(X, Y) of the whole-image SVM, in memory: one row per image not in `exclude`, in image
    order, and its image labels of `classes`; with `class_images`, each class's column keeps
    the labels of its own images only (0 elsewhere: left out of its SVM). Refuses a class
    every training image has, which its SVM cannot learn."""
    names = cache.class_names()
    columns = [names.index(c) for c in classes]
    X, Y = [], []
    for shard in map(read_shard, cache.shard_paths()):
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
    return X, Y
