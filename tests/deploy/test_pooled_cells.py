"""Shared mode's pooled cells as an ONNX graph (pipeline/features/graphs.py roi_cells): the
numbers extract stores, so that an exported model scores a photo as the cache does."""

from __future__ import annotations

import numpy as np
import onnxruntime
import torch

from pipeline.features import graphs
from pipeline.features.backbone import SAMPLES
from pipeline.features.roi_mean import roi_mean


def test_the_exported_pooling_equals_extracts_for_a_patch_at_the_image_border():
    """VOC 2007 000014 (500x333) at its third scale: resized to 1304 px wide, Lite0's
    map is 40 cells wide, and the patches at the right border put their last sample
    exactly on the map's edge, where float rounding decides whether it counts."""
    fmap = torch.randn(1, 16, 27, 40, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[1080.001220703125, 0.0, 1304.0, 223.87908935546875]])
    rois = torch.cat([torch.zeros(1, 1), boxes], dim=1)
    stored = roi_mean(fmap, rois, 7, 1 / 32, SAMPLES).flatten().numpy()
    model = graphs.roi_cells(7, 32.0, SAMPLES, averaged=True)
    session = onnxruntime.InferenceSession(model.SerializeToString())
    exported = session.run(None, {"fmap": fmap.numpy(), "rois": boxes.numpy()})[0].flatten()
    np.testing.assert_allclose(exported, stored, rtol=1e-5, atol=1e-5)


def test_the_pooling_graph_follows_every_border_rule_of_the_cache():
    """Boxes inside the map, across its border, past it, and tiny, as roi_mean's own test."""
    generator = torch.Generator().manual_seed(1)
    fmap = torch.randn(1, 24, 11, 17, generator=generator)
    corners = torch.rand(40, 2, generator=generator) * torch.tensor([17.0, 11.0]) * 38 - 50
    boxes = torch.cat([corners, corners + torch.rand(40, 1, generator=generator) * 350], dim=1)
    boxes[0] = torch.tensor([-80.0, -80.0, -40.0, -40.0])  # wholly outside: zero
    boxes[1] = torch.tensor([3.0, 3.0, 3.5, 3.5])  # under one cell
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    stored = roi_mean(fmap, rois, 7, 1 / 32, SAMPLES).numpy()
    session = onnxruntime.InferenceSession(
        graphs.roi_cells(7, 32.0, SAMPLES, True).SerializeToString()
    )
    exported = session.run(None, {"fmap": fmap.numpy(), "rois": boxes.numpy()})[0]
    assert exported.shape == (40, 24, 1, 1)
    np.testing.assert_allclose(exported, stored, rtol=1e-5, atol=1e-6)
    assert np.abs(exported[0]).max() == 0
