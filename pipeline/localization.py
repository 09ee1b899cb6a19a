"""Score maps on disk and on screen: maps.h5, overlay PNGs, and the pointing game's tally.

What `pipeline localize` (cached splits) and `pipeline predict --maps` (new photos) share.
maps.h5 layout:

    root attrs: classes (JSON list, the order of the maps), reduce, cell (map cell side in
                pixels), and what the caller adds (split, digest, head)
    maps/<key>/scores: [C, h, w] float16, gzip; attrs id (the sample id), width, height
                (image pixels; h, w = score_maps.grid_shape(width, height, cell))

`<key>` is `file_key(id)`: the id with every character that is not a letter, a digit or
one of `._-` written as %XX (UTF-8), so that an id with folders (`sub/0001`) or any other
character stays one group and one overlay file name, `overlays/<key>.png`, and reads back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import h5py
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from pipeline.datasets import Sample
from pipeline.errors import DataError
from pipeline.score_maps import CELL, map_peak, pointing_hit

OVERLAY_ALPHA = 0.5  # opacity of a heat map where p = 1; it falls with p, so the image shows
# One single-hue colormap per overlaid class (by peak rank), so that two maps stay apart.
OVERLAY_COLORMAPS = ("Reds", "Blues", "Greens", "Purples", "Oranges", "Greys")


def file_key(sample_id: str) -> str:
    """The id as one safe name (an HDF5 group, a file name); see the module docstring."""
    safe = "".join(c if c.isalnum() or c in "._-" else quote(c, safe="") for c in sample_id)
    return "%2E" + safe[1:] if safe.startswith(".") else safe


class MapsFile:
    """maps.h5 written under a temporary name and renamed when closed without error."""

    def __init__(self, path: Path, classes: tuple[str, ...], reduce: str, **attrs):
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._h5 = h5py.File(self._tmp, "w")
        self._h5.attrs.update(classes=json.dumps(list(classes)), reduce=reduce, cell=CELL, **attrs)
        self._maps = self._h5.create_group("maps")

    def add(self, sample_id: str, maps: np.ndarray, width: int, height: int) -> None:
        entry = self._maps.create_group(file_key(sample_id))
        entry.create_dataset("scores", data=maps.astype(np.float16), compression="gzip")
        entry.attrs.update(id=sample_id, width=width, height=height)

    def __enter__(self) -> MapsFile:
        return self

    def __exit__(self, kind, *exc) -> None:
        self._h5.close()
        if kind is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def pointing_counts(
    maps: np.ndarray, sample: Sample, classes: tuple[str, ...], names: tuple[str, ...]
) -> np.ndarray:
    """[3, C] int: per class of `classes`, 1 pair if it has a non-difficult box in the sample
    (box classes index `names`, the dataset's classes), whether the map's peak hits one of
    them, whether the image centre does."""
    width, height = sample.width, sample.height
    counts = np.zeros((3, len(classes)), dtype=np.int64)
    for c, name in enumerate(classes):
        if name not in names:
            continue
        chosen = (sample.box_classes == names.index(name)) & ~sample.difficult
        boxes = sample.boxes[chosen]
        if len(boxes):
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
            f"{image_path}: image not found; pass the --data the features were extracted from"
        ) from None
    except UnidentifiedImageError:
        raise DataError(f"{image_path}: not a readable image; restore it") from None
    if canvas.size != size:
        raise DataError(
            f"{image_path}: is {canvas.width}x{canvas.height}, the features were extracted from "
            f"{size[0]}x{size[1]}; pass the --data the features were extracted from"
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
