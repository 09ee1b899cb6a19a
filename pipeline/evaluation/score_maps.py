"""Per-class score maps from patch probabilities: each cell of a coarse grid (CELL pixels) gets
the mean (or max) of p(class|patch) over the patches covering its centre; their peaks, and
the tolerances of pointing and location AP (why mean is the default: docs/localize.md)."""

from __future__ import annotations

import math

import numpy as np

from pipeline.config import REDUCES, check_choice

CELL = 4  # map cell side in pixels: patch sides are >= 15% of the short side, 56 px on VOC
# Zhang et al., "Top-down Neural Attention by Excitation Backprop" (ECCV 2016): the pointing
# game counts a hit when the peak is within 15 px of the object, forgiving a few pixels of
# annotation slack.
POINTING_TOLERANCE = 15.0
# Oquab, Bottou, Laptev, Sivic, "Is object localization for free?" (CVPR 2015): location
# AP counts an image's predicted location (the peak of its class map) as correct when it
# lies within 18 px of a box of the class (their 18 px tolerance; inside the box is 0).
LOCATION_TOLERANCE = 18.0


def grid_shape(width: int, height: int, cell: int = CELL) -> tuple[int, int]:
    """(rows, columns) of the map of a width x height image."""
    return math.ceil(height / cell), math.ceil(width / cell)


def _cell_ranges(starts: np.ndarray, ends: np.ndarray, step: float, n: int):
    """Cells [lo, hi) along one axis whose centres (j + 0.5) * step lie in [start, end)."""
    lo = np.clip(np.ceil(starts / step - 0.5), 0, n).astype(np.int64)
    hi = np.clip(np.ceil(ends / step - 0.5), 0, n).astype(np.int64)
    return lo, hi


def score_map(
    boxes: np.ndarray,
    probs: np.ndarray,
    width: int,
    height: int,
    *,
    reduce: str = "mean",
    cell: int = CELL,
) -> np.ndarray:
    """[C, h, w] float32 map of each class: per cell, the mean or max of p over the patches
    covering it (0 where none does).

    boxes: [N, 4] float x0, y0, x1, y1 in image pixels (0-based, ends exclusive);
    probs: [N, C] p(class|patch); (h, w) = grid_shape(width, height, cell).
    Mean sums p and counts patches with 2-D difference arrays (one scatter per patch
    corner, then cumulative sums), so it costs O(N + C h w); max loops over the patches.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(boxes):
        raise ValueError(f"probs {probs.shape} must be [N, C] with N = {len(boxes)} boxes")
    check_choice("reduce", reduce, REDUCES)
    h, w = grid_shape(width, height, cell)
    x_lo, x_hi = _cell_ranges(boxes[:, 0], boxes[:, 2], width / w, w)
    y_lo, y_hi = _cell_ranges(boxes[:, 1], boxes[:, 3], height / h, h)
    n_classes = probs.shape[1]
    if reduce == "max":
        out = np.zeros((n_classes, h, w), dtype=np.float32)
        for k in range(len(boxes)):
            window = out[:, y_lo[k] : y_hi[k], x_lo[k] : x_hi[k]]
            np.maximum(window, probs[k, :, None, None], out=window)
        return out
    # Difference array: +v at (y_lo, x_lo) and (y_hi, x_hi), -v at the other two corners;
    # the 2-D cumulative sum then holds v exactly inside the patch's cells.
    values = np.concatenate([probs, np.ones((len(probs), 1))], axis=1)  # last: patch count
    diff = np.zeros((h + 1, w + 1, n_classes + 1))
    for ys, xs, sign in ((y_lo, x_lo, 1), (y_lo, x_hi, -1), (y_hi, x_lo, -1), (y_hi, x_hi, 1)):
        np.add.at(diff, (ys, xs), sign * values)
    totals = diff.cumsum(axis=0).cumsum(axis=1)[:h, :w]
    count = np.rint(totals[..., -1])  # sums of +-1: rint removes float drift
    mean = np.divide(
        totals[..., :-1],
        count[..., None],
        out=np.zeros((h, w, n_classes)),
        where=count[..., None] > 0,
    )
    return np.ascontiguousarray(mean.transpose(2, 0, 1), dtype=np.float32)


def map_peak(score: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """(x, y) in image pixels of the centre of the highest cell of one class's map [h, w].

    Ties are common (a confident head saturates p at 1 in float32, and with max every cell
    of a saturated patch ties): the tied cell nearest to the centroid of the tied cells is
    taken, not the first in row-major order, which would point at the top-left corner.
    """
    h, w = score.shape
    rows, cols = np.nonzero(score == score.max())
    nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    return (cols[nearest] + 0.5) * width / w, (rows[nearest] + 0.5) * height / h


def pointing_hit(
    peak: tuple[float, float], boxes: np.ndarray, tolerance: float = POINTING_TOLERANCE
) -> bool:
    """Whether the point lies within `tolerance` pixels (Euclidean) of any box [M, 4]
    x0, y0, x1, y1 (pixel edges): inside a box is distance 0."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y = peak
    dx = np.maximum.reduce([boxes[:, 0] - x, np.zeros(len(boxes)), x - boxes[:, 2]])
    dy = np.maximum.reduce([boxes[:, 1] - y, np.zeros(len(boxes)), y - boxes[:, 3]])
    return bool(np.any(np.hypot(dx, dy) <= tolerance))
