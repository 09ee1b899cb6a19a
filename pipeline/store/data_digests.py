"""What a cache's features were made from: a digest per shard of its samples and image bytes.

Each shard's manifest entry records the digest of its samples (ids, image sizes, regions,
boxes, classes, difficult flags, truth rows, load errors) and of their image files' bytes,
so that changing images or boxes under the same path makes extract rebuild exactly the
shards they fall in, and fit or score refuse features made from older data. Moving or
copying the dataset changes no digest: paths are not part of it, bytes are.

Hashing every image on each run would read the whole dataset; `ImageDigests` remembers each
file's digest with its size and modification time (in the split's cache directory), so a
rerun only stats the files and hashes those whose stat changed, as git's index does.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from pipeline.datasets.base import Sample, SplitData

DIGESTS_FILE = "images.json"
CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """blake2b-128 of the file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class ImageDigests:
    """Content digests of image files, remembered by (size, mtime) in `store`."""

    def __init__(self, store: Path | None):
        self.store = store
        self._known: dict[str, list] = {}
        if store is not None and store.is_file():
            try:
                self._known = json.loads(store.read_text())
            except (OSError, ValueError):
                self._known = {}  # a damaged memo only costs hashing again
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
            value = file_digest(path)
        except OSError:
            return "unreadable"
        self._known[key] = [stat.st_size, stat.st_mtime_ns, value]
        self.changed = True
        return value

    def save(self) -> None:
        """Write the memo (atomically) when it learnt something."""
        if self.store is None or not self.changed:
            return
        from pipeline.store.shards import write_json

        write_json(self.store, self._known)
        self.changed = False


def sample_digest(sample: Sample, truth: np.ndarray | None, digests: ImageDigests) -> bytes:
    """Everything of one sample that its features and labels depend on, as bytes."""
    image = digests.digest(sample.image_path) if sample.error is None else sample.error
    head = json.dumps(
        [sample.sample_id, image, sample.width, sample.height, list(sample.region)],
        ensure_ascii=False,
    ).encode()
    parts = [
        head,
        np.ascontiguousarray(sample.boxes, dtype=np.float32).tobytes(),
        np.ascontiguousarray(sample.box_classes, dtype=np.int64).tobytes(),
        np.ascontiguousarray(sample.difficult, dtype=bool).tobytes(),
        b"" if truth is None else np.ascontiguousarray(truth, dtype=np.int8).tobytes(),
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


def split_digests(
    directory: Path, data: SplitData, per_shard: int, keep: str, *, limit: int | None = None,
    save: bool = False,
) -> list[str]:  # fmt: skip
    """The shard digests of a split's first `limit` samples, with the image memo of the cache
    `directory` (learnt hashes written back when `save`: extract's rank 0 only)."""
    digests = ImageDigests(directory / DIGESTS_FILE)
    truth = None if data.truth is None else data.truth[:limit]
    out = shard_digests(data.samples[:limit], truth, per_shard, digests, keep)
    if save:
        digests.save()
    return out
