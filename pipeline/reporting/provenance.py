"""Provenance sidecars: every result file gets `<stem>.json` beside it with the full resolved
config and the cache fingerprint it came from, so a number can always be traced to settings."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline import __version__
from pipeline.io import write_json

SCORES_SUFFIX = "-scores.csv"  # ap.csv -> ap-scores.csv: the per-image scores of a scored run


def beside(result: str | Path, explicit: str | None, suffix: str) -> Path:
    """`explicit` when given, else a file named after `result` beside it, e.g.
    ap.csv -> ap-scores.csv (suffix "-scores.csv"), sweep.csv -> sweep-best.toml."""
    result = Path(result)
    return Path(explicit) if explicit else result.with_name(f"{result.stem}{suffix}")


def sidecar_path(result: str | Path) -> Path:
    """ap.csv -> ap.json; sweep.csv -> sweep.json."""
    return Path(result).with_suffix(".json")


def write_sidecar(result: str | Path, kind: str, config, **extra) -> Path:
    """Write the sidecar of `result` atomically. `config` is a config dataclass (or a dict);
    `extra` holds the digest, fingerprint and anything else the result depends on."""
    payload = {
        "kind": kind,
        "result": Path(result).name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": __version__,
        "config": asdict(config) if is_dataclass(config) else config,
        **extra,
    }
    path = sidecar_path(result)
    write_json(path, payload)
    return path


def read_sidecar(result: str | Path) -> dict:
    """The sidecar of `result`, or {} when there is none (a result made by other tools)."""
    path = sidecar_path(result)
    return json.loads(path.read_text()) if path.is_file() else {}
