"""An exported model folder: its ONNX graphs and `model.json` (what a prediction needs besides
the graphs, and each file's SHA-256), written whole or not at all and refused in one line
when a file is missing or its bytes changed. Layout: docs/deploy.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.errors import CacheError

FORMAT = "midlevel-model/1"
MANIFEST = "model.json"
GRAPHS = {"crop": ("crop.onnx",), "shared": ("trunk.onnx", "head.onnx")}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_model_folder(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict:
    """model.json of an export, its files checked against their SHA-256; CacheError naming
    the folder and the fix otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    fix = "export it again with pipeline export"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheError(f"{folder}: no {MANIFEST}: not a folder pipeline export wrote") from None
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable ({type(exc).__name__}); {fix}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise CacheError(f"{path}: format {found!r}, this midlevel reads {FORMAT}; {fix}")
    files = info.get("files")
    if not isinstance(files, dict) or set(files) != set(GRAPHS.get(info.get("mode"), ())):
        raise CacheError(f"{path}: its file list does not match its mode; {fix}")
    for name, expected in files.items():
        graph = folder / name
        if not graph.is_file():
            raise CacheError(f"{graph}: missing; {fix}")
        if sha256(graph) != expected:
            raise CacheError(f"{graph}: its bytes differ from the SHA-256 in {MANIFEST}; {fix}")
    return info
