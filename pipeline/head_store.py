"""Fitted heads on disk: beside the features they were trained on, saved as a pair that is
whole or untouched, and loaded with a check that they serve the features they score.

`<cache>/<split>-<digest>/heads/<name>.joblib` holds the estimator, `<name>.json` its record
(classes, parameters, pooling k, the fingerprint of its training features, the SHA-256 of
the .joblib). Both are written under temporary names, then renamed; a kill between the two
renames leaves a record whose SHA-256 is not the estimator's, which `load_head_file` refuses
instead of pairing a head with another fit's classes.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from pipeline.caches import without_data
from pipeline.errors import CacheError
from pipeline.shards import describe_fingerprint, write_atomically

HEADS_DIR = "heads"
SUFFIX = ".joblib"


def head_path(cache_dir: Path, head: str) -> Path:
    """Heads live next to the features they were trained on."""
    return Path(cache_dir) / HEADS_DIR / f"{head}{SUFFIX}"


def record_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_head(path: Path, head, record: dict) -> None:
    """The estimator and its record, each written atomically, the record last."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(head, buffer)
    data = buffer.getvalue()
    record = {**record, "joblib_sha256": hashlib.sha256(data).hexdigest()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)
    text = json.dumps(record, indent=2, default=str) + "\n"
    write_atomically(record_path(path), text.encode())


def load_head_file(path: Path):
    """(estimator, record) of a head file; refuses a missing, unreadable or mismatched pair."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such head file; pass a heads/<name>.joblib that fit wrote")
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        raise CacheError(
            f"{record_path(path)}: the head's record is missing or unreadable; fit the head again"
        ) from None
    data = path.read_bytes()
    expected = record.get("joblib_sha256")
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CacheError(
            f"{path}: the head and its record {record_path(path).name} come from different fits "
            "(a fit interrupted between its two writes); fit the head again"
        )
    try:
        return joblib.load(io.BytesIO(data)), record
    except Exception as exc:  # a truncated or foreign pickle: any unpickling error
        raise CacheError(
            f"{path}: cannot load the head ({type(exc).__name__}); fit it again"
        ) from None


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
