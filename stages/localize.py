"""`pipeline localize`: per-class score maps from the patch scores of a split that keeps every
patch, overlays, and how well the maps point: the pointing game and location AP, each beside
a guess at the image centre (columns and rules in docs/localize.md)."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import LocalizeConfig
from pipeline.errors import DataError
from pipeline.evaluation.pointing import (
    class_boxes,
    location_aps,
    location_flags,
    pointing_counts,
    pointing_table,
)
from pipeline.evaluation.pooling import image_log_scores
from pipeline.evaluation.score_maps import (
    CELL,
    LOCATION_TOLERANCE,
    POINTING_TOLERANCE,
    score_map,
)
from pipeline.evaluation.scoring import open_head_on_split
from pipeline.reporting.maps import MapsWriter
from pipeline.reporting.provenance import write_sidecar


@dataclass(frozen=True)
class LocalizeSummary:
    split: str
    images: int
    classes: tuple[str, ...]
    rows: tuple[dict, ...]  # pointing.csv rows, the mean last; () for a split without labels
    reduce: str
    tolerance: float  # pointing's
    location_tolerance: float  # location AP's
    overlays: int
    seconds: float
    maps: str
    pointing: str | None  # None: no labels, no pointing

    def line(self) -> str:
        head = f"localize {self.split}: {self.images} images, {len(self.classes)} classes"
        if self.pointing is None:
            scores = "no labels in this split (no pointing)"
            files = self.maps
        else:
            mean = self.rows[-1]
            scores = (
                f"{mean['pairs']} image-class pairs, pointing {mean['accuracy']:.2f}% vs centre "
                f"{mean['centre_accuracy']:.2f}% (peak within {self.tolerance:g} px of a box), "
                f"location AP {mean['location_ap']:.2f}% vs centre "
                f"{mean['centre_location_ap']:.2f}% (images ranked by class score, peak within "
                f"{self.location_tolerance:g} px); means over classes, {self.reduce} map,"
            )
            files = f"{self.maps}, {self.pointing}"
        overlays = f", {self.overlays} overlays in {Path(self.maps).parent / 'overlays'}/"
        return (
            f"{head}, {scores} in {self.seconds:.1f} s -> {files}"
            f"{overlays if self.overlays else ''}"
        )


def run(config: LocalizeConfig) -> LocalizeSummary:
    started = time.perf_counter()
    if not config.data:
        raise DataError(
            "localize needs the dataset for its images and boxes: pass --data KIND:PATH"
        )
    opened = open_head_on_split(config)
    classes, columns, cache = opened.classes, opened.columns, opened.cache
    k = opened.record.k
    split = cache.data  # as the cache was checked against
    samples = {s.sample_id: s for s in split.samples}
    n_images = cache.manifest()["n_images"]
    n_overlays = n_images if config.overlays is None else min(config.overlays, n_images)
    pointing = _Pointing(samples, classes, split.classes, n_images) if cache.labelled else None
    images = _image_maps(config, opened.head, cache, columns, k)
    done = _write_maps(
        config, images, classes=classes, digest=cache.digest, samples=samples, pointing=pointing,
        n_images=n_images, n_overlays=n_overlays,
    )  # fmt: skip
    resolved, provenance = replace(config, classes=classes), _provenance(opened, cache, k)
    output = Path(config.output)
    write_sidecar(output / "maps.h5", "localize", resolved, **provenance)
    rows, pointing_path = (), None
    if pointing is not None:
        rows, pointing_path = pointing.rows(), output / "pointing.csv"
        _write_pointing(pointing_path, rows)
        write_sidecar(pointing_path, "localize", resolved, **provenance)
    return LocalizeSummary(
        split=config.split, images=done, classes=classes, rows=rows, reduce=config.reduce,
        tolerance=POINTING_TOLERANCE, location_tolerance=LOCATION_TOLERANCE, overlays=n_overlays,
        seconds=time.perf_counter() - started, maps=str(output / "maps.h5"),
        pointing=None if pointing_path is None else str(pointing_path),
    )  # fmt: skip


def _write_maps(
    config: LocalizeConfig,
    images,
    *,
    classes: tuple[str, ...],
    digest: str,
    samples: dict,
    pointing: _Pointing | None,
    n_images: int,
    n_overlays: int,
) -> int:
    """maps.h5 of the `images` (`_image_maps`) and the first `n_overlays` ones' overlays, the
    pointing scored on the way: how many images were mapped."""
    attrs = {"split": config.split, "digest": digest, "head": config.head}
    truth = None if pointing is None else pointing.boxes
    bar = tqdm(total=n_images, unit="img", desc=f"localize {config.split}", dynamic_ncols=True)
    done = 0
    with bar, MapsWriter(config.output, classes, config.reduce, overlays=n_overlays,
                         top=config.top, truth=truth, **attrs) as writer:  # fmt: skip
        for image_id, size, maps, log_scores in images:
            writer.add(image_id, samples[image_id].image_path, maps, size)
            if pointing is not None:
                pointing.add(image_id, maps, log_scores)
            done += 1
            bar.update()
    return done


def _provenance(opened, cache, k: float) -> dict:
    """What the sidecars of maps.h5 and pointing.csv record beside the config."""
    return {
        "digest": cache.digest,
        "fingerprint": cache.key.settings,
        "head": opened.sidecar(),
        "pointing_tolerance": POINTING_TOLERANCE,
        "location_tolerance": LOCATION_TOLERANCE,
        "k": k,
        "cell": CELL,
    }


def _image_maps(config: LocalizeConfig, head, cache, columns, k: float):
    """(id, (width, height), class maps [C, h, w], log class scores [C] or None unlabelled) of
    each image of the split, in cache order; refused for a split that keeps a patch sample."""
    for shard in cache.iter_shards():
        if not shard.sampled.all():
            raise DataError(
                f"{cache.directory}: split {config.split!r} keeps only a sample of its "
                "patches plus the object patches, so its maps would show where the labels "
                "are; localize a split that keeps every patch (--split test or val)"
            )
        log_probs = head.predict_log_proba(shard.features)
        probs = np.exp(log_probs[:, columns])
        log_scores = None
        if cache.labelled:  # every patch of the shard is kept: the image score pools them all
            n_shard = len(shard.image_ids)
            log_scores = image_log_scores(
                head, shard.features, shard.image_index, n_shard, k, log_probs=log_probs
            )[:, columns]
        for m, image_id in enumerate(shard.image_ids):
            width, height = (int(v) for v in shard.sizes[m])
            rows = shard.image_index == m
            maps = score_map(shard.boxes[rows], probs[rows], width, height, reduce=config.reduce)
            yield image_id, (width, height), maps, None if log_scores is None else log_scores[m]


class _Pointing:
    """The pointing game and location AP of a labelled split, gathered image by image."""

    def __init__(self, samples: dict, classes: tuple[str, ...], split_classes, n_images: int):
        self.samples, self.classes, self.split_classes = samples, classes, split_classes
        self.tally = np.zeros((3, len(classes)), dtype=np.int64)  # pairs, hits, centre hits
        # Location AP's per-image data: class scores (log), and present / peak hit / centre hit.
        self.class_scores = np.full((n_images, len(classes)), np.nan)
        self.flags = np.zeros((n_images, 3, len(classes)), dtype=np.int8)
        self.images = 0

    def add(self, image_id: str, maps: np.ndarray, log_scores: np.ndarray) -> None:
        sample = self.samples[image_id]
        self.tally += pointing_counts(maps, sample, self.classes, self.split_classes)
        self.class_scores[self.images] = log_scores
        self.flags[self.images] = location_flags(maps, sample, self.classes, self.split_classes)
        self.images += 1

    def boxes(self, image_id: str) -> dict:
        """The image's boxes by class, drawn on its overlay with hit or miss."""
        return {c: class_boxes(self.samples[image_id], c, self.split_classes) for c in self.classes}

    def rows(self) -> tuple[dict, ...]:
        """pointing.csv's rows, the mean last."""
        n = self.images
        location = location_aps(self.class_scores[:n], self.flags[:n])
        return tuple(pointing_table(self.classes, self.tally, location))


def _write_pointing(path: Path, rows: tuple[dict, ...]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
