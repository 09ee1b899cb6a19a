"""The backbone registry, its weights handling, and a check that the weights are real."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from pipeline.config import BackboneConfig
from pipeline.errors import BackboneUnavailable
from pipeline.features.backbone import FrozenBackbone
from pipeline.features.registry import REGISTRY, fingerprint_part, get_spec

CPU = torch.device("cpu")


def photo(name: str) -> torch.Tensor:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)


def square(image: torch.Tensor, cx: float, cy: float, side: float) -> torch.Tensor:
    return torch.tensor([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]])


def cat_and_others(backbone: FrozenBackbone) -> tuple[np.ndarray, np.ndarray]:
    """Features of the cat photo at four scales (and a flip), and of five other photos."""
    cat = photo("chelsea")  # 451 x 300, the cat's face around (245, 150)
    crops = [backbone.crop(cat, square(cat, 245, 150, side)) for side in (290, 230, 180)]
    crops.append(backbone.crop(cat.flip(2), square(cat, 451 - 245, 150, 260)))
    cat_features = backbone(torch.cat(crops)).numpy()
    others = []
    for name in ("coffee", "rocket", "astronaut", "brick", "grass"):
        image = photo(name)
        h, w = image.shape[1:]
        others.append(backbone.crop(image, square(image, w / 2, h / 2, min(h, w))))
    return cat_features, backbone(torch.cat(others)).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def separation(backbone: FrozenBackbone) -> float:
    """Least similar cat pair minus most similar cat/other pair: > 0 when the cat clusters."""
    cats, others = cat_and_others(backbone)
    within = cosine(cats, cats)[np.triu_indices(len(cats), 1)]
    return float(within.min() - cosine(cats, others).max())


def test_imagenet_weights_are_real_cat_features_cluster_across_scales():
    pretrained = FrozenBackbone(BackboneConfig(), CPU)
    untrained = FrozenBackbone(BackboneConfig(weights="random"), CPU)
    # Measured: 0.66 with the ImageNet weights, below 0.01 with random ones.
    assert separation(pretrained) > 0.2
    assert separation(untrained) < 0.2  # the same check fails on random weights


def test_pretrained_lite0_recognises_the_cat():
    """The offline weights are ImageNet's: the 1000-way head calls chelsea a cat."""
    backbone = FrozenBackbone(BackboneConfig(), CPU, runtime="torch")  # its 1000-way head
    net = backbone.net.net
    cat = photo("chelsea")
    x = backbone.crop(cat, square(cat, 245, 150, 290))
    x = ((x - backbone.mean) / backbone.std).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        top5 = net(x).topk(5).indices[0].tolist()
    assert {281, 282, 283, 285, 287} & set(top5)  # tabby, tiger cat, Persian, Egyptian cat, lynx


@pytest.mark.parametrize(("name", "dim"), [("alexnet", 4096), ("vgg16", 4096), ("resnet18", 512)])
def test_torchvision_feature_layers(name, dim):
    """FC7 for AlexNet/VGG (after its ReLU), pooled trunk for ResNet; random weights, shapes only."""
    backbone = FrozenBackbone(
        BackboneConfig(name=name, weights="random", input_size=64 if name != "vgg16" else 32), CPU
    )
    out = backbone(
        torch.randint(0, 255, (2, 3, backbone.input_size, backbone.input_size), dtype=torch.uint8)
    )
    assert out.shape == (2, dim) == (2, get_spec(name).feature_dim)
    if name != "resnet18":
        assert (out >= 0).all()  # the ReLU of FC7 is kept


def test_weights_file_round_trip_and_digest(tmp_path):
    import torchvision

    torch.manual_seed(1)
    path = tmp_path / "r18.pth"  # a full torchvision state dict, as a user would save one
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, path)
    loaded = FrozenBackbone(
        BackboneConfig(name="resnet18", weights=str(path), input_size=64), CPU, runtime="torch"
    )
    assert torch.equal(loaded.net.conv1.weight, state["conv1.weight"])
    part = fingerprint_part(BackboneConfig(name="resnet18", weights=str(path)))
    assert part["weights"].startswith("sha256:") and part["layer"] == "avgpool"
    path.write_bytes(path.read_bytes() + b"x")
    assert (
        fingerprint_part(BackboneConfig(name="resnet18", weights=str(path)))["weights"]
        != part["weights"]
    )


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(BackboneUnavailable, match="do not fit"):
        FrozenBackbone(BackboneConfig(name="resnet18", weights=str(path)), CPU)


def test_failed_download_says_how_to_get_weights(monkeypatch):
    """No silent random fallback: an unreachable download is one clear error."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneUnavailable, match="--weights FILE.*efficientnet_lite0"):
        FrozenBackbone(BackboneConfig(name="alexnet"), CPU)


def test_registry_names_and_unknown():
    assert {"efficientnet_lite0", "efficientnet_lite2", "alexnet", "vgg16", "resnet50"} <= set(
        REGISTRY
    )
    with pytest.raises(BackboneUnavailable, match="unknown backbone"):
        get_spec("lenet")


def test_crop_is_exact_for_an_unscaled_patch():
    backbone = FrozenBackbone(BackboneConfig(name="resnet18", weights="random", input_size=32), CPU)
    image = torch.randint(0, 255, (3, 40, 50), dtype=torch.uint8)
    crop = backbone.crop(image, torch.tensor([[10.0, 5.0, 42.0, 37.0]]))
    assert torch.allclose(crop[0], image[:, 5:37, 10:42].float(), atol=1e-3)
