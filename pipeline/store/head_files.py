"""Fitted heads on disk, beside the features they were trained on: the estimator and its
record in one `.joblib` (written whole or not at all), a readable `.json` copy of the record
beside it, and the check that a head serves the features it scores (docs/cache.md)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pipeline.config import NESTED
from pipeline.errors import CacheError
from pipeline.io import json_bytes, write_atomically
from pipeline.store.keys import describe_fingerprint, without_data

HEADS_DIR = "heads"
SUFFIX = ".joblib"
FORMAT = "midlevel-head/2"  # the .joblib is {"format", "estimator", "record"}
# Where the head classes lived before the library was grouped into packages: heads saved
# then unpickle through these names.
FORMER_MODULES = {
    "pipeline.image_head": "pipeline.heads.image_svm",
    "pipeline.weak_head": "pipeline.heads.weak",
}


@dataclass(frozen=True)
class HeadRecord:
    """What a head was trained on and with; every reader of a head reads this."""

    classes: tuple[str, ...] = ()
    head: str | None = None  # mlp, svm, weak
    params: dict = field(default_factory=dict)  # the estimator's get_params()
    k: float = 5.0  # the pooling power recorded at fit: score's default
    digest: str | None = None  # of the training features' cache
    fingerprint: dict | None = None  # their settings
    config: dict = field(default_factory=dict)  # the FitConfig, as a dict
    patches: int = 0
    images: int = 0
    loss_curve: tuple[float, ...] = ()
    joblib_sha256: str | None = None  # of the .joblib this record describes

    @classmethod
    def from_dict(cls, record: dict) -> HeadRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known and v is not None}
        values["classes"] = tuple(values.get("classes", ()))
        values["loss_curve"] = tuple(values.get("loss_curve", ()))
        return cls(**values)

    def as_dict(self) -> dict:
        """As JSON writes it (the .json copy, the bundle inside the .joblib)."""
        return json.loads(json.dumps(asdict(self), default=str))

    def sidecar(self) -> dict:
        """The head's part of a result's provenance sidecar (score, localize, predict)."""
        record = self.as_dict()
        return {key: record[key] for key in ("head", "classes", "params", "k", "digest")}

    def settings(self, name: str):
        """The fit's settings of one kind ("backbone", "grid", "labels", "task") as a config."""
        return NESTED[name](**(self.config.get(name) or {}))


def head_path(cache_dir: Path, head: str) -> Path:
    """Heads live next to the features they were trained on."""
    return Path(cache_dir) / HEADS_DIR / f"{head}{SUFFIX}"


def record_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_head(path: Path, head, record: HeadRecord) -> None:
    """The estimator with its record in one file, written atomically; then the record's
    readable copy, with the SHA-256 of that file."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump({"format": FORMAT, "estimator": head, "record": record.as_dict()}, buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)
    sha = hashlib.sha256(data).hexdigest()
    _write_record(path, {**record.as_dict(), "joblib_sha256": sha})


def _write_record(path: Path, record: dict) -> None:
    write_atomically(record_path(path), json_bytes(record, sort_keys=False))


def _read_record(path: Path) -> dict | None:
    """The .json beside a head file, or None when it is missing or unreadable."""
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _unpickled(path: Path, data: bytes):
    """The .joblib's payload; its head classes found under their current module names."""
    import joblib

    for former, current in FORMER_MODULES.items():
        if former.encode() in data and former not in sys.modules:
            sys.modules[former] = __import__(current, fromlist=["_"])
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # a truncated or foreign pickle: any unpickling error
        raise CacheError(
            f"{path}: cannot load the head ({type(exc).__name__}); fit it again"
        ) from None


def load_head_file(path: Path):
    """(estimator, HeadRecord) of a head file; refuses a missing or unreadable one (and a
    head saved before records went into the .joblib whose .json is missing or another fit's).
    A .json copy left stale by an interrupted save is written again from the .joblib."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such head file; pass a heads/<name>.joblib that fit wrote")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    payload = _unpickled(path, data)
    written = _read_record(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if written is not None and written.get("joblib_sha256") == sha:
            return payload["estimator"], HeadRecord.from_dict(written)
        record = {**payload["record"], "joblib_sha256": sha}
        with contextlib.suppress(CacheError, OSError):  # a read-only cache: the .joblib serves
            _write_record(path, record)
        return payload["estimator"], HeadRecord.from_dict(record)
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
    return payload, HeadRecord.from_dict(written)


def check_serves(record: HeadRecord, fingerprint: dict, path: Path) -> None:
    """Refuse a head trained on other feature settings than `fingerprint`'s, naming both; the
    dataset may differ (a head scores any split of its settings, labelled or not)."""
    trained = record.fingerprint
    same = trained is not None and without_data(json.loads(json.dumps(trained))) == without_data(
        json.loads(json.dumps(fingerprint))
    )
    if not same:
        name = record.head or path.stem
        raise CacheError(
            f"{path}: head trained on "
            f"{describe_fingerprint(trained) if trained else 'features ' + str(record.digest)}; "
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
