"""What a cache's features were made from: per shard, a digest of its samples and of their
image files' bytes (paths are not part of it), so that changed data is rebuilt and never
reused; file digests are remembered by size and mtime, as git's index does."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from pipeline.datasets.base import Sample, SplitData
from pipeline.io import file_digest, write_json

DIGESTS_FILE = "images.json"


def blake2b_128():
    """The hash of image files: the digests caches record are made with it, so it stays."""
    return hashlib.blake2b(digest_size=16)


class ImageDigests:
    """Content digests of image files, remembered by (size, mtime) in `store`."""

    def __init__(self, store: Path | None):
        self.store = store
        self._known: dict[str, list] = {}
        if store is not None and store.is_file():
            try:
                known = json.loads(store.read_text())
            except (OSError, ValueError):
                known = {}  # a damaged memo only costs hashing again
            if isinstance(known, dict):  # entries of another shape are hashed again
                self._known = {k: v for k, v in known.items() if _remembered(v)}
        self.changed = False

    def digest(self, path: Path) -> str:
        """The file's content digest, or "unreadable" (its sample reports why)."""
        key = str(path.resolve())
        try:
            stat = os.stat(path)
        except OSError:
            return "unreadable"
        seen = self._known.get(key)
        if seen and seen[0] == stat.st_size and seen[1] == stat.st_mtime_ns:
            return seen[2]
        try:
            value = file_digest(path, blake2b_128)
        except OSError:
            return "unreadable"
        self._known[key] = [stat.st_size, stat.st_mtime_ns, value]
        self.changed = True
        return value

    def save(self) -> None:
        """Write the memo (atomically) when it learnt something."""
        if self.store is None or not self.changed:
            return
        write_json(self.store, self._known)
        self.changed = False


def _remembered(entry) -> bool:
    """Whether a memo entry is [size, mtime_ns, digest] as `ImageDigests.digest` writes it."""
    return (
        isinstance(entry, list)
        and len(entry) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in entry[:2])
        and isinstance(entry[2], str)
        and re.fullmatch(r"[0-9a-f]{32}", entry[2]) is not None
    )


def sample_pixels(sample: Sample, digests: ImageDigests) -> bytes:
    """What one sample's patches and their features depend on (not its labels), as bytes."""
    image = digests.digest(sample.image_path) if sample.error is None else sample.error
    return json.dumps(
        [sample.sample_id, image, sample.width, sample.height, list(sample.region)],
        ensure_ascii=False,
    ).encode()


def sample_digest(sample: Sample, truth: np.ndarray | None, digests: ImageDigests) -> bytes:
    """Everything of one sample that its features and labels depend on, as bytes."""
    parts = [
        sample_pixels(sample, digests),
        np.ascontiguousarray(sample.boxes, dtype=np.float32).tobytes(),
        np.ascontiguousarray(sample.box_classes, dtype=np.int64).tobytes(),
        np.ascontiguousarray(sample.difficult, dtype=bool).tobytes(),
        b"" if truth is None else np.ascontiguousarray(truth, dtype=np.int8).tobytes(),
        *([] if sample.labelled else [b"unlabelled"]),  # digests of labelled samples as before
    ]
    return b"\0".join(len(p).to_bytes(8, "little") + p for p in parts)


def shard_digests(
    samples: list[Sample],
    truth: np.ndarray | None,
    per_shard: int,
    digests: ImageDigests,
    keep: str,
) -> list[str]:
    """[n_shards] digest of each shard's samples (consecutive blocks of `per_shard`) and of
    which of their patches it keeps ("sample" or "all")."""
    out = []
    for start in range(0, len(samples), per_shard):
        digest = hashlib.sha256(keep.encode())
        for i in range(start, min(start + per_shard, len(samples))):
            digest.update(sample_digest(samples[i], None if truth is None else truth[i], digests))
        out.append(digest.hexdigest()[:16])
    return out


def pixel_digests(samples: list[Sample], per_shard: int, digests: ImageDigests) -> list[str]:
    """[n_shards] digest of each shard's images alone: a shard keeping every patch whose
    pixels are unchanged while its data digest changed needs new labels, not new features."""
    out = []
    for start in range(0, len(samples), per_shard):
        digest = hashlib.sha256(b"pixels")
        for sample in samples[start : start + per_shard]:
            part = sample_pixels(sample, digests)
            digest.update(len(part).to_bytes(8, "little") + part)
        out.append(digest.hexdigest()[:16])
    return out


def split_digests(
    directory: Path, data: SplitData, per_shard: int, keep: str, *, limit: int | None = None,
    save: bool = False,
) -> list[str]:  # fmt: skip
    """The shard digests of a split's first `limit` samples, with the image memo of the cache
    `directory` (learnt hashes written back when `save`: extract's rank 0 only)."""
    return split_digests_and_pixels(directory, data, per_shard, keep, limit=limit, save=save)[0]


def split_digests_and_pixels(
    directory: Path, data: SplitData, per_shard: int, keep: str, *, limit: int | None = None,
    save: bool = False,
) -> tuple[list[str], list[str]]:  # fmt: skip
    """`split_digests` and `pixel_digests` of the same samples, their images hashed once."""
    digests = ImageDigests(directory / DIGESTS_FILE)
    truth = None if data.truth is None else data.truth[:limit]
    out = shard_digests(data.samples[:limit], truth, per_shard, digests, keep)
    pixels = pixel_digests(data.samples[:limit], per_shard, digests)
    if save:
        digests.save()
    return out, pixels
