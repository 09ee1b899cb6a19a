"""Overlay PNGs of score maps: one panel per top class, the photo in grey under its map on a
fixed 0..1 colour scale, the peak starred, truth boxes with hit or miss (layout in
docs/localize.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from pipeline.datasets.pixels import ImageFileError, read_rgb
from pipeline.errors import DataError
from pipeline.evaluation.score_maps import LOCATION_TOLERANCE, map_peak, pointing_hit

OVERLAY_COLORMAP = "inferno"  # perceptual, dark to bright: no cyan or green in it
OVERLAY_ALPHA = (0.3, 0.85)  # opacity of a map where p = 0 and p = 1 (linear between)
PHOTO_DIM = 0.8  # the photo is shown in grey, times this, so the map's colours stand out
PEAK_COLOUR, BOX_COLOUR = "#00e5ff", "#39ff14"  # cyan star, lime boxes: apart from inferno
# A panel's long side in pixels: photos between these are drawn at their own size, smaller
# ones enlarged (room for the title), larger ones shrunk (VOC photos, ~500x375, stay 1:1).
PANEL_PIXELS = (320, 640)
MARGIN, GAP, TITLE, BAR, BAR_LABELS = 8, 16, 30, 14, 56  # layout, pixels
DPI = 100


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
        shown = read_rgb(image_path)  # upright, 8-bit: as extract saw it
    except ImageFileError as exc:
        raise exc.redone("pass the --data the features were extracted from") from None
    if (shown.shape[1], shown.shape[0]) != size:
        raise DataError(
            f"{image_path}: is {shown.shape[1]}x{shown.shape[0]}, the features were extracted "
            f"from {size[0]}x{size[1]}; pass the --data the features were extracted from"
        )
    grey = Image.fromarray(shown).convert("L")
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
