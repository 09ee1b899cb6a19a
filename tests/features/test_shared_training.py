"""--mode shared on a training split (one that keeps a sample of its patches): its kept patches
are cropped, each through the whole net, instead of the trunk running over the whole image at
every scale; evaluation splits keep the trunk's maps. The training cache has a key of its own
(`training_mode`), and a head fitted on it scores the maps of the evaluation split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import SMALL, assert_same_shards, extract_splits, invoke, read_ap

from pipeline.config import BackboneConfig, ExtractConfig, GridConfig
from pipeline.features import engine
from pipeline.features.backbone import FrozenBackbone
from pipeline.features.images import decode_rgb
from pipeline.features.registry import cache_key
from pipeline.store.keys import FeatureSettings, describe_fingerprint, without_data
from pipeline.store.shards import read_shard

SMALL_GRID = GridConfig(scales=3, min_scale=0.4)
SMALL_NET = BackboneConfig("resnet18", "random", 64, "shared")


def one_cache(root, pattern: str):
    found = sorted(root.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def fingerprint(directory) -> dict:
    return json.loads((directory / "fingerprint.json").read_text())


@pytest.mark.parametrize(
    ("backbone", "grid", "digest"),
    [  # measured before training splits were cropped: every existing key stays
        (BackboneConfig(mode="shared"), GridConfig(), "225e361e9a85"),  # ../curve/cache's
        (BackboneConfig(), GridConfig(), "b81cbb46746b"),
        (SMALL_NET, SMALL_GRID, "023c63969d0b"),
        (BackboneConfig("resnet18", "random", 64), SMALL_GRID, "fd729a3be5b3"),
    ],
)
def test_existing_keys_are_unchanged(backbone, grid, digest):
    settings = cache_key(ExtractConfig(backbone=backbone, grid=grid))
    assert settings.digest() == digest
    cropped = settings.for_sampled_split()
    if backbone.mode == "crop":  # a crop-mode training split: the crop key, as before
        assert cropped == settings
    else:  # a shared-mode training split: its own key, which a head's check leaves out
        assert cropped.digest() != digest
        assert cropped.as_dict() == {**settings.as_dict(), "training_mode": "crop"}
        assert without_data(cropped.as_dict()) == without_data(settings.as_dict())
        assert "training_mode=crop" in describe_fingerprint(cropped.as_dict())


def test_int8_training_splits_keep_the_maps():
    """An int8 net is calibrated for the part it runs: its training splits are not cropped."""
    part = {"name": "efficientnet_lite0", "mode": "shared", "precision": "int8"}
    assert FeatureSettings(part).for_sampled_split() == FeatureSettings(part)


def test_shared_training_split_is_cropped_and_runs_no_trunk(shapes_voc, tmp_path, monkeypatch):
    """The training split of a shared-mode extract never runs the trunk (counted through a
    wrapper of shared_features: no pixel of any scale) and holds, bit for bit, what a
    crop-mode extract of the split holds; the test split's maps are those shared_features
    gives the whole image."""
    calls = []
    original = FrozenBackbone.shared_features

    def counted(self, image, boxes):
        calls.append(int(image.shape[1] * image.shape[2]))
        return original(self, image, boxes)

    monkeypatch.setattr(FrozenBackbone, "shared_features", counted)
    cache = tmp_path / "cache"
    common = ["--voc-root", str(shapes_voc), "--cache-dir", str(cache), *SMALL, "--workers", "0"]
    code, out = invoke("extract", "--split", "trainval", "--mode", "shared", *common)
    assert code == 0, out
    assert calls == []  # before: the trunk over each whole image at every scale
    assert "the kept patches cropped: a training split" in out
    code, out = invoke("extract", "--split", "trainval", "--mode", "crop", *common)
    assert code == 0, out
    shared = cache_key(ExtractConfig(backbone=SMALL_NET, grid=SMALL_GRID))
    trained = one_cache(cache, f"trainval-{shared.for_sampled_split().digest()}-*")
    recorded = fingerprint(trained)
    assert recorded["training_mode"] == "crop" and recorded["keep"] == "sample"
    crop = one_cache(cache, "trainval-fd729a3be5b3-*")
    assert_same_shards(crop, trained)

    code, out = invoke("extract", "--split", "test", "--mode", "shared", "--limit", "4", *common)
    assert code == 0, out
    assert len(calls) == 4  # an evaluation split: the trunk over every whole image
    test = one_cache(cache, f"test-{shared.digest()}-*")
    assert "training_mode" not in fingerprint(test)
    shard = read_shard(test / "shard-00000.h5")
    backbone = FrozenBackbone(SMALL_NET, torch.device("cpu"))
    images = sorted((shapes_voc / "JPEGImages").glob("*.jpg"))
    for index, image_id in enumerate(shard.image_ids):
        path = next(p for p in images if p.stem == image_id)
        rows = shard.image_index == index
        expected = original(backbone, decode_rgb(path), torch.from_numpy(shard.boxes[rows]))
        np.testing.assert_array_equal(
            shard.features[rows].view(np.uint16),
            expected.numpy().astype(np.float16).view(np.uint16),
        )


def test_head_fitted_on_crops_scores_the_maps(shapes_voc, tmp_path):
    """fit finds the cropped training cache, records its key, and score finds that head for
    the test split's maps (the difference is one they accept: `training_mode`)."""
    cache = tmp_path / "cache"
    common = extract_splits(shapes_voc, cache, "--mode", "shared")
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    shared = cache_key(ExtractConfig(backbone=SMALL_NET, grid=SMALL_GRID))
    trained = one_cache(cache, f"trainval-{shared.for_sampled_split().digest()}-*")
    record = json.loads((trained / "heads" / "svm.json").read_text())
    assert record["fingerprint"]["training_mode"] == "crop"
    code, out = invoke("score", "--head", "svm", "--output", str(tmp_path / "ap.csv"), *common)
    assert code == 0, out
    assert read_ap(tmp_path / "ap.csv")["mean"] > 85
    sidecar = json.loads((tmp_path / "ap.json").read_text())
    assert shared.digest() in json.dumps(sidecar)  # scored the test split's maps


def test_maps_begun_before_go_on_until_overwritten(shapes_voc, tmp_path, monkeypatch):
    """A training split whose maps were begun before this rule goes on as it was begun (no
    shard of two kinds in one cache; a finished one is not extracted again) and fit reads it;
    --overwrite makes the cropped cache, which fit and score then prefer."""
    cache = tmp_path / "cache"

    def maps_rule(config, dataset, keep):  # the rule before: every split keeps the maps
        return engine.cache_key(config, dataset)

    with monkeypatch.context() as patch:
        patch.setattr(engine, "split_key", maps_rule)
        common = extract_splits(shapes_voc, cache, "--mode", "shared")
    shared = cache_key(ExtractConfig(backbone=SMALL_NET, grid=SMALL_GRID))
    maps = one_cache(cache, f"trainval-{shared.digest()}-*")
    assert fingerprint(maps)["keep"] == "sample"
    code, out = invoke("extract", "--split", "trainval", "--workers", "0", *common)
    assert code == 0 and "nothing to do" in out, out
    assert not list(cache.glob(f"trainval-{shared.for_sampled_split().digest()}-*"))
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0 and maps.name in out, out
    assert (maps / "heads" / "svm.safetensors").is_file()

    code, out = invoke("extract", "--split", "trainval", "--workers", "0", "--overwrite", *common)
    assert code == 0 and "the kept patches cropped" in out, out
    cropped = one_cache(cache, f"trainval-{shared.for_sampled_split().digest()}-*")
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0 and cropped.name in out, out
    code, out = invoke("score", "--head", "svm", "--output", str(tmp_path / "ap.csv"), *common)
    assert code == 0, out  # two svm heads, one per kind: the cropped one's
    sidecar = json.loads((tmp_path / "ap.json").read_text())
    assert shared.for_sampled_split().digest() in json.dumps(sidecar)
