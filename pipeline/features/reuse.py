"""What extract need not compute again in a split that keeps every patch (where nothing stored
depends on the labels but the labels): a shard whose annotations changed but not its images
is relabelled from its stored rows; a shard that grew at its end (tasks imported into a Label
Studio project) reuses the rows of the images it held, and only its new images run the net."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from pipeline.config import ExtractConfig
from pipeline.datasets import SplitData
from pipeline.features.patches import sample_labels
from pipeline.store.cache import SplitCache
from pipeline.store.data_digests import DIGESTS_FILE, ImageDigests, pixel_digests
from pipeline.store.shards import read_shard, shard_attrs
from pipeline.store.writer import ShardWriter


def relabellable(cache: SplitCache, pixels: list[str], changed: set[str]) -> list[int]:
    """The `changed` shards (their data did) whose images are those they were made from
    (`pixels[k]` recorded) with none skipped: only their labels need redoing."""
    recorded = cache.manifest().get("shards", {})
    return [
        k for k, digest in enumerate(pixels)
        if (name := cache.shard_path(k).name) in changed
        and recorded[name].get("pixels") == digest and recorded[name].get("skipped", 0) == 0
    ]  # fmt: skip


def relabel_shards(writer: ShardWriter, data: SplitData, config: ExtractConfig, shards: list[int]):
    """Give `shards` (their images unchanged: `relabellable`) their new labels, their
    features read back, not computed."""
    per_shard = config.images_per_shard
    for k in shards:
        path = writer.cache.shard_path(k)
        started, shard = time.perf_counter(), read_shard(path)
        first = k * per_shard
        samples = data.samples[first : first + len(shard.image_ids)]
        for i, sample in enumerate(samples):
            rows = shard.image_index == i
            shard.labels[rows] = _labels(sample, shard.boxes[rows], data, config)
        shard.image_labels = data.truth_or_unknown()[first : first + len(samples)]
        writer.write(
            k, shard, shard_attrs(path), seconds=time.perf_counter() - started, rank=0, skipped=0
        )


def grown_shards(cache: SplitCache, data: SplitData, per_shard: int, pending: list[int]):
    """pending shard -> how many of its first images its recorded file holds, unchanged and
    none skipped: those that grew at their end since (a split that keeps every patch)."""
    recorded, digests = cache.manifest().get("shards", {}), None
    out = {}
    for k in pending:
        entry = recorded.get(cache.shard_path(k).name) or {}
        held, first = entry.get("images", 0), k * per_shard
        now = len(data.samples[first : first + per_shard])
        if not (0 < held < now and entry.get("pixels") and entry.get("skipped", 0) == 0):
            continue
        digests = digests or ImageDigests(cache.directory / DIGESTS_FILE)
        if pixel_digests(data.samples[first : first + held], held, digests) == [entry["pixels"]]:
            out[k] = held
    return out


def reused_items(cache: SplitCache, data: SplitData, config: ExtractConfig, grown: dict):
    """The items (as the net's) of the images the grown shards held, their labels computed
    again; read now, before their shard is written anew."""
    items = []
    for k, held in sorted(grown.items()):
        shard = read_shard(cache.shard_path(k))
        for i in range(held):
            index = k * config.images_per_shard + i
            rows = shard.image_index == i
            items.append({
                "index": index, "boxes": shard.boxes[rows], "sampled": shard.sampled[rows],
                "features": shard.features[rows], "reused": True,
                "labels": _labels(data.samples[index], shard.boxes[rows], data, config),
            })  # fmt: skip
    return items


def with_reused(items: Iterator[dict], reused: list[dict]) -> Iterator[dict]:
    """The net's items with the reused ones in their places (image order)."""
    waiting = list(reused)
    for item in items:
        while waiting and waiting[0]["index"] < item["index"]:
            yield waiting.pop(0)
        yield item
    yield from waiting


def _labels(sample, boxes: np.ndarray, data: SplitData, config: ExtractConfig) -> np.ndarray:
    return sample_labels(sample, boxes, config.labels, len(data.classes), by_boxes=data.boxes)
