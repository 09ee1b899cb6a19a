"""The pointing game and location AP from score maps: per image and class, whether the map's
peak (or the image centre, the baseline) falls near a box of the class."""

from __future__ import annotations

import numpy as np

from pipeline.datasets import Sample
from pipeline.evaluation.metrics import location_ap, mean_ap
from pipeline.evaluation.score_maps import (
    LOCATION_TOLERANCE,
    POINTING_TOLERANCE,
    map_peak,
    pointing_hit,
)


def class_boxes(sample: Sample, name: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [M, 4], difficult [M] bool) of class `name` in the sample; box classes index
    `names`, the dataset's classes (a class not among them has none)."""
    if name not in names:
        return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=bool)
    chosen = sample.box_classes == names.index(name)
    return sample.boxes[chosen], sample.difficult[chosen]


def peak_flags(
    maps: np.ndarray,
    sample: Sample,
    classes: tuple[str, ...],
    names: tuple[str, ...],
    tolerance: float,
) -> np.ndarray:
    """[3, C] int8: per class of `classes`, present (1 a non-difficult box of it in the
    sample, 0 only difficult ones, -1 none; box classes index `names`, the dataset's
    classes), whether the map's peak is within `tolerance` pixels of a non-difficult box,
    whether the image centre is (both 0 unless present)."""
    width, height = sample.width, sample.height
    flags = np.zeros((3, len(classes)), dtype=np.int8)
    flags[0] = -1
    for c, name in enumerate(classes):
        boxes, difficult = class_boxes(sample, name, names)
        if not len(boxes):
            continue
        boxes = boxes[~difficult]
        if not len(boxes):
            flags[0, c] = 0
            continue
        peak = map_peak(maps[c], width, height)
        centre = (width / 2, height / 2)
        flags[:, c] = (
            1,
            pointing_hit(peak, boxes, tolerance),
            pointing_hit(centre, boxes, tolerance),
        )
    return flags


def pointing_counts(
    maps: np.ndarray, sample: Sample, classes: tuple[str, ...], names: tuple[str, ...]
) -> np.ndarray:
    """[3, C] int: per class, 1 pair if it has a non-difficult box in the sample, whether the
    map's peak is within POINTING_TOLERANCE of one, whether the image centre is."""
    present, peak, centre = peak_flags(maps, sample, classes, names, POINTING_TOLERANCE)
    return np.stack([present == 1, peak, centre]).astype(np.int64)


def location_flags(
    maps: np.ndarray, sample: Sample, classes: tuple[str, ...], names: tuple[str, ...]
) -> np.ndarray:
    """[3, C] int8, location AP's per-image data (pipeline/evaluation/metrics.py: location_ap):
    `peak_flags` at LOCATION_TOLERANCE."""
    return peak_flags(maps, sample, classes, names, LOCATION_TOLERANCE)


def location_aps(scores: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """[2, C] location AP (0..1) of the map peaks, then of the image centre, per class, from
    the image class scores [n_images, C] (any monotone scale: log scores do) and the flags
    [n_images, 3, C] of `location_flags`; nan for a class no image has a box of."""
    present, peak_hits, centre_hits = flags[:, 0], flags[:, 1] > 0, flags[:, 2] > 0
    return np.array(
        [
            [location_ap(scores[:, c], hits[:, c], present[:, c]) for c in range(scores.shape[1])]
            for hits in (peak_hits, centre_hits)
        ]
    ).reshape(2, scores.shape[1])


def pointing_table(classes: tuple[str, ...], tally: np.ndarray, location: np.ndarray) -> list[dict]:
    """pointing.csv rows: per class its pairs, hits and accuracies (percent; nan without a
    pair), its location AP and the centre guess's (percent, from `location_aps` [2, C]; nan
    for a class without boxes), then the mean over the classes that have a value."""
    pairs, hits, centre = tally
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy, centre_accuracy = 100 * hits / pairs, 100 * centre / pairs
    location = 100 * np.asarray(location, dtype=np.float64)
    rows = [
        {
            "class": name,
            "pairs": int(pairs[c]),
            "hits": int(hits[c]),
            "accuracy": round(float(accuracy[c]), 2),
            "centre_accuracy": round(float(centre_accuracy[c]), 2),
            "location_ap": round(float(location[0, c]), 2),
            "centre_location_ap": round(float(location[1, c]), 2),
        }
        for c, name in enumerate(classes)
    ]
    scored = pairs > 0
    rows.append(
        {
            "class": "mean",
            "pairs": int(pairs.sum()),
            "hits": int(hits.sum()),
            "accuracy": _mean(accuracy[scored]),
            "centre_accuracy": _mean(centre_accuracy[scored]),
            "location_ap": round(mean_ap(location[0]), 2),
            "centre_location_ap": round(mean_ap(location[1]), 2),
        }
    )
    return rows


def _mean(values: np.ndarray) -> float:
    return round(float(values.mean()), 2) if values.size else float("nan")
