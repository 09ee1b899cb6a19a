"""Score maps on disk and on screen: maps.h5, overlay PNGs, the pointing game's tally and
location AP's per-image flags.

What `pipeline localize` (cached splits) and `pipeline predict --maps` (new photos) share.
maps.h5 layout:

    root attrs: classes (JSON list, the order of the maps), reduce, cell (map cell side in
                pixels), and what the caller adds (split, digest, head)
    maps/<key>/scores: [C, h, w] float16, gzip; attrs id (the sample id), width, height
                (image pixels; h, w = score_maps.grid_shape(width, height, cell))

`<key>` is `file_key(id)`: the id with every character that is not a letter, a digit or
one of `._-` written as %XX (UTF-8), so that an id with folders (`sub/0001`) or any other
character stays one group and one overlay file name, `overlays/<key>.png`, and reads back.

Overlay layout (`overlay_image`, `overlay_layout`): one panel per shown class, side by
side, each the photo in grey and dimmed with that class's map over it in one perceptual
colormap on a fixed 0..1 scale (more opaque where the score is high), a star at the map's
peak, the class's truth boxes when given (solid; difficult ones dashed) and a title
"class  peak 0.93" (with "hit" or "miss": the peak within LOCATION_TOLERANCE of a
non-difficult box); one colour bar at the right for all panels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import h5py
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, UnidentifiedImageError

from pipeline.datasets import Sample
from pipeline.errors import DataError
from pipeline.evaluation.metrics import location_ap, mean_ap
from pipeline.evaluation.score_maps import (
    CELL,
    LOCATION_TOLERANCE,
    POINTING_TOLERANCE,
    map_peak,
    pointing_hit,
)

OVERLAY_COLORMAP = "inferno"  # perceptual, dark to bright: no cyan or green in it
OVERLAY_ALPHA = (0.3, 0.85)  # opacity of a map where p = 0 and p = 1 (linear between)
PHOTO_DIM = 0.8  # the photo is shown in grey, times this, so the map's colours stand out
PEAK_COLOUR, BOX_COLOUR = "#00e5ff", "#39ff14"  # cyan star, lime boxes: apart from inferno
# A panel's long side in pixels: photos between these are drawn at their own size, smaller
# ones enlarged (room for the title), larger ones shrunk (VOC photos, ~500x375, stay 1:1).
PANEL_PIXELS = (320, 640)
MARGIN, GAP, TITLE, BAR, BAR_LABELS = 8, 16, 30, 14, 56  # layout, pixels
DPI = 100


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


def class_boxes(sample: Sample, name: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [M, 4], difficult [M] bool) of class `name` in the sample; box classes index
    `names`, the dataset's classes (a class not among them has none)."""
    if name not in names:
        return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=bool)
    chosen = sample.box_classes == names.index(name)
    return sample.boxes[chosen], sample.difficult[chosen]


def peak_flags(
    maps: np.ndarray,
    sample: Sample,
    classes: tuple[str, ...],
    names: tuple[str, ...],
    tolerance: float,
) -> np.ndarray:
    """[3, C] int8: per class of `classes`, present (1 a non-difficult box of it in the
    sample, 0 only difficult ones, -1 none; box classes index `names`, the dataset's
    classes), whether the map's peak is within `tolerance` pixels of a non-difficult box,
    whether the image centre is (both 0 unless present)."""
    width, height = sample.width, sample.height
    flags = np.zeros((3, len(classes)), dtype=np.int8)
    flags[0] = -1
    for c, name in enumerate(classes):
        boxes, difficult = class_boxes(sample, name, names)
        if not len(boxes):
            continue
        boxes = boxes[~difficult]
        if not len(boxes):
            flags[0, c] = 0
            continue
        peak = map_peak(maps[c], width, height)
        centre = (width / 2, height / 2)
        flags[:, c] = (
            1,
            pointing_hit(peak, boxes, tolerance),
            pointing_hit(centre, boxes, tolerance),
        )
    return flags


def pointing_counts(
    maps: np.ndarray, sample: Sample, classes: tuple[str, ...], names: tuple[str, ...]
) -> np.ndarray:
    """[3, C] int: per class, 1 pair if it has a non-difficult box in the sample, whether the
    map's peak is within POINTING_TOLERANCE of one, whether the image centre is."""
    present, peak, centre = peak_flags(maps, sample, classes, names, POINTING_TOLERANCE)
    return np.stack([present == 1, peak, centre]).astype(np.int64)


def location_flags(
    maps: np.ndarray, sample: Sample, classes: tuple[str, ...], names: tuple[str, ...]
) -> np.ndarray:
    """[3, C] int8, location AP's per-image data (pipeline/metrics.py: location_ap):
    `peak_flags` at LOCATION_TOLERANCE."""
    return peak_flags(maps, sample, classes, names, LOCATION_TOLERANCE)


def location_aps(scores: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """[2, C] location AP (0..1) of the map peaks, then of the image centre, per class, from
    the image class scores [n_images, C] (any monotone scale: log scores do) and the flags
    [n_images, 3, C] of `location_flags`; nan for a class no image has a box of."""
    present, peak_hits, centre_hits = flags[:, 0], flags[:, 1] > 0, flags[:, 2] > 0
    return np.array(
        [
            [location_ap(scores[:, c], hits[:, c], present[:, c]) for c in range(scores.shape[1])]
            for hits in (peak_hits, centre_hits)
        ]
    ).reshape(2, scores.shape[1])


def pointing_table(classes: tuple[str, ...], tally: np.ndarray, location: np.ndarray) -> list[dict]:
    """pointing.csv rows: per class its pairs, hits and accuracies (percent; nan without a
    pair), its location AP and the centre guess's (percent, from `location_aps` [2, C]; nan
    for a class without boxes), then the mean over the classes that have a value."""
    pairs, hits, centre = tally
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy, centre_accuracy = 100 * hits / pairs, 100 * centre / pairs
    location = 100 * np.asarray(location, dtype=np.float64)
    rows = [
        {
            "class": name,
            "pairs": int(pairs[c]),
            "hits": int(hits[c]),
            "accuracy": round(float(accuracy[c]), 2),
            "centre_accuracy": round(float(centre_accuracy[c]), 2),
            "location_ap": round(float(location[0, c]), 2),
            "centre_location_ap": round(float(location[1, c]), 2),
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
            "location_ap": round(mean_ap(location[0]), 2),
            "centre_location_ap": round(mean_ap(location[1]), 2),
        }
    )
    return rows


def _mean(values: np.ndarray) -> float:
    return round(float(values.mean()), 2) if values.size else float("nan")


@dataclass(frozen=True)
class OverlayLayout:
    """Where `overlay_image` draws, in pixels of the figure (x right, y down)."""

    size: tuple[int, int]  # the figure's width, height
    panel: tuple[int, int]  # one panel's photo: width, height
    origins: tuple[tuple[int, int], ...]  # top-left corner of each panel's photo
    colorbar: tuple[int, int, int, int]  # x0, y0, x1, y1

    def pixel(self, panel: int, point: tuple[float, float], image_size: tuple[int, int]):
        """(column, row) in the figure of the image point (x, y) shown in panel `panel`."""
        (x0, y0), (pw, ph) = self.origins[panel], self.panel
        return x0 + point[0] * pw / image_size[0], y0 + point[1] * ph / image_size[1]


def overlay_layout(width: int, height: int, panels: int) -> OverlayLayout:
    """The layout of `panels` panels of a width x height image (see the module docstring)."""
    long_side = max(width, height)
    scale = min(max(1.0, PANEL_PIXELS[0] / long_side), PANEL_PIXELS[1] / long_side)
    pw, ph = max(1, round(width * scale)), max(1, round(height * scale))
    origins = tuple((MARGIN + i * (pw + GAP), TITLE) for i in range(panels))
    bar_x = MARGIN + panels * pw + (panels - 1) * GAP + GAP
    size = (bar_x + BAR + BAR_LABELS, TITLE + ph + MARGIN)
    return OverlayLayout(size, (pw, ph), origins, (bar_x, TITLE, bar_x + BAR, TITLE + ph))


@dataclass(frozen=True)
class OverlayPanel:
    index: int  # the class's map in `maps`
    peak: float  # the map's maximum
    point: tuple[float, float]  # where it is, image pixels (map_peak)
    hit: bool | None  # the peak within LOCATION_TOLERANCE of a non-difficult box; None: no
    title: str  # such box, or no boxes given


def overlay_panels(
    maps: np.ndarray,
    classes: tuple[str, ...],
    top: int,
    size: tuple[int, int],
    boxes: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[OverlayPanel]:
    """The panels of `overlay_image`: the `top` classes with the highest map peaks, highest
    first. boxes: class name -> (boxes [M, 4], difficult [M]) of the image (a class absent
    has none); None: no truth (new photos), no hit or miss in the titles."""
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    panels = []
    for c in np.argsort(-peaks, kind="stable")[:top]:
        point = map_peak(maps[c], *size)
        title, hit = f"{classes[c]}  peak {peaks[c]:.2f}", None
        if boxes is not None:
            found, difficult = _boxes_of(boxes, classes[c])
            if (~difficult).any():
                hit = pointing_hit(point, found[~difficult], LOCATION_TOLERANCE)
                title += "  hit" if hit else "  miss"
            else:
                title += "  difficult only" if len(found) else "  no box"
        panels.append(OverlayPanel(int(c), float(peaks[c]), point, hit, title))
    return panels


def _boxes_of(boxes: Mapping, name: str) -> tuple[np.ndarray, np.ndarray]:
    found, difficult = boxes.get(name, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
    found = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    return found, np.asarray(difficult, dtype=bool).reshape(len(found))


def overlay_image(
    image_path: Path,
    maps: np.ndarray,
    classes: tuple[str, ...],
    top: int,
    size: tuple[int, int],
    boxes: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Image.Image:
    """An RGB figure of the image with the maps [C, h, w] of its `top` classes (highest
    peaks), one panel each (layout: the module docstring and `overlay_layout`); boxes as in
    `overlay_panels`."""
    try:
        with Image.open(image_path) as handle:
            if handle.size != size:
                raise DataError(
                    f"{image_path}: is {handle.width}x{handle.height}, the features were "
                    f"extracted from {size[0]}x{size[1]}; pass the --data the features were "
                    "extracted from"
                )
            grey = handle.convert("L")
    except FileNotFoundError:
        raise DataError(
            f"{image_path}: image not found; pass the --data the features were extracted from"
        ) from None
    except UnidentifiedImageError:
        raise DataError(f"{image_path}: not a readable image; restore it") from None
    panels = overlay_panels(maps, classes, top, size, boxes)
    layout = overlay_layout(*size, len(panels))
    (pw, ph), (fig_w, fig_h) = layout.panel, layout.size
    photo = np.asarray(grey.resize((pw, ph), Image.Resampling.BILINEAR), dtype=np.float32)
    photo = (PHOTO_DIM / 255) * photo[..., None]
    colormap = matplotlib.colormaps[OVERLAY_COLORMAP]
    figure = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    for panel, (x0, y0) in zip(panels, layout.origins, strict=True):
        coarse = Image.fromarray(np.ascontiguousarray(maps[panel.index], dtype=np.float32))
        values = np.asarray(coarse.resize((pw, ph), Image.Resampling.BILINEAR)).clip(0, 1)
        alpha = (OVERLAY_ALPHA[0] + (OVERLAY_ALPHA[1] - OVERLAY_ALPHA[0]) * values)[..., None]
        shown = (1 - alpha) * photo + alpha * colormap(values)[..., :3]
        axes = figure.add_axes(_fraction((x0, y0, x0 + pw, y0 + ph), layout.size))
        axes.imshow(shown.clip(0, 1), extent=(0, size[0], size[1], 0), interpolation="none")
        axes.set_xlim(0, size[0])
        axes.set_ylim(size[1], 0)
        axes.set_axis_off()
        if boxes is not None:
            found, difficult = _boxes_of(boxes, classes[panel.index])
            for (bx0, by0, bx1, by1), hard in zip(found, difficult, strict=True):
                axes.add_patch(
                    Rectangle(
                        (bx0, by0), bx1 - bx0, by1 - by0, fill=False, edgecolor=BOX_COLOUR,
                        linewidth=2, linestyle="--" if hard else "-",
                    )
                )  # fmt: skip
        axes.plot(
            *panel.point, marker="*", markersize=20, markerfacecolor=PEAK_COLOUR,
            markeredgecolor="white", markeredgewidth=1.5, linestyle="none",
        )  # fmt: skip
        colour = {True: "#137a13", False: "#c00000", None: "black"}[panel.hit]
        axes.set_title(panel.title, fontsize=11, loc="left", pad=5, color=colour)
    # The bar shows each value's colour as drawn over a mid-grey photo, opacity included.
    levels = np.linspace(0, 1, 256)
    level_alpha = (OVERLAY_ALPHA[0] + (OVERLAY_ALPHA[1] - OVERLAY_ALPHA[0]) * levels)[:, None]
    bar_colours = (1 - level_alpha) * PHOTO_DIM * 0.5 + level_alpha * colormap(levels)[:, :3]
    bar = figure.add_axes(_fraction(layout.colorbar, layout.size))
    scale = ScalarMappable(Normalize(0, 1), ListedColormap(bar_colours))
    figure.colorbar(scale, cax=bar, ticks=np.linspace(0, 1, 5))
    bar.tick_params(labelsize=8)
    bar.set_ylabel("score", fontsize=9, labelpad=2)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    return Image.fromarray(np.ascontiguousarray(pixels[:fig_h, :fig_w]))


def _fraction(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[float, ...]:
    """Pixel box x0, y0, x1, y1 (y down) as a matplotlib rectangle: left, bottom, width,
    height in fractions of the figure (y up)."""
    x0, y0, x1, y1 = box
    return x0 / size[0], 1 - y1 / size[1], (x1 - x0) / size[0], (y1 - y0) / size[1]
