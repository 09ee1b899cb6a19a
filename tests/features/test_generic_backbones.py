"""Any torchvision classification model by name, and timm models as timm:NAME: their specs,
their penultimate features, their --mode shared split, and a transformer's fallback to crop.
Untrained weights throughout (no downloads here)."""

from __future__ import annotations

import sys

import pytest
import torch
import torchvision
from cli_helpers import error_lines, extract_splits, invoke, read_ap
from torch import nn

from pipeline.config import BackboneConfig, CacheSettings
from pipeline.errors import BackboneUnavailable
from pipeline.features.backbone import FrozenBackbone
from pipeline.features.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REGISTRY,
    cache_key,
    fingerprint_part,
    get_spec,
    mode_used,
)
from pipeline.store.shards import read_shard

timm = pytest.importorskip("timm")

CPU = torch.device("cpu")
VIT_LINE = (
    "timm:vit_tiny_patch16_224 is a transformer: its tokens attend across the whole image, "
    "so a shared map is not each patch's own feature; using --mode crop"
)


def features_digest(name: str, weights: str | None, mode: str = "crop") -> str:
    config = BackboneConfig(name, weights, None, mode)
    return cache_key(CacheSettings(backbone=config)).digest


# The digests the table's caches had before generic backbones: (crop, shared), random weights.
# Crop keeps them; shared caches moved to geometry 2 (x and y scaled apart), so none matches.
TABLE_DIGESTS = {
    "efficientnet_lite0": ("7c97c1966ccc", "c2d029a64ce1"),
    "efficientnet_lite1": ("9128ab399e81", "f6bbde12e049"),
    "efficientnet_lite2": ("e4276979fa99", "2938c303b3f1"),
    "alexnet": ("d8e22dc2e59e", "2951956bfbdb"),
    "vgg16": ("b66dac42e482", "cd704047960b"),
    "resnet18": ("79e4377717e1", "f2f3786fb785"),
    "resnet50": ("bdb2dbc36250", "7d6d14f2562a"),
}
IMAGENET_DIGESTS = {
    "efficientnet_lite0": "b81cbb46746b",
    "alexnet": "5d4247207648",
    "vgg16": "e1ce93fbfeae",
    "resnet18": "49b8ad6c5149",
    "resnet50": "88e3518615bd",
}


def test_the_table_keeps_its_specs_and_cache_digests():
    assert set(REGISTRY) == set(TABLE_DIGESTS)
    for name, (crop, shared) in TABLE_DIGESTS.items():
        assert features_digest(name, "random") == crop, name
        assert features_digest(name, "random", "shared") != shared, name
        assert REGISTRY[name].convolutional and get_spec(name) is REGISTRY[name]
    for name, digest in IMAGENET_DIGESTS.items():
        assert features_digest(name, None) == digest, name
    assert (REGISTRY["alexnet"].layer, REGISTRY["alexnet"].feature_dim) == ("fc7", 4096)
    assert (REGISTRY["resnet50"].layer, REGISTRY["resnet50"].feature_dim) == ("avgpool", 2048)


def test_preprocessing_comes_from_the_weights_transforms():
    b1, vit = get_spec("efficientnet_b1"), get_spec("vit_b_16")
    assert (b1.input_size, b1.mean, b1.std) == (240, IMAGENET_MEAN, IMAGENET_STD)
    assert (vit.input_size, vit.mean, vit.std) == (224, IMAGENET_MEAN, IMAGENET_STD)
    assert get_spec("efficientnet_v2_s").input_size == 384
    assert (b1.layer, b1.feature_dim, b1.source) == ("penultimate", 0, "torchvision")
    assert b1.convolutional and not vit.convolutional
    assert not get_spec("swin_v2_t").convolutional  # ShiftedWindowAttentionV2
    assert get_spec("efficientnet_b1") is b1  # cached
    tiny = get_spec("timm:vit_tiny_patch16_224")  # timm's pretrained cfg: mean = std = 0.5
    assert (tiny.input_size, tiny.mean, tiny.std) == (224, (0.5,) * 3, (0.5,) * 3)
    assert tiny.source == "timm" and not tiny.convolutional
    weights = fingerprint_part(BackboneConfig("timm:resnet18"))["weights"]
    assert weights == "timm/resnet18.a1_in1k@a1_in1k"
    assert fingerprint_part(BackboneConfig("resnet34"))["weights"].endswith("resnet34-b627a593.pth")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("lenet", r"^unknown backbone 'lenet'; choose one of efficientnet_lite0, .*, resnet50, "
         r"any torchvision classification model, or timm:NAME$"),
        ("fasterrcnn_resnet50_fpn", "unknown backbone"),  # a detection model
        ("timm:lenet", r"^unknown backbone 'timm:lenet': timm has no model 'lenet'"),
        ("timm:resnet18.nope", r"^timm:resnet18.nope: Invalid pretrained tag"),
    ],
)  # fmt: skip
def test_unknown_names_are_one_line(name, match):
    with pytest.raises(BackboneUnavailable, match=match) as caught:
        get_spec(name)
    assert "\n" not in str(caught.value)


def test_timm_not_installed_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(BackboneUnavailable, match=r"pip install 'midlevel\[timm\]'"):
        get_spec("timm:resnet10t")  # a name no other test caches


def assert_same_features(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding at the features' own scale: an untrained mobile net's
    vanish (about 1e-10), where a fixed atol would pass anything."""
    scale = expected.abs().max()
    assert scale > 0
    torch.testing.assert_close(got / scale, expected / scale, rtol=1e-4, atol=1e-5)


def old_hand_cut(arch: str) -> nn.Module:
    """The per-architecture cut backbone.py had before generic nets, seeded as it was."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None)
    if arch in ("alexnet", "vgg16"):  # the classifier up to FC7's ReLU
        model.classifier = model.classifier[: 6 if arch == "alexnet" else 5]
    else:
        model.fc = nn.Identity()
    return model.eval().to(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("arch", "size"), [("alexnet", 64), ("vgg16", 32), ("resnet18", 64), ("resnet50", 64)]
)
def test_table_nets_give_the_features_of_their_old_hand_cut(arch, size):
    new = FrozenBackbone(BackboneConfig(arch, "random", size), CPU).net
    old = old_hand_cut(arch)
    x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, got = old(x), new(x)
    assert got.shape == (2, REGISTRY[arch].feature_dim)
    assert_same_features(got, expected)
    if arch in ("alexnet", "vgg16"):
        assert (got >= 0).all() and (got == 0).any()  # after FC7's ReLU


@pytest.mark.parametrize(
    ("name", "dim", "pool"),
    [
        ("alexnet", 4096, 6),  # its FC6 takes pool5's 6 x 6 cells
        ("vgg16", 4096, 7),
        ("resnet18", 512, 7),  # a global average: the map's side at 224 px
        ("resnet50", 2048, 7),
        ("convnext_tiny", 768, 7),  # LayerNorm2d and flatten after the pooling
        ("mobilenet_v3_small", 1024, 7),  # Linear + Hardswish after the pooling; SE pools before
        ("regnet_y_400mf", 440, 7),
        ("shufflenet_v2_x0_5", 1024, 7),  # x.mean([2, 3]) is its pooling and its feature
        ("timm:mobilenetv3_small_050", 1024, 7),  # forward_features / forward_head
    ],
)
def test_shared_head_of_the_pooled_trunk_is_the_crop_net(name, dim, pool):
    backbone = FrozenBackbone(BackboneConfig(name, "random", 224, "shared"), CPU, runtime="torch")
    assert (backbone.mode, backbone.feature_dim, backbone.parts.pool) == ("shared", dim, pool)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        crop = backbone.net(x)
        cells = nn.functional.adaptive_avg_pool2d(backbone.parts.trunk(x), pool)
        shared = backbone.parts.head(cells)
    assert crop.shape == (2, dim)
    assert_same_features(shared, crop)
    pixels = torch.randint(0, 255, (3, 150, 200), dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [50.0, 25.0, 200.0, 175.0]])
    assert backbone.shared_features(pixels, boxes).shape == (2, dim)


def test_a_transformer_runs_shared_as_crop_and_says_why_once(capsys):
    config = BackboneConfig("timm:vit_tiny_patch16_224", "random", None, "shared")
    backbone = FrozenBackbone(config, CPU)
    assert capsys.readouterr().err.splitlines() == [VIT_LINE]
    assert backbone.mode == "crop" and not hasattr(backbone, "parts")
    out = backbone(torch.randint(0, 255, (2, 3, 224, 224), dtype=torch.uint8))
    assert out.shape == (2, 192) and backbone.feature_dim == 192
    crop = fingerprint_part(BackboneConfig(config.name, "random"))
    assert fingerprint_part(config) == crop and "mode" not in crop
    for name in ("vit_b_16", "swin_t", "timm:deit_tiny_patch16_224"):
        shared = BackboneConfig(name, "random", None, "shared")
        assert mode_used(shared) == "crop" and "mode" not in fingerprint_part(shared), name
    assert mode_used(BackboneConfig("convnext_tiny", mode="shared")) == "shared"


def test_a_fixed_size_net_refuses_another_input_size():
    with pytest.raises(BackboneUnavailable, match=r"does not run on 64 px.*its own is 224"):
        FrozenBackbone(BackboneConfig("timm:vit_tiny_patch16_224", "random", 64), CPU)


def test_a_net_with_no_linear_classifier_is_refused():
    with pytest.raises(BackboneUnavailable, match=r"squeezenet1_1: its last layer .* not a Linear"):
        FrozenBackbone(BackboneConfig("squeezenet1_1", "random", 64), CPU)


def test_timm_weights_file_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(1)
    full = timm.create_model("resnet18")  # with its 1000-way classifier, as a user saves it
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    config = BackboneConfig("timm:resnet18", str(path), 64)
    loaded = FrozenBackbone(config, CPU, runtime="torch")
    assert torch.equal(loaded.net.conv1.weight, full.conv1.weight)
    assert loaded.feature_dim == 512 and fingerprint_part(config)["weights"].startswith("sha256:")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        pre_logits = full.eval().forward_head(full.forward_features(x), pre_logits=True)
        torch.testing.assert_close(loaded.net(x), pre_logits)
    state = full.state_dict()
    del state["layer4.1.bn2.weight"]
    torch.save(state, path)
    with pytest.raises(BackboneUnavailable, match=r"do not fit.*layer4\.1\.bn2\.weight"):
        FrozenBackbone(config, CPU)


def test_timm_failed_download_says_how_to_get_weights(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("no network")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with pytest.raises(BackboneUnavailable, match=r"^timm:resnet18: .*--weights FILE.*lite0"):
        FrozenBackbone(BackboneConfig("timm:resnet18"), CPU)


def test_cli_backbone_takes_any_name_and_refuses_an_unknown_one(tmp_path):
    missing = str(tmp_path / "no-voc")
    code, out = invoke("extract", "--voc-root", missing, "--backbone", "lenet")
    assert code == 2 and "Traceback" not in out
    assert error_lines(out) == [
        "error: unknown backbone 'lenet'; choose one of efficientnet_lite0, efficientnet_lite1, "
        "efficientnet_lite2, alexnet, vgg16, resnet18, resnet50, any torchvision classification "
        "model, or timm:NAME"
    ]
    for name in ("resnet18", "mobilenet_v3_small"):  # past the backbone, refused for the data
        code, out = invoke("extract", "--voc-root", missing, "--backbone", name)
        assert code == 2 and error_lines(out) == [
            f"error: {missing}: VOC root not found; pass --voc-root DIR (see data/README.md)"
        ], out
    code, out = invoke("extract", "--help")
    assert "any torchvision classification model" in " ".join(out.split()) and "timm:NAME" in out


@pytest.mark.parametrize("mode", ["crop", "shared"])
def test_a_generic_backbone_end_to_end(shapes_voc, tmp_path, mode):
    """extract, fit and score with a torchvision net outside the table, untrained: RegNet's
    random features separate the shapes (MobileNet's vanish below float16 in the cache)."""
    cache = tmp_path / "cache"
    generic = ("--backbone", "regnet_y_400mf", "--scales", "2", "--mode", mode)
    common = extract_splits(shapes_voc, cache, *generic)
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    code, out = invoke("score", "--head", "svm", "--output", str(tmp_path / "ap.csv"), *common)
    assert code == 0, out
    assert read_ap(tmp_path / "ap.csv")["mean"] > 85  # measured: 100 (crop), 100 (shared)
    features = read_shard(sorted(cache.glob("test-*/shard-*.h5"))[0]).features
    assert features.shape[1] == 440 and features.std(axis=0).mean() > 1e-3  # measured width
