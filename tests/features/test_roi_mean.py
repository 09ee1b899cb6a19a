"""roi_mean: roi_align's samples averaged by one matmul, the same numbers."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from pipeline.features.roi_mean import roi_mean


@pytest.mark.parametrize(
    ("pool", "samples", "scale"), [(7, 2, 1 / 32), (2, 2, 1 / 16), (6, 1, 0.1)]
)
def test_roi_mean_is_roi_align_averaged_over_its_cells(pool, samples, scale):
    """Boxes inside the map, across its border, past it, and tiny: every border rule."""
    generator = torch.Generator().manual_seed(0)
    fmap = torch.randn(1, 24, 11, 17, generator=generator)
    width, height = 17 / scale, 11 / scale
    corners = torch.rand(40, 2, generator=generator) * torch.tensor(
        [width, height]
    ) * 1.2 - 0.1 * torch.tensor([width, height])
    sides = torch.rand(40, 1, generator=generator) * height
    boxes = torch.cat([corners, corners + sides], dim=1)
    boxes[0] = torch.tensor([-80.0, -80.0, -40.0, -40.0])  # wholly outside: zero
    boxes[1] = torch.tensor([3.0, 3.0, 3.5, 3.5])  # under one cell
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    expected = roi_align(fmap, rois, pool, scale, samples, aligned=True).mean((2, 3), keepdim=True)
    actual = roi_mean(fmap, rois, pool, scale, samples)
    assert actual.shape == (40, 24, 1, 1)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert actual[0].abs().max() == 0


def test_roi_mean_chunks_many_rois_to_the_same_numbers(monkeypatch):
    from pipeline.features import roi_mean as module

    fmap = torch.randn(1, 8, 9, 9)
    boxes = torch.rand(50, 2) * 200
    rois = torch.cat([torch.zeros(50, 1), boxes, boxes + 64], dim=1)
    whole = roi_mean(fmap, rois, 7, 1 / 32, 2)
    monkeypatch.setattr(module, "CHUNK", 81 * 3)  # three rois a matmul
    torch.testing.assert_close(roi_mean(fmap, rois, 7, 1 / 32, 2), whole)
