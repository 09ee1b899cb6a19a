"""--mode shared: the trunk once per image and scale, patch features pooled from its map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import extract_splits, invoke, read_ap
from test_backbone import CPU, photo

from pipeline.backbone import FrozenBackbone
from pipeline.config import BackboneConfig, GridConfig
from pipeline.patches import patch_grid
from pipeline.registry import REGISTRY, fingerprint_part


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
