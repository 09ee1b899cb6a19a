"""int8 for the frozen net on a CPU: ONNX Runtime's static quantization of an exported part
(QDQ, int8 weights per output channel, uint8 activations whose ranges are the min and max
seen on calibration patches of the training split, the first and last convolution kept in
float). About twice the fp32 graph's speed with VNNI; the recipe and what it costs in AP:
docs/deploy.md#int8. The quantized file lives in the model cache beside the fp32 one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.config import GridConfig
from pipeline.datasets.base import keep_by_role
from pipeline.errors import BackboneUnavailable
from pipeline.io import atomic_path, file_digest, json_digest, write_json

# What the fingerprint of int8 features names: a change of recipe is a new cache. /2: crops
# are cut by the crop graph, normalised before RoiAlign (pipeline/features/graphs.py): equal
# to float16 rounding in fp32, but int8 ranges amplify that rounding (cosine 0.9988).
RECIPE = "qdq-minmax-perchannel-firstlastfloat/2"
CALIBRATION_IMAGES = 256  # training images, one label-blind patch (or scale window) each
CALIBRATION_SEED = 0


def quantized_path(fp32_path: Path, calibration: str) -> Path:
    """Where the int8 twin of an exported part is kept, for one calibration set."""
    digest = json_digest({"part": file_digest(fp32_path), "recipe": RECIPE, "data": calibration})
    return fp32_path.with_name(f"{fp32_path.stem}-int8-{digest}.onnx")


def quantize_part(fp32_path: Path, calibration: str, batches: Iterable[np.ndarray]) -> Path:
    """The int8 twin of `fp32_path` (made now from the calibration `batches` of its input
    "x", unless the model cache holds a sound copy): its path."""
    from pipeline.features.onnx_runtime import unsound

    target = quantized_path(fp32_path, calibration)
    key = {"recipe": RECIPE, "calibration": calibration, "from": fp32_path.name}
    problem = unsound(target, key)
    if problem is None:
        return target
    if problem != "missing":
        print(f"{target}: {problem}; quantizing it again", file=sys.stderr)
    _quantize(fp32_path, target, batches)
    try:  # the fp32 part's record says which net, weights, part and input size this is
        part = json.loads(fp32_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        part = {}
    part = {k: v for k, v in part.items() if k not in ("sha256", "exporter")}
    info = {**part, "precision": "int8", "recipe": RECIPE, "calibration": calibration,
            "from": fp32_path.name}  # fmt: skip
    record = {**info, "sha256": file_digest(target)}
    write_json(target.with_suffix(".json"), record, sort_keys=False)
    return target


def recorded_calibration(net: str | None) -> str | None:
    """The calibration digest of the int8 graph whose SHA-256 begins with `net` (the digest a
    shard's runtime attribute names), from its record in the model cache; None where no
    record names it."""
    from pipeline.features.onnx_runtime import model_cache_dir

    for path in sorted(model_cache_dir().glob("*-int8-*.json")) if net else ():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and str(record.get("sha256", "")).startswith(net):
            found = record.get("calibration")
            return found if isinstance(found, str) else None
    return None


def _quantize(source: Path, target: Path, batches: Iterable[np.ndarray]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"x": np.ascontiguousarray(batch, np.float32)}

    quiet = contextlib.redirect_stdout(io.StringIO())
    with tempfile.TemporaryDirectory() as scratch, quiet, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))  # BatchNorm folded, shapes inferred
        convs = [node.name for node in _graph_nodes(prepared) if node.op_type == "Conv"]
        with atomic_path(target) as partial:
            quantize_static(
                str(prepared), str(partial), Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=[convs[0], convs[-1]] if len(convs) > 2 else [],
                extra_options={"CalibTensorRangeSymmetric": False},
            )  # fmt: skip
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())


def _graph_nodes(path: Path):
    import onnx

    return onnx.load(str(path)).graph.node


@dataclass(frozen=True)
class Calibration:
    """The training images int8 ranges are calibrated on, the grid their patches come from,
    and the digest of their bytes (a changed image is another calibration)."""

    images: tuple[Path, ...]
    grid: GridConfig
    digest: str


def calibration_set(dataset, split: str, data, grid: GridConfig, task) -> Calibration:
    """Up to CALIBRATION_IMAGES images of the training split, a seeded draw over their
    sorted names: `split` itself when it is one (by its name), else the dataset's."""
    if keep_by_role(split) != "sample":
        named = [s for s in ("trainval", "train") if s in dataset.splits()]
        named += sorted(s for s in dataset.splits() if keep_by_role(s) == "sample")
        if not named:
            raise BackboneUnavailable(
                f"--precision int8 calibrates on a training split; {dataset.source()} has none "
                f"(splits: {', '.join(dataset.splits()) or 'none'}); use --precision fp32"
            )
        data = dataset.load(named[0], task=task)
    paths = sorted({s.image_path for s in data.samples if s.error is None}, key=lambda p: p.name)
    rng = np.random.default_rng(CALIBRATION_SEED)
    if len(paths) > CALIBRATION_IMAGES:
        paths = [paths[i] for i in sorted(rng.choice(len(paths), CALIBRATION_IMAGES, False))]
    digest = json_digest(
        {"images": [[p.name, file_digest(p)] for p in paths], "grid": asdict(grid)}
    )
    return Calibration(tuple(paths), grid, digest)
