"""Scoring: pool patch probabilities into image scores and compute per-class AP.

Image score per class = mean over the image's patches of p(class|patch)^k (paper, k = 5),
kept as its log so that no score underflows to a tie. For the SVM heads p is the logistic
sigmoid of the margin, a monotone map (see heads.py). Only the patches of each image's
label-blind sample are pooled: every patch in splits that keep them all (test, val), a
random `background_ratio` share in training splits (cross-validation), never a choice that
depends on where the objects are. Truth comes from the image labels stored in the shards.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.config import ScoreConfig, ScoredSplit
from pipeline.errors import CacheError
from pipeline.evaluation.metrics import area_ap, mean_ap, voc07_ap
from pipeline.evaluation.pooling import describe_pooling, image_log_scores
from pipeline.reporting.provenance import SCORES_SUFFIX, beside, write_sidecar
from pipeline.store.freshness import open_dataset_of, split_cache
from pipeline.store.head_files import (
    check_serves,
    find_head,
    head_path,
    head_sidecar,
    load_head_file,
    names_a_file,
)
from pipeline.store.shards import FeatureCache
from pipeline.training.fit import cache_classes


@dataclass(frozen=True)
class ImageScores:
    image_ids: list[str]
    scores: np.ndarray  # [n_images, n_classes] log of the mean of p^k; nan: no sampled patch
    truth: np.ndarray  # [n_images, n_classes] 1 / -1 / 0 (all 0 in an unlabelled split)


def score_images(
    head,
    cache: FeatureCache,
    classes: tuple[str, ...],
    head_classes: tuple[str, ...],
    k: float,
    *,
    only: frozenset[str] | None = None,
) -> ImageScores:
    """Pooled log scores of the cached images (or of those in `only`), with their truth."""
    columns = [head_classes.index(c) for c in classes]
    truth_columns = _truth_columns(cache, classes)
    image_ids, pooled, truth = [], [], []
    for shard in cache.iter_shards():
        images = np.ones(len(shard.image_ids), dtype=bool)
        if only is not None:
            images = np.isin(shard.image_ids, list(only))
        patches = shard.sampled & images[shard.image_index]
        scores = image_log_scores(
            head, shard.features[patches], shard.image_index[patches], len(shard.image_ids), k
        )[:, columns]
        pooled.append(scores[images])
        labels = np.zeros((len(shard.image_ids), len(classes)), dtype=np.int8)
        if truth_columns is not None:
            labels = shard.image_labels[:, truth_columns]
        truth.append(labels[images])
        image_ids.extend(np.asarray(shard.image_ids)[images].tolist())
    return ImageScores(image_ids, np.concatenate(pooled), np.concatenate(truth))


def _truth_columns(cache: FeatureCache, classes: tuple[str, ...]) -> list[int] | None:
    """Where each class's truth is in the cache's image labels (None: an unlabelled split,
    all 0); refuses a labelled split without one of the classes (AP would be undefined)."""
    if not split_is_labelled(cache):
        return None
    names = cache_classes(cache)
    missing = [c for c in classes if c not in names]
    if missing:
        raise CacheError(
            f"{cache.directory}: the head scores {', '.join(missing)}, which this split's "
            f"dataset does not have ({', '.join(names)}); pass --classes with classes of both"
        )
    return [names.index(c) for c in classes]


def average_precisions(scores: ImageScores) -> tuple[np.ndarray, np.ndarray]:
    """[n_classes] VOC07 11-point and area APs (fractions); images without a score are left
    out of the ranking, like difficult ones."""
    truth = np.where(np.isnan(scores.scores), 0, scores.truth)
    ranked = np.nan_to_num(scores.scores, nan=-np.inf)
    n = truth.shape[1]
    return (
        np.array([voc07_ap(ranked[:, c], truth[:, c]) for c in range(n)]),
        np.array([area_ap(ranked[:, c], truth[:, c]) for c in range(n)]),
    )


@dataclass(frozen=True)
class ScoreResult:
    classes: tuple[str, ...]
    images: ImageScores
    labelled: bool
    ap_voc07: np.ndarray  # [n_classes], fractions
    ap_area: np.ndarray
    k: float
    seconds: float
    left_out: tuple[dict, ...] = ()  # images extract skipped (--on-error skip): not scored
    pooling: str = ""  # how the image scores were pooled, in words ("k 5", "max pooling")

    def table(self) -> list[dict]:
        """Rows of ap.csv: one per class, then the mean; AP in percent."""
        truth = self.images.truth
        rows = [
            {
                "class": name,
                "ap_voc07": round(100 * a07, 2),
                "ap_area": round(100 * area, 2),
                "positives": int((truth[:, c] == 1).sum()),
                "images": int((truth[:, c] != 0).sum()),
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
                "images": len(self.images.image_ids),
            }
        )
        return rows


def load_head(config: ScoredSplit, cache: FeatureCache):
    """The head `config.head` names (a head file, or a name: the head of that name trained
    on `config.train_split` with the scored split's settings and dataset), with its record;
    refuses one trained on other features, naming both settings."""
    if names_a_file(config.head):
        path = find_head(config.head, config.cache_dir)
    else:
        path = head_path(
            cache.directory.with_name(f"{config.train_split}-{cache.digest}"), config.head
        )
        if not path.is_file():
            raise CacheError(
                f"{path}: no trained {config.head} head for these settings; run pipeline fit "
                f"--head {config.head} first (or pass --head PATH of a head file)"
            )
    head, record = load_head_file(path)
    check_serves(record, cache.fingerprint, path)
    return head, record


def head_columns(record: dict, requested: tuple[str, ...] | None, head: str):
    """The classes to score (those asked for, else the head's) and their columns in the
    head's output; refuses classes the head was not trained on."""
    head_classes = tuple(record["classes"])
    classes = requested or head_classes
    missing = [c for c in classes if c not in head_classes]
    if missing:
        raise CacheError(
            f"--classes: the {head} head was not trained on {', '.join(missing)}; fit with them"
        )
    return classes, [head_classes.index(c) for c in classes]


@dataclass(frozen=True)
class HeadOnSplit:
    """A fitted head and the cached split it scores: what score and localize open first."""

    head: object
    record: dict
    classes: tuple[str, ...]  # the classes to score
    columns: list[int]  # their columns in the head's output
    cache: FeatureCache

    def sidecar(self) -> dict:
        """The head's part of a result's provenance sidecar."""
        return head_sidecar(self.record)


def open_head_on_split(config: ScoredSplit) -> HeadOnSplit:
    """The split's cache, then the head (refusing one trained on other features or classes)."""
    cache = split_cache(config, config.split, open_dataset_of(config))
    head, record = load_head(config, cache)
    classes, columns = head_columns(record, config.classes, config.head)
    return HeadOnSplit(head, record, classes, columns, cache)


def split_is_labelled(cache: FeatureCache) -> bool:
    return bool(cache.attrs().get("labelled", True))


def score_split(config: ScoreConfig) -> ScoreResult:
    """Pool the head's patch scores over each image of the split; AP where it is labelled;
    ap.csv, the per-image scores, the sidecar, and the server export when asked for."""
    started = time.perf_counter()
    opened = open_head_on_split(config)
    classes, cache = opened.classes, opened.cache
    k = config.k if config.k is not None else opened.record.get("k", 5.0)
    images = score_images(opened.head, cache, classes, tuple(opened.record["classes"]), k)
    labelled = split_is_labelled(cache)
    ap_voc07, ap_area = (
        average_precisions(images) if labelled else (np.full(len(classes), np.nan),) * 2
    )
    result = ScoreResult(
        classes, images, labelled, ap_voc07, ap_area, k, time.perf_counter() - started,
        tuple(cache.skipped()), describe_pooling(opened.head, k),
    )  # fmt: skip
    resolved = replace(config, k=k, classes=classes)
    write_outputs(resolved, result)
    if config.export:
        export_submission(Path(config.export), cache, config.split, result)
    write_sidecar(
        config.output,
        "score",
        resolved,
        digest=cache.digest,
        fingerprint=cache.fingerprint,
        head=opened.sidecar(),
        labelled=labelled,
        left_out=list(result.left_out),
    )
    return result


def scores_path(config: ScoreConfig) -> Path:
    return beside(config.output, config.scores_output, SCORES_SUFFIX)


def write_outputs(config: ScoreConfig, result: ScoreResult) -> None:
    """ap.csv (per class + mean; labelled splits only: an unlabelled one removes an older
    table there, which its new ap.json would otherwise seem to describe) and the per-image
    scores with their truth, for re-evaluation elsewhere and for `pipeline report`."""
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not result.labelled:
        output.unlink(missing_ok=True)
    else:
        rows = result.table()
        with open(output, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    with open(scores_path(config), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *result.classes, *(f"truth_{c}" for c in result.classes)])
        for image_id, row, truth in zip(
            result.images.image_ids, result.images.scores, result.images.truth, strict=True
        ):
            writer.writerow([image_id, *(f"{v:.9g}" for v in row), *truth.tolist()])


MISSING_FILE = "missing-images.txt"


def export_submission(
    directory: Path, cache: FeatureCache, split: str, result: ScoreResult
) -> Path:
    """The VOC evaluation server's files under results/<VOC year>/<Main|Action>/, ready to tar:
    classification `comp1_cls_<split>_<class>.txt` (image id and score per line), or, for the
    action task, `comp10_action_<split>_<action>.txt` (image id, person index, score).

    Images that extract skipped have no score: they are missing from every file, which the
    server refuses; they are listed in DIR/missing-images.txt (outside results/, so that a
    tar of results/ never carries it), and the caller must say the export is incomplete."""
    year = str(cache.attrs().get("voc_year", "VOC2012"))
    action = cache.attrs().get("task", "object") == "action"
    folder = directory / "results" / year / ("Action" if action else "Main")
    folder.mkdir(parents=True, exist_ok=True)
    ids = [i.replace("/", " ") for i in result.images.image_ids]  # action: "<image> <person>"
    name = "comp10_action_{}_{}.txt" if action else "comp1_cls_{}_{}.txt"
    for c, cls in enumerate(result.classes):
        column = result.images.scores[:, c]
        lines = (f"{i} {score:.6f}\n" for i, score in zip(ids, column, strict=True))
        (folder / name.format(split, cls)).write_text("".join(lines))
    missing = directory / MISSING_FILE
    if result.left_out:
        lines = (f"{s['id']}\t{s['reason']}\n" for s in result.left_out)
        missing.write_text("".join(lines))
    else:
        missing.unlink(missing_ok=True)
    return folder
