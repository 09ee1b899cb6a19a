"""Every task's prediction in Label Studio's JSON, from the cached features of the project's
tasks: the classes the head scores at or above a threshold (`choices`), or for each such
class the box of its strongest patch (`rectanglelabels`, percent of the image), each with its
score; and the task's `score`, the labelling priority suggest's strategy gives it (1 first,
towards 0 last; annotated tasks 0), so that sorting by prediction score is the order to label."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import FitConfig
from pipeline.evaluation.pooling import image_log_scores, score_power
from pipeline.features.caches import open_split
from pipeline.labelling.schema import LabelingSchema
from pipeline.store.head_files import check_serves, load_head_file
from pipeline.training.acquisition import choose, image_embeddings, resolve


def task_predictions(
    config: FitConfig, dataset, head_path: Path | None, schema: LabelingSchema, version: str,
    *, threshold: float, strategy: str,
) -> dict[int, dict]:  # fmt: skip
    """task id -> {"result", "score", "model_version"} for every cached task."""
    cache = open_split(config, config.split, dataset)
    labelled = {s.sample_id for s in cache.data.samples if s.labelled}
    scored = _scored(cache, head_path) if head_path is not None else None
    priority = _priorities(cache, labelled, scored, strategy)
    out = {}
    for shard in cache.iter_shards(features=False):
        for i, image in enumerate(shard.image_ids):
            result = []
            if scored is not None:
                width, height = (int(v) for v in shard.sizes[i])
                result = _result(schema, scored, image, width, height, threshold)
            out[int(image)] = {
                "result": result,
                "score": round(priority.get(image, 0.0), 6),
                "model_version": version,
            }
    return out


@dataclass(frozen=True)
class _Scored:
    """Per image: the head's class scores on p's own scale (`p`), their logs as pooled, and per
    class its strongest patch's box (`peaks`)."""

    classes: tuple[str, ...]
    p: dict
    peaks: dict
    log_scores: dict
    power: float


def _scored(cache, head_path: Path) -> _Scored:
    head, record = load_head_file(head_path)
    check_serves(record, cache.key, head_path)
    classes, power = record.classes, score_power(head, record.k)
    p, peaks, log_scores = {}, {}, {}
    for shard in cache.iter_shards():
        log_probs = head.predict_log_proba(shard.features)[:, : len(classes)]
        pooled = image_log_scores(
            head, shard.features, shard.image_index, len(shard.image_ids), record.k,
            log_probs=log_probs,
        )[:, : len(classes)]  # fmt: skip
        for i, image in enumerate(shard.image_ids):
            rows = np.flatnonzero(shard.image_index == i)
            log_scores[image] = pooled[i]
            p[image] = np.exp(np.nan_to_num(pooled[i], nan=-np.inf) / power)
            if len(rows):
                peaks[image] = shard.boxes[rows[np.argmax(log_probs[rows], axis=0)]]
    return _Scored(classes, p, peaks, log_scores, power)


def _priorities(cache, labelled: set[str], scored: _Scored | None, strategy: str) -> dict:
    """image id -> priority in (0, 1] of each task not annotated, by suggest's strategy over
    the whole pool (cold start: one that needs no label)."""
    pool = image_embeddings(cache)
    candidates = [i for i in pool.image_ids if i not in labelled]
    if not candidates:
        return {}
    known = [i for i in pool.image_ids if i in labelled]
    rows = cache.data.truth_or_unknown()
    truth = {s.sample_id: row for s, row in zip(cache.data.samples, rows, strict=True)}
    positives = np.sum([truth[i] == 1 for i in known], axis=0) if known else np.zeros(0, dtype=int)
    log_scores = None if scored is None else np.stack([scored.log_scores[i] for i in candidates])
    used = resolve(strategy, scored is not None, positives if scored is not None else None)[0]
    picks = choose(
        used, pool.of(candidates), pool.of(known), log_scores,
        scored.power if scored is not None else 1.0, len(candidates),
        positives=positives if scored is not None else None,
    )  # fmt: skip
    n = len(candidates)
    return {candidates[index]: (n - rank) / n for rank, (index, _) in enumerate(picks)}


def _result(schema: LabelingSchema, scored: _Scored, image: str, width, height, threshold):
    """The task's result items: what the head says at or above `threshold`."""
    p = scored.p.get(image)
    if p is None:
        return []
    order = [c for c in np.argsort(-p, kind="stable") if p[c] >= threshold]
    if schema.kind == "choices":
        if not schema.multiple:
            order = [int(np.argmax(p))]  # one choice: the likeliest, whatever its score
        if not order:
            return []
        return [{
            "from_name": schema.from_name, "to_name": schema.to_name, "type": "choices",
            "value": {"choices": [scored.classes[c] for c in order]},
            "score": round(float(min(p[c] for c in order)), 6),
            # every class's image score (Label Studio keeps the field): AP, exports, sorting
            "scores": {name: round(float(v), 6) for name, v in zip(scored.classes, p, strict=True)},
        }]  # fmt: skip
    peaks = scored.peaks.get(image)
    items = []
    for c in order if peaks is not None else ():
        x0, y0, x1, y1 = (float(v) for v in peaks[c])
        items.append({
            "from_name": schema.from_name, "to_name": schema.to_name,
            "type": "rectanglelabels", "original_width": width, "original_height": height,
            "image_rotation": 0,
            "value": {
                "x": 100 * x0 / width, "y": 100 * y0 / height,
                "width": 100 * (x1 - x0) / width, "height": 100 * (y1 - y0) / height,
                "rotation": 0, "rectanglelabels": [scored.classes[c]],
            },
            "score": round(float(p[c]), 6),
        })  # fmt: skip
    return items
