"""The ONNX model cache (pipeline/features/onnx_runtime.py) is read back: a part is used only
when its bytes are the SHA-256 its record holds and the record is of the part its file name
stands for (net, weights, input size, part); any other copy is exported again, and said."""

from __future__ import annotations

import json
import shutil

import torch
import torchvision
from cli_helpers import assert_same_shards, invoke

COMMON = ["--split", "test", "--limit", "4", "--workers", "0", "--backbone", "resnet18",
          "--input-size", "64", "--scales", "3", "--min-scale", "0.4"]  # fmt: skip


def records(model_cache) -> dict[str, dict]:
    """{weights: record} of the crop parts in the model cache."""
    found = {}
    for path in model_cache.glob("resnet18-crop-*.json"):
        record = json.loads(path.read_text())
        found[record["weights"]] = {**record, "path": path.with_suffix(".onnx")}
    return found


def test_a_sound_part_of_another_net_under_this_name_is_exported_again(
    shapes_voc, tmp_path, monkeypatch
):
    """The random net's graph and record copied over the name of a weights file's part: its
    SHA-256 is right, its record says another net; before, extract used it silently (the
    random net's features under the weights file's cache)."""
    model_cache = tmp_path / "onnx"
    monkeypatch.setenv("MIDLEVEL_MODEL_CACHE", str(model_cache))
    weights = tmp_path / "resnet18-seed1.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    data = ["--voc-root", str(shapes_voc)]
    for name in ("random", "file"):
        chosen = "random" if name == "random" else str(weights)
        code, out = invoke("extract", *COMMON, *data, "--cache-dir", str(tmp_path / name),
                           "--weights", chosen)  # fmt: skip
        assert code == 0, out
    parts = records(model_cache)
    (mine,) = (w for w in parts if w.startswith("sha256:"))
    target, source = parts[mine]["path"], parts["random-untrained-seed0"]["path"]
    for suffix in (".onnx", ".json"):
        shutil.copy(source.with_suffix(suffix), target.with_suffix(suffix))
    code, out = invoke("extract", *COMMON, *data, "--cache-dir", str(tmp_path / "again"),
                       "--weights", str(weights))  # fmt: skip
    assert code == 0, out
    said = f"its record names weights 'random-untrained-seed0', not weights {mine!r}"
    assert f"{target}: {said}; exporting it again" in out
    assert records(model_cache)[mine]["path"] == target  # its own record again
    (first,) = (tmp_path / "file").glob("test-*")
    (again,) = (tmp_path / "again").glob("test-*")
    assert_same_shards(first, again)
