"""Files written whole or not at all, file digests and JSON: one of each for the library.

A reader never sees half a file: every result is written under a temporary name beside its
target and renamed onto it. An OS error (a full disk) becomes one line naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.errors import CacheError

TEMPORARY = ".tmp-"  # `<name>.tmp-<pid>`: what a killed writer leaves, removed by the next


def file_digest(path: str | Path, algorithm: Callable = hashlib.sha256) -> str:
    """Hex digest of the file's bytes, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def recorded_damage(path: Path) -> str | None:
    """Why a model-cache file cannot be used as it is (missing, its record `<name>.json`
    unreadable, or its bytes not the SHA-256 that record holds), or None when it is sound."""
    record = path.with_suffix(".json")
    if not path.is_file() or not record.is_file():
        return "missing"
    try:
        expected = json.loads(record.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its record is unreadable"
    if file_digest(path) != expected:
        return "its bytes differ from the SHA-256 recorded at export (damaged)"
    return None


def json_digest(payload) -> str:
    """Short, stable hash of JSON-able settings: 12 hex digits of the SHA-256 of sorted JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` when the block ends,
    removed when it raises (an OS error then becomes one line naming `path`)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TEMPORARY}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CacheError(write_failure(path, exc)) from None
        raise


def write_atomically(path: str | Path, data: bytes | memoryview) -> None:
    """Write, fsync, rename: `path` is whole or untouched."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """A table of rows (the first row's keys are the columns), whole or untouched."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue().encode())


def read_csv(path: str | Path) -> list[dict]:
    """The rows of a table written by write_csv, [] when there is none yet (a resumed run)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def json_bytes(payload, *, sort_keys: bool = True) -> bytes:
    """Indented JSON; values JSON does not know (paths, numpy scalars) as text."""
    return (json.dumps(payload, indent=2, sort_keys=sort_keys, default=str) + "\n").encode()


def write_json(path: str | Path, payload, *, sort_keys: bool = True) -> None:
    write_atomically(path, json_bytes(payload, sort_keys=sort_keys))


def write_failure(path: Path, exc: OSError) -> str:
    """One line: the file, why it cannot be written, and what frees the way."""
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
