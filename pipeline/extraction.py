"""The extraction engine of stage one: the frozen backbone once over every patch of a split,
into HDF5 shards; resumable, shared by the processes of a torchrun."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from pipeline.backbone import FrozenBackbone, feature_settings, resolve_device
from pipeline.config import ExtractConfig
from pipeline.errors import CacheError, DataError, MidlevelError
from pipeline.images import PatchImages
from pipeline.ranks import all_agree, from_environment, process_group, summed
from pipeline.shards import FeatureCache, Shard, WriterLock, cache_path, write_shard
from pipeline.tasks import TaskData, load_task
from pipeline.voc import resolve_year_dir

TRAINING_SPLITS = ("train", "trainval")  # background subsampled; other splits keep every patch


@dataclass(frozen=True)
class ExtractSummary:
    cache_dir: str
    images: int
    patches: int
    seconds: float
    bytes_written: int
    shards_written: int
    shards_reused: int
    stages: dict  # seconds waiting for decoded images (read), in the net (compute), writing
    skipped: int = 0  # bad images left out (--on-error skip)
    rebuilt: dict = field(default_factory=dict)  # shard name -> what was wrong with it

    def line(self, split: str) -> str:
        if not self.shards_written:
            return f"extract {split}: nothing to do, all {self.shards_reused} shards already complete -> {self.cache_dir}"
        rate = self.patches / self.seconds if self.seconds else 0.0
        skipped = (
            f"{self.skipped} bad images skipped (listed in their shards' 'skipped' attribute; "
            "fix them and rerun without --on-error skip to add them), "
            if self.skipped
            else ""
        )
        rebuilt = "".join(f", rebuilt {name} ({why})" for name, why in self.rebuilt.items())
        return (
            f"extract {split}: {self.images} images, {self.patches} patches in {self.seconds:.1f} s "
            f"({rate:.1f} patches/s), {skipped}{self.bytes_written / 1e9:.3f} GB written, "
            f"{self.shards_written} shards new, {self.shards_reused} reused{rebuilt}; "
            f"read {self.stages['read']:.1f} s, compute {self.stages['compute']:.1f} s, "
            f"write {self.stages['write']:.1f} s -> {self.cache_dir}"
        )


def image_features(backbone: FrozenBackbone, item: dict, batch_size: int) -> np.ndarray:
    """[N, D] float16 features of one image's patches: pooled from one trunk pass per scale
    (--mode shared), or cropped and run batch by batch (--mode crop)."""
    if backbone.mode == "shared":
        if not len(item["boxes"]):
            return np.empty((0, backbone.feature_dim), np.float16)
        return (
            backbone.shared_features(item["image"], item["boxes"]).cpu().numpy().astype(np.float16)
        )
    out = []
    for start in range(0, len(item["boxes"]), batch_size):
        crops = backbone.crop(item["image"], item["boxes"][start : start + batch_size])
        out.append(backbone(crops).cpu().numpy().astype(np.float16))
    return np.concatenate(out) if out else np.empty((0, backbone.feature_dim), np.float16)


def extract_split(config: ExtractConfig) -> ExtractSummary:
    year_dir = resolve_year_dir(config.voc_root)
    task = load_task(
        year_dir, config.split, config.task, config.limit, skip_bad=config.on_error == "skip"
    )
    settings = feature_settings(config.backbone, config.grid, config.labels, config.task)
    digest = settings.digest()
    cache = FeatureCache(
        cache_path(config.cache_dir, config.split, digest), settings.as_dict(), digest
    )
    per_shard = config.images_per_shard
    n_shards = math.ceil(len(task.samples) / per_shard)
    started = time.perf_counter()
    ranks = from_environment()
    with process_group(ranks), contextlib.ExitStack() as held:
        failure = None
        if ranks.main:  # one lock per run, however many processes share its shards
            try:
                held.enter_context(WriterLock(cache.directory))
                cache.prepare(
                    n_images=len(task.samples),
                    images_per_shard=per_shard,
                    overwrite=config.overwrite,
                )
            except MidlevelError as exc:
                failure = exc
        if not all_agree(ranks, failure is None):
            raise failure or CacheError(
                f"{cache.directory}: rank 0 could not open the cache; see its message"
            )
        rebuilt = cache.bad_shards()
        pending = _pending(cache, n_shards, rebuilt, retry_skipped=config.on_error == "stop")
        totals = dict.fromkeys(_TOTALS, 0.0)
        if ranks.share(pending):
            totals = _extract_shards(
                config, cache, year_dir, task, ranks.share(pending), n_shards, ranks
            )
        totals = summed(ranks, totals)
    return ExtractSummary(
        cache_dir=str(cache.directory),
        images=int(totals["images"]),
        patches=int(totals["patches"]),
        seconds=time.perf_counter() - started,
        bytes_written=int(totals["bytes"]),
        shards_written=len(pending),
        shards_reused=n_shards - len(pending),
        stages={k: totals[k] for k in ("read", "compute", "write")},
        skipped=int(totals["skipped"]),
        rebuilt=rebuilt,
    )


_TOTALS = ("images", "patches", "bytes", "read", "compute", "write", "skipped")


def _pending(cache: FeatureCache, n_shards: int, bad: dict, *, retry_skipped: bool) -> list[int]:
    """Shards to (re)do: those not recorded, the recorded but `bad` ones (already checked, by
    cache.bad_shards), and, unless skipping is asked for again, those that skipped bad
    images, so that a rerun after fixing the files adds them."""
    recorded = cache.manifest().get("shards", {})

    def redo(name: str) -> bool:
        entry = recorded.get(name)
        return entry is None or name in bad or (retry_skipped and entry.get("skipped", 0) > 0)

    return [k for k in range(n_shards) if redo(cache.shard_path(k).name)]


def _extract_shards(config, cache, year_dir, task: TaskData, pending, n_shards, ranks) -> dict:
    """Extract the given pending shards of the task's samples (this process's share)."""
    samples = task.samples
    device = resolve_device(config.device)
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
    backbone = FrozenBackbone(config.backbone, device)
    per_shard = config.images_per_shard
    indices = [
        i for k in pending for i in range(k * per_shard, min((k + 1) * per_shard, len(samples)))
    ]
    dataset = PatchImages(
        year_dir,
        samples,
        indices,
        grid=config.grid,
        rule=config.labels,
        background=len(task.classes),
        keep_all=config.split not in TRAINING_SPLITS or config.grid.kind == "whole",
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=config.workers,
        collate_fn=_as_is,  # numpy items stay numpy: see pipeline/images.py
        prefetch_factor=4 if config.workers else None,
    )
    attrs = {
        "digest": cache.digest,
        "fingerprint": cache.fingerprint,
        "split": config.split,
        "class_names": list(task.classes),
        "background_label": len(task.classes),
        "labelled": task.truth is not None,
        "voc_year": year_dir.name,
        "task": config.task.name,
    }
    truth = task.truth
    if truth is None:
        truth = np.zeros((len(samples), len(task.classes)), dtype=np.int8)
    totals = dict.fromkeys(_TOTALS, 0.0)
    buffer: list[dict] = []
    skipped: list[dict] = []  # {"id", "reason"} of this shard's bad images
    bar = tqdm(
        total=len(indices),
        unit="img",
        desc=f"extract {config.split}" + (f" rank {ranks.rank}" if ranks.world > 1 else ""),
        dynamic_ncols=True,
        position=ranks.rank,
    )
    started = shard_started = mark = time.perf_counter()
    with bar:  # closed on errors too: the error line starts on a line of its own
        for item in loader:
            computing = time.perf_counter()
            totals["read"] += computing - mark
            if "error" not in item:
                _to_tensors(item, pin=device.type == "cuda")
                item["features"] = image_features(backbone, item, config.batch_size)
                totals["compute"] += time.perf_counter() - computing
                buffer.append(item)
                totals["images"] += 1
                totals["patches"] += len(item["labels"])
            elif config.on_error == "skip":
                skipped.append({"id": samples[item["index"]].sample_id, "reason": item["error"]})
                tqdm.write(f"skipped: {item['error']}", file=sys.stderr)
            else:
                raise DataError(item["error"])
            bar.update(1)
            bar.set_postfix(
                patches_per_s=f"{totals['patches'] / (time.perf_counter() - started):.1f}",
                refresh=False,
            )
            shard_index = item["index"] // per_shard
            if item["index"] == min((shard_index + 1) * per_shard, len(samples)) - 1:
                writing = time.perf_counter()
                shard = _assemble(buffer, samples, truth, backbone.feature_dim)
                _check_finite(shard, cache.shard_path(shard_index), config.backbone.weights)
                totals["bytes"] += write_shard(
                    cache.shard_path(shard_index), shard, {**attrs, "skipped": skipped}
                )
                now = time.perf_counter()
                totals["write"] += now - writing
                cache.record(
                    shard_index,
                    images=len(buffer),
                    patches=len(shard.labels),
                    seconds=now - shard_started,
                    n_shards=n_shards,
                    rank=ranks.rank,
                    skipped=len(skipped),
                )
                totals["skipped"] += len(skipped)
                buffer, skipped, shard_started = [], [], now
            mark = time.perf_counter()
    return totals


def _as_is(item: dict) -> dict:
    return item


def _to_tensors(item: dict, *, pin: bool) -> None:
    """The decoded image and boxes as tensors; the image in pinned memory for a CUDA copy."""
    image = torch.from_numpy(item["image"])
    item["image"] = image.pin_memory() if pin else image
    item["boxes"] = torch.from_numpy(item["boxes"])


def _check_finite(shard: Shard, path, weights: str | None) -> None:
    """NaN or Inf features (a broken weights file, an fp16 overflow) never reach a shard."""
    bad = ~np.isfinite(shard.features).all(axis=1)
    if bad.any():
        image = shard.image_ids[int(shard.image_index[np.flatnonzero(bad)[0]])]
        source = f"weights {weights}" if weights else "the backbone's weights"
        raise DataError(
            f"{path}: {int(bad.sum())} patch features are NaN or Inf (first in image {image}); "
            f"check {source}, nothing was written for this shard"
        )


def _assemble(items: list[dict], samples, truth: np.ndarray, dim: int) -> Shard:
    """One shard's arrays from its images' items, in image order."""
    counts = [len(it["labels"]) for it in items]
    index = [it["index"] for it in items]

    def joined(key: str, empty: np.ndarray) -> np.ndarray:  # a shard may skip all its images
        return np.concatenate([np.asarray(it[key]) for it in items] or [empty])

    return Shard(
        features=joined("features", np.empty((0, dim), np.float16)),
        boxes=joined("boxes", np.empty((0, 4), np.float32)),
        labels=joined("labels", np.empty(0, np.int16)).astype(np.int16),
        sampled=joined("sampled", np.empty(0, bool)).astype(bool),
        image_index=np.repeat(np.arange(len(items), dtype=np.int32), counts),
        image_ids=[samples[i].sample_id for i in index],
        sizes=np.array([(samples[i].width, samples[i].height) for i in index]).reshape(-1, 2),
        image_labels=truth[index],
    )
