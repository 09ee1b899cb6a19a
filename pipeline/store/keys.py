"""Cache keys: the settings that change the features, hashed into the cache directory's name
(`<split>-<digest>`), and how two fingerprints are compared and told apart in a message."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from pipeline.config import GridConfig, LabelRule, TaskConfig
from pipeline.io import json_digest

OBJECTS = TaskConfig()  # the task of the caches made before tasks were keyed
# Shard layout version, part of the cache digest: 2 added `sampled` and `image_labels`.
CACHE_FORMAT = 2


# What fingerprint.json records of its directory beside the feature settings: which dataset
# the features came from (its resolved location) and which patches the split keeps.
DIRECTORY_KEYS = ("digest", "source", "keep")


@dataclass(frozen=True)
class CacheKey:
    """The settings that change the cached features and labels, as fingerprint.json holds
    them: their digest names the cache. Made from configs by `features.registry.cache_key`
    (only the registry knows a backbone's identity), read back by `from_file`.

    `data` is the dataset's kind and class list (absent for PASCAL VOC's own classes, whose
    caches keep the digests they had before datasets were keyed): two datasets never share
    a cache, while a head serves any split whose settings other than `data` are its own.
    """

    settings: dict  # as JSON reads them back (tuples as lists)

    @classmethod
    def of(
        cls, backbone: dict, grid: GridConfig, labels: LabelRule, task: TaskConfig,
        data: dict | None = None,
    ) -> CacheKey:  # fmt: skip
        settings = {
            "format": CACHE_FORMAT,
            "backbone": backbone,
            "grid": asdict(grid),
            "labels": asdict(labels),
        }
        if task != OBJECTS:  # object caches keep the keys they had before tasks
            settings["task"] = asdict(task)
        if data is not None:
            settings["data"] = data
        return cls(json.loads(json.dumps(settings)))

    @classmethod
    def from_file(cls, fingerprint: dict) -> CacheKey:
        """The key of a fingerprint.json (or a head record's), without what names its directory."""
        return cls({k: v for k, v in fingerprint.items() if k not in DIRECTORY_KEYS})

    @cached_property
    def digest(self) -> str:
        """Short, stable hash of the settings; the code version is kept beside it, not in it.
        Hashed once: a cache asks it for every shard it checks."""
        return json_digest(self.settings)

    @cached_property
    def features(self) -> dict:
        """The settings a head must share with a split it scores: all but the dataset's."""
        return {k: v for k, v in self.settings.items() if k != "data"}

    def serves(self, other: CacheKey) -> bool:
        """Whether features of this key serve a head or split of `other`'s: the same settings,
        from any dataset."""
        return self.features == other.features

    def describe(self) -> str:
        """The settings that tell caches apart, on one line (task only where not objects)."""
        backbone = self.settings.get("backbone", {})
        grid = self.settings.get("grid", {})
        labels = self.settings.get("labels", {})
        task = self.settings.get("task")
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

    def describe_against(self, other: CacheKey) -> tuple[str, str]:
        """This key and `other` described so that the lines differ where they do: a setting
        the usual line leaves out (the shared-mode geometry, the feature layer...) is named on
        both sides when it differs."""
        shown = self.describe(), other.describe()
        if shown[0] != shown[1]:
            return shown
        a, b = _leaves(self.features), _leaves(other.features)
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        return tuple(
            line + "".join(f" {k}={json.dumps(leaves.get(k))}" for k in differ)
            for line, leaves in zip(shown, (a, b), strict=True)
        )

    def describe_data(self) -> str:
        data = self.settings.get("data")
        if data is None:
            return "PASCAL VOC classes"
        return f"{data['kind']}: {', '.join(data['classes']) or 'no classes'}"


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
    if CacheKey.from_file(found).digest != digest:
        return f"its settings digest to {CacheKey.from_file(found).digest}, not its {digest!r}"
    if name != cache_path("", name.split(f"-{digest}")[0], digest, source, keep or "").name:
        return f"it names another dataset or keep rule than its directory ({source}, {keep})"
    return None


def _leaves(settings: dict, prefix: str = "") -> dict:
    """{"backbone.name": "resnet18", ...}: a nested dict's values by dotted path."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out
