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
from pipeline.reporting.maps import MapsFile, file_key
from pipeline.reporting.overlays import overlay_image
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
    labelled = cache.labelled
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
        "fingerprint": cache.key.settings,
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
