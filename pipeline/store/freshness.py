"""Which cache serves a split, and whether it is current: with a dataset, the cache of its key,
refused when made from older images or boxes; without one, the one cache of these settings."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import CacheSettings
from pipeline.datasets import Dataset, open_dataset
from pipeline.errors import CacheError
from pipeline.store.cache import FeatureCache, open_cache
from pipeline.store.data_digests import split_digests
from pipeline.store.keys import FeatureSettings, describe_data, without_data


def open_dataset_of(config: CacheSettings) -> Dataset | None:
    """The dataset a stage was given (--data or --voc-root), or None."""
    return open_dataset(config.data, image_dir=config.image_dir) if config.data else None


def split_cache(
    config: CacheSettings, split: str, dataset: Dataset | None, settings: FeatureSettings
) -> FeatureCache:
    """The finished cache of `split` with the key `settings` (see the module docstring); with
    a dataset, checked against it (`check_fresh`)."""
    if dataset is not None:
        cache = open_cache(config.cache_dir, split, settings.as_dict(), settings.digest())
        check_fresh(cache, dataset, split, config)
        return cache
    wanted = json.loads(json.dumps(settings.as_dict()))
    matches = []
    for path in sorted(Path(config.cache_dir).glob(f"{split}-*/fingerprint.json")):
        found = json.loads(path.read_text())
        if without_data(found) == wanted and (path.parent / "manifest.json").is_file():
            matches.append((path.parent, found))
    if len(matches) > 1:
        listed = "; ".join(f"{d.name} ({describe_data(f)})" for d, f in matches)
        raise CacheError(
            f"{config.cache_dir}: several datasets have {split!r} features with these settings "
            f"({listed}); pass --data KIND:PATH to choose one"
        )
    if not matches:
        return open_cache(config.cache_dir, split, settings.as_dict(), settings.digest())
    return FeatureCache.load(matches[0][0])


def check_fresh(cache: FeatureCache, dataset: Dataset, split: str, config: CacheSettings) -> None:
    """Refuse a cache whose shards were extracted from other images or annotations than the
    dataset holds now, or from fewer images than it has (a split that grew since; a cache
    extracted with --limit holds the first `limit` on purpose)."""
    manifest = cache.manifest()
    n_images, per_shard = manifest.get("n_images", 0), manifest.get("images_per_shard", 1)
    keep = cache.attrs().get("keep", "all")
    data = dataset.load(split, task=config.task, limit=manifest.get("limit"), skip_bad=True)
    expected = len(data.samples)
    current = split_digests(cache.directory, data, per_shard, keep, limit=n_images)
    stale = list(cache.changed_shards(current))
    if stale:
        raise CacheError(
            f"{cache.directory}: {len(stale)} of its shards ({stale[0]}...) were extracted from "
            f"other images or annotations than {dataset} holds now; rerun pipeline extract "
            f"--split {split} to rebuild them"
        )
    if expected != n_images:
        raise CacheError(
            f"{cache.directory}: holds {n_images} images of split {split!r}, {dataset} has "
            f"{expected} now; rerun pipeline extract --split {split} to update it"
        )
