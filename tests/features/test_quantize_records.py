"""The int8 twins in the model cache are read back checked (issue 26): a twin is used only
when its bytes are its record's SHA-256 and its record is of the calibration, recipe and
fp32 part its file name stands for; a sound copy of another calibration's twin put there is
quantized again, never used as this one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch

from pipeline.features.quantize import RECIPE, quantize_part, recorded_calibration


def tiny_part(path):
    """An fp32 part as the model cache holds one: three convolutions, input "x"."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 3),
    ).eval()  # fmt: skip
    torch.onnx.export(
        net, torch.zeros(1, 3, 16, 16), path, input_names=["x"], dynamo=False,
        dynamic_axes={"x": {0: "batch"}},
    )  # fmt: skip
    return path


def batches(scale: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(scale * rng.random((2, 3, 16, 16))).astype(np.float32) for _ in range(2)]


def test_a_sound_twin_of_another_calibration_under_this_name_is_quantized_again(tmp_path):
    part = tiny_part(tmp_path / "net-crop-0123.onnx")
    a = quantize_part(part, "calibration-a", batches(1.0))
    b = quantize_part(part, "calibration-b", batches(50.0))
    assert a != b and a.read_bytes() != b.read_bytes()
    for suffix in (".onnx", ".json"):  # a's twin copied over b's name: its SHA-256 is right
        shutil.copy(a.with_suffix(suffix), b.with_suffix(suffix))
    again = quantize_part(part, "calibration-b", batches(50.0))
    record = json.loads(again.with_suffix(".json").read_text())
    assert again == b and record["calibration"] == "calibration-b"
    assert record["recipe"] == RECIPE and record["from"] == part.name
    assert again.read_bytes() != a.read_bytes()


def test_a_recorded_calibration_of_the_wrong_type_names_none(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDLEVEL_MODEL_CACHE", str(tmp_path))
    part = tiny_part(tmp_path / "net-crop-0123.onnx")
    twin = quantize_part(part, "calibration-a", batches(1.0))
    record = json.loads(twin.with_suffix(".json").read_text())
    net = record["sha256"][:12]
    assert recorded_calibration(net) == "calibration-a"
    twin.with_suffix(".json").write_text(json.dumps({**record, "calibration": ["a", 1]}))
    assert recorded_calibration(net) is None
