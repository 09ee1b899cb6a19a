"""The formats of earlier midlevels, read in one place so the rest of the store reads one:
heads midlevel 0.3 pickled (loaded only when trusted: a pickle runs any code it holds), the
record field names of then, and caches made before each dataset and keep rule had their own."""

from __future__ import annotations

import io
import sys

PICKLED = ".joblib"  # midlevel 0.3: {"format": "midlevel-head/2", "estimator", "record"}
# Where the head classes lived before the library was grouped into packages: trusted
# pickles of then unpickle through these names.
FORMER_MODULES = {
    "pipeline.image_head": "pipeline.heads.image_svm",
    "pipeline.weak_head": "pipeline.heads.weak",
}
TRUST_HINT = (
    "a head saved as a pickle (by midlevel 0.3) runs any code it holds when loaded: fit it "
    "again, or, only for a file you made yourself, pass --trust-pickled-head"
)


def record_sha256(record: dict) -> str | None:
    """A head record's digest of its file: `sha256`, `joblib_sha256` in midlevel 0.3's."""
    return record.get("sha256", record.get("joblib_sha256"))


def keeps(cache_keep: str | None, keep: str) -> bool:
    """Whether a cache keeping `cache_keep`'s patches holds `keep`'s: a cache made before the
    keep rule keyed caches (None) holds the only rule there was for its split."""
    return cache_keep in (keep, None)


def made_before_datasets(source: str | None) -> bool:
    """A cache of midlevel 0.3 records no dataset: it is moved, not linked, when adopted."""
    return source is None


def unpickled(data: bytes):
    """(head, record or None) of a trusted pickle of midlevel 0.3, its head classes found
    under their current module names (None: a bare estimator, whose record is the .json)."""
    import joblib

    for former, current in FORMER_MODULES.items():
        if former.encode() in data and former not in sys.modules:
            sys.modules[former] = __import__(current, fromlist=["_"])
    payload = joblib.load(io.BytesIO(data))
    if isinstance(payload, dict) and payload.get("format") == "midlevel-head/2":
        return payload["estimator"], payload["record"]
    return payload, None
