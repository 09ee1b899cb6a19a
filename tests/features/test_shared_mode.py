"""--mode shared: the trunk once per image and scale, patch features pooled from its map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import extract_splits, invoke, read_ap
from test_backbone import CPU, photo

from pipeline.config import BackboneConfig, GridConfig
from pipeline.features.backbone import FrozenBackbone
from pipeline.features.patches import patch_grid
from pipeline.features.registry import REGISTRY, fingerprint_part


def grid_boxes(image: torch.Tensor, grid: GridConfig) -> torch.Tensor:
    return torch.from_numpy(patch_grid(image.shape[2], image.shape[1], grid))


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_shared_features_match_their_own_crops(name):
    """Shared features are not the crop features (the trunk sees context beyond the patch,
    a crop sees zero padding), but each is much closer to its own crop than to the others."""
    image = photo(name)
    boxes = grid_boxes(image, GridConfig(scales=3, min_scale=0.4))
    crop = FrozenBackbone(BackboneConfig(), CPU)
    shared = FrozenBackbone(BackboneConfig(mode="shared"), CPU)
    a = torch.nn.functional.normalize(crop(crop.crop(image, boxes)), dim=1)
    b = torch.nn.functional.normalize(shared.shared_features(image, boxes), dim=1)
    similarity = (b @ a.T).numpy()
    own = np.diag(similarity).mean()
    others = (similarity.sum() - np.trace(similarity)) / (len(boxes) ** 2 - len(boxes))
    # measured: own 0.74 / 0.73, others 0.52 / 0.47, own crop nearest for 67% / 83%
    assert own > others + 0.15, (own, others)
    assert (similarity.argmax(axis=1) == np.arange(len(boxes))).mean() > 0.6


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_has_a_shared_mode(name):
    image = photo("coffee")[:, ::4, ::4].contiguous()  # 150 x 100
    boxes = grid_boxes(image, GridConfig(scales=2, min_scale=0.5))
    config = BackboneConfig(name, "random", 64, "shared")
    backbone = FrozenBackbone(config, CPU)
    features = backbone.shared_features(image, boxes)
    assert features.shape == (len(boxes), backbone.feature_dim)
    assert torch.isfinite(features).all() and features.abs().sum() > 0
    assert fingerprint_part(config)["mode"] == "shared"
    # the exact geometry changed shared features: caches made before it are not reused
    assert fingerprint_part(config)["geometry"] == 2
    assert "mode" not in fingerprint_part(BackboneConfig(name, "random", 64))  # crop keys kept


def test_shared_mode_pipeline_far_above_chance(shapes_voc, tmp_path):
    common = extract_splits(shapes_voc, tmp_path / "cache", "--mode", "shared")
    assert len(list((tmp_path / "cache").glob("test-*"))) == 1
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    code, out = invoke("score", "--head", "svm", "--output", str(tmp_path / "ap.csv"), *common)
    assert code == 0, out
    assert read_ap(tmp_path / "ap.csv")["mean"] > 85
    # the crop cache of the same settings is another cache: the mode is in the digest
    crop = [a for a in common if a not in ("--mode", "shared")]
    code, out = invoke("fit", "--head", "svm", *crop)
    assert code == 2 and "no 'trainval' features with these settings" in out


def cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()


def one_scale_for_both_axes(backbone: FrozenBackbone, image: torch.Tensor, boxes: torch.Tensor):
    """Shared features as before the exact geometry: one spatial scale, the x ratio of map
    to image, for both axes (rows and columns of the map are rounded apart)."""
    from torchvision.ops import roi_align

    out = torch.empty(len(boxes), backbone.feature_dim)
    sides = (boxes[:, 2] - boxes[:, 0]).round(decimals=3)
    for side in sides.unique():
        rows = torch.nonzero(sides == side).flatten()
        factor = backbone.input_size / float(side)
        size = (round(image.shape[1] * factor), round(image.shape[2] * factor))
        resized = torch.nn.functional.interpolate(
            image.float()[None], size=size, mode="bilinear", antialias=factor < 1
        )
        with torch.inference_mode():
            fmap = backbone.parts.trunk(backbone._normalise(resized))
            rois = torch.cat([torch.zeros(len(rows), 1), boxes[rows].float()], dim=1)
            cells = roi_align(fmap, rois, backbone.parts.pool, fmap.shape[-1] / image.shape[2],
                              sampling_ratio=2, aligned=True)  # fmt: skip
            if backbone.parts.averaged:  # the head takes the cells' mean (as exported)
                cells = cells.mean((2, 3), keepdim=True)
            out[rows] = backbone.parts.head(cells)
    return out


def test_exact_geometry_brings_each_scale_closer_to_its_own_crops():
    """Boxes mapped into the resized image with x and y scaled apart, then by the trunk's
    stride: at each scale of the paper's grid, over real photos, the shared features are
    nearer their own crops than with one x-derived scale for both axes."""
    crop = FrozenBackbone(BackboneConfig(), CPU)
    shared = FrozenBackbone(BackboneConfig(mode="shared"), CPU)
    assert shared.cell == 32  # Lite0's stride: 224 px give a 7 x 7 map
    exact, before = np.zeros(8), np.zeros(8)  # mean cosine to the own crop, per scale
    for name in ("chelsea", "coffee", "astronaut"):
        image = photo(name)
        boxes = grid_boxes(image, GridConfig())
        reference = torch.cat(
            [crop(crop.crop(image, boxes[i : i + 64])) for i in range(0, len(boxes), 64)]
        )
        now = cosines(shared.shared_features(image, boxes), reference)
        then = cosines(one_scale_for_both_axes(shared, image, boxes), reference)
        sides = (boxes[:, 2] - boxes[:, 0]).round(decimals=3).numpy()
        for scale, side in enumerate(np.unique(sides)):
            exact[scale] += now[sides == side].mean() / 3
            before[scale] += then[sides == side].mean() / 3
    # measured: 0.0012 nearer on average, 0.003 at the two smallest scales, the largest
    # two within 0.0007 (context, not geometry, is what keeps them apart: see the note)
    assert (exact >= before - 0.001).all(), (exact, before)
    assert (exact - before).mean() > 0.0005, (exact, before)
