"""Cache keys: the settings that change the features, hashed into the cache directory's name
(`<split>-<digest>`), and how two fingerprints are compared and told apart in a message."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.config import GridConfig, LabelRule, TaskConfig
from pipeline.io import json_digest

# Shard layout version, part of the cache digest: 2 added `sampled` and `image_labels`.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that changes the cached features and labels: its digest keys the cache.

    `data` is the dataset's kind and class list (None for PASCAL VOC's own classes, whose
    caches keep the digests they had before datasets were keyed): two datasets never share
    a cache, while a head serves any split whose settings other than `data` are its own.
    """

    backbone: dict
    grid: GridConfig = field(default_factory=GridConfig)
    labels: LabelRule = field(default_factory=LabelRule)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: dict | None = None

    def as_dict(self) -> dict:
        settings = {
            "format": CACHE_FORMAT,
            "backbone": self.backbone,
            "grid": asdict(self.grid),
            "labels": asdict(self.labels),
        }
        if self.task != TaskConfig():  # object caches keep the keys they had before tasks
            settings["task"] = asdict(self.task)
        if self.data is not None:
            settings["data"] = self.data
        return settings

    def digest(self) -> str:
        """Short, stable hash of the settings; the code version is kept beside it, not in it."""
        return json_digest(self.as_dict())


# What fingerprint.json records of its directory beside the feature settings: which dataset
# the features came from (its resolved location) and which patches the split keeps.
DIRECTORY_KEYS = ("digest", "source", "keep")


def cache_path(
    cache_root: str | Path, split: str, digest: str, source: str | None = None, keep: str = ""
) -> Path:
    """`<split>-<digest>-<tag>`, the tag telling datasets and keep rules apart, so that one
    never overwrites the other's shards; `<split>-<digest>` for caches made before it."""
    if source is None:
        return Path(cache_root) / f"{split}-{digest}"
    return Path(cache_root) / f"{split}-{digest}-{json_digest([source, keep])[:8]}"


def shown(value, width: int = 60) -> str:
    """A value read from a cache-side file, as a refusal quotes it: short, on one line."""
    if isinstance(value, list | dict):
        return f"a {'list' if isinstance(value, list) else 'JSON object'}"
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def fingerprint_problem(found, name: str) -> str | None:
    """Why a fingerprint.json is not the one extract wrote in the directory `name`, or None:
    its settings must hash to its digest, and its dataset and keep rule to the directory's tag."""
    if not isinstance(found, dict):
        return "not a JSON object"
    digest, source, keep = (found.get(k) for k in DIRECTORY_KEYS)
    kinds = {
        "digest": isinstance(digest, str),
        "source": source is None or isinstance(source, str),
        "keep": keep in (None, "sample", "all"),
    }
    wrong = [key for key, ok in kinds.items() if not ok]
    if wrong:
        return f"its {wrong[0]!r} is {shown(found.get(wrong[0]))}"
    if json_digest(settings_of(found)) != digest:
        return f"its settings digest to {json_digest(settings_of(found))}, not its {digest!r}"
    if name != cache_path("", name.split(f"-{digest}")[0], digest, source, keep or "").name:
        return f"it names another dataset or keep rule than its directory ({source}, {keep})"
    return None


def settings_of(fingerprint: dict) -> dict:
    """The feature settings of a fingerprint.json, without what keys its directory."""
    return {k: v for k, v in fingerprint.items() if k not in DIRECTORY_KEYS}


def without_data(fingerprint: dict) -> dict:
    """The fingerprint's feature settings: what a head must share with a split it scores; as
    JSON reads them back (tuples as lists), so that a settings dict compares with a file's."""
    settings = {k: v for k, v in settings_of(fingerprint).items() if k != "data"}
    return json.loads(json.dumps(settings))


def describe_data(fingerprint: dict) -> str:
    data = fingerprint.get("data")
    if data is None:
        return "PASCAL VOC classes"
    return f"{data['kind']}: {', '.join(data['classes']) or 'no classes'}"


def describe_fingerprint(fingerprint: dict) -> str:
    """The settings that tell caches apart, on one line (task only where not objects)."""
    backbone = fingerprint.get("backbone", {})
    grid = fingerprint.get("grid", {})
    labels = fingerprint.get("labels", {})
    task = fingerprint.get("task")
    recipe = backbone.get("quantization")
    return (
        f"backbone={backbone.get('name')} weights={backbone.get('weights')} "
        f"input={backbone.get('input_size')} mode={backbone.get('mode', 'crop')} "
        f"precision={backbone.get('precision', 'fp32')}{f' ({recipe})' if recipe else ''} "
        f"grid={grid.get('kind', 'patches')} scales={grid.get('scales')} "
        f"min_scale={grid.get('min_scale')} overlap={grid.get('overlap')} "
        f"covers={labels.get('min_patch_cover')}/{labels.get('min_box_cover')} "
        f"background={labels.get('background_ratio')} seed={labels.get('seed')}"
        + (f" task={task.get('name')} context={task.get('context')}" if task else "")
    )


def describe_both(first: dict, second: dict) -> tuple[str, str]:
    """Two fingerprints' feature settings described so that the lines differ where they do:
    a setting the usual line leaves out (the shared-mode geometry, the feature layer...) is
    named on both sides when it differs."""
    a, b = _leaves(without_data(first)), _leaves(without_data(second))
    shown = describe_fingerprint(first), describe_fingerprint(second)
    if shown[0] != shown[1]:
        return shown
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return tuple(
        line + "".join(f" {k}={json.dumps(leaves.get(k))}" for k in differ)
        for line, leaves in zip(shown, (a, b), strict=True)
    )


def _leaves(settings: dict, prefix: str = "") -> dict:
    """{"backbone.name": "resnet18", ...}: a nested dict's values by dotted path."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out
