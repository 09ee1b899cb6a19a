"""Stage one's graph path on a CPU (pipeline/features/graph_path.py): on real photos, the
features of the ONNX Runtime graphs against torch cutting and pooling around the same net,
fp32 and int8; and the cache keys that follow from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import extract_args, invoke
from ort_sessions import spinning
from test_backbone import CPU
from test_onnx_runtime import assert_same_features

from pipeline.config import BackboneConfig, CacheSettings, GridConfig
from pipeline.datasets.voc import load_records, read_split
from pipeline.features.backbone import FrozenBackbone
from pipeline.features.images import decode_rgb
from pipeline.features.patches import patch_grid
from pipeline.features.quantize import Calibration
from pipeline.features.registry import cache_key
from pipeline.io import json_digest

# The paper's grid on two real test photos (about 1,000 patches), Lite0's ImageNet weights.
PHOTOS = 2


def real_photos(voc: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    records = load_records(voc, read_split(voc, "test")[:PHOTOS])
    return [
        (decode_rgb(r.image_path), torch.from_numpy(patch_grid(r.width, r.height, GridConfig())))
        for r in records
    ]


def features(backbone: FrozenBackbone, photos) -> np.ndarray:
    if backbone.mode == "crop":
        return np.concatenate([backbone.patch_features(image, boxes) for image, boxes in photos])
    return np.concatenate([backbone.shared_features(i, b).numpy() for i, b in photos])


@pytest.mark.parametrize("mode", ["crop", "shared"])
def test_the_graphs_give_torchs_features_on_real_photos(voc_subset, mode):
    """fp32: the graph path (ONNX Runtime cuts, pools and runs the net) against the torch
    runtime (roi_align, roi_mean and the torch net): equal to the float16 the cache stores."""
    photos = real_photos(voc_subset)
    config = BackboneConfig("efficientnet_lite0", mode=mode)
    graph = FrozenBackbone(config, CPU)
    assert graph.runtime == "onnxruntime" and graph.graph_path is not None
    reference = features(FrozenBackbone(config, CPU, runtime="torch"), photos)
    actual = features(graph, photos)
    assert actual.shape == reference.shape and len(actual) > 900
    assert_same_features(reference, actual)
    # shared mode's two graphs take turns: their idle threads sleep; crop's one graph spins
    graphs = [graph.graph_path.features] if mode == "crop" else [graph.graph_path.trunk,
                                                                graph.graph_path.pooled]  # fmt: skip
    assert {spinning(g.session) for g in graphs} == {"1" if mode == "crop" else "0"}


@pytest.mark.parametrize("mode", ["crop", "shared"])
def test_int8_graphs_give_the_int8_nets_features(voc_subset, mode):
    """int8 (RoiAlign and pooling stay float): the quantized part run by the graph path and by
    torch cutting and pooling (the path before it). Shared mode is equal to float rounding;
    crop mode normalises before cutting, a float rounding that int8 ranges amplify, hence
    quantize.RECIPE's /2 (a new key for int8 caches)."""
    photos = real_photos(voc_subset)
    paths = [r.image_path for r in load_records(voc_subset, read_split(voc_subset, "trainval")[:8])]
    digest = json_digest({"test calibration": [p.name for p in paths]})
    calibration = Calibration(tuple(paths), GridConfig(), digest)
    config = BackboneConfig("efficientnet_lite0", mode=mode, precision="int8")
    backbone = FrozenBackbone(config, CPU, calibration=calibration)
    actual = features(backbone, photos)
    backbone.graph_path = None  # the same quantized part, cut and pooled by torch
    reference = features(backbone, photos)
    cosine = (reference * actual).sum(1) / np.linalg.norm(reference, axis=1)
    cosine /= np.linalg.norm(actual, axis=1)
    if mode == "shared":
        assert_same_features(reference, actual)
    else:
        assert cosine.min() > 0.995, cosine.min()
        assert np.abs(reference - actual).max() < 0.1 * np.abs(reference).max()


def test_int8_keys_moved_and_fp32_keys_stayed():
    """A feature change bumps the key (int8: RECIPE /2), no change keeps caches valid (fp32:
    test_generic_backbones pins every table net's digest)."""
    before = {"crop": "e06662dc5b81", "shared": "075e4309e43e"}  # int8 keys of RECIPE /1
    for mode, digest in before.items():
        config = BackboneConfig("efficientnet_lite0", None, None, mode, "int8")
        assert cache_key(CacheSettings(backbone=config)).digest != digest


def test_a_cache_made_by_torch_cutting_serves_the_graph_path(shapes_voc, tmp_path):
    """The runtime is not in the key: shards torch cut are reused, none extracted again."""
    code, out = invoke(*extract_args(shapes_voc, tmp_path, "--runtime", "torch"))
    assert code == 0 and "4 shards new, 0 reused" in out, out
    code, out = invoke(*extract_args(shapes_voc, tmp_path))
    assert code == 0 and "nothing to do, all 4 shards already complete" in out, out
