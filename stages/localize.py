"""`pipeline localize`: per-class score maps from the patch scores, and how well they point.

The fitted head gives p(class|patch) for every cached patch of a split that keeps all its
patches (test, val); pipeline/score_maps.py turns each image's patches into one map per
class. Written into `config.output` (layout of maps.h5 in pipeline/localization.py):

    maps.h5             one [C, h, w] map per image, under maps/<key of its id>/scores
    pointing.csv        class, pairs, hits, accuracy, centre_accuracy, location_ap,
                        centre_location_ap (percent) + a mean row (docs/localize.md)
    overlays/<key>.png  the first `overlays` images, a panel per `top` class: its map, peak
                        and truth boxes (layout in pipeline/localization.py)
    maps.json, pointing.json   provenance sidecars

Pointing (the weakly supervised localization "pointing game"): for each image and each
class with a non-difficult box in it, a hit when the peak of the class's map is within
POINTING_TOLERANCE (15 px) of one of its boxes.

Location AP (Oquab et al., "Is object localization for free?", CVPR 2015;
pipeline/metrics.py: location_ap): for each class every image predicts one location, its
map's peak, with the image's class score (the head's pooled score, as `score` ranks) as
confidence; down that ranking a prediction is right when the image has a non-difficult box
of the class within LOCATION_TOLERANCE (18 px) of the peak, and wrong otherwise, images
without the class included. Unlike pointing, it also charges a confident score on an image
without the object. Images whose boxes of the class are all difficult are left out; a class
no image has a box of gets nan, and the means skip it.

The baseline of both points at the image centre for every class (location AP: the same
ranking): VOC objects are often large and centred, so only beating it shows that the maps
localize. Both use the float32 maps: float16 storage adds ties near 1, so peaks recomputed
from maps.h5 can differ in a few pairs. Splits without labels get maps and overlays, no
pointing. The boxes and images come from the dataset (--data); localize streams the shards
and keeps per image only its class scores and flags, never all maps.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import LocalizeConfig, TaskConfig
from pipeline.errors import DataError
from pipeline.evaluation.localization import (
    MapsFile,
    class_boxes,
    file_key,
    location_aps,
    location_flags,
    overlay_image,
    pointing_counts,
    pointing_table,
)
from pipeline.evaluation.pooling import image_log_scores
from pipeline.evaluation.score_maps import (
    CELL,
    LOCATION_TOLERANCE,
    POINTING_TOLERANCE,
    REDUCES,
    score_map,
)
from pipeline.evaluation.scoring import open_head_on_split, split_is_labelled
from pipeline.reporting.provenance import write_sidecar
from pipeline.store.freshness import open_dataset_of


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
    _check_options(config)
    dataset = open_dataset_of(config)
    if dataset is None:
        raise DataError(
            "localize needs the dataset for its images and boxes: pass --data KIND:PATH"
        )
    opened = open_head_on_split(config)
    classes, columns, cache = opened.classes, opened.columns, opened.cache
    k = opened.record.get("k", 5.0)
    split = dataset.load(config.split, task=config.task, skip_bad=True)
    samples = {s.sample_id: s for s in split.samples}
    labelled = split_is_labelled(cache)
    n_images = cache.manifest()["n_images"]
    n_overlays = n_images if config.overlays is None else min(config.overlays, n_images)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    if n_overlays:
        (output / "overlays").mkdir(exist_ok=True)
    maps_path = output / "maps.h5"
    tally = np.zeros((3, len(classes)), dtype=np.int64)  # pairs, hits, centre hits per class
    # Location AP's per-image data: class scores (log), and present / peak hit / centre hit.
    class_scores = np.full((n_images, len(classes)), np.nan)
    flags = np.zeros((n_images, 3, len(classes)), dtype=np.int8)
    done = 0
    bar = tqdm(total=n_images, unit="img", desc=f"localize {config.split}", dynamic_ncols=True)
    attrs = {"split": config.split, "digest": cache.digest, "head": config.head}
    with bar, MapsFile(maps_path, classes, config.reduce, **attrs) as maps_file:
        for shard in cache.iter_shards():
            if not shard.sampled.all():
                raise DataError(
                    f"{cache.directory}: split {config.split!r} keeps only a sample of its "
                    "patches plus the object patches, so its maps would show where the labels "
                    "are; localize a split that keeps every patch (--split test or val)"
                )
            log_probs = opened.head.predict_log_proba(shard.features)
            probs = np.exp(log_probs[:, columns])
            if labelled:  # every patch of the shard is kept: the image score pools them all
                n_shard = len(shard.image_ids)
                log_scores = image_log_scores(
                    opened.head, shard.features, shard.image_index, n_shard, k, log_probs=log_probs
                )[:, columns]
            for m, image_id in enumerate(shard.image_ids):
                width, height = (int(v) for v in shard.sizes[m])
                rows = shard.image_index == m
                maps = score_map(
                    shard.boxes[rows], probs[rows], width, height, reduce=config.reduce
                )
                maps_file.add(image_id, maps, width, height)
                sample = samples[image_id]
                if labelled:
                    tally += pointing_counts(maps, sample, classes, split.classes)
                    class_scores[done] = log_scores[m]
                    flags[done] = location_flags(maps, sample, classes, split.classes)
                if done < n_overlays:
                    truth = None  # no labels: no boxes drawn, no hit or miss
                    if labelled:
                        truth = {c: class_boxes(sample, c, split.classes) for c in classes}
                    overlay = overlay_image(
                        sample.image_path, maps, classes, config.top, (width, height), truth
                    )
                    overlay.save(output / "overlays" / f"{file_key(image_id)}.png")
                done += 1
                bar.update()
    resolved = replace(config, classes=classes)
    provenance = {
        "digest": cache.digest,
        "fingerprint": cache.fingerprint,
        "head": opened.sidecar(),
        "pointing_tolerance": POINTING_TOLERANCE,
        "location_tolerance": LOCATION_TOLERANCE,
        "k": k,
        "cell": CELL,
    }
    write_sidecar(maps_path, "localize", resolved, **provenance)
    rows, pointing_path = (), None
    if labelled:
        location = location_aps(class_scores[:done], flags[:done])
        rows = tuple(pointing_table(classes, tally, location))
        pointing_path = output / "pointing.csv"
        with open(pointing_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_sidecar(pointing_path, "localize", resolved, **provenance)
    return LocalizeSummary(
        split=config.split,
        images=done,
        classes=classes,
        rows=rows,
        reduce=config.reduce,
        tolerance=POINTING_TOLERANCE,
        location_tolerance=LOCATION_TOLERANCE,
        overlays=n_overlays,
        seconds=time.perf_counter() - started,
        maps=str(maps_path),
        pointing=None if pointing_path is None else str(pointing_path),
    )


def _check_options(config: LocalizeConfig) -> None:
    """Refuse settings that have no maps, before any work."""
    if config.reduce not in REDUCES:
        raise DataError(f"--reduce {config.reduce!r}: use one of {', '.join(REDUCES)}")
    if config.top < 1:
        raise DataError(f"--top {config.top}: overlay at least 1 class per image")
    if config.overlays is not None and config.overlays < 0:
        raise DataError(f"--overlays {config.overlays}: give a count >= 0 (0: no overlays)")
    if config.grid.kind != "patches" or config.task != TaskConfig():
        raise DataError(
            f"--grid {config.grid.kind} --task {config.task.name}: maps need the patch grid "
            "of the object task; extract and fit with --grid patches"
        )
