"""ONNX Runtime for the frozen net: the same features as torch, a model cache that heals
itself, and torch as the fallback where ONNX Runtime cannot run."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
import torch
from cli_helpers import extract_args, invoke
from test_backbone import CPU, photo

from pipeline.config import BackboneConfig, ExtractConfig, GridConfig
from pipeline.errors import BackboneUnavailable, ConfigError
from pipeline.features import onnx_runtime
from pipeline.features.backbone import FrozenBackbone
from pipeline.features.onnx_runtime import model_cache_dir, resolve_runtime
from pipeline.features.patches import patch_grid
from pipeline.features.registry import REGISTRY


def grid_of(image: torch.Tensor, scales: int = 2) -> torch.Tensor:
    grid = GridConfig(scales=scales, min_scale=0.5)
    return torch.from_numpy(patch_grid(image.shape[2], image.shape[1], grid))


def both_runtimes(config: BackboneConfig, image: torch.Tensor, boxes: torch.Tensor):
    """(torch features, ONNX Runtime features) of the patches, float32."""
    out = []
    for runtime in ("torch", "onnxruntime"):
        net = FrozenBackbone(config, CPU, runtime=runtime)
        assert net.runtime == runtime
        if net.mode == "shared":
            out.append(net.shared_features(image, boxes).numpy())
        else:
            out.append(net(net.crop(image, boxes)).numpy())
    return out


def assert_same_features(reference: np.ndarray, actual: np.ndarray) -> None:
    """Below the cache's float16 rounding: cosine 1 to 5 decimals, no value off by more
    than 1e-4 of the largest (float16 rounds those by 2.4e-4), and almost every stored
    float16 value bit-identical."""
    cosine = (reference * actual).sum(1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(actual, axis=1) + 1e-12
    )
    assert cosine.min() > 0.99999, cosine.min()
    scale = np.abs(reference).max()
    assert np.abs(reference - actual).max() < 1e-4 * max(scale, 1.0)
    same = reference.astype(np.float16) == actual.astype(np.float16)
    assert same.mean() > 0.98, same.mean()


# beside the table, nets reached by name: torchvision's FX cut, timm's halves, a transformer
GENERIC = {
    "regnet_y_400mf": 64,
    "timm:mobilenetv3_small_050": 64,
    "timm:vit_tiny_patch16_224": None,
}


@pytest.mark.parametrize("mode", ["crop", "shared"])
@pytest.mark.parametrize("name", [*sorted(REGISTRY), *GENERIC])
def test_onnxruntime_features_match_torch_for_every_backbone(name, mode):
    """Real photos, ImageNet weights for Lite (the ones here), untrained ones elsewhere (a
    transformer's shared request runs crop, under ONNX Runtime too)."""
    lite = name.startswith("efficientnet_lite")
    image = photo("chelsea") if lite else photo("coffee")[:, ::3, ::3].contiguous()
    size = None if lite else GENERIC.get(name, 64)
    config = BackboneConfig(name, None if lite else "random", size, mode)
    reference, actual = both_runtimes(config, image, grid_of(image))
    assert reference.shape == actual.shape and len(reference) > 4
    assert_same_features(reference, actual)


def test_the_model_cache_reuses_an_export_and_heals_a_damaged_one(capfd):
    config = BackboneConfig("resnet18", "random", 48)
    image = photo("coffee")[:, ::4, ::4].contiguous()
    boxes = grid_of(image)
    first = FrozenBackbone(config, CPU, runtime="onnxruntime")
    expected = first(first.crop(image, boxes)).numpy()
    records = {p: json.loads(p.with_suffix(".json").read_text())
               for p in model_cache_dir().glob("resnet18-crop-*.onnx")}  # fmt: skip
    (exported,) = [p for p, record in records.items()  # the fp32 export, not an int8 twin
                   if record["input_size"] == 48 and "precision" not in record]  # fmt: skip
    stamp = exported.stat().st_mtime_ns
    capfd.readouterr()
    again = FrozenBackbone(config, CPU, runtime="onnxruntime")
    assert exported.stat().st_mtime_ns == stamp  # no second export
    assert capfd.readouterr().err == ""
    data = bytearray(exported.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # a damaged file: weights zeroed
    exported.write_bytes(bytes(data))
    healed = FrozenBackbone(config, CPU, runtime="onnxruntime")
    err = capfd.readouterr().err
    assert "damaged" in err and "exporting it again" in err and str(exported) in err
    np.testing.assert_array_equal(healed(healed.crop(image, boxes)).numpy(), expected)
    np.testing.assert_array_equal(again(again.crop(image, boxes)).numpy(), expected)


def test_auto_falls_back_to_torch_with_one_warning_where_onnxruntime_does_not_load(
    monkeypatch, capfd
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as on a bad install
    assert resolve_runtime("auto", CPU) == "torch"
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: onnxruntime does not load here")
    with pytest.raises(BackboneUnavailable, match="--runtime onnxruntime: onnxruntime does not"):
        resolve_runtime("onnxruntime", CPU)


def test_cuda_runs_torch_and_refuses_onnxruntime():
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert resolve_runtime("auto", cuda) == "torch"
    assert resolve_runtime("torch", cuda) == "torch"
    with pytest.raises(BackboneUnavailable, match="on cuda use --runtime torch"):
        resolve_runtime("onnxruntime", cuda)
    with pytest.raises(
        ConfigError, match="^runtime 'tensorrt': choose one of auto, torch, onnxruntime$"
    ):
        ExtractConfig(runtime="tensorrt")  # refused with the settings, before any net


def test_a_net_that_does_not_export_runs_with_torch_and_says_so(monkeypatch, capfd, tmp_path):
    monkeypatch.setenv(onnx_runtime.MODEL_CACHE_ENV, str(tmp_path))

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::foo")

    monkeypatch.setattr(onnx_runtime, "_run_exporter", refuse)
    net = FrozenBackbone(BackboneConfig("resnet18", "random", 32), CPU, runtime="onnxruntime")
    err = capfd.readouterr().err
    assert "does not run under ONNX Runtime (RuntimeError: unsupported operator" in err
    assert net.runtime == "torch" and not list(tmp_path.iterdir())  # nothing half-written
    image = photo("coffee")[:, ::8, ::8].contiguous()
    assert net(net.crop(image, grid_of(image))).shape[1] == 512


def test_default_extract_runs_onnxruntime_and_the_runtime_keys_no_cache(shapes_voc, tmp_path):
    """The default CPU extract records ONNX Runtime in its shards; a torch extract of the
    same settings lands in the same cache directory (the runtime is not in the key), and
    its stored float16 features are almost all bit-identical, none further apart than
    the float16 step of its feature's largest value."""
    caches = {}
    for runtime in ("auto", "torch"):
        cache = tmp_path / runtime
        code, out = invoke(*extract_args(shapes_voc, cache, "--runtime", runtime))
        assert code == 0, out
        assert f"(the net, {'onnxruntime' if runtime == 'auto' else 'torch'} " in out
        (directory,) = cache.glob("test-*")
        caches[runtime] = directory
    assert caches["auto"].name == caches["torch"].name
    with (
        h5py.File(caches["auto"] / "shard-00000.h5") as a,
        h5py.File(caches["torch"] / "shard-00000.h5") as b,
    ):
        assert a.attrs["runtime"].startswith("onnxruntime ")
        assert b.attrs["runtime"].startswith("torch ")
        fa, fb = a["features"][:], b["features"][:]
    assert (fa == fb).mean() > 0.98
    step = np.spacing(np.abs(fb).max(axis=1, keepdims=True)).astype(np.float32)
    assert (np.abs(fa.astype(np.float32) - fb.astype(np.float32)) <= step).all()
