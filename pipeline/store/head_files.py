"""Fitted heads on disk: beside the features they were trained on, saved so that an
interrupted save leaves the previous head or the new one, whole, and loaded with a check
that they serve the features they score.

`<cache>/<split>-<digest>/heads/<name>.joblib` holds the estimator and its record together
(classes, parameters, pooling k, the fingerprint of its training features, config, loss
curve); `<name>.json` is a human-readable copy of the record with the SHA-256 of the
.joblib, written after it. Each is written under a temporary name, then renamed, so the
.joblib is always one fit's estimator with that fit's own record: a Ctrl-C, a kill or a full
disk before its rename leaves the previous head, after it the new one. `load_head_file`
reads the record from the .json when the pair agrees (its SHA-256 is the .joblib's), else
from the .joblib, writing the .json again from it (a stale copy left by a save
interrupted between the two writes, or a missing one; skipped in a read-only cache).
Heads saved as a bare estimator (before the record went into the .joblib) load with their
.json as the record, refused when its SHA-256 is not the estimator's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

from pipeline.errors import CacheError
from pipeline.store.freshness import without_data
from pipeline.store.shards import describe_fingerprint, write_atomically

HEADS_DIR = "heads"
SUFFIX = ".joblib"
FORMAT = "midlevel-head/2"  # the .joblib is {"format", "estimator", "record"}


def head_path(cache_dir: Path, head: str) -> Path:
    """Heads live next to the features they were trained on."""
    return Path(cache_dir) / HEADS_DIR / f"{head}{SUFFIX}"


def record_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_head(path: Path, head, record: dict) -> None:
    """The estimator with its record in one file, written atomically; then the record's
    readable copy, with the SHA-256 of that file."""
    import joblib

    record = json.loads(json.dumps(record, default=str))  # as the .json copy reads back
    buffer = io.BytesIO()
    joblib.dump({"format": FORMAT, "estimator": head, "record": record}, buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)
    _write_record(path, {**record, "joblib_sha256": hashlib.sha256(data).hexdigest()})


def _write_record(path: Path, record: dict) -> None:
    text = json.dumps(record, indent=2, default=str) + "\n"
    write_atomically(record_path(path), text.encode())


def _read_record(path: Path) -> dict | None:
    """The .json beside a head file, or None when it is missing or unreadable."""
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _is_bundle(payload) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def load_head_file(path: Path):
    """(estimator, record) of a head file; refuses a missing or unreadable one (and an
    old-format head whose .json is missing or another fit's)."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such head file; pass a heads/<name>.joblib that fit wrote")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        payload = joblib.load(io.BytesIO(data))
    except Exception as exc:  # a truncated or foreign pickle: any unpickling error
        raise CacheError(
            f"{path}: cannot load the head ({type(exc).__name__}); fit it again"
        ) from None
    written = _read_record(path)
    if _is_bundle(payload):
        if written is not None and written.get("joblib_sha256") == sha:
            return payload["estimator"], written  # the pair agrees: the copy as written
        record = {**payload["record"], "joblib_sha256": sha}
        # a save interrupted after the .joblib: the copy made to agree again (not in a
        # read-only cache, where the .joblib's own record serves all the same)
        with contextlib.suppress(CacheError, OSError):
            _write_record(path, record)
        return payload["estimator"], record
    if written is None:
        raise CacheError(
            f"{record_path(path)}: the head's record is missing or unreadable; fit the head again"
        )
    expected = written.get("joblib_sha256")
    if expected is not None and sha != expected:
        raise CacheError(
            f"{path}: the head and its record {record_path(path).name} come from different fits "
            "(a fit interrupted between its two writes); fit the head again"
        )
    return payload, written


def check_serves(record: dict, fingerprint: dict, path: Path) -> None:
    """Refuse a head trained on other feature settings than `fingerprint`'s (a heads/ folder
    copied between caches, a head file from another run), naming both settings; the
    dataset may differ (a head scores any split of its settings, labelled or not)."""
    trained = record.get("fingerprint")
    same = trained is not None and without_data(json.loads(json.dumps(trained))) == without_data(
        json.loads(json.dumps(fingerprint))
    )
    if not same:
        name = record.get("head", path.stem)
        raise CacheError(
            f"{path}: head trained on "
            f"{describe_fingerprint(trained) if trained else 'features ' + str(record.get('digest'))}; "
            f"these features are {describe_fingerprint(fingerprint)}; "
            f"fit it again for these settings (pipeline fit --head {name})"
        )


def names_a_file(name_or_path: str) -> bool:
    """Whether --head names a head file (a path) rather than a head name (mlp, svm)."""
    return name_or_path.endswith(SUFFIX) or "/" in name_or_path or Path(name_or_path).is_file()


def find_head(name_or_path: str, cache_dir: str | Path) -> Path:
    """A head file given by path, or by name: the one `heads/<name>.joblib` in the cache
    (several: refused, listing them, since only a path says which)."""
    if names_a_file(name_or_path):
        return Path(name_or_path).expanduser()
    found = sorted(Path(cache_dir).glob(f"*/{HEADS_DIR}/{name_or_path}{SUFFIX}"))
    if not found:
        raise CacheError(
            f"{cache_dir}: no head named {name_or_path!r}; run pipeline fit --head {name_or_path} "
            "first, or pass the path of a heads/<name>.joblib"
        )
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        raise CacheError(
            f"{cache_dir}: several heads are named {name_or_path!r} ({listed}); pass one path"
        )
    return found[0]


def head_sidecar(record: dict) -> dict:
    """The head's part of a result's provenance sidecar (score, localize, predict)."""
    return {key: record.get(key) for key in ("head", "classes", "params", "k", "digest")}
