"""HDF5 shards: one file per block of consecutive images, its arrays and attributes
(layout in docs/cache.md), written whole or not at all, checked before it is trusted."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline import __version__
from pipeline.errors import CacheError
from pipeline.io import write_atomically
from pipeline.store.keys import shown

SHARD_NAME = "shard-{:05d}.h5"
FEATURE_CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB of rows: whole-row reads stay cheap
PATCH_DATASETS = ("features", "boxes", "labels", "sampled", "image_index")  # one row per patch
IMAGE_DATASETS = ("image_ids", "sizes", "image_labels")  # one row per image
REBUILD = "rerun pipeline extract with the same options to rebuild it"


@dataclass
class Shard:
    """One shard's arrays. features [N, D] float16; boxes [N, 4] float32 x0,y0,x1,y1 in
    pixels of the original image; labels [N] int16 (class index, background, or -1);
    sampled [N] bool, the patch is in the image's label-blind sample (all of them in splits
    that keep every patch); image_index [N] int32 into image_ids [M] / sizes [M, 2]
    (width, height) / image_labels [M, 20] int8 (VOC truth 1, -1, 0 per class)."""

    features: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    sampled: np.ndarray
    image_index: np.ndarray
    image_ids: list[str]
    sizes: np.ndarray
    image_labels: np.ndarray


def write_shard(path: Path, shard: Shard, attrs: dict) -> int:
    """Write atomically; returns bytes written. The HDF5 file is built in memory, then written
    in one go: on a full disk, h5py writing to disk reports the failure late (at close, as a
    RuntimeError without errno on ENOSPC) and prints tracebacks of the handles it drops."""
    n, dim = shard.features.shape
    rows = max(1, min(n, FEATURE_CHUNK_BYTES // (2 * dim)))
    image = io.BytesIO()
    with h5py.File(image, "w") as h5:
        chunks = (rows, dim) if n else None  # HDF5 refuses chunks larger than an empty array
        h5.create_dataset("features", data=shard.features.astype(np.float16), chunks=chunks)
        h5.create_dataset("boxes", data=shard.boxes.astype(np.float32))
        h5.create_dataset("labels", data=shard.labels.astype(np.int16))
        h5.create_dataset("sampled", data=shard.sampled.astype(bool))
        h5.create_dataset("image_index", data=shard.image_index.astype(np.int32))
        # UTF-8 bytes: ids may hold any character (COCO file names with folders, accents)
        ids = np.array([i.encode("utf-8") for i in shard.image_ids], dtype="S")
        h5.create_dataset("image_ids", data=ids)
        h5.create_dataset("sizes", data=shard.sizes.astype(np.int32).reshape(-1, 2))
        h5.create_dataset("image_labels", data=shard.image_labels.astype(np.int8))
        for key, value in attrs.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
        h5.attrs["code_version"] = __version__
    write_atomically(path, image.getbuffer())
    return path.stat().st_size


def read_shard(path: Path, *, features: bool = True) -> Shard:
    """Read a whole shard; `features=False` skips the big array (labels only, for stats)."""
    try:
        with h5py.File(path, "r") as h5:
            return Shard(
                features=h5["features"][...] if features else np.empty((0, 0), np.float16),
                boxes=h5["boxes"][...],
                labels=h5["labels"][...],
                sampled=h5["sampled"][...],
                image_index=h5["image_index"][...],
                image_ids=[s.decode("utf-8") for s in h5["image_ids"][...]],
                sizes=h5["sizes"][...],
                image_labels=h5["image_labels"][...],
            )
    except (OSError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CacheError(f"{path}: unreadable shard ({first}); {REBUILD}") from None


def shard_attrs(path: Path) -> dict:
    """A shard's attributes as stored (JSON ones as their text), to write them again."""
    with h5py.File(path, "r") as h5:
        return _stored_attrs(h5)


def _stored_attrs(h5: h5py.File) -> dict:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in h5.attrs.items()}


def shard_problem(path: Path, digest: str, fingerprint: dict | None = None) -> str | None:
    """Why the shard at `path` cannot serve these settings, or None if it can (see
    `inspect_shard`)."""
    return inspect_shard(path, digest, fingerprint)[0]


def inspect_shard(
    path: Path, digest: str, fingerprint: dict | None = None
) -> tuple[str | None, dict]:
    """(why the shard cannot serve these settings or None, its attributes). Reads metadata
    only (attributes and shapes), so every shard is checked each time a cache is opened: the
    file opens (HDF5 refuses a truncated one), its digest and, when it has one, its fingerprint
    are these settings', the attributes readers rely on hold what extract writes, and the
    datasets of the layout are there with consistent lengths."""
    if not path.is_file():
        return "file missing", {}
    try:
        with h5py.File(path, "r") as h5:
            attrs = _stored_attrs(h5)
            problem = (
                _attrs_problem(h5, digest, fingerprint)
                or _values_problem(attrs)
                or _layout_problem(h5, attrs)
            )
    except OSError:
        return "truncated or unreadable HDF5", {}
    return problem, attrs


def int8_net_of(attrs: dict) -> str | None:
    """The int8 graph a shard's features came from: the digest its runtime attribute ends
    with ("onnxruntime 1.x int8 SHA"); None for fp32 features."""
    words = str(attrs.get("runtime", "")).split()
    return words[-1] if "int8" in words else None


def _attrs_problem(h5: h5py.File, digest: str, fingerprint: dict | None) -> str | None:
    found = h5.attrs.get("digest")
    if found != digest:
        return f"digest {found}, not {digest}"
    if fingerprint is None or "fingerprint" not in h5.attrs:
        return None
    try:
        same = json.loads(h5.attrs["fingerprint"]) == json.loads(json.dumps(fingerprint))
    except (TypeError, ValueError):
        same = False
    return None if same else "fingerprint attribute differs from these settings"


def _json(text):
    """The JSON an attribute holds, or None when it holds none."""
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _names(text) -> bool:
    names = _json(text)
    return (
        isinstance(names, list)
        and all(isinstance(n, str) and n for n in names)
        and len(set(names)) == len(names)
    )


def _skipped(text) -> bool:
    entries = _json(text)
    return isinstance(entries, list) and all(
        isinstance(e, dict) and isinstance(e.get("id"), str) and isinstance(e.get("reason"), str)
        for e in entries
    )


# What readers take from a shard's attributes, as extract writes it; an attribute a shard lacks
# (made by an older midlevel) is not checked. background_label is checked against class_names.
ATTRIBUTES = {
    "class_names": _names,
    "background_label": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "labelled": lambda v: isinstance(v, bool),
    "boxes": lambda v: isinstance(v, bool),
    "keep": lambda v: v in ("sample", "all"),
    "skipped": _skipped,
    **{name: lambda v: isinstance(v, str) for name in ("split", "task", "data", "runtime")},
}


def _values_problem(attrs: dict) -> str | None:
    for name, ok in ATTRIBUTES.items():
        if name in attrs and not ok(attrs[name]):
            return f"its {name!r} attribute is {shown(attrs[name])}"
    classes = _json(attrs.get("class_names"))
    label = attrs.get("background_label")
    if classes is not None and label is not None and label != len(classes):
        return f"its 'background_label' attribute is {label!r}, not its {len(classes)} classes"
    return None


def _layout_problem(h5: h5py.File, attrs: dict) -> str | None:
    for names in (PATCH_DATASETS, IMAGE_DATASETS):
        missing = [name for name in names if not isinstance(h5.get(name), h5py.Dataset)]
        if missing:
            return f"dataset {missing[0]!r} missing"
        rows = [(h5[name].shape or (0,))[0] for name in names]
        for name, count in zip(names, rows, strict=True):
            if count != rows[0]:
                return f"{names[0]} has {rows[0]} rows but {name} {count}"
    classes = _json(attrs.get("class_names"))
    columns = (h5["image_labels"].shape + (None, None))[1]
    if classes is not None and columns != len(classes):
        return f"image_labels has {columns} columns, class_names {len(classes)}"
    return None
