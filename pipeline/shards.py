"""The feature cache: chunked HDF5 shards, a manifest, and a writer lock.

Layout (documented for users in README.md, "Cache layout"):

    <cache>/<split>-<digest>/
        fingerprint.json      settings that made the features (digest = hash of them)
        manifest.json         shard names -> images, patches; "complete" once all are written
        shard-00000.h5 ...    one file per block of `images_per_shard` consecutive images
        .lock                 held (flock) by the one process writing this directory

A shard appears only when complete: it is written under a temporary name and renamed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.config import code_version
from pipeline.errors import CacheError

SHARD_NAME = "shard-{:05d}.h5"
FEATURE_CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB of rows: whole-row reads stay cheap


def cache_path(cache_root: str | Path, split: str, digest: str) -> Path:
    return Path(cache_root) / f"{split}-{digest}"


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


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
    """Write atomically (temp file + fsync + rename); returns bytes written."""
    n, dim = shard.features.shape
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    rows = max(1, min(n, FEATURE_CHUNK_BYTES // (2 * dim)))
    with h5py.File(tmp, "w") as h5:
        chunks = (rows, dim) if n else None  # HDF5 refuses chunks larger than an empty array
        h5.create_dataset("features", data=shard.features.astype(np.float16), chunks=chunks)
        h5.create_dataset("boxes", data=shard.boxes.astype(np.float32))
        h5.create_dataset("labels", data=shard.labels.astype(np.int16))
        h5.create_dataset("sampled", data=shard.sampled.astype(bool))
        h5.create_dataset("image_index", data=shard.image_index.astype(np.int32))
        h5.create_dataset("image_ids", data=np.array(shard.image_ids, dtype="S"))
        h5.create_dataset("sizes", data=shard.sizes.astype(np.int32).reshape(-1, 2))
        h5.create_dataset("image_labels", data=shard.image_labels.astype(np.int8))
        for key, value in attrs.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
        h5.attrs["code_version"] = code_version()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
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
                image_ids=[s.decode() for s in h5["image_ids"][...]],
                sizes=h5["sizes"][...],
                image_labels=h5["image_labels"][...],
            )
    except (OSError, KeyError) as exc:
        raise CacheError(
            f"{path}: unreadable shard ({exc}); rerun extract with --overwrite"
        ) from None


def shard_digest(path: Path) -> str | None:
    """The settings digest a finished shard was written with (None if unreadable)."""
    try:
        with h5py.File(path, "r") as h5:
            return str(h5.attrs["digest"])
    except (OSError, KeyError):
        return None


class WriterLock:
    """An exclusive flock on <dir>/.lock: the kernel drops it when the process dies."""

    def __init__(self, directory: Path):
        self.path = directory / ".lock"
        self._handle = None

    def __enter__(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CacheError(
                f"{self.path.parent}: being written by {holder}; wait for it to finish, "
                "or use another --cache-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


class FeatureCache:
    """One (split, settings) directory of shards."""

    def __init__(self, directory: Path, fingerprint: dict, digest: str):
        self.directory = directory
        self.fingerprint = fingerprint
        self.digest = digest
        self._attrs: dict | None = None

    def shard_path(self, index: int) -> Path:
        return self.directory / SHARD_NAME.format(index)

    def prepare(self, *, n_images: int, images_per_shard: int, overwrite: bool) -> None:
        """Create or check the directory for writing; --overwrite empties it first."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for old in self.directory.glob("shard-*.h5*"):
                old.unlink()
            (self.directory / "manifest.json").unlink(missing_ok=True)
        manifest = self.manifest()
        layout = {"n_images": n_images, "images_per_shard": images_per_shard}
        if manifest and {k: manifest.get(k) for k in layout} != layout:
            raise CacheError(
                f"{self.directory}: was started with {manifest.get('n_images')} images, "
                f"{manifest.get('images_per_shard')} per shard; rerun with those or --overwrite"
            )
        for stale in self.directory.glob("shard-*.h5.tmp-*"):
            stale.unlink()  # a shard in flight when a run died: it is redone
        _write_json(
            self.directory / "fingerprint.json", {"digest": self.digest, **self.fingerprint}
        )
        if not manifest:
            _write_json(
                self.directory / "manifest.json", {**layout, "shards": {}, "complete": False}
            )

    def manifest(self) -> dict:
        path = self.directory / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def is_done(self, index: int) -> bool:
        path = self.shard_path(index)
        return path.name in self.manifest().get("shards", {}) and shard_digest(path) == self.digest

    def record(
        self, index: int, *, images: int, patches: int, seconds: float, n_shards: int, rank: int = 0
    ) -> None:
        """Add a finished shard to the manifest (after its rename, so the file exists).

        `seconds` is the compute time of the shard: sweeps compare their cost to it. The
        read-modify-write holds an flock, since the processes of a torchrun share the file."""
        with open(self.directory / ".manifest.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = self.manifest()
            manifest["shards"][self.shard_path(index).name] = {
                "images": images,
                "patches": patches,
                "seconds": round(seconds, 3),
                "rank": rank,
            }
            manifest["complete"] = len(manifest["shards"]) == n_shards
            _write_json(self.directory / "manifest.json", manifest)

    def shard_paths(self) -> list[Path]:
        """Finished shards in order; refuses an incomplete or foreign cache."""
        manifest = self.manifest()
        if not manifest.get("complete"):
            raise CacheError(
                f"{self.directory}: extraction not finished; run pipeline extract again to complete it"
            )
        paths = [self.directory / name for name in sorted(manifest["shards"])]
        for path in paths:
            if shard_digest(path) != self.digest:
                raise CacheError(
                    f"{path}: missing or written with other settings; rerun extract with --overwrite"
                )
        return paths

    def attrs(self) -> dict:
        """What every shard of the split carries (class names, labelled, task, VOC year...),
        read once, from the first shard of a finished cache."""
        if self._attrs is None:
            with h5py.File(self.shard_paths()[0], "r") as h5:
                self._attrs = dict(h5.attrs)
        return self._attrs

    def extract_seconds(self) -> float:
        """What extracting this cache cost, summed over its shards."""
        return sum(s.get("seconds", 0.0) for s in self.manifest().get("shards", {}).values())

    def iter_shards(self, *, features: bool = True) -> Iterator[Shard]:
        for path in self.shard_paths():
            yield read_shard(path, features=features)


def open_cache(cache_root: str | Path, split: str, fingerprint: dict, digest: str) -> FeatureCache:
    """The finished cache for these settings, or an error naming what exists instead."""
    directory = cache_path(cache_root, split, digest)
    if not (directory / "manifest.json").is_file():
        others = sorted(Path(cache_root).glob(f"{split}-*/fingerprint.json"))
        if not others:
            raise CacheError(
                f"{directory}: no features for split {split!r}; run pipeline extract --split {split} first"
            )
        found = json.loads(others[0].read_text())
        raise CacheError(
            f"{directory}: no {split!r} features with these settings ({_describe(fingerprint)}); "
            f"{others[0].parent.name} has {_describe(found)}: pass the options extract used, or extract again"
        )
    return FeatureCache(directory, fingerprint, digest)


def _describe(fingerprint: dict) -> str:
    backbone = fingerprint.get("backbone", {})
    grid = fingerprint.get("grid", {})
    labels = fingerprint.get("labels", {})
    return (
        f"backbone={backbone.get('name')} weights={backbone.get('weights')} "
        f"input={backbone.get('input_size')} grid={grid.get('kind', 'patches')} scales={grid.get('scales')} "
        f"min_scale={grid.get('min_scale')} overlap={grid.get('overlap')} "
        f"background={labels.get('background_ratio')} seed={labels.get('seed')}"
    )
