"""`pipeline localize`: per-class score maps from the patch scores, and how well they point.

The fitted head gives p(class|patch) for every cached patch of a split that keeps all its
patches (test, val); pipeline/score_maps.py turns each image's patches into one map per
class. Written into `config.output`:

    maps.h5             root attrs: classes (JSON list, the order of the maps), reduce,
                        cell (map cell side in pixels), split, digest, head
                        maps/<image id>/scores: [C, h, w] float16, gzip; attrs width, height
                        (image pixels; h, w = score_maps.grid_shape(width, height, cell))
    pointing.csv        class, pairs, hits, accuracy, centre_accuracy (percent) + a mean row
    overlays/<id>.png   the first `overlays` images with the maps of their `top` classes
    maps.json, pointing.json   provenance sidecars

Pointing (the weakly supervised localization "pointing game"): for each image and each
class with a non-difficult box in it, a hit when the peak of the class's map is within
POINTING_TOLERANCE (15 px) of one of its boxes. The baseline points at the image centre for
every class: VOC objects are often large and centred, so only beating it shows that the
maps localize. Pointing uses the float32 maps: float16 storage adds ties near 1, so peaks
recomputed from maps.h5 can differ in a few pairs. Splits without labels get maps and
overlays, no pointing.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError
from tqdm import tqdm

from pipeline.config import LocalizeConfig, TaskConfig
from pipeline.errors import DataError
from pipeline.provenance import write_sidecar
from pipeline.score_maps import (
    CELL,
    POINTING_TOLERANCE,
    REDUCES,
    map_peak,
    pointing_hit,
    score_map,
)
from pipeline.voc import ImageRecord, parse_annotation, resolve_year_dir
from stages.score import open_head_on_split, split_is_labelled

OVERLAY_ALPHA = 0.5  # opacity of a heat map where p = 1; it falls with p, so the image shows
# One single-hue colormap per overlaid class (by peak rank), so that two maps stay apart.
OVERLAY_COLORMAPS = ("Reds", "Blues", "Greens", "Purples", "Oranges", "Greys")


@dataclass(frozen=True)
class LocalizeSummary:
    split: str
    images: int
    classes: tuple[str, ...]
    rows: tuple[dict, ...]  # pointing.csv rows, the mean last; () for a split without labels
    reduce: str
    tolerance: float
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
                f"{mean['centre_accuracy']:.2f}% (mean over classes; {self.reduce} map, peak "
                f"within {self.tolerance:g} px of a box)"
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
    opened = open_head_on_split(config)
    classes, columns, cache = opened.classes, opened.columns, opened.cache
    year_dir = resolve_year_dir(config.voc_root)
    labelled = split_is_labelled(cache)
    n_images = cache.manifest()["n_images"]
    n_overlays = n_images if config.overlays is None else min(config.overlays, n_images)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    if n_overlays:
        (output / "overlays").mkdir(exist_ok=True)
    maps_path = output / "maps.h5"
    tmp = maps_path.with_name(maps_path.name + ".tmp")
    tally = np.zeros((3, len(classes)), dtype=np.int64)  # pairs, hits, centre hits per class
    done = 0
    bar = tqdm(total=n_images, unit="img", desc=f"localize {config.split}", dynamic_ncols=True)
    with bar, h5py.File(tmp, "w") as h5:
        h5.attrs.update(
            classes=json.dumps(list(classes)),
            reduce=config.reduce,
            cell=CELL,
            split=config.split,
            digest=cache.digest,
            head=config.head,
        )
        group = h5.create_group("maps")
        for shard in cache.iter_shards():
            if not shard.sampled.all():
                raise DataError(
                    f"{cache.directory}: split {config.split!r} keeps only a sample of its "
                    "patches plus the object patches, so its maps would show where the labels "
                    "are; localize a split that keeps every patch (--split test or val)"
                )
            probs = np.exp(opened.head.predict_log_proba(shard.features)[:, columns])
            for m, image_id in enumerate(shard.image_ids):
                width, height = (int(v) for v in shard.sizes[m])
                rows = shard.image_index == m
                maps = score_map(
                    shard.boxes[rows], probs[rows], width, height, reduce=config.reduce
                )
                entry = group.create_group(image_id)
                entry.create_dataset("scores", data=maps.astype(np.float16), compression="gzip")
                entry.attrs.update(width=width, height=height)
                if labelled:
                    annotation = parse_annotation(year_dir / "Annotations" / f"{image_id}.xml")
                    tally += pointing_counts(maps, annotation, classes)
                if done < n_overlays:
                    image = year_dir / "JPEGImages" / f"{image_id}.jpg"
                    overlay = overlay_image(image, maps, classes, config.top, (width, height))
                    overlay.save(output / "overlays" / f"{image_id}.png")
                done += 1
                bar.update()
    os.replace(tmp, maps_path)
    resolved = replace(config, classes=classes)
    provenance = {
        "digest": cache.digest,
        "fingerprint": cache.fingerprint,
        "head": opened.sidecar(),
        "tolerance": POINTING_TOLERANCE,
        "cell": CELL,
    }
    write_sidecar(maps_path, "localize", resolved, **provenance)
    rows, pointing_path = (), None
    if labelled:
        rows = tuple(pointing_table(classes, tally))
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


def pointing_counts(maps: np.ndarray, annotation: ImageRecord, classes: tuple[str, ...]):
    """[3, C] int: per class, 1 pair if it has a non-difficult box in the image, whether the
    map's peak hits one of them, whether the image centre does."""
    width, height = annotation.width, annotation.height
    counts = np.zeros((3, len(classes)), dtype=np.int64)
    for c, name in enumerate(classes):
        boxes = [o.box for o in annotation.objects if o.name == name and not o.difficult]
        if boxes:
            peak = map_peak(maps[c], width, height)
            centre = (width / 2, height / 2)
            counts[:, c] = 1, pointing_hit(peak, boxes), pointing_hit(centre, boxes)
    return counts


def pointing_table(classes: tuple[str, ...], tally: np.ndarray) -> list[dict]:
    """pointing.csv rows: per class its pairs, hits and accuracies (percent; nan without a
    pair), then the mean over the classes that have pairs."""
    pairs, hits, centre = tally
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy, centre_accuracy = 100 * hits / pairs, 100 * centre / pairs
    rows = [
        {
            "class": name,
            "pairs": int(pairs[c]),
            "hits": int(hits[c]),
            "accuracy": round(float(accuracy[c]), 2),
            "centre_accuracy": round(float(centre_accuracy[c]), 2),
        }
        for c, name in enumerate(classes)
    ]
    scored = pairs > 0
    rows.append(
        {
            "class": "mean",
            "pairs": int(pairs.sum()),
            "hits": int(hits.sum()),
            "accuracy": _mean(accuracy[scored]),
            "centre_accuracy": _mean(centre_accuracy[scored]),
        }
    )
    return rows


def _mean(values: np.ndarray) -> float:
    return round(float(values.mean()), 2) if values.size else float("nan")


def overlay_image(
    image_path: Path,
    maps: np.ndarray,
    classes: tuple[str, ...],
    top: int,
    size: tuple[int, int],
) -> Image.Image:
    """The image (its own pixel size) with the maps [C, h, w] of the `top` classes with the
    highest peaks as heat maps, each in its own colormap, opaque in proportion to p (so low
    scores leave the image visible), and a label per class with its name and peak."""
    try:
        with Image.open(image_path) as handle:
            canvas = handle.convert("RGBA")
    except FileNotFoundError:
        raise DataError(
            f"{image_path}: image not found; pass the --voc-root the features were extracted from"
        ) from None
    except UnidentifiedImageError:
        raise DataError(f"{image_path}: not a readable image; restore it") from None
    if canvas.size != size:
        raise DataError(
            f"{image_path}: is {canvas.width}x{canvas.height}, the features were extracted from "
            f"{size[0]}x{size[1]}; pass the --voc-root the features were extracted from"
        )
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    shown = np.argsort(-peaks, kind="stable")[:top]
    labels = []
    for rank, c in enumerate(shown):
        colormap = matplotlib.colormaps[OVERLAY_COLORMAPS[rank % len(OVERLAY_COLORMAPS)]]
        coarse = Image.fromarray(np.ascontiguousarray(maps[c], dtype=np.float32))
        values = np.asarray(coarse.resize(canvas.size, Image.Resampling.BILINEAR)).clip(0, 1)
        heat = colormap(values)
        heat[..., 3] = OVERLAY_ALPHA * values
        canvas = Image.alpha_composite(canvas, Image.fromarray(np.uint8(np.rint(heat * 255))))
        labels.append((f"{classes[c]} {peaks[c]:.2f}", tuple(int(255 * v) for v in colormap(0.8))))
    draw = ImageDraw.Draw(canvas)
    y = 2
    for text, colour in labels:
        x0, y0, x1, y1 = draw.textbbox((3, y), text)
        draw.rectangle((x0 - 2, y0 - 1, x1 + 2, y1 + 1), fill=(255, 255, 255, 255))
        draw.text((3, y), text, fill=colour)
        y = y1 + 3
    return canvas.convert("RGB")
