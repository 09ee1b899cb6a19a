"""Stage two: train the adaptation layers (or the linear SVM baseline) from cached shards.

Never reads a JPEG. Shards are streamed one at a time in a seeded order per epoch, so
memory is bounded by one shard whatever the size of the split.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import joblib
import numpy as np

from pipeline.backbone import feature_settings, resolve_device
from pipeline.classes import head_labels, select_classes
from pipeline.config import FitConfig
from pipeline.errors import CacheError
from pipeline.heads import LinearSVMHead, MLPHead
from pipeline.shards import FeatureCache, open_cache, read_shard

HEADS = ("mlp", "svm")


@dataclass(frozen=True)
class FitSummary:
    head_path: str
    classes: tuple[str, ...]
    patches: int
    epochs: int
    final_loss: float
    seconds: float

    def line(self, head: str) -> str:
        return (
            f"fit {head}: {len(self.classes)} classes + background, {self.patches} patches, "
            f"{self.epochs} epochs in {self.seconds:.1f} s, final loss {self.final_loss:.4f} "
            f"-> {self.head_path}"
        )


def head_path(cache_dir: Path, head: str) -> Path:
    """Heads live next to the features they were trained on."""
    return cache_dir / "heads" / f"{head}.joblib"


def cache_classes(cache: FeatureCache) -> list[str]:
    with h5py.File(cache.shard_paths()[0], "r") as h5:
        return json.loads(h5.attrs["class_names"])


def build_head(config: FitConfig, n_classes: int):
    """The estimator for --head, with the background weight as a class weight."""
    if config.head == "mlp":
        m = config.mlp
        return MLPHead(
            hidden=m.hidden,
            dropout=m.dropout,
            lr=m.lr,
            momentum=m.momentum,
            weight_decay=m.weight_decay,
            epochs=m.epochs,
            batch_size=m.batch_size,
            class_weight={n_classes: m.background_weight},
            seed=config.seed,
            device=str(resolve_device(config.device)),
        )
    if config.head == "svm":
        s = config.svm
        return LinearSVMHead(
            C=s.C, epochs=s.epochs, class_weight={n_classes: s.background_weight}, seed=config.seed
        )
    raise CacheError(f"--head {config.head!r}: unknown head; choose one of {', '.join(HEADS)}")


def run(config: FitConfig, *, progress=None) -> FitSummary:
    started = time.perf_counter()
    settings = feature_settings(config.backbone, config.grid, config.labels)
    cache = open_cache(config.cache_dir, config.split, settings.as_dict(), settings.digest())
    paths = cache.shard_paths()
    names = cache_classes(cache)
    positives = np.zeros(len(names) + 1, dtype=np.int64)
    for shard in cache.iter_shards(features=False):
        valid = shard.labels[shard.labels >= 0]
        positives += np.bincount(valid, minlength=len(positives))
    classes = select_classes(config.classes, names, positives[: len(names)])
    head = build_head(config, len(classes))

    def chunks(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(paths))
        for k in order:
            shard = read_shard(paths[k])
            y = head_labels(shard.labels, names, classes)
            keep = y >= 0
            yield shard.features[keep], y[keep]

    head.fit_stream(chunks, progress=progress)
    path = head_path(cache.directory, config.head)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(head, path)
    record = {
        "head": config.head,
        "classes": list(classes),
        "params": head.get_params(),
        "digest": cache.digest,
        "fingerprint": cache.fingerprint,
        "config": asdict(config),
        "patches": int(head.n_samples_seen_),
        "loss_curve": [float(v) for v in head.loss_curve_],
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return FitSummary(
        head_path=str(path),
        classes=classes,
        patches=int(head.n_samples_seen_),
        epochs=len(head.loss_curve_),
        final_loss=float(head.loss_curve_[-1]) if len(head.loss_curve_) else float("nan"),
        seconds=time.perf_counter() - started,
    )
