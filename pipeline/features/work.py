"""What one photo costs on a patch grid, known from its size alone, so that a photo that would
cost hundreds of normal ones is refused before a pixel is resized or cropped: the grid follows
the short side, so a thin photo (400x2) makes as many patches, and shared mode resizes it to
as many pixels, as a photo stretched to the same shape (docs/reliability.md#one-photos-work).

The limit is relative to the grid: a photo may cost at most `MAX_WORK` times what a 4:3
photo costs on the same settings, so that a model with more scales is not refused its own
normal photos. 5 lets every aspect ratio up to about 6.5:1 pass on the paper's grid (the
real VOC 2007 subset goes up to 5.2:1, a 500x97 photo) and refuses 8:1 (a 32x4 PNG)."""

from __future__ import annotations

import math

from pipeline.config import GridConfig
from pipeline.errors import DataError

REFERENCE = (640, 480)  # the 4:3 photo the limit is measured against
MAX_WORK = 5


def _count(length: float, side: float, stride: float) -> int:
    """Patches along one axis, as patches._positions lays them (same formula)."""
    span = length - side
    return math.ceil(span / stride - 1e-9) + 1 if span > 0 else 1


def _sides(width: int, height: int, grid: GridConfig) -> list[float]:
    from pipeline.features.patches import scale_factors

    return [min(width, height) * float(s) for s in scale_factors(grid)]


def patch_count(width: int, height: int, grid: GridConfig) -> int:
    """How many patches `patch_grid(width, height, grid)` makes, without making them."""
    if grid.kind == "whole":
        return 1
    total = 0
    for side in _sides(width, height, grid):
        stride = side * (1.0 - grid.overlap)
        total += _count(width, side, stride) * _count(height, side, stride)
    return total


def resized_pixels(width: int, height: int, grid: GridConfig, input_size: int) -> int:
    """Pixels shared mode resizes the photo to, summed over its scales (each scale resized so
    that the patch side becomes the net's input size)."""
    if grid.kind == "whole":
        return input_size * input_size
    total = 0
    for side in _sides(width, height, grid):
        factor = input_size / side
        total += max(1, round(height * factor)) * max(1, round(width * factor))
    return total


def photo_work(width: int, height: int, grid: GridConfig, input_size: int, mode: str) -> float:
    """What the photo costs in 4:3 photos on these settings (its patches, and in shared mode
    its resized pixels, whichever is more): the server runs photos at once only while their
    summed work fits MAX_WORK, so that its peak memory is that of one widest photo."""
    work = patch_count(width, height, grid) / patch_count(*REFERENCE, grid)
    if mode == "shared":
        pixels = resized_pixels(width, height, grid, input_size)
        work = max(work, pixels / resized_pixels(*REFERENCE, grid, input_size))
    return work


def check_photo_work(
    width: int, height: int, grid: GridConfig, input_size: int, mode: str, name: str
) -> None:
    """DataError naming the photo and the limit when it would cost more than `MAX_WORK` 4:3
    photos on this grid: its patches (every mode), or its resized pixels (shared mode)."""
    over = _over(width, height, grid, input_size, mode)
    if over is None:
        return
    shape = f"{width}x{height} pixels ({max(width, height) / max(1, min(width, height)):.1f}:1)"
    widest = widest_aspect(grid, input_size, mode)
    raise DataError(
        f"{name}: {shape} {over} ({MAX_WORK}x a 4:3 photo's); crop it nearer to square (this "
        f"model takes up to {widest:.1f}:1)"
    )


def _over(width: int, height: int, grid: GridConfig, input_size: int, mode: str) -> str | None:
    """What of the photo's work is over the limit, with the limit, or None."""
    patches, most = patch_count(width, height, grid), MAX_WORK * patch_count(*REFERENCE, grid)
    if patches > most:
        return f"makes {patches:,} patches on this grid, over the limit of {most:,}"
    if mode == "shared":
        pixels = resized_pixels(width, height, grid, input_size)
        most = MAX_WORK * resized_pixels(*REFERENCE, grid, input_size)
        if pixels > most:
            return (
                f"resizes to {pixels / 1e6:,.0f} MP over its scales, over the limit of "
                f"{most / 1e6:,.0f} MP"
            )
    return None


def widest_aspect(grid: GridConfig, input_size: int, mode: str) -> float:
    """The widest aspect ratio the limit lets through on these settings (6.4 on the paper's
    grid), to the nearest 10 pixels of a 480-pixel-high photo."""
    height = width = REFERENCE[1]
    while width < 100 * height and _over(width + 10, height, grid, input_size, mode) is None:
        width += 10
    return width / height
