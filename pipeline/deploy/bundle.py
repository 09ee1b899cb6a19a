"""An exported model folder: its ONNX graphs and `model.json` (what a prediction needs besides
the graphs, and each file's SHA-256), written whole or not at all and refused in one line
when a file is missing or its bytes changed, or when a field of model.json is not one an
export writes (the SHA-256s cover the graphs, not model.json). Layout: docs/deploy.md."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

from pipeline.config import (
    MODES,
    PRECISIONS,
    BackboneConfig,
    ExtractConfig,
    GridConfig,
    PredictConfig,
    Range,
    WeakConfig,
    check_choice,
    check_range,
)
from pipeline.errors import CacheError, ConfigError
from pipeline.io import json_digest

FORMAT = "midlevel-model/1"
MANIFEST = "model.json"
GRAPHS = {"crop": ("crop.onnx",), "shared": ("trunk.onnx", "head.onnx")}
FIX = "export it again with pipeline export"
# The heads a folder may hold: the link of their margins, and the background column after
# the classes (pipeline/heads/: the patch MLP and SVM learn one, the weak head and the
# whole-image SVM do not). Only the whole-image SVM scores a whole-image grid.
HEADS = {
    "MLPHead": ("softmax", 1),
    "LinearSVMHead": ("sigmoid", 1),
    "WeakPatchHead": ("sigmoid", 0),
    "ImageSVMHead": ("sigmoid", 0),
}
WEAK_POOLING = ("pool", "r", "top_fraction", "bottom_fraction", "bottom_weight")
SETTINGS = {"grid_kind": "kind", "lse_r": "r"}  # config.py's name -> model.json's

Check = Callable[[str, object], None]  # raises ConfigError naming the key


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_model_folder(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict:
    """model.json of an export, every field checked and its files against their SHA-256;
    CacheError naming the file, the field and the fix otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheError(f"{folder}: no {MANIFEST}: not a folder pipeline export wrote") from None
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable ({type(exc).__name__}); {FIX}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise CacheError(f"{path}: format {found!r}, this midlevel reads {FORMAT}; {FIX}")
    _walk(info, _schema(info), path)
    _agree(info, path)
    for name, expected in info["files"].items():
        graph = folder / name
        if not graph.is_file():
            raise CacheError(f"{graph}: missing; {FIX}")
        if sha256(graph) != expected:
            raise CacheError(f"{graph}: its bytes differ from the SHA-256 in {MANIFEST}; {FIX}")
    return info


@contextlib.contextmanager
def _fields(path: Path, prefix: str = ""):
    """A ConfigError in the block becomes a CacheError naming model.json and the field (the
    config's setting names written as model.json's, under `prefix`), and the fix."""
    try:
        yield
    except ConfigError as exc:
        named = exc.named(lambda name: prefix + SETTINGS.get(name, name))
        raise CacheError(f"{path}: {named}; {FIX}") from None


def _walk(value: dict, schema: dict, path: Path, prefix: str = "") -> None:
    """Refuse a key the schema has that `value` lacks, a value its check refuses (None:
    checked with the others, by its config), nested objects in turn, then a key the schema
    lacks (after the mode, which says the shared mode's keys)."""
    for key, check in schema.items():
        if key not in value:
            raise CacheError(f"{path}: {prefix}{key} is missing; {FIX}")
        with _fields(path, prefix):
            if isinstance(check, dict):
                _object(key, value[key])
            elif check is not None:
                check(key, value[key])
        if isinstance(check, dict):
            _walk(value[key], check, path, f"{prefix}{key}.")
    unknown = [key for key in value if key not in schema]
    if unknown:
        raise CacheError(f"{path}: {prefix}{unknown[0]} is not a field of {FORMAT}; {FIX}")


def _schema(info: dict) -> dict:
    """Each field of model.json and its check: the folder's mode says its graphs (and the
    shared mode's fields), the head's class its pooling's fields."""
    mode, head = info.get("mode"), info.get("head")
    weak = isinstance(head, dict) and head.get("class") == "WeakPatchHead"
    shared = {
        "cell": _ranged(Range(0, 1024, above=True)),  # the trunk's stride, in pixels
        "pool": _ranged(Range(1, 64, whole=True)),  # cells a side of a patch's pooled map
        "samples": _ranged(Range(0, 64, whole=True)),  # RoiAlign's samples a cell
    }
    return {
        "format": None,  # read_manifest's first check
        "midlevel": _text,
        "classes": _names,
        "mode": lambda key, value: check_choice(key, value, MODES),
        "precision": lambda key, value: check_choice(key, value, PRECISIONS),
        "trained_precision": lambda key, value: check_choice(key, value, PRECISIONS),
        "head": {
            "name": _text,
            "class": lambda key, value: check_choice(key, value, tuple(HEADS)),
            "file": _text,
            "sha256": _hexadecimal(64),
            "params": _object,
        },
        "grid": dict.fromkeys(f.name for f in fields(GridConfig)),
        "input_size": _ranged(_declared(BackboneConfig, "input_size")),
        "batch": _ranged(_declared(ExtractConfig, "batch_size")),
        **(shared if mode == "shared" else {}),
        "preprocessing": {
            "pixels": _text,
            "mean": _triple(Range(0, 255)),
            "std": _triple(Range(0, 255, above=True)),
            "resize": _text,
        },
        "link": lambda key, value: check_choice(key, value, ("softmax", "sigmoid")),
        "pooling": {
            **(dict.fromkeys(WEAK_POOLING) if weak else {"pool": _mean_pk}),
            "k": _ranged(_declared(PredictConfig, "k")),
        },
        "digest": _hexadecimal(12),
        "fingerprint": _object,
        "files": _files(GRAPHS.get(mode, ())),
    }


def _agree(info: dict, path: Path) -> None:
    """Refuse fields that do not agree: the grid and the weak pooling by their own configs,
    the link and grid with the head's class, the weak pooling with the head's settings, and
    the settings the head learnt on with its fingerprint, whose digest model.json holds."""
    head, pooling = info["head"], info["pooling"]
    with _fields(path, "grid."):
        GridConfig(**info["grid"])
    if head["class"] == "WeakPatchHead":
        with _fields(path, "pooling."):
            WeakConfig(**{name: pooling[name] for name in WEAK_POOLING})
    with _fields(path):
        link = HEADS[head["class"]][0]
        _ensure(info["link"] == link, "link", info["link"],
                f"a {head['class']} (head.class) gives {link} margins")  # fmt: skip
        kind = info["grid"]["kind"]
        _ensure((kind == "whole") == (head["class"] == "ImageSVMHead"), "head.class",
                head["class"], f"not a head of grid.kind {kind}")  # fmt: skip
        if head["class"] == "WeakPatchHead":
            _trained_pooling(pooling, head["params"])
        fingerprint = info["fingerprint"]
        _ensure(json_digest(fingerprint) == info["digest"], "digest", info["digest"],
                "not the digest of fingerprint: one of them was edited")  # fmt: skip
        _learnt_on(info, fingerprint.get("backbone"), fingerprint.get("grid"))


def check_columns(folder: Path, info: dict, graph: str, columns) -> None:
    """The margins of the head's graph are one a class, and the background where the head
    has one: an added or lost class name would report a column as another class."""
    head = info["head"]["class"]
    background = HEADS[head][1]
    with _fields(Path(folder) / MANIFEST):
        _ensure(columns == len(info["classes"]) + background, "classes", info["classes"],
                f"{graph} gives {columns} margins a patch: one a class"
                + (f" and the {head}'s background" if background else ""))  # fmt: skip


def _trained_pooling(pooling: dict, params: dict) -> None:
    """The weak head pools as it was trained to (its settings, head.params)."""
    for name in WEAK_POOLING:
        trained = params.get(name)
        _ensure(pooling[name] == trained, f"pooling.{name}", pooling[name],
                f"the head was trained with {trained!r} (head.params.{name})")  # fmt: skip


def _learnt_on(info: dict, backbone, grid) -> None:
    """The input size, mode, precision and grid of the features the head learnt on (its
    fingerprint) are the folder's."""
    backbone = backbone if isinstance(backbone, dict) else {}
    for name, field, default in (("input_size", "input_size", None), ("mode", "mode", "crop"),
                                 ("precision", "trained_precision", "fp32")):  # fmt: skip
        learnt = backbone.get(name, default)
        _ensure(info[field] == learnt, field, info[field],
                f"the head learnt on {learnt!r} (fingerprint.backbone.{name})")  # fmt: skip
    keyed = info["grid"] if info["grid"]["kind"] == "patches" else {"kind": "whole"}
    learnt = {key: grid.get(key) for key in keyed} if isinstance(grid, dict) else None
    _ensure(
        learnt == keyed, "grid", info["grid"], f"the head learnt on {learnt} (fingerprint.grid)"
    )


def _ensure(ok: bool, setting: str, value, problem: str) -> None:
    if not ok:
        raise ConfigError(setting, value, problem)


def _declared(config, name: str) -> Range:
    """The range config.py declares for a setting, without None: model.json holds a number."""
    (declared,) = [f for f in fields(config) if f.name == name]
    return replace(declared.metadata["range"], none=False)


def _ranged(allowed: Range) -> Check:
    return lambda key, value: check_range(key, value, allowed)


def _text(key: str, value) -> None:
    _ensure(isinstance(value, str) and value.strip() != "", key, value, "give a text")


def _object(key: str, value) -> None:
    _ensure(isinstance(value, dict), key, value, "give a JSON object")


def _names(key: str, value) -> None:
    ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
    _ensure(ok and len(set(value)) == len(value), key, value, "give a list of distinct names")


def _mean_pk(key: str, value) -> None:
    _ensure(value == "mean-pk", key, value, "a head other than the weak one pools by mean-pk")


def _hexadecimal(length: int) -> Check:
    def check(key: str, value) -> None:
        ok = isinstance(value, str) and re.fullmatch(f"[0-9a-f]{{{length}}}", value)
        _ensure(bool(ok), key, value, f"give {length} hexadecimal digits")

    return check


def _triple(allowed: Range) -> Check:
    def check(key: str, value) -> None:
        ok = isinstance(value, list) and len(value) == 3 and all(map(allowed.holds, value))
        each = str(allowed).removeprefix("give ")
        _ensure(ok, key, value, f"give three numbers (R, G, B), each {each}")

    return check


def _files(graphs: tuple[str, ...]) -> Check:
    def check(key: str, value) -> None:
        ok = isinstance(value, dict) and sorted(value) == sorted(graphs)
        _ensure(ok, key, value, f"give the SHA-256 of {' and '.join(graphs)} (its mode's graphs)")
        for name in graphs:
            _hexadecimal(64)(f"{key}.{name}", value[name])

    return check
