"""One cache directory, `<cache>/<split>-<digest>-<tag>/` (the tag: its dataset and keep
rule): fingerprint.json (the settings), manifest.json (finished shards, their data digests,
"complete"), the shards, and the .lock its one writer holds (layout in docs/cache.md)."""

from __future__ import annotations

import fcntl
import json
import math
import numbers
import os
import re
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import h5py

from pipeline.config import CacheSettings
from pipeline.errors import CacheError
from pipeline.io import TEMPORARY, write_json
from pipeline.store.data_digests import split_digests
from pipeline.store.keys import CacheKey, fingerprint_problem, shown
from pipeline.store.legacy import PICKLED
from pipeline.store.shards import (
    REBUILD,
    SHARD_NAME,
    Shard,
    inspect_shard,
    int8_net_of,
    read_shard,
    shard_problem,
)

HEADS_DIR = "heads"  # a split's fitted heads live beside its features
HEAD_SUFFIX = ".safetensors"
CHANGED = "its images or annotations changed"  # a shard's data digest is not its samples'
UNDIGESTED = "no data digest recorded (extracted by an older midlevel)"
OVERWRITE = "rerun pipeline extract with --overwrite to extract the split again"
# Attributes every shard of a split shares: a shard that differs from the others is bad.
SHARED_ATTRIBUTES = ("split", "class_names", "background_label", "labelled", "boxes", "keep",
                     "task", "data", "voc_year")  # fmt: skip


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


class SplitCache:
    """One directory of shards: a split of one dataset (`source`, None for a cache made before
    datasets had their own), with the features of `key`, keeping these patches. Readers get
    one from `open` (pipeline/store/opening.py), extract from `writer`; `dataset` and `data`
    are the dataset it was checked against and that split as loaded then (None unchecked)."""

    def __init__(
        self, directory: Path, key: CacheKey, *, source: str | None = None,
        keep: str | None = None,
    ):  # fmt: skip
        self.directory = directory
        self.key = key
        self.source, self.keep = source, keep
        self.dataset = self.data = None
        self._attrs: dict | None = None
        self._paths: list[Path] | None = None

    @property
    def digest(self) -> str:
        return self.key.digest

    @classmethod
    def open(cls, config: CacheSettings, split: str, key: CacheKey, dataset) -> SplitCache:
        """The finished cache of `split` that serves `key`, checked once against `dataset`
        when given (then holding it and the split's loaded data); refused in one line naming
        the fix where there is none, several, or a stale one."""
        from pipeline.store.opening import open_split  # the finding builds on this class

        return open_split(config, split, key, dataset)

    @classmethod
    def writer(cls, config, data, key: CacheKey, dataset, keep: str, *, main: bool = True):
        """The ShardWriter extract feeds `data` (a split of `dataset`) to: the cache locked,
        its data digests computed, a finished cache of the same data adopted, prepared to
        resume (pipeline/store/writer.py)."""
        from pipeline.store.writer import open_writer  # the writer builds on this class

        return open_writer(config, data, key, dataset, keep, main=main)

    @classmethod
    def load(cls, directory: Path) -> SplitCache:
        """The cache in `directory`, with the settings its fingerprint.json records; refused in
        one line where they do not hash to its digest or name another directory."""
        path = directory / "fingerprint.json"
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({' '.join(str(exc).split())})"
        else:
            problem = fingerprint_problem(found, directory.name)
        if problem:
            raise CacheError(
                f"{path}: {problem}; rerun pipeline extract with the options that made it to "
                "write it again"
            )
        return cls(
            directory, CacheKey.from_file(found), source=found.get("source"),
            keep=found.get("keep"),
        )  # fmt: skip

    @classmethod
    def of_head(cls, path: Path) -> SplitCache | None:
        """The cache a head file sits in (its heads/ folder), None for a head kept elsewhere."""
        directory = Path(path).parent.parent
        if Path(path).parent.name != HEADS_DIR or not (directory / "fingerprint.json").is_file():
            return None
        return cls.load(directory)

    def head_path(self, name: str) -> Path:
        """Where the head `name` fitted on this split lives: beside its features."""
        return head_path(self.directory, name)

    def head(self, name: str) -> Path | None:
        """The head file `name` fitted on this split, if there is one."""
        return head_in(self.directory, name)

    def check_against(self, dataset, split: str, task) -> None:
        """Hold `dataset` and the split's data as this cache holds it (its first `limit`
        images); refuses a cache whose shards were extracted from other images or annotations
        than the dataset holds now, or from fewer images than it has (a split that grew since;
        a cache extracted with --limit holds the first `limit` on purpose)."""
        manifest = self.manifest()
        n_images, per_shard = manifest.get("n_images", 0), manifest.get("images_per_shard", 1)
        keep = self.attrs().get("keep", "all")
        data = dataset.load(split, task=task, limit=manifest.get("limit"), skip_bad=True)
        current = split_digests(self.directory, data, per_shard, keep, limit=n_images)
        stale = list(self.changed_shards(current))
        if stale:
            raise CacheError(
                f"{self.directory}: {len(stale)} of its shards ({stale[0]}...) were extracted "
                f"from other images or annotations than {dataset} holds now; rerun pipeline "
                f"extract --split {split} to rebuild them"
            )
        if len(data.samples) != n_images:
            raise CacheError(
                f"{self.directory}: holds {n_images} images of split {split!r}, {dataset} has "
                f"{len(data.samples)} now; rerun pipeline extract --split {split} to update it"
            )
        self.dataset, self.data = dataset, data

    def record_settings(self) -> None:
        """fingerprint.json: the settings, their digest, the dataset and the keep rule."""
        where = {"source": self.source, "keep": self.keep} if self.source is not None else {}
        write_json(
            self.directory / "fingerprint.json",
            {"digest": self.digest, **self.key.settings, **where},
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
        that grew or shrank since (images added or removed) keeps the manifest: shards past its
        end are removed, and the number of images it had before is returned (None when
        unchanged). `limit` (--limit) is recorded: the split's first images on purpose; a
        smaller one than the cache holds is refused, its shards kept, unless --overwrite."""
        if n_images < 1:
            raise CacheError(
                f"{self.directory}: no image to extract; pass a --limit of 1 or more, or a split "
                "with images"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for old in self.directory.glob("shard-*.h5*"):
                old.unlink()
            (self.directory / "manifest.json").unlink(missing_ok=True)
        manifest = self.manifest()
        if manifest:
            self._check_resumable(manifest, images_per_shard, limit)
        for stale in self.directory.glob(f"*{TEMPORARY}*"):
            stale.unlink()  # a file in flight when a run died: a shard is redone
        self.record_settings()
        before = manifest.get("n_images")
        names = {SHARD_NAME.format(k) for k in range(-(-n_images // images_per_shard))}
        shards = {name: e for name, e in manifest.get("shards", {}).items() if name in names}
        for name in set(manifest.get("shards", ())) - set(shards):
            (self.directory / name).unlink(missing_ok=True)
        write_json(
            self.directory / "manifest.json",
            {
                "n_images": n_images,
                "images_per_shard": images_per_shard,
                "limit": limit,
                "shards": shards,
                "complete": len(shards) == len(names),
            },
        )
        return before if before not in (None, n_images) else None

    def _check_resumable(self, manifest: dict, per_shard: int, limit: int | None) -> None:
        """Refuse to go on with another shard size, or with a --limit below the images the
        cache holds (it would drop finished shards): --overwrite starts again."""
        if manifest["images_per_shard"] != per_shard:
            raise CacheError(
                f"{self.directory}: was started with {manifest['images_per_shard']} images "
                "per shard; rerun with that --images-per-shard or --overwrite"
            )
        held = manifest["n_images"]
        if limit is None or limit >= held:
            return
        first, last = limit // per_shard, -(-held // per_shard) - 1
        which = (
            f"shard {SHARD_NAME.format(last)}"
            if first == last
            else f"shards {SHARD_NAME.format(first)} to {SHARD_NAME.format(last)}"
        )
        kept = manifest.get("limit")
        raise CacheError(
            f"{self.directory}: holds {'all' if kept is None else 'the first'} {held} images of "
            f"the split, --limit {limit} would drop {held - limit} of them ({which}); rerun "
            f"{'without --limit' if kept is None else f'with --limit {kept}'} to keep them, or "
            f"with --overwrite to start again from the first {limit}"
        )

    def manifest(self) -> dict:
        """manifest.json ({} when there is none), checked against what it claims, `complete`
        recomputed from the shards it records: a field of another type or range, or a shard
        name past the split, is refused in one line naming the file and the fix."""
        path = self.directory / "manifest.json"
        if not path.is_file():
            return {}
        try:
            manifest = json.loads(path.read_text())
        except ValueError as exc:
            problem = f"not JSON ({' '.join(str(exc).split())})"
        except OSError as exc:
            problem = f"unreadable ({exc.strerror or exc})"
        else:
            problem = manifest_problem(manifest)
        if problem:
            raise CacheError(f"{path}: {problem}; {OVERWRITE}")
        n_shards = -(-manifest["n_images"] // manifest["images_per_shard"])
        return {**manifest, "complete": len(manifest["shards"]) == n_shards}

    def problem(self, path: Path) -> str | None:
        """Why this shard is bad for this cache (see `shard_problem`), or None."""
        return shard_problem(path, self.digest, self.key.settings)

    def pending(self, n_shards: int, bad: dict[str, str], *, retry_skipped: bool) -> list[int]:
        """Shards extract (re)does: those not recorded, the recorded but `bad` ones (from
        `bad_shards`, or made from other data), and, unless skipping is asked for again, those
        that skipped bad images, so that a rerun after fixing the files adds them."""
        recorded = self.manifest().get("shards", {})

        def redo(name: str) -> bool:
            entry = recorded.get(name)
            return entry is None or name in bad or (retry_skipped and entry.get("skipped", 0) > 0)

        return [k for k in range(n_shards) if redo(self.shard_path(k).name)]

    def bad_shards(self) -> dict[str, str]:
        """Recorded shards that are bad, name -> reason: those a rerun of extract rebuilds."""
        return self._inspected(sorted(self.manifest().get("shards", {})))[0]

    def recorded_attrs(self) -> dict[str, dict]:
        """Each recorded shard's attributes, name -> attributes ({} for an unreadable one)."""
        return self._inspected(sorted(self.manifest().get("shards", {})))[1]

    def _inspected(self, names: list[str]) -> tuple[dict[str, str], dict[str, dict]]:
        """(bad shards among `names`: name -> why, and every shard's attributes): a shard is
        bad on its own (`shard_problem`) or where it differs from the other shards in what
        every shard of a split shares (the class list, the keep rule...)."""
        bad, attrs = {}, {}
        for name in names:
            problem, attrs[name] = inspect_shard(
                self.directory / name, self.digest, self.key.settings
            )
            if problem is not None:
                bad[name] = problem
        good = {name: found for name, found in attrs.items() if name not in bad}
        return {**bad, **_odd_ones(good)}, attrs

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
        pixels: str = "",
    ) -> None:
        """Add a finished shard to the manifest (after its rename, so the file exists).

        `seconds` is the compute time of the shard: sweeps compare their cost to it; `data`
        the digest of its samples, `pixels` of their images alone (pipeline/store/data_digests.py).
        The read-modify-write holds an flock, since the processes of a torchrun share the file."""
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
                **({"pixels": pixels} if pixels else {}),
            }
            manifest["complete"] = len(manifest["shards"]) == n_shards
            write_json(self.directory / "manifest.json", manifest)

    def shard_paths(self) -> list[Path]:
        """Finished shards in order; refuses an incomplete cache, a bad shard or shards of
        several int8 nets (checked once per SplitCache: fit and score call this at open and
        again for every pass)."""
        if self._paths is None:
            manifest = self.manifest()
            if not manifest.get("complete"):
                raise CacheError(
                    f"{self.directory}: extraction not finished; run pipeline extract again to "
                    "complete it"
                )
            names = sorted(manifest["shards"])
            bad, attrs = self._inspected(names)
            for name in names:
                if name in bad:
                    raise CacheError(f"{self.directory / name}: {bad[name]}; {REBUILD}")
            self._check_one_net(attrs)
            self._paths = [self.directory / name for name in names]
            self._attrs = attrs[names[0]]
        return self._paths

    def _check_one_net(self, attrs: dict[str, dict]) -> None:
        """Refuse int8 features of several quantized nets in one split (docs/deploy.md#int8)."""
        nets: dict[str, str] = {}
        for name, found in attrs.items():
            nets.setdefault(int8_net_of(found) or "fp32", name)
        if len(nets) > 1 and set(nets) != {"fp32"}:
            listed = ", ".join(f"{name} {net}" for net, name in nets.items())
            raise CacheError(
                f"{self.directory}: its shards come from {len(nets)} int8 nets ({listed}); rerun "
                "pipeline extract for its split: it rebuilds the shards of an older net"
            )

    def attrs(self) -> dict:
        """What every shard of the split carries (class names, labelled, task, VOC year...),
        read once, from the first shard of a finished cache (every shard agrees on them)."""
        self.shard_paths()
        return self._attrs

    def int8_net(self) -> str | None:
        """The int8 graph every shard's features came from; None for fp32 features."""
        return int8_net_of(self.attrs())

    def class_names(self) -> list[str]:
        """The dataset's classes, the columns of the shards' image labels."""
        if "class_names" not in self.attrs():
            raise CacheError(f"{self.shard_paths()[0]}: no 'class_names' attribute; {REBUILD}")
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


def head_path(folder: Path, name: str) -> Path:
    """A head file's place in a folder of features (or compare's output folder)."""
    return Path(folder) / HEADS_DIR / f"{name}{HEAD_SUFFIX}"


def head_in(folder: Path, name: str) -> Path | None:
    """The head file `name` in a folder of features: a head file, else a pickle of midlevel 0.3."""
    path = head_path(folder, name)
    return next((p for p in (path, path.with_suffix(PICKLED)) if p.is_file()), None)


def _whole(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _seconds(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < math.inf


MANIFEST_FIELDS = {
    "n_images": lambda v: _whole(v, 1),
    "images_per_shard": lambda v: _whole(v, 1),
    "limit": lambda v: v is None or _whole(v, 1),
    "shards": lambda v: isinstance(v, dict),
}
ENTRY_FIELDS = {  # (value, images per shard): each checked where present (older ones lack some)
    "images": lambda v, per_shard: _whole(v) and v <= per_shard,
    "skipped": lambda v, per_shard: _whole(v) and v <= per_shard,
    "patches": lambda v, _: _whole(v),
    "seconds": lambda v, _: _seconds(v),
    "rank": lambda v, _: _whole(v),
    "data": lambda v, _: isinstance(v, str),
    "pixels": lambda v, _: isinstance(v, str),
}
SHARD_PATTERN = re.compile(r"shard-\d{5}\.h5")


def manifest_problem(manifest) -> str | None:
    """Why a manifest.json does not describe a cache extract wrote, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    for name, ok in MANIFEST_FIELDS.items():
        if not ok(manifest.get(name)):
            return f"its {name!r} is {shown(manifest.get(name))}"
    n_images, per_shard = manifest["n_images"], manifest["images_per_shard"]
    names = {SHARD_NAME.format(k) for k in range(-(-n_images // per_shard))}
    for name, entry in manifest["shards"].items():
        if not SHARD_PATTERN.fullmatch(name):
            return f"it holds {shown(name)}, not a shard name"
        if name not in names:
            return f"it holds {name}, past its {n_images} images"
        if not isinstance(entry, dict):
            return f"{name}'s entry is {shown(entry)}"
        for field, ok in ENTRY_FIELDS.items():
            if field in entry and not ok(entry[field], per_shard):
                return f"{name}'s {field!r} is {shown(entry[field])}"
    return None


def _odd_ones(attrs: dict[str, dict]) -> dict[str, str]:
    """Shards whose value of an attribute every shard shares is not most shards' (the first
    shard's on a tie): name -> why."""
    odd: dict[str, str] = {}
    for key in SHARED_ATTRIBUTES:
        values = {name: found[key] for name, found in attrs.items() if key in found}
        if not values:
            continue
        common = Counter(values.values()).most_common(1)[0][0]
        for name, value in values.items():
            if value != common:
                odd.setdefault(
                    name, f"its {key} {shown(value)} differs from the other shards' {shown(common)}"
                )
    return odd
