"""The extraction engine of stage one: the frozen backbone once over every patch of a split,
into HDF5 shards; resumable, keyed by the data, shared by the processes of a torchrun.

torch is imported only where a net runs: a finished extract (or a refusal) answers without it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from pipeline.config import ExtractConfig, GridConfig
from pipeline.datasets import Dataset, SplitData, open_dataset
from pipeline.datasets.base import keep_by_role
from pipeline.errors import CacheError, DataError, MidlevelError
from pipeline.features.ranks import all_agree, from_environment, process_group, summed
from pipeline.features.registry import cache_key
from pipeline.features.reuse import (
    grown_shards,
    relabel_shards,
    relabellable,
    reused_items,
    with_reused,
)
from pipeline.store.cache import SplitCache
from pipeline.store.keys import cache_path
from pipeline.store.shards import Shard, int8_net_of
from pipeline.store.writer import ShardWriter


@dataclass(frozen=True)
class ExtractResult:
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
    resized: tuple[int, int] | None = None  # (images before, now) when the split changed size
    runtime: str = ""  # what ran the frozen net ("onnxruntime 1.x", "torch 2.x")
    adopted: str | None = None  # the cache of the same data whose shards this one took
    relabelled: int = 0  # shards whose labels changed, not their images: relabelled, not computed
    left_out: str = ""  # what the dataset's reader left out of the split, and why
    reused_images: int = 0  # images of grown shards whose rows were reused, not computed


def rebuilt_text(rebuilt: dict[str, str]) -> str:
    """ ", rebuilt shard-00002.h5 (why)" per reason; several shards of one reason as a count."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in rebuilt.items():
        by_reason.setdefault(reason, []).append(name)
    parts = []
    for reason, names in by_reason.items():
        if len(names) == 1:
            parts.append(f", rebuilt {names[0]} ({reason})")
        else:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f", rebuilt {len(names)} shards ({reason}: {shown})")
    return "".join(parts)


def image_features(backbone, item: dict) -> np.ndarray:
    """[N, D] float16 features of one image's patches: pooled from one trunk pass per scale
    (--mode shared), or cropped and run `backbone.batch_size` at a time (--mode crop)."""
    if backbone.mode == "shared":
        if not len(item["boxes"]):
            return np.empty((0, backbone.feature_dim), np.float16)
        return (
            backbone.shared_features(item["image"], item["boxes"]).cpu().numpy().astype(np.float16)
        )
    return backbone.patch_features(item["image"], item["boxes"]).astype(np.float16)


def resolve_keep(keep: str, split: str, data: SplitData, grid: GridConfig) -> str:
    """Which patches a split stores: "sample" (a training split: object patches and a
    label-blind sample of all) or "all". "auto" follows the split's role (its name starts
    with "train") where it has labels; the whole-image grid has one patch, always kept."""
    if grid.kind == "whole":
        return "all"
    if keep == "auto":
        return keep_by_role(split, labelled=data.truth is not None)
    return keep


def extract_split(
    config: ExtractConfig, *, dataset: Dataset | None = None, calibration=None
) -> ExtractResult:
    """Extract `config.split` of the dataset (`config.data`, or `dataset` as given) into
    its cache: shards missing, bad, or made from other data are (re)done, the rest kept.
    `calibration`: an int8 net's training images (default: the dataset's training split)."""
    dataset = dataset or open_dataset(config.data, image_dir=config.image_dir)
    split_data = dataset.load(
        config.split, task=config.task, limit=config.limit, skip_bad=config.on_error == "skip"
    )
    keep = resolve_keep(config.keep, config.split, split_data, config.grid)
    key = cache_key(config, dataset)
    started = time.perf_counter()
    ranks = from_environment()
    with process_group(ranks), contextlib.ExitStack() as held:
        failure, writer = None, None
        if ranks.main:  # one lock per run, however many processes share its shards
            try:
                writer = held.enter_context(
                    SplitCache.writer(config, split_data, key, dataset, keep)
                )
            except MidlevelError as exc:
                failure = exc
        if not all_agree(ranks, failure is None):
            raise failure or CacheError(
                f"{cache_path(config.cache_dir, config.split, key.digest, dataset.source(), keep)}"
                ": rank 0 could not open the cache; see its message"
            )
        if not ranks.main:  # after rank 0 hashed the images: the others only stat them
            writer = SplitCache.writer(config, split_data, key, dataset, keep, main=False)
        calibrating = time.perf_counter()
        if config.backbone.precision == "int8" and calibration is None:
            from pipeline.features.quantize import calibration_set

            calibration = calibration_set(
                dataset, config.split, split_data, config.grid, config.task
            )
        calibrating = time.perf_counter() - calibrating  # the net's setup: its images read
        cache = writer.cache
        rebuilt, pending, relabel, grown = _work_left(writer, split_data, config, keep, calibration)
        if ranks.main:
            relabel_shards(writer, split_data, config, relabel)
        if rebuilt and ranks.main:
            tqdm.write(
                f"extract {config.split}: {rebuilt_text(rebuilt).removeprefix(', ')}",
                file=sys.stderr,
            )
        totals, runtime = dict.fromkeys(_TOTALS, 0.0), ""
        if ranks.share(pending):
            job = _Job(config, writer, dataset, split_data, keep, calibration)
            share = ranks.share(pending)
            mine = {k: held for k, held in grown.items() if k in share}
            totals, runtime = _extract_shards(job, share, ranks, mine)
            totals["setup"] += calibrating
        totals = summed(ranks, totals)
    return ExtractResult(
        cache_dir=str(cache.directory),
        images=int(totals["images"]),
        patches=int(totals["patches"]),
        seconds=time.perf_counter() - started,
        bytes_written=int(totals["bytes"]),
        shards_written=len(pending),
        shards_reused=writer.n_shards - len(pending),
        stages={k: totals[k] for k in ("setup", "read", "compute", "write")},
        skipped=int(totals["skipped"]),
        rebuilt=rebuilt,
        resized=None if writer.resized is None else (writer.resized, len(split_data.samples)),
        runtime=runtime,
        adopted=writer.adopted,
        relabelled=len(relabel),
        reused_images=int(totals["reused"]),
        left_out=dataset.left_out(config.split),
    )


def _work_left(writer: ShardWriter, data: SplitData, config: ExtractConfig, keep: str, calibration):
    """What extract must do to the split's cache: (the shards rebuilt: name -> why, those
    pending, those relabelled instead, the grown ones: index -> images reused). Only a split
    that keeps every patch stores nothing the labels choose, so only its shards are
    relabelled or grown (features/reuse.py)."""
    cache = writer.cache
    other, bad_files = other_nets(cache, calibration), cache.bad_shards()
    changed = cache.changed_shards(writer.digests)
    every_patch = keep == "all"
    bad = {*other, *bad_files}
    relabel = relabellable(cache, writer.pixels, set(changed) - bad) if every_patch else []
    rebuilt = {**other, **changed, **bad_files}
    for k in relabel:
        rebuilt.pop(cache.shard_path(k).name)
    pending = cache.pending(writer.n_shards, rebuilt, retry_skipped=config.on_error == "stop")
    whole = [k for k in pending if cache.shard_path(k).name not in bad]
    grown = grown_shards(cache, data, config.images_per_shard, whole) if every_patch else {}
    for k in grown:
        rebuilt.pop(cache.shard_path(k).name, None)  # not rebuilt: its images are reused
    return rebuilt, pending, relabel, grown


_TOTALS = ("images", "patches", "bytes", "setup", "read", "compute", "write", "skipped", "reused")
NET_CHANGED = "made by another int8 net: the calibration images changed"
NETS_MIXED = "made by one of several int8 nets"


def other_nets(cache: SplitCache, calibration) -> dict[str, str]:
    """Recorded shards of an int8 cache that a net of another calibration made than
    `calibration` (the training images changed since), and all of them where the rest name
    several nets: name -> why. A cache holds one net's features (docs/deploy.md#int8)."""
    from pipeline.features.quantize import recorded_calibration

    if calibration is None:
        return {}
    made = cache.recorded_attrs()
    other = {
        name: NET_CHANGED
        for name, attrs in made.items()
        if (attrs.get("calibration") or recorded_calibration(int8_net_of(attrs)))
        != calibration.digest
    }
    kept = {int8_net_of(attrs) for name, attrs in made.items() if name not in other}
    return other | {name: NETS_MIXED for name in made if name not in other and len(kept) > 1}


@dataclass(frozen=True)
class _Job:
    """What the shard loop of one extract needs."""

    config: ExtractConfig
    writer: ShardWriter
    dataset: Dataset
    data: SplitData
    keep: str
    calibration: object = None  # pipeline/features/quantize.Calibration, for int8


def iter_image_features(
    backbone, dataset, *, workers: int, timing: dict | None = None
) -> Iterator[dict]:
    """Items of a PatchImages dataset, in order: {index, boxes, labels, sampled, features}
    or {index, error}. Images are decoded in DataLoader workers; `timing` (if given) adds
    the seconds spent waiting for them ("read") and in the net ("compute")."""
    import torch

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,  # numpy items stay numpy: see pipeline/features/images.py
        prefetch_factor=4 if workers else None,
    )
    timing = timing if timing is not None else {}
    mark = time.perf_counter()
    for item in loader:
        computing = time.perf_counter()
        timing["read"] = timing.get("read", 0.0) + computing - mark
        if "error" not in item:
            _to_tensors(item, pin=backbone.device.type == "cuda")
            item["features"] = image_features(backbone, item)
            del item["image"]
            timing["compute"] = timing.get("compute", 0.0) + time.perf_counter() - computing
        yield item
        mark = time.perf_counter()


def array_features(backbone, pixels: np.ndarray, grid: GridConfig):
    """(boxes [N, 4], features [N, D] float16) of every patch of an [H, W, 3] uint8 image in
    memory, as extract computes them for a decoded file."""
    from pipeline.features.patches import patch_grid

    height, width = pixels.shape[:2]
    boxes = patch_grid(width, height, grid)
    item = {"image": np.ascontiguousarray(pixels.transpose(2, 0, 1)), "boxes": boxes}
    _to_tensors(item, pin=False)
    return boxes, image_features(backbone, item)


def load_backbone(config, *, local_rank: int = 0, world: int = 1, calibration=None):
    """The frozen backbone of `config.backbone` on `config.device` (a torchrun rank's GPU),
    under `config.runtime`, `config.batch_size` patches a forward (None: the fastest);
    `calibration` the training images an int8 net is calibrated on."""
    import torch

    from pipeline.features.backbone import FrozenBackbone
    from pipeline.heads.device import resolve_device

    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    return FrozenBackbone(
        config.backbone, device, runtime=config.runtime, batch_size=config.batch_size,
        calibration=calibration,
    )  # fmt: skip


def _extract_shards(job: _Job, pending: list[int], ranks, grown: dict) -> tuple[dict, str]:
    """Extract the given pending shards of the split's samples (this process's share): read
    and compute each image (but the first `grown[k]` of a grown shard k, whose rows are
    reused), write each shard once its last image is in. Its totals, and the runtime that ran
    the net. Its setup counts importing the net's stack (torch) and building the net."""
    setup = time.perf_counter()
    from pipeline.features.images import PatchImages

    config, samples, writer = job.config, job.data.samples, job.writer
    backbone = load_backbone(
        config, local_rank=ranks.local_rank, world=ranks.world, calibration=job.calibration
    )
    per_shard = config.images_per_shard
    indices = [
        i
        for k in pending
        for i in range(k * per_shard + grown.get(k, 0), min((k + 1) * per_shard, len(samples)))
    ]
    reused = reused_items(writer.cache, job.data, config, grown)
    attrs = _shard_attrs(job, backbone.runtime_version)
    truth = job.data.truth_or_unknown()
    totals = dict.fromkeys(_TOTALS, 0.0)
    totals["setup"] = time.perf_counter() - setup
    bar = tqdm(
        total=len(indices) + len(reused),
        unit="img",
        desc=f"extract {config.split}" + (f" rank {ranks.rank}" if ranks.world > 1 else ""),
        dynamic_ncols=True,
        position=ranks.rank,
    )
    patches = PatchImages(
        samples, indices, grid=config.grid, rule=config.labels, background=len(job.data.classes),
        keep_all=job.keep == "all", patch_labels=job.data.boxes,
    )  # fmt: skip
    items = iter_image_features(backbone, patches, workers=config.workers, timing=totals)
    items = with_reused(items, reused)
    shard_started = time.perf_counter()
    with bar:  # closed on errors too: the error line starts on a line of its own
        for index, images, skipped in _by_shard(items, job, totals, bar):
            writing = time.perf_counter()
            shard = assemble_shard(images, samples, truth, backbone.feature_dim)
            check_finite(shard, writer.cache.shard_path(index), config.backbone.weights)
            totals["bytes"] += writer.write(
                index, shard, {**attrs, "skipped": skipped},
                seconds=time.perf_counter() - shard_started, rank=ranks.rank, skipped=len(skipped),
            )  # fmt: skip
            shard_started = time.perf_counter()
            totals["write"] += shard_started - writing
            totals["skipped"] += len(skipped)
    return totals, backbone.runtime_version


def _shard_attrs(job: _Job, runtime: str) -> dict:
    """What every shard of the split carries (docs/cache.md)."""
    classes, cache = job.data.classes, job.writer.cache
    return {
        "digest": cache.digest,
        "fingerprint": cache.key.settings,
        "split": job.config.split,
        "class_names": list(classes),
        "background_label": len(classes),
        "labelled": job.data.truth is not None,
        "task": job.config.task.name,
        "data": job.dataset.kind,
        "boxes": job.data.boxes,
        "keep": job.keep,
        "runtime": runtime,
        **({"calibration": job.calibration.digest} if job.calibration else {}),
        **job.dataset.attrs(),
    }


def _by_shard(items, job: _Job, totals: dict, bar) -> Iterator[tuple[int, list, list]]:
    """(shard index, its images' items, its skipped images {"id", "reason"}) once the shard's
    last image is in; a bad image stops the run, or is skipped and logged (--on-error)."""
    config, samples = job.config, job.data.samples
    per_shard = config.images_per_shard
    images: list[dict] = []
    skipped: list[dict] = []
    started = time.perf_counter()
    for item in items:
        if "error" not in item:
            images.append(item)
            counted = "reused" if item.get("reused") else "images"
            totals[counted] += 1
            totals["patches"] += 0 if item.get("reused") else len(item["labels"])
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
        index = item["index"] // per_shard
        if item["index"] == min((index + 1) * per_shard, len(samples)) - 1:
            yield index, images, skipped
            images, skipped = [], []


def _as_is(item: dict) -> dict:
    return item


def _to_tensors(item: dict, *, pin: bool) -> None:
    """The decoded image and boxes as tensors; the image in pinned memory for a CUDA copy."""
    import torch

    image = torch.from_numpy(item["image"])
    item["image"] = image.pin_memory() if pin else image
    item["boxes"] = torch.from_numpy(item["boxes"])


def check_finite(shard: Shard, path, weights: str | None) -> None:
    """NaN or Inf features (a broken weights file, an fp16 overflow) never reach a shard."""
    bad = ~np.isfinite(shard.features).all(axis=1)
    if bad.any():
        image = shard.image_ids[int(shard.image_index[np.flatnonzero(bad)[0]])]
        source = f"weights {weights}" if weights else "the backbone's weights"
        raise DataError(
            f"{path}: {int(bad.sum())} patch features are NaN or Inf (first in image {image}); "
            f"check {source}, nothing was written for this shard"
        )


def assemble_shard(items: list[dict], samples, truth: np.ndarray, dim: int) -> Shard:
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
