"""K-fold cross-validation of a head on the cached training split, folded by image.

Folds are whole images, never patches: patches of one image overlap and share its objects,
so a patch split would score a head on near-copies of its training rows. Held-out images
are scored on their label-blind patch sample (see pipeline/scoring.py), so the estimate does
not peek at where their objects are. The test split is never read.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import FitConfig
from pipeline.metrics import mean_ap
from pipeline.scoring import average_precisions, score_images
from pipeline.shards import FeatureCache
from pipeline.training import open_fit_cache, train_head, training_classes


def image_folds(image_ids: list[str], n_folds: int, seed: int) -> list[frozenset[str]]:
    """`n_folds` disjoint sets of image ids covering all of them, sizes within one."""
    if not 2 <= n_folds <= len(image_ids):
        raise ValueError(f"folds must be between 2 and the {len(image_ids)} images; got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(image_ids))
    return [frozenset(image_ids[i] for i in order[f::n_folds]) for f in range(n_folds)]


def cache_image_ids(cache: FeatureCache) -> list[str]:
    return [i for shard in cache.iter_shards(features=False) for i in shard.image_ids]


def cross_validate(
    config: FitConfig, n_folds: int, cache: FeatureCache | None = None
) -> list[float]:
    """Mean AP (VOC07 11-point, fractions) of each held-out fold, pooled with config.k; on
    `cache` when given (a sweep opens and checks it once for all its settings)."""
    cache = cache or open_fit_cache(config)
    classes = training_classes(config, cache)
    scores = []
    for held_out in image_folds(cache_image_ids(cache), n_folds, config.seed):
        head = train_head(config, cache, classes, exclude=held_out)
        images = score_images(head, cache, classes, classes, config.k, only=held_out)
        scores.append(mean_ap(average_precisions(images)[0]))
    return scores
