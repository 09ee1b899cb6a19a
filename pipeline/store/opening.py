"""The cache's two doors: a reader's (which cache serves a split, and is it current) and
extract's (lock, data digests, adoption, preparation). A cache is one dataset's split, with
these settings, keeping these patches: given the dataset, the stages read its cache (refused
when made from older images or boxes); given none, the one dataset's cached with them.
Extract adopts a cache of the same data made elsewhere (docs/cache.md) instead of redoing it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline.config import CacheSettings
from pipeline.datasets import Dataset
from pipeline.datasets.base import keep_by_role
from pipeline.errors import CacheError
from pipeline.store.cache import HEADS_DIR, SplitCache, WriterLock
from pipeline.store.data_digests import DIGESTS_FILE
from pipeline.store.keys import CacheKey
from pipeline.store.legacy import keeps, made_before_datasets


def caches_in(
    cache_root: str | Path, split: str, digest: str = "*", *, finished: bool = True
) -> list[SplitCache]:
    """Every cache directory of `split` under `cache_root` (with this settings digest) that
    extract has finished; with `finished` False, those it has begun too (reading one says its
    extraction is unfinished)."""
    found = []
    pattern = f"{split}-*" if digest == "*" else f"{split}-{digest}*"
    for path in sorted(Path(cache_root).glob(f"{pattern}/fingerprint.json")):
        cache = SplitCache.load(path.parent)
        named = re.fullmatch(
            rf"{re.escape(split)}-{cache.digest}(-[0-9a-f]{{8}})?", path.parent.name
        )
        if named and (not finished or _finished(cache)):  # not <split>-...
            found.append(cache)
    return found


def _finished(cache: SplitCache) -> bool:
    """Whether extract finished the cache; a damaged manifest is not finished (reading the
    cache says why)."""
    try:
        return cache.manifest().get("complete", False)
    except CacheError:
        return False


def candidates(
    config: CacheSettings,
    split: str,
    dataset: Dataset | None,
    key: CacheKey,
    *,
    keeping: Callable[[SplitCache], bool] = lambda cache: True,
    prefer: str | None = None,
) -> list[SplitCache]:
    """The begun caches of `split` with the key `key` that `keeping` accepts: of `dataset`
    when given, else of the one dataset cached with them (among several, `prefer`'s; else
    refused, listed). How every verb finds a training split: fit and curve its cache, score
    and suggest the one holding their head (head_files.head_of_split)."""
    if dataset is not None:
        begun = caches_in(config.cache_dir, split, key.digest, finished=False)
        return [c for c in begun if c.source == dataset.source() and keeping(c)]
    begun = caches_in(config.cache_dir, split, finished=False)
    found = [c for c in begun if c.key.serves(key) and keeping(c)]
    sources = {c.source or "" for c in found}
    if len(sources) > 1 and (prefer or "") in sources:
        return [c for c in found if (c.source or "") == (prefer or "")]
    if len(sources) > 1:
        listed = "; ".join(
            f"{c.directory.name} ({c.source or c.key.describe_data()})" for c in found
        )
        raise CacheError(
            f"{config.cache_dir}: several datasets have {split!r} features with these settings "
            f"({listed}); pass --data KIND:PATH to choose one"
        )
    return found


def open_split(
    config: CacheSettings, split: str, key: CacheKey, dataset: Dataset | None
) -> SplitCache:
    """SplitCache.open: the finished cache of `split` with the key `key` (`candidates`),
    checked against `dataset` when given (`SplitCache.check_against`, which loads the split
    once for the cache to hold); among a dataset's caches, the one keeping `config.keep`'s patches."""
    found = candidates(config, split, dataset, key)
    if not found:
        raise _missing(config, split, key, dataset)
    cache = _keeping(found, config.keep, split)
    if dataset is not None:
        cache.check_against(dataset, split, config.task)
    return cache


def _keeping(found: list[SplitCache], keep: str, split: str) -> SplitCache:
    """The cache keeping `keep`'s patches; "auto": the only one, else the split's role's."""
    if keep == "auto":
        if len(found) == 1:
            return found[0]
        keep = keep_by_role(split)
    matches = [c for c in found if keeps(c.keep, keep)]
    if len(matches) != 1:
        kept = ", ".join(f"{c.directory.name} keeps {c.keep}" for c in found)
        raise CacheError(
            f"{found[0].directory.parent}: no single {split!r} cache keeping {keep!r} patches "
            f"({kept}); pass --keep with the rule extract used"
        )
    return matches[0]


def _missing(config: CacheSettings, split: str, key: CacheKey, dataset) -> CacheError:
    """Why there is no cache, and what makes one."""
    root, digest = Path(config.cache_dir), key.digest
    mine = root / f"{split}-{digest}"
    same = caches_in(root, split, digest)
    if dataset is not None and same:
        held = ", ".join(
            f"{c.directory.name} ({c.source or 'made before each dataset had its own cache'})"
            for c in same
        )
        return CacheError(
            f"{mine}: no {split!r} features of {dataset} with these settings ({held}); run "
            f"pipeline extract --split {split}: it adopts a cache of the same data after checking "
            "it, and extracts otherwise"
        )
    others = sorted(root.glob(f"{split}-*/fingerprint.json"))
    if not others:
        return CacheError(
            f"{mine}: no features for split {split!r}; run pipeline extract --split {split} first"
        )
    wanted, found = key.describe_against(SplitCache.load(others[0].parent).key)
    return CacheError(
        f"{mine}: no {split!r} features with these settings ({wanted}); "
        f"{others[0].parent.name} has {found}: pass the options extract used, or extract again"
    )


def adopt(
    cache: SplitCache, split: str, digests: list[str], per_shard: int, limit: int | None
) -> str | None:
    """Give the new cache `cache` (locked, empty) the shards of a finished cache of the same
    settings whose every shard was made from exactly this split's data and keep rule (its
    recorded data digests are `digests`): one made before each dataset had its own cache is
    moved here, one of another copy of the data is linked. The adopted cache's name, or None."""
    found = caches_in(cache.directory.parent, split, cache.digest)
    oldest_first = sorted(found, key=lambda c: not made_before_datasets(c.source))
    for other in oldest_first:
        manifest = other.manifest()
        if other.directory == cache.directory or not keeps(other.keep, cache.keep):
            continue
        if (manifest.get("images_per_shard"), manifest.get("limit")) != (per_shard, limit):
            continue
        if len(digests) != len(manifest["shards"]) or other.changed_shards(digests):
            continue
        try:
            with WriterLock(other.directory):
                _take(other, cache, move=made_before_datasets(other.source))
        except CacheError:  # being written by another extract: not this time
            continue
        return other.directory.name
    return None


def _take(other: SplitCache, cache: SplitCache, *, move: bool) -> None:
    """Link (or copy) the other cache's shards and manifest into `cache`, its fingerprint
    last; `move`: its heads and image memo too, then the other directory goes."""
    names = [*other.manifest()["shards"], "manifest.json"] + ([DIGESTS_FILE] if move else [])
    for name in names:
        source, target = other.directory / name, cache.directory / name
        if source.is_file():
            target.unlink(missing_ok=True)
            try:
                os.link(source, target)
            except OSError:  # a filesystem without hard links
                shutil.copy2(source, target)
    if move and (other.directory / HEADS_DIR).is_dir():
        shutil.copytree(
            other.directory / HEADS_DIR, cache.directory / HEADS_DIR, dirs_exist_ok=True
        )
    cache.record_settings()
    if move:
        shutil.rmtree(other.directory)
