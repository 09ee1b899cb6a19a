"""One cache directory, `<cache>/<split>-<digest>-<tag>/` (the tag: its dataset and keep
rule): fingerprint.json (the settings), manifest.json (finished shards, their data digests,
"complete"), the shards, and the .lock its one writer holds (layout in docs/cache.md)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import h5py

from pipeline.errors import CacheError
from pipeline.io import TEMPORARY, write_json
from pipeline.store.keys import settings_of
from pipeline.store.shards import REBUILD, SHARD_NAME, Shard, read_shard, shard_problem

CHANGED = "its images or annotations changed"  # a shard's data digest is not its samples'
UNDIGESTED = "no data digest recorded (extracted by an older midlevel)"


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
    """One directory of shards: a split of one dataset (`source`, None for a cache made before
    datasets had their own), with these feature settings, keeping these patches."""

    def __init__(
        self, directory: Path, fingerprint: dict, digest: str, *, source: str | None = None,
        keep: str | None = None,
    ):  # fmt: skip
        self.directory = directory
        self.fingerprint = fingerprint
        self.digest = digest
        self.source, self.keep = source, keep
        self._attrs: dict | None = None
        self._paths: list[Path] | None = None

    @classmethod
    def load(cls, directory: Path) -> FeatureCache:
        """The cache in `directory`, with the settings its fingerprint.json records."""
        found = json.loads((directory / "fingerprint.json").read_text())
        return cls(
            directory, settings_of(found), found["digest"], source=found.get("source"),
            keep=found.get("keep"),
        )  # fmt: skip

    def record_settings(self) -> None:
        """fingerprint.json: the settings, their digest, the dataset and the keep rule."""
        where = {"source": self.source, "keep": self.keep} if self.source is not None else {}
        write_json(
            self.directory / "fingerprint.json",
            {"digest": self.digest, **self.fingerprint, **where},
        )

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
        for stale in self.directory.glob(f"*{TEMPORARY}*"):
            stale.unlink()  # a file in flight when a run died: a shard is redone
        self.record_settings()
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
        pipeline/store/data_digests.py): name -> why."""
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
        the digest of its samples (pipeline/store/data_digests.py). The read-modify-write holds an
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

    def class_names(self) -> list[str]:
        """The dataset's classes, the columns of the shards' image labels."""
        return json.loads(self.attrs()["class_names"])

    @property
    def labelled(self) -> bool:
        """Whether the split has truth (a split without labels scores, but has no AP)."""
        return bool(self.attrs().get("labelled", True))

    def skipped(self) -> list[dict]:
        """The images extract left out (--on-error skip), {"id", "reason"}, over every shard."""
        out = []
        for path in self.shard_paths():
            with h5py.File(path, "r") as h5:
                out += json.loads(h5.attrs.get("skipped", "[]"))
        return out

    def contents(self) -> dict:
        """What the cache holds: its settings' digest and each shard's data digest, so that a
        result keyed by them is not reused once either changes."""
        shards = self.manifest()["shards"]
        return {"digest": self.digest, "data": [shards[n].get("data", "") for n in sorted(shards)]}

    def extract_seconds(self) -> float:
        """What extracting this cache cost, summed over its shards."""
        return sum(s.get("seconds", 0.0) for s in self.manifest().get("shards", {}).values())

    def iter_shards(self, *, features: bool = True) -> Iterator[Shard]:
        for path in self.shard_paths():
            yield read_shard(path, features=features)
