"""Scoring: pool patch probabilities into image scores and compute per-class AP.

Image score per class = mean over the image's patches of p(class|patch)^k (paper, k = 5),
kept as its log so that no score underflows to a tie. For the SVM head p is the logistic
sigmoid of the margin, a monotone map (see heads.py).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

from pipeline.backbone import feature_settings
from pipeline.config import ScoreConfig
from pipeline.errors import CacheError
from pipeline.metrics import area_ap, mean_ap, pool_patch_log_scores, voc07_ap
from pipeline.shards import cache_path, open_cache
from pipeline.voc import image_labels, resolve_year_dir
from stages.fit import head_path


@dataclass(frozen=True)
class ScoreResult:
    classes: tuple[str, ...]
    image_ids: list[str]
    scores: np.ndarray  # [n_images, n_classes] log of the mean of p^k
    truth: np.ndarray  # [n_images, n_classes] 1 / -1 / 0
    ap_voc07: np.ndarray  # [n_classes], fractions
    ap_area: np.ndarray
    seconds: float

    def table(self) -> list[dict]:
        """Rows of ap.csv: one per class, then the mean; AP in percent."""
        rows = [
            {
                "class": name,
                "ap_voc07": round(100 * a07, 2),
                "ap_area": round(100 * area, 2),
                "positives": int((self.truth[:, c] == 1).sum()),
                "images": int((self.truth[:, c] != 0).sum()),
            }
            for c, (name, a07, area) in enumerate(
                zip(self.classes, self.ap_voc07, self.ap_area, strict=True)
            )
        ]
        rows.append(
            {
                "class": "mean",
                "ap_voc07": round(100 * mean_ap(self.ap_voc07), 2),
                "ap_area": round(100 * mean_ap(self.ap_area), 2),
                "positives": sum(r["positives"] for r in rows),
                "images": len(self.image_ids),
            }
        )
        return rows


def load_head(config: ScoreConfig, digest: str):
    """The trained head and its record; refuses one trained on other features."""
    path = head_path(cache_path(config.cache_dir, config.train_split, digest), config.head)
    if not path.is_file():
        raise CacheError(
            f"{path}: no trained {config.head} head for these settings; run pipeline fit --head {config.head} first"
        )
    record = json.loads(path.with_suffix(".json").read_text())
    if record["digest"] != digest:
        raise CacheError(
            f"{path}: trained on features {record['digest']}, not {digest}; fit it again"
        )
    return joblib.load(path), record


def run(config: ScoreConfig) -> ScoreResult:
    started = time.perf_counter()
    settings = feature_settings(config.backbone, config.grid, config.labels)
    digest = settings.digest()
    head, record = load_head(config, digest)
    head_classes = tuple(record["classes"])
    classes = config.classes or head_classes
    missing = [c for c in classes if c not in head_classes]
    if missing:
        raise CacheError(
            f"--classes: the {config.head} head was not trained on {', '.join(missing)}; fit with them"
        )
    columns = [head_classes.index(c) for c in classes]
    cache = open_cache(config.cache_dir, config.split, settings.as_dict(), digest)
    image_ids: list[str] = []
    pooled = []
    for shard in cache.iter_shards():
        log_probs = head.predict_log_proba(shard.features)[:, columns]
        pooled.append(
            pool_patch_log_scores(log_probs, shard.image_index, len(shard.image_ids), config.k)
        )
        image_ids.extend(shard.image_ids)
    scores = np.concatenate(pooled)
    truth = image_labels(resolve_year_dir(config.voc_root), config.split, classes, image_ids)
    result = ScoreResult(
        classes=classes,
        image_ids=image_ids,
        scores=scores,
        truth=truth,
        ap_voc07=np.array([voc07_ap(scores[:, c], truth[:, c]) for c in range(len(classes))]),
        ap_area=np.array([area_ap(scores[:, c], truth[:, c]) for c in range(len(classes))]),
        seconds=time.perf_counter() - started,
    )
    write_outputs(config, result)
    return result


def scores_path(config: ScoreConfig) -> Path:
    output = Path(config.output)
    return (
        Path(config.scores_output)
        if config.scores_output
        else output.with_name(f"{output.stem}-scores.csv")
    )


def write_outputs(config: ScoreConfig, result: ScoreResult) -> None:
    """ap.csv (per class + mean) and the per-image scores, for re-evaluation elsewhere."""
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rows = result.table()
    with open(output, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(scores_path(config), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *result.classes])
        for image_id, row in zip(result.image_ids, result.scores, strict=True):
            writer.writerow([image_id, *(f"{v:.9g}" for v in row)])
