"""Fitted heads on disk, beside the features they were trained on: `<name>.safetensors` holds
what the head learnt (arrays) and its record (JSON), written whole or not at all, and loading
it runs no code from it; `<name>.json` is a readable copy of the record. Heads that midlevel
0.3 saved as pickles (`.joblib`) load only when trusted. Layout: docs/cache.md."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NoReturn

import numpy as np

from pipeline.config import NESTED, CacheSettings
from pipeline.errors import CacheError
from pipeline.io import json_bytes, write_atomically
from pipeline.store.cache import HEAD_SUFFIX, HEADS_DIR, SplitCache, head_in
from pipeline.store.keys import CacheKey, shown
from pipeline.store.legacy import PICKLED, TRUST_HINT, record_sha256, unpickled
from pipeline.store.opening import candidates

FORMAT = "midlevel-head/3"  # metadata: format, state (pipeline/heads/state.py), record


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
    sha256: str | None = None  # of the head file this record describes
    net: str | None = None  # the int8 graph of its training features (docs/deploy.md#int8)

    @classmethod
    def from_dict(cls, record: dict) -> HeadRecord:
        """The record of a JSON object; ValueError naming the first field of a wrong type."""
        if not isinstance(record, dict):
            raise ValueError(f"the record is a {type(record).__name__}, not an object")
        record = {**record, "sha256": record_sha256(record)}
        values = {f.name: record[f.name] for f in fields(cls) if record.get(f.name) is not None}
        for name, ok in _FIELD_TYPES.items():
            if name in values and not ok(values[name]):
                raise ValueError(f"its record's {name!r} is {shown(values[name])}")
        values["classes"] = tuple(values.get("classes", ()))
        values["loss_curve"] = tuple(values.get("loss_curve", ()))
        return cls(**values)

    def as_dict(self) -> dict:
        """As JSON writes it (the .json copy, the record inside the head file)."""
        return json.loads(json.dumps(asdict(self), default=str))

    def sidecar(self) -> dict:
        """The head's part of a result's provenance sidecar (score, localize, predict)."""
        record = self.as_dict()
        return {key: record[key] for key in ("head", "classes", "params", "k", "digest")}

    @property
    def key(self) -> CacheKey | None:
        """The key of the features the head was trained on (None in a record of midlevel 0.2)."""
        return CacheKey.from_file(self.fingerprint) if self.fingerprint is not None else None

    def settings(self, name: str):
        """The fit's settings of one kind ("backbone", "grid", "labels", "task") as a config."""
        return NESTED[name](**(self.config.get(name) or {}))


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _names(value) -> bool:
    """Distinct, non-empty class names: each names one column of the head's outputs."""
    return (
        isinstance(value, list | tuple)
        and all(isinstance(c, str) and c for c in value)
        and len(set(value)) == len(value)
    )


_FIELD_TYPES = {
    "classes": _names,
    "head": lambda v: isinstance(v, str) and bool(v),
    "params": lambda v: isinstance(v, dict),
    "k": lambda v: _finite(v) and v > 0,
    "digest": lambda v: isinstance(v, str),
    "fingerprint": lambda v: isinstance(v, dict),
    "config": lambda v: isinstance(v, dict) and all(isinstance(v.get(n, {}), dict) for n in NESTED),
    "patches": _count,
    "images": _count,
    "loss_curve": lambda v: isinstance(v, list | tuple) and all(_finite(x) for x in v),
    "sha256": lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
    "net": lambda v: isinstance(v, str) and bool(v),
}


def record_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_head(path: Path, head, record: HeadRecord) -> None:
    """What the head learnt and its record in one file, written atomically; then the record's
    readable copy, with the SHA-256 of that file."""
    from safetensors.numpy import save

    from pipeline.heads.state import head_state

    arrays, state = head_state(head)
    meta = {"format": FORMAT, "state": json.dumps(state), "record": json.dumps(record.as_dict())}
    data = save(arrays, metadata=meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)
    _write_record(path, {**record.as_dict(), "sha256": hashlib.sha256(data).hexdigest()})


def _write_record(path: Path, record: dict) -> None:
    write_atomically(record_path(path), json_bytes(record, sort_keys=False))


def _read_record(path: Path) -> dict | None:
    """The .json beside a head file, or None when it is missing or unreadable."""
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def load_head_file(path: Path, *, trust_pickle: bool = False):
    """(estimator, HeadRecord) of a head file; refuses a missing, damaged or foreign one in
    one line, and a pickled one unless `trust_pickle`. A .json copy left stale by an
    interrupted save is written again from the head file's own record."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(
            f"{path}: no such head file; pass a heads/<name>{HEAD_SUFFIX} that fit wrote"
        )
    if path.suffix == PICKLED and not trust_pickle:
        raise CacheError(f"{path}: {TRUST_HINT}")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        head, inside = unpickled(data) if path.suffix == PICKLED else _unpacked(data)
        written = _read_record(path)
        if written is not None and record_sha256(written) == sha:
            return head, _matching(head, HeadRecord.from_dict(written), path)  # the copy as written
        if inside is None:  # a bare estimator of midlevel 0.2: the .json is its only record
            raise ValueError(
                f"its record {record_path(path).name} is missing or unreadable"
                if written is None
                else f"it and its record {record_path(path).name} come from different fits"
            )
        record = HeadRecord.from_dict({**inside, "sha256": sha})
    except Exception as exc:  # the file is not a head midlevel wrote: any error of reading it
        detail = " ".join(str(exc).split())[:200]
        raise CacheError(
            f"{path}: not a head midlevel wrote, or damaged ({type(exc).__name__}: {detail}); "
            "fit the head again"
        ) from None
    _matching(head, record, path)
    with contextlib.suppress(CacheError, OSError):  # a read-only cache: the file's own serves
        _write_record(path, record.as_dict())
    return head, record


def _matching(head, record: HeadRecord, path: Path) -> HeadRecord:
    """The record, refused when its classes are not the head's outputs: a record edited apart
    from its head would name a column (the background's) as a class it never learnt."""
    weights = getattr(head, "class_weight", None)  # patch heads: {background label: weight}
    background = isinstance(weights, dict)
    learnt = list(range(len(record.classes) + background))
    outputs = len(head.dense_layers()["layers"][-1][1])
    labels = np.asarray(getattr(head, "classes_", learnt)).tolist()
    at_its_label = not background or list(weights) == [len(record.classes)]
    if at_its_label and labels == learnt and outputs == len(learnt):
        return record
    count = outputs - background
    raise CacheError(
        f"{path}: its record names {len(record.classes)} classes ({', '.join(record.classes)}), "
        f"but the head has {outputs} outputs ({count} classes"
        f"{' and the background' if background else ''}); fit the head again"
    )


def _unpacked(data: bytes):
    """(head, record) of a head file's bytes: arrays and JSON, no code."""
    from safetensors.numpy import load

    from pipeline.heads.state import head_from_state

    size = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + size])["__metadata__"]
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, not {FORMAT!r}")
    return head_from_state(load(data), json.loads(meta["state"])), json.loads(meta["record"])


def check_serves(record: HeadRecord, key: CacheKey, path: Path) -> None:
    """Refuse a head trained on other feature settings than `key`'s, naming both; the
    dataset may differ (a head scores any split of its settings, labelled or not)."""
    trained = record.key
    if trained is not None and trained.serves(key):
        return
    was, these = (
        trained.describe_against(key)
        if trained is not None
        else (f"features {record.digest}", key.describe())
    )
    raise CacheError(
        f"{path}: head trained on {was}; these features are {these}; "
        f"fit it again for these settings (pipeline fit --head {record.head or Path(path).stem})"
    )


def check_same_int8_net(path: Path, record: HeadRecord, cache: SplitCache) -> None:
    """Refuse int8 features made by another int8 net than those the head learnt on (the net
    its record names; for a head fitted before records named it, the net of the cache it sits
    in): its training images changed since, and with them the calibration (docs/deploy.md#int8)."""
    here = cache.int8_net()
    training = head_cache(path, record) if here else None
    trained = record.net or (training.int8_net() if training else None)
    if here and trained and here != trained:
        _other_net(cache, f"the head {path}", trained, _net_fix(training, trained, here))


def check_int8_pair(train: SplitCache, test: SplitCache) -> None:
    """Refuse to score heads fitted on one int8 net's features on another net's."""
    trained, here = train.int8_net(), test.int8_net()
    if here and trained and here != trained:
        fix = "rerun pipeline extract for both splits: it rebuilds the features of an older net"
        _other_net(test, f"the training split {train.directory}", trained, fix)


def _other_net(cache: SplitCache, learner: str, trained: str, fix: str) -> NoReturn:
    raise CacheError(
        f"{cache.directory}: int8 features of net {cache.int8_net()}, but {learner} learnt on "
        f"those of net {trained} (the training images changed since, and with them the "
        f"calibration); {fix}"
    )


def _net_fix(training: SplitCache | None, trained: str, here: str) -> str:
    """What makes a head and the split it scores one net's: whichever is older is redone."""
    with contextlib.suppress(CacheError):
        now = training.int8_net() if training else None
        if now == trained:
            return "rerun pipeline extract for this split: it rebuilds the features of an older net"
        if now == here:
            return "fit the head again on the features extract rebuilt"
    return "rerun pipeline extract for both splits, then fit the head again"


def head_cache(path: Path, record: HeadRecord) -> SplitCache | None:
    """The cache a head file sits in when it is the one the head learnt on (its digest): the
    training split's, whose images are labelled; None for a head kept elsewhere."""
    cache = SplitCache.of_head(path)
    return cache if cache is not None and cache.digest == record.digest else None


def head_of_split(
    config: CacheSettings, train_split: str, name: str, dataset, key: CacheKey,
    *, prefer: str | None = None,
) -> Path:  # fmt: skip
    """The head `name` fitted on `train_split` with the features of `key`, its cache found as
    fit finds it (opening.candidates: of `dataset` when given, else of the
    one dataset whose cache holds such a head, `prefer`'s among several); of that dataset's
    caches (one per keep rule), the one holding it. A refusal names the heads there are."""
    caches = candidates(
        config, train_split, dataset, key, prefer=prefer,
        keeping=lambda c: c.head(name) is not None,
    )  # fmt: skip
    if len(caches) == 1:
        return caches[0].head(name)
    what = f"split {train_split!r}" + (f" of {dataset}" if dataset is not None else "")
    if caches:
        listed = ", ".join(str(c.head(name)) for c in caches)
        raise CacheError(
            f"{config.cache_dir}: several {name} heads were fitted on {what} ({listed}); "
            "pass --head PATH of the one to use"
        )
    others = [
        f"{path} (fitted on {cache.source or 'a dataset of midlevel 0.3'}, split "
        f"{cache.directory.name.rsplit('-' + cache.digest, 1)[0]})"
        for path, cache in _cached_heads(config.cache_dir, name)
        if cache.key.serves(key)
    ]
    if others:
        raise CacheError(
            f"{config.cache_dir}: no {name} head fitted on {what} with these settings, but "
            f"{', '.join(others)}; pass --head PATH to use it, or fit one on {what} "
            f"(pipeline fit --head {name} --split {train_split})"
        )
    raise CacheError(
        f"{config.cache_dir}: no {name} head fitted on {what} with these settings; run pipeline "
        f"fit --head {name} first (with --split {train_split}), or pass --head PATH of a head file"
    )


def _heads_named(cache_dir: str | Path, name: str) -> list[Path]:
    """Every head file `name` in the cache's directories."""
    folders = sorted(Path(cache_dir).glob(f"*/{HEADS_DIR}"))
    return [path for folder in folders if (path := head_in(folder.parent, name))]


def _cached_heads(cache_dir: str | Path, name: str) -> list[tuple[Path, SplitCache]]:
    """Every head file `name` beside features, and their cache (a damaged one left out)."""
    found = []
    for path in _heads_named(cache_dir, name):
        with contextlib.suppress(CacheError):
            if (cache := SplitCache.of_head(path)) is not None:  # its features still there
                found.append((path, cache))
    return found


def names_a_file(name_or_path: str) -> bool:
    """Whether --head names a head file (a path) rather than a head name (mlp, svm)."""
    return (
        name_or_path.endswith((HEAD_SUFFIX, PICKLED))
        or "/" in name_or_path
        or Path(name_or_path).is_file()
    )


def find_head(name_or_path: str, cache_dir: str | Path) -> Path:
    """A head file given by path, or by name: the one `heads/<name>.safetensors` (or a
    pickle of midlevel 0.3) in the cache; several are refused, listed: only a path says which."""
    if names_a_file(name_or_path):
        return Path(name_or_path).expanduser()
    found = _heads_named(cache_dir, name_or_path)
    if not found:
        raise CacheError(
            f"{cache_dir}: no head named {name_or_path!r}; run pipeline fit --head {name_or_path} "
            f"first, or pass the path of a heads/<name>{HEAD_SUFFIX}"
        )
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        raise CacheError(
            f"{cache_dir}: several heads are named {name_or_path!r} ({listed}); pass one path"
        )
    return found[0]
