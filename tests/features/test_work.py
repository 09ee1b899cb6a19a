"""One photo's work from its size alone (pipeline/features/work.py): the counts are those the
grid and the shared-mode resize really make, a thin photo is over the limit, and every
genuine photo of the real VOC 2007 subset (up to 500x97, 5.2:1) is within it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.config import GridConfig
from pipeline.errors import DataError
from pipeline.features.patches import patch_grid
from pipeline.features.work import check_photo_work, patch_count, resized_pixels

grids = st.builds(
    GridConfig,
    scales=st.integers(1, 10),
    min_scale=st.floats(0.05, 1.0),
    overlap=st.floats(0.0, 0.9),
    kind=st.sampled_from(["patches", "whole"]),
)


@settings(derandomize=True, max_examples=200, deadline=None, database=None)
@given(width=st.integers(1, 3000), height=st.integers(1, 3000), grid=grids)
def test_patch_count_is_the_grid_s_length_without_making_it(width, height, grid):
    assert patch_count(width, height, grid) == len(patch_grid(width, height, grid))


def test_resized_pixels_are_those_of_each_scale_s_resize():
    """Shared mode resizes by input size / patch side, per scale (runtime._shared_margins)."""
    grid, size = GridConfig(scales=3, min_scale=0.4), 64
    boxes = patch_grid(500, 375, grid)
    sides = np.unique(np.round(boxes[:, 2] - boxes[:, 0], 3))
    expected = sum(round(375 * size / s) * round(500 * size / s) for s in sides)
    assert resized_pixels(500, 375, grid, size) == expected


@pytest.mark.parametrize("mode", ["crop", "shared"])
@pytest.mark.parametrize("size", [(32, 4), (400, 2), (4, 400), (3000, 300)])
def test_a_thin_photo_is_over_the_limit_and_named(mode, size):
    with pytest.raises(DataError, match=rf"^thin.png: {size[0]}x{size[1]} pixels .* limit of"):
        check_photo_work(*size, GridConfig(), 224, mode, "thin.png")


@pytest.mark.parametrize("mode", ["crop", "shared"])
def test_every_photo_of_the_real_voc_subset_is_within_the_limit(voc_subset, mode):
    sizes = set()
    for path in (voc_subset / "JPEGImages").glob("*.jpg"):
        with Image.open(path) as image:
            sizes.add(image.size)
    assert len(sizes) > 50 and max(max(w, h) / min(w, h) for w, h in sizes) > 5
    for width, height in sizes:
        check_photo_work(width, height, GridConfig(), 224, mode, f"{width}x{height}")
