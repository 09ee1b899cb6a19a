"""The served overlay: each top class's map in its colour where the map is high, the photo
grey elsewhere, the peak marked, a legend bar per class as long as its score."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.deploy.overlay import (
    ALPHA,
    COLOURS,
    LONG_SIDE,
    PAD,
    PHOTO_GREYS,
    ROW,
    overlay_image,
    overlay_png,
)
from pipeline.evaluation.score_maps import map_peak

GREY = 128
SHOWN = PHOTO_GREYS[0] + (PHOTO_GREYS[1] - PHOTO_GREYS[0]) * GREY / 255  # GREY as drawn


def half_hot(cls: int, classes: int = 2) -> np.ndarray:
    """[classes, 20, 25] maps: class `cls` at 1 over the left half of the photo, else 0."""
    maps = np.zeros((classes, 20, 25), np.float32)
    maps[cls, :, :12] = 1.0
    return maps


def photo(width: int = 100, height: int = 80) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def test_the_best_class_is_drawn_in_the_first_colour_where_its_map_is_high():
    # class 1 has the higher image score, so it is shown first, in COLOURS[0]
    image = np.asarray(overlay_image(photo(), half_hot(1), ("a", "b"), np.array([0.2, 0.9])))
    width = LONG_SIDE[0]  # a small photo is enlarged to the shortest long side
    height = round(80 * width / 100)
    assert image.shape == (height + PAD + 2 * ROW, width, 3)
    tinted = (1 - ALPHA) * SHOWN + ALPHA * np.array(COLOURS[0])
    np.testing.assert_allclose(image[height // 4, width // 8], tinted, atol=2)
    np.testing.assert_allclose(image[height // 4, 7 * width // 8], [SHOWN] * 3, atol=1)
    contour = image[height // 4, width // 4 : 3 * width // 4]
    assert (contour == COLOURS[0]).all(axis=1).any()  # the 50% line, in the class's colour
    # the peak: a cell in the middle of the hot half, a dot of the class's colour ringed in white
    peak_x, peak_y = (round(v) for v in map_peak(half_hot(1)[1], width, height))
    assert abs(peak_x - width * 12 / 25 / 2) < width / 25 and abs(peak_y - height / 2) < height / 20
    assert tuple(image[peak_y, peak_x]) == COLOURS[0]
    assert tuple(image[peak_y, peak_x + 5]) == (255, 255, 255)
    # class a's map is 0 everywhere: no peak of it drawn (no COLOURS[1] pixel on the photo)
    assert not (image[:height] == COLOURS[1]).all(axis=2).any()


def test_the_legend_bars_are_as_long_as_the_scores():
    scores = np.array([0.9, 0.3, 0.6])
    image = np.asarray(overlay_image(photo(), half_hot(0, 3), ("a", "b", "c"), scores, top=3))
    height = image.shape[0] - PAD - 3 * ROW
    lengths = []
    for rank in range(3):
        row = image[height + PAD + rank * ROW + 13]  # the middle line of the row
        lengths.append(int((row == COLOURS[rank]).all(axis=1).sum()))
    filled = [n - 14 for n in lengths]  # less the swatch, 15 pixels wide minus its rounding
    # best first: 0.9, 0.6, 0.3, each bar in proportion to its score
    assert filled[0] > filled[1] > filled[2] > 0
    assert filled[0] / filled[2] == pytest.approx(3, rel=0.1)
    assert filled[1] / filled[2] == pytest.approx(2, rel=0.1)


def test_a_large_photo_is_shrunk_and_the_png_is_that_image():
    pixels = np.random.default_rng(0).integers(0, 255, (1000, 2000, 3), dtype=np.uint8)
    maps, scores = half_hot(0), np.array([0.5, 0.4])
    png = overlay_png(pixels, maps, ("a", "b"), scores, top=1)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG"
    assert decoded.size == (LONG_SIDE[1], LONG_SIDE[1] // 2 + PAD + ROW)
    expected = overlay_image(pixels, maps, ("a", "b"), scores, top=1)
    np.testing.assert_array_equal(np.asarray(decoded.convert("RGB")), np.asarray(expected))


def test_a_long_class_name_is_cut_to_fit():
    name = "a-class-name-far-too-long-for-one-legend-row-of-a-small-photo"
    image = overlay_image(photo(), half_hot(0, 1), (name,), np.array([1.0]), top=1)
    assert image.size == (LONG_SIDE[0], round(80 * LONG_SIDE[0] / 100) + PAD + ROW)


def test_where_two_maps_overlap_the_higher_one_colours_the_pixel_unmixed():
    maps = np.zeros((2, 20, 25), np.float32)
    maps[0, :, :12] = 0.9  # class a, left half
    maps[1] = 0.6  # class b, everywhere
    image = np.asarray(overlay_image(photo(), maps, ("a", "b"), np.array([0.8, 0.7])))
    height, width = round(80 * LONG_SIDE[0] / 100), LONG_SIDE[0]
    grey = SHOWN
    left = (1 - ALPHA * 0.9) * grey + ALPHA * 0.9 * np.array(COLOURS[0])
    right = (1 - ALPHA * 0.6) * grey + ALPHA * 0.6 * np.array(COLOURS[1])
    np.testing.assert_allclose(image[height // 3, width // 8], left, atol=2)
    np.testing.assert_allclose(image[height // 3, 7 * width // 8], right, atol=2)
