"""The feature cache: chunked HDF5 shards, a manifest, and a writer lock.

Layout (documented for users in README.md, "Cache layout"):

    <cache>/<split>-<digest>/
        fingerprint.json      settings that made the features (digest = hash of them)
        manifest.json         shard names -> images, patches; "complete" once all are written
        shard-00000.h5 ...    one file per block of `images_per_shard` consecutive images
        .lock                 held (flock) by the one process writing this directory

A shard appears only when complete: it is written under a temporary name and renamed. A
shard that is there but bad (truncated, another digest or fingerprint, a dataset missing or
of the wrong length) is not done: extract rebuilds it, fit and score refuse it by name.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import re
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
PATCH_DATASETS = ("features", "boxes", "labels", "sampled", "image_index")  # one row per patch
IMAGE_DATASETS = ("image_ids", "sizes", "image_labels")  # one row per image
REBUILD = "rerun pipeline extract with the same options to rebuild it"
CHANGED = "its images or annotations changed"  # a shard's data digest is not its samples'
UNDIGESTED = "no data digest recorded (extracted by an older midlevel)"


def cache_path(cache_root: str | Path, split: str, digest: str) -> Path:
    return Path(cache_root) / f"{split}-{digest}"


def write_json(path: Path, payload: dict) -> None:
    write_atomically(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    """Write under a temporary name, fsync, rename: `path` is whole or untouched. On any
    failure the temporary file is removed, and an OS error (a full disk) becomes one line."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CacheError(_write_failure(path, exc)) from None
        raise


def _write_failure(path: Path, exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    mount = path.parent.resolve()
    while not os.path.ismount(mount):
        mount = mount.parent
    fix = {
        errno.ENOSPC: f"free space on {mount}",
        errno.EDQUOT: f"free space on {mount} (disk quota)",
        errno.EFBIG: "raise the file size limit (ulimit -f) or lower --images-per-shard",
    }.get(exc.errno, f"check the disk at {mount}")
    return f"{path}: cannot write it ({reason}); {fix} and rerun the same command: finished shards are kept"


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
        h5.attrs["code_version"] = code_version()
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


def shard_problem(path: Path, digest: str, fingerprint: dict | None = None) -> str | None:
    """Why the shard at `path` cannot serve these settings, or None if it can. Reads metadata
    only (attributes and shapes), so every shard is checked each time a cache is opened: the
    file opens (HDF5 refuses a truncated one), its digest and, when it has one, its fingerprint
    are these settings', and the datasets of the layout are there with consistent lengths."""
    if not path.is_file():
        return "file missing"
    try:
        with h5py.File(path, "r") as h5:
            return _attrs_problem(h5, digest, fingerprint) or _layout_problem(h5)
    except OSError:
        return "truncated or unreadable HDF5"


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


def _layout_problem(h5: h5py.File) -> str | None:
    for names in (PATCH_DATASETS, IMAGE_DATASETS):
        missing = [name for name in names if not isinstance(h5.get(name), h5py.Dataset)]
        if missing:
            return f"dataset {missing[0]!r} missing"
        rows = [(h5[name].shape or (0,))[0] for name in names]
        for name, count in zip(names, rows, strict=True):
            if count != rows[0]:
                return f"{names[0]} has {rows[0]} rows but {name} {count}"
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
            holder = _lock_holder(handle.read().strip())
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


def _lock_holder(text: str) -> str:
    """The lock file's "pid N on HOST", noting when that process has exited on this host: the
    flock is then held by a process it forked (a DataLoader worker outlives a kill -9 of its
    parent by a few seconds)."""
    match = re.fullmatch(r"pid (\d+) on (\S+)", text)
    if not match:
        return text or "another process"
    if match[2] == socket.gethostname():
        try:
            os.kill(int(match[1]), 0)
        except ProcessLookupError:
            return f"{text} (exited; a process it started still holds the lock)"
        except PermissionError:
            pass  # alive, another user's
    return text


class FeatureCache:
    """One (split, settings) directory of shards."""

    def __init__(self, directory: Path, fingerprint: dict, digest: str):
        self.directory = directory
        self.fingerprint = fingerprint
        self.digest = digest
        self._attrs: dict | None = None
        self._paths: list[Path] | None = None

    @classmethod
    def load(cls, directory: Path) -> FeatureCache:
        """The cache in `directory`, with the settings its fingerprint.json records."""
        found = json.loads((directory / "fingerprint.json").read_text())
        return cls(directory, {k: v for k, v in found.items() if k != "digest"}, found["digest"])

    def shard_path(self, index: int) -> Path:
        return self.directory / SHARD_NAME.format(index)

    def prepare(
        self,
        *,
        n_images: int,
        images_per_shard: int,
        overwrite: bool,
        limit: int | None = None,
    ) -> int | None:
        """Create or check the directory for writing; --overwrite empties it first. A split
        that grew or shrank since (images added, another --limit) keeps the manifest: shards
        past its end are removed, and the number of images it had before is returned (None
        when unchanged). `limit` (--limit) is recorded: the split's first images on purpose."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for old in self.directory.glob("shard-*.h5*"):
                old.unlink()
            (self.directory / "manifest.json").unlink(missing_ok=True)
        manifest = self.manifest()
        if manifest and manifest.get("images_per_shard") != images_per_shard:
            raise CacheError(
                f"{self.directory}: was started with {manifest.get('images_per_shard')} images "
                "per shard; rerun with that --images-per-shard or --overwrite"
            )
        for stale in self.directory.glob("*.tmp-*"):
            stale.unlink()  # a file in flight when a run died: a shard is redone
        write_json(self.directory / "fingerprint.json", {"digest": self.digest, **self.fingerprint})
        before = manifest.get("n_images") if manifest else None
        n_shards = -(-n_images // images_per_shard)
        shards = {
            name: entry
            for name, entry in (manifest.get("shards", {}) if manifest else {}).items()
            if name in {SHARD_NAME.format(k) for k in range(n_shards)}
        }
        for name in set(manifest.get("shards", {}) if manifest else ()) - set(shards):
            (self.directory / name).unlink(missing_ok=True)
        write_json(
            self.directory / "manifest.json",
            {
                "n_images": n_images,
                "images_per_shard": images_per_shard,
                "limit": limit,
                "shards": shards,
                "complete": len(shards) == n_shards,
            },
        )
        return before if before not in (None, n_images) else None

    def manifest(self) -> dict:
        path = self.directory / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def problem(self, path: Path) -> str | None:
        """Why this shard is bad for this cache (see `shard_problem`), or None."""
        return shard_problem(path, self.digest, self.fingerprint)

    def is_done(self, index: int) -> bool:
        """Recorded and whole: a bad shard is not done, so extract writes it again."""
        path = self.shard_path(index)
        return path.name in self.manifest().get("shards", {}) and self.problem(path) is None

    def bad_shards(self) -> dict[str, str]:
        """Recorded shards that are bad, name -> reason: those a rerun of extract rebuilds."""
        recorded = sorted(self.manifest().get("shards", {}))
        return {n: p for n in recorded if (p := self.problem(self.directory / n)) is not None}

    def changed_shards(self, data: list[str]) -> dict[str, str]:
        """Recorded shards whose data digest is not `data[k]` (the split's samples now, see
        pipeline/data_digests.py): name -> why."""
        recorded = self.manifest().get("shards", {})
        out = {}
        for k, digest in enumerate(data):
            entry = recorded.get(self.shard_path(k).name)
            if entry is not None and entry.get("data") != digest:
                out[self.shard_path(k).name] = CHANGED if entry.get("data") else UNDIGESTED
        return out

    def record(
        self,
        index: int,
        *,
        images: int,
        patches: int,
        seconds: float,
        n_shards: int,
        rank: int = 0,
        skipped: int = 0,
        data: str = "",
    ) -> None:
        """Add a finished shard to the manifest (after its rename, so the file exists).

        `seconds` is the compute time of the shard: sweeps compare their cost to it; `data`
        the digest of its samples (pipeline/data_digests.py). The read-modify-write holds an
        flock, since the processes of a torchrun share the file."""
        with open(self.directory / ".manifest.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = self.manifest()
            manifest["shards"][self.shard_path(index).name] = {
                "images": images,
                "patches": patches,
                "seconds": round(seconds, 3),
                "rank": rank,
                "skipped": skipped,
                "data": data,
            }
            manifest["complete"] = len(manifest["shards"]) == n_shards
            write_json(self.directory / "manifest.json", manifest)

    def shard_paths(self) -> list[Path]:
        """Finished shards in order; refuses an incomplete cache or a bad shard (checked once
        per FeatureCache: fit and score call this at open and again for every pass)."""
        if self._paths is None:
            manifest = self.manifest()
            if not manifest.get("complete"):
                raise CacheError(
                    f"{self.directory}: extraction not finished; run pipeline extract again to complete it"
                )
            paths = [self.directory / name for name in sorted(manifest["shards"])]
            for path in paths:
                if (problem := self.problem(path)) is not None:
                    raise CacheError(f"{path}: {problem}; {REBUILD}")
            self._paths = paths
        return self._paths

    def attrs(self) -> dict:
        """What every shard of the split carries (class names, labelled, task, VOC year...),
        read once, from the first shard of a finished cache."""
        if self._attrs is None:
            with h5py.File(self.shard_paths()[0], "r") as h5:
                self._attrs = dict(h5.attrs)
        return self._attrs

    def skipped(self) -> list[dict]:
        """The images extract left out (--on-error skip), {"id", "reason"}, over every shard."""
        out = []
        for path in self.shard_paths():
            with h5py.File(path, "r") as h5:
                out += json.loads(h5.attrs.get("skipped", "[]"))
        return out

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
            f"{directory}: no {split!r} features with these settings ({describe_fingerprint(fingerprint)}); "
            f"{others[0].parent.name} has {describe_fingerprint(found)}: pass the options extract used, or extract again"
        )
    return FeatureCache(directory, fingerprint, digest)


def describe_fingerprint(fingerprint: dict) -> str:
    """The settings that tell caches apart, on one line (task only where not objects)."""
    backbone = fingerprint.get("backbone", {})
    grid = fingerprint.get("grid", {})
    labels = fingerprint.get("labels", {})
    task = fingerprint.get("task")
    return (
        f"backbone={backbone.get('name')} weights={backbone.get('weights')} "
        f"input={backbone.get('input_size')} mode={backbone.get('mode', 'crop')} "
        f"grid={grid.get('kind', 'patches')} scales={grid.get('scales')} "
        f"min_scale={grid.get('min_scale')} overlap={grid.get('overlap')} "
        f"covers={labels.get('min_patch_cover')}/{labels.get('min_box_cover')} "
        f"background={labels.get('background_ratio')} seed={labels.get('seed')}"
        + (f" task={task.get('name')} context={task.get('context')}" if task else "")
    )
