"""A fitted head and its frozen net as a model folder that runs without torch: the net's
parts exported to ONNX (the model cache's, pipeline/features/onnx_runtime.py), joined with
the crop, the shared mode's pooled cells and the head's layers; model.json says the rest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from pipeline import __version__
from pipeline.config import ExportConfig
from pipeline.deploy.bundle import FORMAT, MANIFEST, WEAK_POOLING, is_model_folder, sha256
from pipeline.errors import BackboneUnavailable, CacheError
from pipeline.features import graphs
from pipeline.features.backbone import SAMPLES
from pipeline.features.registry import get_spec
from pipeline.io import write_atomically, write_json
from pipeline.predict import Predictor, load_head


@dataclass(frozen=True)
class Exported:
    """What an export wrote: the head, its net's mode and precision, and the folder's files."""

    head: str
    mode: str
    precision: str
    classes: int
    files: dict[str, int]  # name -> bytes
    output: str


def export_head(config: ExportConfig) -> Exported:
    """Write the model folder of `config.head` into `config.output` (graphs first, model.json
    with their SHA-256 last: a folder cut short is refused on load, never half used)."""
    output = Path(config.output)
    if output.exists() and any(output.iterdir()) and not is_model_folder(output):
        raise CacheError(f"{output}: not empty and not a model folder; pass a new --output DIR")
    predictor = load_head(
        config.head, cache_dir=config.cache_dir, device="cpu", weights=config.weights,
        runtime="onnxruntime", trust_pickle=config.trust_pickle, precision=config.precision,
    )  # fmt: skip
    built = _graphs(predictor)
    output.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, model in built.items():
        write_atomically(output / name, model.SerializeToString())
        files[name] = sha256(output / name)
    write_json(output / MANIFEST, _manifest(predictor, files), sort_keys=False)
    return Exported(
        head=str(predictor.path), mode=predictor.backbone.mode,
        precision=predictor.backbone.precision, classes=len(predictor.classes),
        files={name: (output / name).stat().st_size for name in built}, output=str(output),
    )  # fmt: skip


def _graphs(predictor: Predictor) -> dict[str, onnx.ModelProto]:
    """{file name: graph} of the export: crop.onnx, or trunk.onnx and head.onnx."""
    backbone = predictor.backbone
    if backbone.runtime != "onnxruntime":
        raise BackboneUnavailable(
            f"{predictor.path}: {backbone.name} does not export to ONNX here (see the warning "
            "above); a model folder needs every part of the net in ONNX"
        )
    spec = get_spec(backbone.name)
    dense = predictor.head.dense_layers()
    head = graphs.head_graph(dense, backbone.feature_dim)
    if backbone.mode == "crop":
        prep = graphs.crop_prep(backbone.input_size, spec.mean, spec.std)
        net = onnx.load(backbone.net.path)
        return {"crop.onnx": graphs.chain(prep, net, head, names=("crop", "net", "head"))}
    parts = backbone.parts
    trunk = onnx.load(parts.trunk.path)
    trunk = graphs.chain(graphs.trunk_prep(spec.mean, spec.std), trunk, names=("prep", "trunk"))
    trunk.graph.output[0].name = _renamed(trunk, trunk.graph.output[0].name, "fmap")
    pooled = graphs.roi_cells(parts.pool, backbone.cell, SAMPLES, parts.averaged)
    joined = graphs.chain(pooled, onnx.load(parts.head.path), head,
                          names=("cells", "net", "head"))  # fmt: skip
    return {"trunk.onnx": trunk, "head.onnx": joined}


def _renamed(model: onnx.ModelProto, old: str, new: str) -> str:
    for node in model.graph.node:
        node.output[:] = [new if n == old else n for n in node.output]
        node.input[:] = [new if n == old else n for n in node.input]
    return new


def _pooling(predictor: Predictor) -> dict:
    """How the image score pools the patches: the paper's mean of p^k, or the weak head's."""
    head = predictor.head
    if type(head).__name__ != "WeakPatchHead":
        return {"pool": "mean-pk", "k": predictor.k}
    return {**{name: getattr(head, name) for name in WEAK_POOLING}, "k": predictor.k}


def _manifest(predictor: Predictor, files: dict[str, str]) -> dict:
    backbone, record = predictor.backbone, predictor.record
    spec = get_spec(backbone.name)
    shared = backbone.mode == "shared"
    return {
        "format": FORMAT,
        "midlevel": __version__,
        "classes": list(predictor.classes),
        "mode": backbone.mode,
        "precision": backbone.precision,
        "trained_precision": predictor.trained_precision,  # of the features the head learnt on
        "grid": asdict(predictor.grid),
        "input_size": backbone.input_size,
        "batch": backbone.batch_size,
        **(
            {"cell": backbone.cell, "pool": backbone.parts.pool, "samples": SAMPLES}
            if shared
            else {}
        ),
        "preprocessing": {
            "pixels": "RGB, 0..255 float32, EXIF orientation applied (docs/datasets.md)",
            "mean": [255 * m for m in spec.mean],
            "std": [255 * s for s in spec.std],
            "resize": "shared mode: bilinear, antialiased when shrinking, per channel in float",
        },
        "link": predictor.head.link,
        "pooling": _pooling(predictor),
        "head": {
            "name": record.head,
            "class": type(predictor.head).__name__,
            "file": Path(predictor.path).name,
            "sha256": record.sha256,
            "params": record.params,
        },  # fmt: skip
        "digest": record.digest,
        "fingerprint": predictor.fingerprint,
        "files": files,
    }
