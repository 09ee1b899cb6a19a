"""A split's cache as every reader opens it: the dataset the config names (opened once), the
key only the registry can make (a backbone's identity), and the store's one door."""

from __future__ import annotations

from pipeline.config import CacheSettings
from pipeline.datasets import Dataset, open_dataset_of
from pipeline.features.registry import cache_key
from pipeline.store.cache import SplitCache

SAME = object()  # open the dataset the config names


def open_split(config: CacheSettings, split: str, dataset: Dataset | None = SAME) -> SplitCache:
    """The finished cache of `split` with `config`'s features, checked against the dataset
    (`dataset`, e.g. another split's `cache.dataset`, else the one `config` names) and holding
    it and the split's data; with no dataset (data ""), the one dataset cached so."""
    if dataset is SAME:
        dataset = open_dataset_of(config)
    return SplitCache.open(config, split, cache_key(config, dataset), dataset)
