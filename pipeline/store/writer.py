"""Extract's door to the cache: the split's directory locked for its one writer, the data
digests of its shards, a finished cache of the same data adopted, the manifest prepared to
resume; then each finished shard written and recorded. The engine only computes."""

from __future__ import annotations

from pipeline.config import ExtractConfig
from pipeline.datasets import Dataset, SplitData
from pipeline.store.cache import SplitCache, WriterLock
from pipeline.store.data_digests import split_digests_and_pixels
from pipeline.store.keys import CacheKey, cache_path
from pipeline.store.opening import adopt
from pipeline.store.shards import Shard, write_shard


class ShardWriter:
    """Where extract's shards go: `cache`, the data and pixel digests each shard will record,
    what was adopted or resized when it was opened, and the lock held until the writer closes."""

    def __init__(
        self, cache: SplitCache, digests: list[str], pixels: list[str], *,
        lock: WriterLock | None = None, adopted: str | None = None, resized: int | None = None,
    ):  # fmt: skip
        self.cache, self.digests, self.pixels = cache, digests, pixels
        self.n_shards = len(digests)
        self.adopted, self.resized = adopted, resized
        self._lock = lock

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.__exit__(*exc)

    def write(
        self, index: int, shard: Shard, attrs: dict, *, seconds: float, rank: int, skipped: int
    ) -> int:
        """Shard `index` written atomically, then recorded in the manifest; its bytes."""
        written = write_shard(self.cache.shard_path(index), shard, attrs)
        self.cache.record(
            index, images=len(shard.image_ids), patches=len(shard.labels), seconds=seconds,
            n_shards=self.n_shards, rank=rank, skipped=skipped, data=self.digests[index],
            pixels=self.pixels[index],
        )  # fmt: skip
        return written


def open_writer(
    config: ExtractConfig, data: SplitData, key: CacheKey, dataset: Dataset, keep: str,
    *, main: bool = True,
) -> ShardWriter:  # fmt: skip
    """SplitCache.writer: the cache of `data` keeping `keep`'s patches. `main`: the one
    process that locks, hashes the images, adopts and prepares; the other processes of a
    torchrun open it after that one (they only stat the images it hashed)."""
    source = dataset.source()
    directory = cache_path(config.cache_dir, config.split, key.digest, source, keep)
    cache = SplitCache(directory, key, source=source, keep=keep)
    per_shard = config.images_per_shard
    if not main:
        return ShardWriter(cache, *split_digests_and_pixels(directory, data, per_shard, keep))
    lock = WriterLock(directory).__enter__()
    try:
        digests, pixels = split_digests_and_pixels(directory, data, per_shard, keep, save=True)
        adopted = None
        if not cache.manifest() and not config.overwrite:
            adopted = adopt(cache, config.split, digests, per_shard, config.limit)
        resized = cache.prepare(
            n_images=len(data.samples), images_per_shard=per_shard,
            overwrite=config.overwrite, limit=config.limit,
        )  # fmt: skip
    except BaseException:
        lock.__exit__(None, None, None)
        raise
    return ShardWriter(cache, digests, pixels, lock=lock, adopted=adopted, resized=resized)
